"""Host–device synchronizations per training step on a GPU, for every contender of ``run.py``'s VAE and DMM tables.

    python benchmarks/cuda_syncs.py [--steps N] [--out results.md]

A synchronization (``.item()``, ``bool(tensor)``, a copy to the host, a data-dependent shape) stalls the host until the
GPU has run everything queued so far, so launches can no longer overlap the GPU's work. Each contender is built, run for
two warm-up steps, then run for ``--steps`` steps under ``torch.cuda.set_sync_debug_mode("warn")``, which makes torch
warn at every synchronizing call; the table gives the warnings per step and the Python lines that caused them (the
first frame outside torch). Needs a CUDA device; without one it says so and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections import Counter
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks import dmm, vae  # noqa: E402

_TORCH = os.path.dirname(torch.__file__)


def _caller() -> str:
    """The innermost frame outside torch and this file: the line that asked for the synchronizing call."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(_TORCH) and not frame.filename.endswith(("cuda_syncs.py", "warnings.py")):
            path = frame.filename
            return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{frame.lineno}"
    return "?"


def count_syncs(step: Callable[[], Any], steps: int) -> tuple[float, Counter[str]]:
    """Synchronizing calls per step of ``step`` (after two warm-up steps), and where they came from."""
    step()
    step()
    torch.cuda.synchronize()
    where: Counter[str] = Counter()
    shown = warnings.showwarning

    def record(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if "synchroniz" in str(message).lower():
            where[_caller()] += 1
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = shown
    torch.cuda.synchronize()
    return sum(where.values()) / steps, where


def table(title: str, contenders: list[Any], steps: int) -> str:
    lines = [f"| {title} | syncs/step | where (count over {steps} steps) |", "|---|---|---|"]
    for c in contenders:
        try:
            per, where = count_syncs(c.factory(), steps)
            places = ", ".join(f"`{k}` ×{v}" for k, v in where.most_common(6))
            lines.append(f"| {c.name} | {per:g} | {places} |")
        except Exception as e:  # noqa: BLE001
            lines.append(f"| {c.name} | failed: {type(e).__name__}: {str(e)[:120]} | |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("cuda_syncs.py: no CUDA device; nothing to count")
        return 0
    import pyro

    pyro.enable_validation(False)  # as run.py's tables
    dev = torch.device("cuda")
    out = [f"torch {torch.__version__}, {torch.cuda.get_device_name()}: synchronizing calls per training step", ""]
    out += [table("VAE 10/400", vae.contenders(vae.VAEConfig(10, 400), dev), args.steps), ""]
    out += [table("DMM T=16", dmm.contenders(dmm.DMMConfig(z_dim=100, T=16), dev), args.steps), ""]
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
