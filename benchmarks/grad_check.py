"""The cost of ``Model.train``'s finite-gradient check (issue 13 item 8) on the VAE of ``vae.py``.

Two measurements, interleaved in rounds on the same model and batches:

* **isolated**: the check alone, exactly as ``Model.train`` runs it after ``backward`` (the list of gradients, one
  pass summing them, one ``.item()`` per tensor on the CPU), against a full ``Model.train`` step; the ratio is per
  round, the median is reported. This is the number to read: it does not depend on the noise of two whole steps.
* **paired**: ``Model.train`` with ``check_gradients=True`` against ``False`` (the same model, steps alternated);
  the per-round ratio of two whole steps, a sanity check of the isolated number (on a shared machine its spread is
  far wider than the check's cost).

Usage::

    .venv/bin/python benchmarks/grad_check.py [--device cpu|cuda] [--rounds 30] [--steps 10] [--h 400] [--z 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.harness import sync  # noqa: E402
from benchmarks.pyro_dgm_contenders import _vae_dists, _vae_loss  # noqa: E402
from benchmarks.vae import VAEConfig, make_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--h", type=int, default=400)
    ap.add_argument("--z", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from pyro_dgm.models import Model
    from pyro_dgm.models.model import _finite_sum

    cfg = VAEConfig(z_dim=args.z, h_dim=args.h)
    data = make_data(cfg, device)
    q, p, prior = _vae_dists(cfg, device)
    model = Model(_vae_loss(q, p, prior, mc=False), distributions=[p, q], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": cfg.lr})
    i = [0]

    def step() -> None:
        model.train({"x": data[i[0] % len(data)]})
        i[0] += 1

    def check() -> None:  # what Model.train adds (no clipping), on the gradients of the last step
        grads = [g.grad for g in model._dgm_params if g.grad is not None]
        if not _finite_sum(grads):
            raise AssertionError("non-finite gradient")

    def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / n

    for _ in range(20):  # warm-up
        step()
        check()
    ratios, step_ms, check_us, on_ms, off_ms = [], [], [], [], []
    for r in range(args.rounds):
        s = timed(step, args.steps)
        c = timed(check, args.steps * 10)
        ratios.append(c / s)
        step_ms.append(s * 1e3)
        check_us.append(c * 1e6)
        pair = []
        for flag in ((True, False) if r % 2 == 0 else (False, True)):
            model.check_gradients = flag
            pair.append((flag, timed(step, args.steps)))
        model.check_gradients = True
        on_ms.append(dict(pair)[True] * 1e3)
        off_ms.append(dict(pair)[False] * 1e3)
    n_params = sum(t.numel() for t in model._dgm_params)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"VAE #z={cfg.z_dim} #h={cfg.h_dim} batch {cfg.batch} ({n_params} parameters), {name}, torch "
          f"{torch.__version__}, {args.rounds} rounds x {args.steps} steps")
    print(f"  Model.train step        median {statistics.median(step_ms):.3f} ms")
    print(f"  check alone             median {statistics.median(check_us):.1f} us "
          f"= {100 * statistics.median(ratios):.2f} % of a step (per-round ratios: "
          f"{100 * min(ratios):.2f}-{100 * max(ratios):.2f} %)")
    paired = [a / b - 1 for a, b in zip(on_ms, off_ms)]
    q = statistics.quantiles(paired, n=4)
    print(f"  paired: check on {statistics.median(on_ms):.3f} ms, off {statistics.median(off_ms):.3f} ms; per-round "
          f"on/off - 1: median {100 * statistics.median(paired):+.2f} %, quartiles {100 * q[0]:+.2f} to "
          f"{100 * q[2]:+.2f} % (noise-limited)")


if __name__ == "__main__":
    main()
