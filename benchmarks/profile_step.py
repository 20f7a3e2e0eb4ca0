"""Where pyro_dgm's step spends the time that hand-written PyTorch does not: a profile, side by side.

Three measurements of one ``Model.train`` step against the raw-PyTorch step of ``run.py``, same networks and data:

1. **Framework time** at a tiny size (the networks' arithmetic costs almost nothing, so the difference is Python and
   extra small tensor operations), CPU process time per step, the fastest of several rounds;
2. **Extra tensor operations** per step (forward and backward), counted with a ``TorchDispatchMode``: operations
   that hand-written code avoids (e.g. a Normal's log-density from its parameters, where hand-written code reuses
   the noise ``eps``; per-batch-element sums);
3. **cProfile**: the pyro_dgm functions with the most own time.

    python benchmarks/profile_step.py [--model vae|dmm] [--mc] [--top 15]

Validation is off (``pyro.enable_validation(False)``), as in the timing tables.
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import sys
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pyro  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from benchmarks import dmm, vae  # noqa: E402
from benchmarks import pyro_dgm_contenders as hooks  # noqa: E402


def _build(model: str, mc: bool) -> tuple[Callable[[], Any], Callable[[], Any], int]:
    """(raw step, pyro_dgm step, time steps per step) at a tiny size."""
    dev = torch.device("cpu")
    if model == "vae":
        cfg = vae.VAEConfig(z_dim=2, h_dim=4, x_dim=8, batch=4)
        data = vae.make_data(cfg, dev)
        return vae.build_torch(cfg, data, dev, mc=mc).step, hooks._vae_model_train(cfg, data, dev, mc, True).step, 1
    cfg = dmm.DMMConfig(z_dim=4, T=16, emission_dim=4, transition_dim=4, rnn_dim=4)
    data = dmm.make_data(cfg, dev)
    return dmm.build_torch(cfg, data, dev, mc=mc).step, hooks._dmm_model_train(cfg, data, dev, mc, True).step, cfg.T


def framework_time(raw: Callable[[], Any], ours: Callable[[], Any], steps: int = 20, rounds: int = 15
                   ) -> tuple[float, float]:
    best = {0: float("inf"), 1: float("inf")}
    for _ in range(rounds):
        for i, f in enumerate((raw, ours)):
            t0 = time.process_time()
            for _ in range(steps):
                f()
            best[i] = min(best[i], (time.process_time() - t0) / steps)
    return best[0] * 1e6, best[1] * 1e6


def op_counts(step: Callable[[], Any]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            counts[str(func)] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        step()
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("vae", "dmm"), default="vae")
    ap.add_argument("--mc", action="store_true", help="the Monte Carlo KL estimator (default: analytic)")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    raw, ours, T = _build(args.model, args.mc)
    for f in (raw, ours):
        for _ in range(10):
            f()
    t_raw, t_ours = framework_time(raw, ours)
    per = f" = {(t_ours - t_raw) / T:.0f} us per time step" if T > 1 else ""
    print(f"{args.model} ({'MC' if args.mc else 'analytic'}), tiny size: raw PyTorch {t_raw:.0f} us/step, "
          f"pyro_dgm Model.train {t_ours:.0f} us/step: {t_ours - t_raw:.0f} us of framework time{per}")
    c_raw, c_ours = op_counts(raw), op_counts(ours)
    diff = {k: c_ours[k] - c_raw[k] for k in set(c_raw) | set(c_ours) if c_ours[k] != c_raw[k]}
    total = sum(c_ours.values()) - sum(c_raw.values())
    print(f"tensor operations per step (forward and backward): raw {sum(c_raw.values())}, pyro_dgm "
          f"{sum(c_ours.values())} ({total:+d}{f', {total / T:+.1f} per time step' if T > 1 else ''}):")
    for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1])):
        print(f"  {v / T:+6.2f}{' per time step' if T > 1 else ''}  {k}")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200 // T + 1):
        ours()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats("pyro_dgm", args.top)
    print("cProfile, pyro_dgm functions by own time:")
    print("\n".join(line for line in out.getvalue().splitlines() if "pyro_dgm" in line or "ncalls" in line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
