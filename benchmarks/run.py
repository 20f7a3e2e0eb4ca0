"""Run the benchmark suite and print Markdown tables (see benchmarks/README.md).

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--rounds N] [--out results.md]
    python benchmarks/run.py --check          # do the contenders compute the same objective? (no timing)
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import sys
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks import dmm, harness, scaling, vae  # noqa: E402
from benchmarks import pyro_dgm_contenders as hooks  # noqa: E402

SECTIONS = ("vae", "dmm", "factors", "length")


def settings(quick: bool) -> dict[str, Any]:
    """Rounds / steps per round / warm-up steps and sizes of each section."""
    if quick:
        return {
            "vae": dict(configs=[(10, 400), (30, 400), (10, 2000), (30, 2000)], rounds=7, k=1, warmup=1,
                        memory_steps=2),
            "dmm": dict(z_dims=[100], T=16, rounds=5, k=1, warmup=1, memory_steps=2),
            "factors": dict(ns=[2, 4, 8, 16, 32], rounds=5, k=5, warmup=3),
            "length": dict(Ts=[10, 20, 40, 80], z_dim=100, rounds=3, k=1, warmup=1),
        }
    return {
        "vae": dict(configs=[(10, 400), (30, 400), (10, 2000), (30, 2000)], rounds=20, k=5, warmup=5),
        "dmm": dict(z_dims=[20, 100], T=50, rounds=10, k=2, warmup=2),
        "factors": dict(ns=[2, 4, 8, 16, 32], rounds=20, k=10, warmup=5),
        "length": dict(Ts=[10, 20, 40, 80], z_dim=100, rounds=5, k=2, warmup=2),
    }


# the contenders timed against sequence length (all of them at every T would take too long)
LENGTH_CONTENDERS = ("torch (analytic KL)", "pyro Trace_ELBO", "pixyz IterativeLoss analytic w/ cache",
                     "pyro_dgm Model.train IterativeLoss (analytic)")


def environment(device: torch.device, args: argparse.Namespace) -> str:
    import pyro

    try:
        import pixyz
        pixyz_version = pixyz.__version__
    except Exception:  # noqa: BLE001
        pixyz_version = "not installed"
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        machine = f"CPU, {os.cpu_count()} cores visible, {platform.processor() or platform.machine()}"
    return "\n".join([
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); pyro "
        f"{pyro.__version__}; pixyz {pixyz_version}; Python {platform.python_version()}",
        f"- settings: {'--quick' if args.quick else 'full'}; rounds overridden: {args.rounds or 'no'}; "
        f"distribution argument validation: {'off (--no-validate)' if args.no_validate else 'library default (on)'}"
        f"; allocator: {'glibc, fixed thresholds (--steady-malloc)' if args.steady_malloc else 'glibc defaults'}",
        f"- load average at the start (1/5/15 min): {' / '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(other jobs on the machine make every row slower and noisier; the rows are interleaved, so ratios suffer "
        "less than absolute times)",
    ])


def steady_malloc() -> None:
    """Fix glibc's allocator thresholds for the whole process, before any contender is built.

    By default glibc returns the free top of the heap to the OS once it exceeds a threshold that it adapts as the
    program runs; the next step then faults those pages back in (hundreds of faults a step at #h = 400). Which
    contender pays depends on the heap's history (the order they run in, what ran before), not on its code. With
    mmap threshold 32 MiB and trim threshold 1 GiB, freed memory is kept and reused, so steps measure computation.
    """
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD (its maximum on 64-bit)
    libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD


def cleanup() -> None:
    """Drop the global state contenders leave behind: Pyro's param store and Pixyz's process-wide cache."""
    import pyro

    from benchmarks.common import pixyz_cache_clear

    pyro.clear_param_store()
    pixyz_cache_clear()


def _long_table(per_config: dict[str, dict[str, harness.Result]], cols: list[str]) -> str:
    parts = [harness.markdown_table(res, cols, label.split("/")) for label, res in per_config.items()]
    lines = parts[0].splitlines()
    for p in parts[1:]:
        lines += p.splitlines()[2:]
    return "\n".join(lines)


def _report(per_config: dict[str, dict[str, harness.Result]], header: str, cols: list[str], memory: bool) -> str:
    times, mems = harness.pivot_tables(per_config, header)
    out = ["ms per step, median over rounds; in parentheses, × raw PyTorch: the median over rounds of the step time "
           "over that of the raw-PyTorch row of the same estimator in the same round:", "", times, ""]
    if memory:
        out += ["Peak memory (MiB; see harness.py for what it measures):", "", mems, ""]
    out += ["<details><summary>Per-configuration details (25–75 % range of the per-round times)</summary>", "",
            _long_table(per_config, cols), "", "</details>"]
    return "\n".join(out)


def run_vae(device: torch.device, s: dict[str, Any], memory: bool, log: Callable[[str], None]) -> str:
    per: dict[str, dict[str, harness.Result]] = {}
    for z, h in s["configs"]:
        cfg = vae.VAEConfig(z_dim=z, h_dim=h)
        log(f"VAE #z={z} #h={h}")
        t = time.perf_counter()
        per[f"{z}/{h}"] = harness.run_benchmark(vae.contenders(cfg, device), device, s["rounds"], s["k"],
                                                s["warmup"], memory, log, cleanup, s.get("memory_steps"))
        log(f"  {time.perf_counter() - t:.0f}s")
    return _report(per, "#z/#h", ["#z", "#h"], memory)


def run_dmm(device: torch.device, s: dict[str, Any], memory: bool, log: Callable[[str], None]) -> str:
    per: dict[str, dict[str, harness.Result]] = {}
    for z in s["z_dims"]:
        cfg = dmm.DMMConfig(z_dim=z, T=s["T"])
        log(f"DMM #z={z} T={cfg.T}")
        t = time.perf_counter()
        per[f"{z}/{cfg.T}"] = harness.run_benchmark(dmm.contenders(cfg, device), device, s["rounds"], s["k"],
                                                    s["warmup"], memory, log, cleanup, s.get("memory_steps"))
        log(f"  {time.perf_counter() - t:.0f}s")
    return _report(per, "#z/T", ["#z", "T"], memory)


def run_factors(device: torch.device, s: dict[str, Any], log: Callable[[str], None]) -> str:
    per = {}
    for n in s["ns"]:
        log(f"factors n={n}")
        cfg = scaling.ChainConfig(n=n)
        per[n] = harness.run_benchmark(scaling.chain_contenders(cfg, device), device, s["rounds"], s["k"],
                                       s["warmup"], memory=False, log=log, cleanup=cleanup)
    return scaling.scaling_table(per, "factors", "factor", "torch")


def run_length(device: torch.device, s: dict[str, Any], log: Callable[[str], None]) -> str:
    per = {}
    for T in s["Ts"]:
        log(f"DMM length T={T}")
        cfg = dmm.DMMConfig(z_dim=s["z_dim"], T=T)
        per[T] = harness.run_benchmark(dmm.contenders(cfg, device, only=lambda n: n in LENGTH_CONTENDERS), device,
                                       s["rounds"], s["k"], s["warmup"], memory=False, log=log, cleanup=cleanup)
    return scaling.scaling_table(per, "T", "time step", "torch (analytic KL)")


def run_checks(device: torch.device, log: Callable[[str], None]) -> bool:
    ok = True
    log("VAE #z=10 #h=400: negative ELBO (sum over the batch) at the initial weights, 100 evaluations each")
    ok &= vae.check(vae.VAEConfig(10, 400), device, n=100, log=log)
    log("DMM #z=100 T=8: negative ELBO at the initial weights, 50 evaluations each")
    ok &= dmm.check(dmm.DMMConfig(z_dim=100, T=8), device, n=50, log=log)
    log("factor chains: -log p of the same draw")
    for n in (2, 8, 32):
        ok &= scaling.check_chain(scaling.ChainConfig(n=n), device, log=log)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few rounds, short DMM (about 3 minutes on 2 CPU cores)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=None, help="rounds per benchmark (overrides the preset)")
    ap.add_argument("--out", default=None, help="also write the Markdown to this file")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--check", action="store_true", help="check that the contenders compute the same objective")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--no-validate", action="store_true",
                    help="pyro.enable_validation(False): no argument checks in Pyro/torch distributions")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (default 1)")
    ap.add_argument("--steady-malloc", action="store_true",
                    help="glibc keeps freed memory (fixed mmap/trim thresholds, the same for every contender): "
                         "no page faults from heap trimming, whose cost depends on the allocation history")
    args = ap.parse_args(argv)
    if args.steady_malloc:
        steady_malloc()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    if args.no_validate:
        import pyro
        pyro.enable_validation(False)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.check:
        ok = run_checks(device, log)
        log("all contenders agree" if ok else "MISMATCH: see above")
        return 0 if ok else 1

    s = settings(args.quick)
    if args.rounds:
        for sec in s.values():
            sec["rounds"] = args.rounds
    sections = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        ap.error(f"--only: unknown section(s) {unknown}; choose from {SECTIONS}")
    memory = not args.no_memory
    t0 = time.perf_counter()
    out = ["## Environment", "", environment(device, args), ""]
    notes = hooks.notes()
    if notes:
        out += ["pyro_dgm rows not run: " + "; ".join(notes) + ".", ""]
    if "vae" in sections:
        out += [f"## VAE (Table 1 set-up), ms per training step, {device.type}", "",
                run_vae(device, s["vae"], memory, log), ""]
    if "dmm" in sections:
        out += [f"## DMM (Table 2 set-up), ms per training step, {device.type}", "",
                run_dmm(device, s["dmm"], memory, log), ""]
    if "factors" in sections:
        out += ["## Scaling with the number of factors (chain of Normal factors, batch 128, 8 features)", "",
                run_factors(device, s["factors"], log), ""]
    if "length" in sections:
        out += [f"## Scaling with the DMM's sequence length (#z={s['length']['z_dim']})", "",
                run_length(device, s["length"], log), ""]
    out.append(f"_total wall time {time.perf_counter() - t0:.0f} s; load average at the end: "
               f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}_")
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
