"""Pyro's weighting handlers around pyro_dgm's own training and evaluation (a fault-injection probe, round 3).

``poutine.scale``, ``poutine.mask`` and a subsampling ``pyro.plate`` around ``Model.train`` or ``Loss.eval`` were
ignored silently: the loss and the step were those without the handler, where Pyro's own ELBOs (the plain-Pyro twin
below) scale the sites they reach, and where ``SVI.step`` over the same pyro_dgm loss already refused them. They are
refused now, naming the loss and the handler; a plate that does not subsample (it scales by 1) is let through.
"""
from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.fc = nn.Linear(2, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(y), "scale": torch.ones_like(y)}


DATA = {"y": torch.randn(8, 2, generator=torch.Generator().manual_seed(1)),
        "x": torch.randn(8, 2, generator=torch.Generator().manual_seed(2))}

HANDLERS: dict[str, tuple[Callable[[], Any], str]] = {
    "scale": (lambda: poutine.scale(scale=0.5), r"poutine\.scale"),
    "mask": (lambda: poutine.mask(mask=torch.tensor(False)), r"poutine\.mask"),
    "subsampling plate": (lambda: pyro.plate("b", 16, subsample_size=8),
                          r"pyro\.plate\('b'\) \(a subsample of 8 of 16"),
}


def _pyro_twin_loss(p: P) -> torch.Tensor:
    """The same negative log-likelihood as a plain-Pyro model under Trace_ELBO (no latent variable)."""
    def model() -> None:
        with pyro.plate("data", 8):
            pyro.sample("x", dist.Normal(p.fc(DATA["y"]), 1.0).to_event(1), obs=DATA["x"])
    return Trace_ELBO().differentiable_loss(model, lambda: None)


@pytest.mark.parametrize("name", list(HANDLERS))
def test_a_weighting_handler_around_train_or_eval_is_refused_where_pyro_would_weight(name: str) -> None:
    handler, named = HANDLERS[name]
    p = P()
    loss = -p.log_prob().sum()
    if name == "scale":  # what the handler means to Pyro: its ELBO's value is weighted (ignoring it is wrong)
        with handler():
            weighted = _pyro_twin_loss(p)
        torch.testing.assert_close(weighted, 0.5 * _pyro_twin_loss(p))
        torch.testing.assert_close(_pyro_twin_loss(p), loss.eval(DATA))
    model = Model(loss, distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    w = p.fc.weight.detach().clone()
    for call in (lambda: model.train(DATA), lambda: loss.eval(DATA), lambda: model.test(DATA)):
        with handler(), pytest.raises(ValueError, match=rf"NegLoss .*log p\(x\|y\).*: evaluated inside {named}"):
            call()
    assert torch.equal(p.fc.weight, w) and model.step == 0


def test_a_plate_that_does_not_subsample_is_let_through() -> None:
    p = P()
    loss = -p.log_prob().sum()
    with pyro.plate("b", 8):
        inside = loss.eval(DATA)
    torch.testing.assert_close(inside, loss.eval(DATA))
    torch.testing.assert_close(inside, _pyro_twin_loss(p))  # Pyro's plate of 8 of 8 weights by 1
