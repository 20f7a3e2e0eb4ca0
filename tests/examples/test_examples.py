"""Every example runs at smoke size and its metric is finite and improving.

An example is ``examples/<name>.py`` with ``main(argv) -> dict[str, list[float]]`` (a metric's value per epoch) and
a module-level ``METRIC = (key, "max" | "min")`` naming the metric to check and which way is better. ``--smoke``
keeps each run to seconds; ``--out`` sends its picture to a temporary folder.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if "METRIC = " in p.read_text())


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_smoke(path: Path, tmp_path: Path) -> None:
    module = _load(path)
    key, better = module.METRIC
    threads = torch.get_num_threads()
    try:
        history = module.main(["--smoke", "--out", str(tmp_path / f"{path.stem}.png")])
    finally:
        torch.set_num_threads(threads)
    values = [float(v) for v in history[key]]
    assert len(values) >= 2, f"{path.name}: {key} needs a value per epoch, got {values}"
    assert all(math.isfinite(v) for v in values), f"{path.name}: {key} is not finite: {values}"
    first, last = values[0], values[-1]
    assert (last > first) if better == "max" else (last < first), f"{path.name}: {key} did not improve: {values}"
    assert list(tmp_path.glob("*.png")), f"{path.name}: wrote no PNG under --out"
