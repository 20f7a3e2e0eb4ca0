"""Where the DMM's remaining time over the hand-written step goes: forward and backward timed apart.

The DMM of ``dmm.py`` (analytic KL): the hand-written objective (``dmm.torch_objective``), pyro_dgm's
``IterativeLoss`` (``loss.eval``, as ``Model.train`` evaluates it), and the same with memoization off, on the same
networks and batch, interleaved in rounds. Each round times the forward pass (the loss value) and the backward pass
(``.backward()``) of each; the medians per time step are printed, and the differences to the hand-written pass.
``--tiny`` makes every network 4 wide: the tensor work is then nearly nothing, and what is left above the
hand-written forward pass is the framework's Python per time step. At the real size the same difference means the
tensor work is the same.

Usage::

    .venv/bin/python benchmarks/dmm_split.py [--tiny] [--T 16] [--rounds 40]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import dmm  # noqa: E402
from benchmarks.pyro_dgm_contenders import dmm_loss  # noqa: E402


def contenders(cfg: dmm.DMMConfig, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, Callable[[], Any]],
                                                                                        torch.nn.Module]:
    """The three forward passes, on one set of networks (pyro_dgm's distributions wrap the hand-written nets)."""
    from pyro_dgm.poutine import get_cache_maxsize, set_cache_maxsize

    loss, _, nets, values = dmm_loss(cfg, torch.device("cpu"), mc=False)
    raw = dmm.torch_objective(cfg, nets, mc=False)
    size = get_cache_maxsize() or 128

    def memo_off() -> Any:
        set_cache_maxsize(0)
        try:
            return loss.eval(values(batch))
        finally:
            set_cache_maxsize(size)

    return {"hand-written": lambda: raw(*batch), "pyro_dgm": lambda: loss.eval(values(batch)),
            "pyro_dgm, no memo": memo_off}, nets


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="every network 4 wide: the framework's Python alone")
    ap.add_argument("--T", type=int, default=16, help="time steps")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import pyro
    pyro.enable_validation(False)
    width = {"z_dim": 4, "emission_dim": 4, "transition_dim": 4, "rnn_dim": 4} if args.tiny else {}
    cfg = dmm.DMMConfig(T=args.T, **width)
    batch = dmm.make_data(cfg, torch.device("cpu"))[0]
    fns, nets = contenders(cfg, batch)
    times: dict[tuple[str, str], list[float]] = {(n, p): [] for n in fns for p in ("forward", "backward")}
    for r in range(args.rounds + 4):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            value = fn()
            t1 = time.perf_counter()
            value.backward()
            t2 = time.perf_counter()
            nets.zero_grad(set_to_none=True)
            if r >= 4:  # (warm-up rounds)
                times[(name, "forward")].append((t1 - t0) * 1e6 / cfg.T)
                times[(name, "backward")].append((t2 - t1) * 1e6 / cfg.T)
    med = {k: statistics.median(v) for k, v in times.items()}
    size = "tiny (every network 4 wide)" if args.tiny else f"#z={cfg.z_dim}, rnn {cfg.rnn_dim}"
    print(f"DMM {size}, T={cfg.T}, batch {cfg.batch}, {args.rounds} rounds; us per time step (median)\n")
    print("| contender | forward | backward | forward - hand-written | backward - hand-written |")
    print("|---|---|---|---|---|")
    for name in fns:
        f, b = med[(name, "forward")], med[(name, "backward")]
        df, db = f - med[("hand-written", "forward")], b - med[("hand-written", "backward")]
        print(f"| {name} | {f:.0f} | {b:.0f} | {df:+.0f} | {db:+.0f} |")


if __name__ == "__main__":
    main()
