"""A notebook cell that trains with ``SVI`` and raises, fixed and run again (p78).

The Python prompt and IPython keep the last uncaught error's traceback (``sys.last_traceback``, ``sys.last_exc``)
for the debugger; its frames hold the distributions of the failed run. The rerun rebuilds them under the same Pyro
names, which a distribution still in use would not be allowed to take: those held only by that traceback are not
in use. Before, every rerun was refused until ``pyro.clear_param_store()``; plain Pyro takes the rerun (its rebuilt
network silently does not train, which ours does).
"""
from __future__ import annotations

import sys
from typing import Any, Iterator

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal


class _Failing(Exception):
    pass


def _cell(fail: bool) -> tuple[float, Any]:
    """The cell: build a small VAE, take one SVI step; with ``fail``, the encoder raises in the second step."""
    state = {"fail": False}

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.loc, self.scale = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            if state["fail"]:
                raise _Failing("the encoder's bug")
            return {"loc": self.loc(x), "scale": nn.functional.softplus(self.scale(x)) + 1e-3}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    torch.manual_seed(0)
    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    x = torch.bernoulli(torch.full((5, 4), 0.5), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    loss = svi.step(x=x)
    state["fail"] = fail
    torch.manual_seed(2)
    loss = svi.step(x=x)
    return loss, q


@pytest.fixture
def prompt() -> Iterator[None]:
    """What the prompt keeps of an uncaught error, put back afterwards."""
    pyro.clear_param_store()
    saved = {k: getattr(sys, k, None) for k in ("last_type", "last_value", "last_traceback", "last_exc")}
    yield
    for k, v in saved.items():
        setattr(sys, k, v)
    pyro.clear_param_store()


def _keep(e: BaseException) -> None:
    sys.last_type, sys.last_value, sys.last_traceback = type(e), e, e.__traceback__
    if sys.version_info >= (3, 12):
        sys.last_exc = e


def test_a_cell_run_again_after_an_error_takes_the_names_back(prompt: None) -> None:
    clean, _ = _cell(False)
    pyro.clear_param_store()
    try:
        _cell(True)
    except _Failing as e:
        _keep(e)
    again, _ = _cell(False)  # the cell, fixed, run again while the prompt keeps the traceback
    assert again == pytest.approx(clean, rel=1e-6)


def test_a_distribution_still_in_use_keeps_its_names(prompt: None) -> None:
    try:
        _, kept = _cell(True)  # (never returns)
    except _Failing as e:
        _keep(e)
    _, q = _cell(False)  # the failed run's q is only in the traceback: this one takes the names
    with pytest.raises(ValueError, match="another live distribution"):
        _cell(False)  # q, still held here, is live: a third one under its names is refused
    assert q is not None


def test_the_old_distribution_is_judged_once_per_registration(prompt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each judgement scans the heap (gc.get_referrers): one per old distribution, not one per parameter (p81: a
    model of 100 layers took 99 s to run again)."""
    import pyro_dgm.distributions.base as base

    calls = []
    judge = base._only_in_last_error
    monkeypatch.setattr(base, "_only_in_last_error", lambda ref: calls.append(ref) or judge(ref))
    try:
        _cell(True)
    except _Failing as e:
        _keep(e)
    calls.clear()
    _cell(False)
    assert len(calls) == 2  # q (4 parameters) and p (2)
