"""What an ``SVI.step`` costs beyond the loss: Pyro's optimizer wrapper and parameter capture, on the VAE's networks.

``SVI(model, guide, pyro.optim.Adam(...), loss)`` steps one ``torch.optim.Adam`` *per parameter* (``PyroOptim``),
captures the parameters with ``poutine.trace(param_only=True)`` and zeroes the gradients in place; ``Model.train``
steps one ``torch.optim.Adam`` over all of them. This prints both, interleaved, on the Table 1 VAE's ten parameter
tensors (with random gradients; no forward or backward pass), so the SVI rows of ``run.py`` can be read against it:
whatever the loss, an SVI step costs at least the difference.

    python benchmarks/svi_floor.py [--h 400] [--rounds 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pyro  # noqa: E402
import pyro.optim  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer.util import zero_grads  # noqa: E402

from benchmarks.vae import VAEConfig, build_nets  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--h", type=int, default=400, help="hidden units (#h)")
    ap.add_argument("--z", type=int, default=10, help="latent dims (#z)")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    enc, dec = build_nets(VAEConfig(z_dim=args.z, h_dim=args.h), torch.device("cpu"))
    params = [*enc.parameters(), *dec.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    adam = torch.optim.Adam(params, lr=1e-3)
    pyro_adam = pyro.optim.Adam({"lr": 1e-3})

    def model_train_update() -> None:  # what Model.train does after backward
        adam.zero_grad(set_to_none=False)  # keep the random gradients: only the cost of zeroing counts
        adam.step()

    def svi_update() -> None:  # what SVI.step does around the loss: capture, PyroOptim, zero_grads
        with poutine.trace(param_only=True) as capture:
            pyro.module("enc", enc)
            pyro.module("dec", dec)
        found = set(site["value"].unconstrained() for site in capture.trace.nodes.values())
        pyro_adam(found)
        zero_grads(found)

    fns = {"torch.optim.Adam over all (Model.train)": model_train_update,
           "SVI: param capture + PyroOptim + zero_grads": svi_update}
    for f in fns.values():
        for _ in range(10):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(10):
                f()
            times[name].append((time.perf_counter() - t0) * 100)  # ms per step
    base = statistics.median(times[next(iter(fns))])
    print(f"VAE #z={args.z} #h={args.h}: {len(params)} parameter tensors, ms per update (median of {args.rounds} "
          "rounds)")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:48s} {m:7.3f} ms  (+{m - base:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
