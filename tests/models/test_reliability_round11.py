"""Reliability, round 11.

- ``Model.save("runs/")`` (or ``"runs/."``), a path that names a folder, wrote a file named ``runs`` (the path was
  resolved to ``runs``); Pixyz's ``torch.save`` raises a ``RuntimeError`` ("invalid file name") and writes nothing. Refused now, with a ``CheckpointPathError`` (a ``FileNotFoundError`` and that ``RuntimeError``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import raises_same, run_pyro_dgm  # noqa: E402


def _save(path: str) -> None:
    from pixyz.distributions import Normal
    from pixyz.models import Model

    p = Normal(loc="y", scale=1., var=["x"], cond_var=["y"], name="p")
    p.fc = torch.nn.Linear(1, 1)
    model = Model(-p.log_prob().mean(), distributions=[p])
    model.save(path)


@pytest.mark.parametrize("end", [os.sep, os.sep + ".", os.sep + "." + os.sep], ids=["sep", "dot", "dot-sep"])
@pytest.mark.parametrize("exists", [False, True], ids=["new", "existing"])
def test_a_path_that_names_a_folder_is_refused_and_writes_nothing(tmp_path: Path, exists: bool, end: str) -> None:
    folder = tmp_path / "runs"
    if exists:
        folder.mkdir()
    path = str(folder) + end
    ref, ours = raises_same(lambda: _save(path))
    assert issubclass(ours, ref) and issubclass(ours, FileNotFoundError)
    with pytest.raises(RuntimeError, match=r"Model.save: the path .*runs/.* names a folder"):
        run_pyro_dgm(lambda: _save(path))
    assert [p.name for p in tmp_path.iterdir()] == (["runs"] if exists else [])  # (was: a file named runs)
    assert not exists or not list(folder.iterdir())


def test_a_file_path_without_a_separator_still_saves(tmp_path: Path) -> None:
    run_pyro_dgm(lambda: _save(str(tmp_path / "runs")))
    assert (tmp_path / "runs").is_file()
