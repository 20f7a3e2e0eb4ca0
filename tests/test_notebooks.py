"""The tutorial notebooks (``docs/tutorials/*.ipynb``) execute without error.

Each notebook runs in a fresh Jupyter kernel (the ``python3`` kernel of the interpreter running the tests, which is
ipykernel's own when no other is installed) in a temporary working directory, with the repository on ``PYTHONPATH``
(so an uninstalled checkout works) and ``PYRO_DGM_SMOKE=1``, which every notebook reads in its first cell to train
for a few steps only. A cell that raises fails the test with the cell's traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))
TIMEOUT = 300  # seconds per cell; a smoke run takes a few seconds per notebook


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 7, [n.name for n in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} is stored with outputs; clear them (jupyter nbconvert --clear-output --inplace)"
    monkeypatch.setenv("PYRO_DGM_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the networks are small: one intra-op thread each is fastest and does not fight the test runner for the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    # one more cell, run last: which environment the kernel ran in
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed\n{err}", pytrace=False)
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert kernel_prefix == sys.prefix, f"the python3 kernel ran in {kernel_prefix}, not in {sys.prefix}"
