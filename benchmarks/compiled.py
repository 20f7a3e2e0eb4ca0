"""Compiled training steps: ``Model(..., compile=True)`` against the hand-written step compiled the same way.

    python benchmarks/compiled.py [--rounds N] [--quick] [--out results.md] [--device cpu|cuda]
                                  [--mode default|reduce-overhead|max-autotune] [--kl analytic,mc]

Contenders, side by side in one process (interleaved rounds, the harness of ``run.py``):

* ``torch eager`` / ``torch compiled``: the hand-written step of ``vae.py``/``dmm.py``; compiled = its objective
  under ``torch.compile`` (default inductor backend), then ``backward`` and Adam as usual.
* ``pyro_dgm Model.train`` / ``pyro_dgm Model.train compile=True``: the same networks and objective through the
  Loss API; ``compile=True`` compiles the loss evaluation (``pyro_dgm.losses.compiled``).

Every batch is a new tensor (a pool of 32 cycled), so a compiled step that guarded on tensor identity would
recompile at every step and show it. The time of the first two steps of each contender is reported too: the
compilation, in a warm process (the inductor cache of this run is a fresh temporary folder, so it is cold). Two
steps, because ``compile=True`` runs its first step eagerly and compiles at the second; the hand-written compiled
step compiles at its first.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="pyro_dgm_inductor_"))

import torch  # noqa: E402

from benchmarks import dmm, harness, vae  # noqa: E402
from benchmarks import pyro_dgm_contenders as hooks  # noqa: E402
from benchmarks.harness import Contender  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed_first(name: str, build: Callable[[], Any], first: dict[str, float]) -> Callable[[], Any]:
    step = build().step
    _sync()
    t = time.perf_counter()
    step()
    step()
    _sync()
    first[name] = time.perf_counter() - t
    return step


def contenders(model: Any, cfg: Any, ours: Callable[..., Any], first: dict[str, float], mc: bool,
                dev: torch.device = torch.device("cpu"), options: dict[str, Any] | None = None) -> list[Contender]:
    """The four contenders of one model (``vae`` or ``dmm``): hand-written eager and compiled, pyro_dgm eager and
    compiled (``ours`` builds the pyro_dgm step), both compiled with the ``torch.compile`` ``options``; every one
    times its first two steps into ``first``."""
    data = model.make_data(cfg, dev)
    est = "MC" if mc else "analytic"
    opts: Any = dict(options) if options else True
    builds: dict[str, Callable[[], Any]] = {
        f"torch eager ({est})": lambda: model.build_torch(cfg, data, dev, mc),
        f"torch compiled ({est})": lambda: model.build_torch(cfg, data, dev, mc, compile=opts),
        f"pyro_dgm Model.train ({est})": lambda: ours(cfg, data, dev, mc, True),
        f"pyro_dgm Model.train compile=True ({est})": lambda: ours(cfg, data, dev, mc, True, compile=opts),
    }
    base = f"torch compiled ({est})"
    return [Contender(n, lambda n=n, b=b: _timed_first(n, b, first), base, n.split()[0]) for n, b in builds.items()]


def table(label: str, results: dict[str, harness.Result], first: dict[str, float]) -> str:
    """ms/step, the ratio to the hand-written compiled step and to the hand-written eager step (paired per round),
    and the first two steps' time."""
    lines = [f"| {label} | contender | ms/step | × torch compiled | × torch eager | first 2 steps (s) |",
             "|---|---|---|---|---|---|"]
    names = list(results)
    eager = next(n for n in names if n.startswith("torch eager"))
    comp = next(n for n in names if n.startswith("torch compiled"))
    for n, r in results.items():
        if not r.ms:
            lines.append(f"| | {n} | failed: {r.error} | | | |")
            continue
        rc = harness.paired_ratio(r, results[comp])
        re_ = harness.paired_ratio(r, results[eager])
        lines.append(f"| | {n} | {r.median:.2f} | {rc[0]:.2f} ({rc[1]:.2f}–{rc[2]:.2f}) | "
                     f"{re_[0]:.2f} ({re_[1]:.2f}–{re_[2]:.2f}) | {first.get(n, 0.0):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3, help="steps per round")
    ap.add_argument("--quick", action="store_true", help="the VAE at 10/400 and a short DMM (T = 16) only")
    ap.add_argument("--only", default="vae,dmm")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (default 1, as run.py)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                    help="torch.compile's mode for both compiled contenders (reduce-overhead: CUDA graphs)")
    ap.add_argument("--kl", default="analytic,mc", help="the KL estimators to time (comma-separated)")
    args = ap.parse_args(argv)
    estimators = [e.strip() for e in args.kl.split(",") if e.strip()]
    if not estimators or set(estimators) - {"analytic", "mc"}:
        ap.error(f"--kl: choose from analytic, mc (got {args.kl!r})")
    kls = [e == "mc" for e in estimators]
    dev = torch.device(args.device)
    options = {} if args.mode == "default" else {"mode": args.mode}
    torch.set_num_threads(args.threads)
    import pyro

    pyro.enable_validation(False)  # as run.py's tables (torch.compile turns it off anyway)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else f"{torch.get_num_threads()} threads"
    out: list[str] = [f"torch {torch.__version__}, {where}, compile mode {args.mode}, {args.rounds} rounds of "
                      f"{args.steps} steps, medians of paired per-round ratios (25–75 %)", ""]
    only = set(args.only.split(","))
    if "vae" in only:
        configs = [(10, 400)] if args.quick else [(10, 400), (30, 2000)]
        for z, h in configs:
            for mc in kls:
                first: dict[str, float] = {}
                cfg = vae.VAEConfig(z_dim=z, h_dim=h)
                print(f"VAE #z={z} #h={h} {'MC' if mc else 'analytic'}", flush=True)
                res = harness.time_interleaved(contenders(vae, cfg, hooks._vae_model_train, first, mc, dev, options),
                                               dev, args.rounds, args.steps, 2)
                out += [table(f"VAE {z}/{h}", res, first), ""]
                print(out[-2], flush=True)
    if "dmm" in only:
        for mc in kls:
            first = {}
            cfg = dmm.DMMConfig(z_dim=100, T=16 if args.quick else 50)
            print(f"DMM T={cfg.T} {'MC' if mc else 'analytic'}", flush=True)
            res = harness.time_interleaved(contenders(dmm, cfg, hooks._dmm_model_train, first, mc, dev, options),
                                           dev, args.rounds, args.steps, 2)
            out += [table(f"DMM T={cfg.T}", res, first), ""]
            print(out[-2], flush=True)
    text = "\n".join(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
