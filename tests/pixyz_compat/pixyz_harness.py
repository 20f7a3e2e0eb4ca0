"""Run one Pixyz program under ``pixyz==0.3.3`` and under pyro_dgm, with only the import renamed.

A *program* is a function with no arguments that imports what it needs from ``pixyz`` inside its body, exactly as a
Pixyz user writes it, and returns what it computed (tensors, numbers, shapes, strings, nested in dicts, lists or
tuples). :func:`run_both` calls it twice from the same random state: once against the real Pixyz, once with every
``pixyz`` import answered by the same-named module of ``pyro_dgm`` (:func:`renamed_import`). Nothing else changes.

>>> def program():
...     import torch
...     from pixyz.distributions import Normal
...     p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"])
...     return p.get_log_prob({"x": torch.zeros(2, 1)})
>>> ref, ours = run_both(program)
>>> assert_same(ref, ours)
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import random
import sys
from typing import Any, Callable, Iterator

import numpy as np
import pyro
import pytest
import torch

pixyz = pytest.importorskip("pixyz", reason="pixyz==0.3.3 (the test extra) is the reference these tests compare with")


class _Renamed(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import pixyz.X`` with ``pyro_dgm.X``; a path pyro_dgm lacks is a ModuleNotFoundError."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "pixyz" and not fullname.startswith("pixyz."):
            return None
        target_name = "pyro_dgm" + fullname[len("pixyz"):]
        if importlib.util.find_spec(target_name) is None:
            raise ModuleNotFoundError(f"No module named {target_name!r} (the pyro_dgm twin of {fullname!r})",
                                      name=fullname)
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module("pyro_dgm" + spec.name[len("pixyz"):])

    def exec_module(self, module: Any) -> None:
        pass


@contextlib.contextmanager
def renamed_import() -> Iterator[None]:
    """Within the block, ``pixyz`` and its submodules are pyro_dgm's."""
    saved = {k: v for k, v in sys.modules.items() if k == "pixyz" or k.startswith("pixyz.")}
    for k in saved:
        del sys.modules[k]
    finder = _Renamed()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k == "pixyz" or k.startswith("pixyz.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _reset(seed: int) -> None:
    pyro.clear_param_store()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_pixyz(program: Callable[[], Any], seed: int = 0) -> Any:
    """Run ``program`` against the real Pixyz 0.3.3."""
    _reset(seed)
    return program()


def run_pyro_dgm(program: Callable[[], Any], seed: int = 0) -> Any:
    """Run ``program`` with its ``pixyz`` imports renamed to ``pyro_dgm``."""
    _reset(seed)
    with renamed_import():
        return program()


def run_both(program: Callable[[], Any], seed: int = 0) -> tuple[Any, Any]:
    """``(Pixyz's result, pyro_dgm's result)`` of one program from the same random state."""
    return run_pixyz(program, seed), run_pyro_dgm(program, seed)


def assert_same(ref: Any, ours: Any, rtol: float = 1e-5, atol: float = 1e-6, path: str = "result") -> None:
    """Assert that two program results agree: tensors in value, shape and dtype (within ``rtol``/``atol``),
    numbers within the same tolerance, everything else by equality, recursively through dicts, lists and tuples."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{path}: Pixyz gives a tensor, pyro_dgm {type(ours).__name__}"
        assert ref.shape == ours.shape, f"{path}: shape {tuple(ref.shape)} under Pixyz, {tuple(ours.shape)} here"
        assert ref.dtype == ours.dtype, f"{path}: dtype {ref.dtype} under Pixyz, {ours.dtype} here"
        torch.testing.assert_close(ours.detach(), ref.detach(), rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{path}: {m}")
    elif isinstance(ref, dict):
        assert isinstance(ours, dict), f"{path}: Pixyz gives a dict, pyro_dgm {type(ours).__name__}"
        assert set(ref) == set(ours), f"{path}: keys {sorted(ref)} under Pixyz, {sorted(ours)} here"
        for k in ref:
            assert_same(ref[k], ours[k], rtol, atol, f"{path}[{k!r}]")
    elif isinstance(ref, (list, tuple)) and not isinstance(ref, torch.Size):
        assert isinstance(ours, (list, tuple)), f"{path}: Pixyz gives a sequence, pyro_dgm {type(ours).__name__}"
        assert len(ref) == len(ours), f"{path}: length {len(ref)} under Pixyz, {len(ours)} here"
        for i, (a, b) in enumerate(zip(ref, ours)):
            assert_same(a, b, rtol, atol, f"{path}[{i}]")
    elif isinstance(ref, float) and not isinstance(ref, bool):
        assert ours == pytest.approx(ref, rel=rtol, abs=atol, nan_ok=True), f"{path}: {ref} under Pixyz, {ours} here"
    else:
        assert ref == ours, f"{path}: {ref!r} under Pixyz, {ours!r} here"


def raises_same(program: Callable[[], Any]) -> tuple[type, type]:
    """Run a program that must fail under both libraries; return the two exception types."""
    kinds = []
    for run in (run_pixyz, run_pyro_dgm):
        with pytest.raises(Exception) as info:
            run(program)
        kinds.append(info.type)
    return kinds[0], kinds[1]


def same(program: Callable[[], Any], **kw: Any) -> tuple[Any, Any]:
    """Run ``program`` under both libraries and :func:`assert_same` the results; return them."""
    ref, ours = run_both(program)
    assert_same(ref, ours, **kw)
    return ref, ours


def docstring_vae() -> Any:
    """Pixyz's docstring VAE at small size: q(z|x), p(x|z), prior p(z)."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from pixyz.distributions import Bernoulli, Normal

    class Inference(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc1 = nn.Linear(6, 8)
            self.fc21 = nn.Linear(8, 2)
            self.fc22 = nn.Linear(8, 2)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            return {"loc": self.fc21(h), "scale": F.softplus(self.fc22(h))}

    class Generator(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc1 = nn.Linear(2, 8)
            self.fc2 = nn.Linear(8, 6)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc2(F.relu(self.fc1(z))))}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    return Inference(), Generator(), prior, x
