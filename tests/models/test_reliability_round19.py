"""Errors of a failed step when the loss holds a user's term whose ``_symbol`` is a plain string (probe p487):
Pixyz runs such a term (only printing a sum of it needs a sympy expression), and so does pyro_dgm; but the error
messages that name the loss printed it, and sympy's ``TypeError`` for ``Symbol + str`` replaced the step's own
error (a missing variable, a non-finite gradient)."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import Loss
from pyro_dgm.models import Model, NonFiniteGradientError
from pyro_dgm.utils.checks import MissingVariableError


class _P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Linear(3, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 2)}


class _Zero(Loss):
    """A user's term, 0 in value, whose formula is the string ``u``."""

    def __init__(self, p: Any) -> None:
        super().__init__(p.input_var)
        self.p = p

    @property
    def _symbol(self) -> Any:
        return "u"

    def forward(self, x_dict: Any, **kwargs: Any) -> Any:
        return self.p.net.weight.sum() * 0, {}


def _model() -> tuple[Model, _P]:
    torch.manual_seed(0)
    p = _P()
    return Model((-p.log_prob()).mean() + _Zero(p), distributions=[p]), p


def test_a_missing_variable_is_named() -> None:
    model, _ = _model()
    with pytest.raises(MissingVariableError, match="missing input variable 'x'"):
        model.train({"y": torch.randn(8, 3)})


def test_a_non_finite_gradient_is_reported_and_the_weights_are_kept() -> None:
    model, p = _model()
    before = [w.detach().clone() for w in p.parameters()]
    p.net.bias.register_hook(lambda g: g * float("nan"))
    with pytest.raises(NonFiniteGradientError, match=r"net\.bias"):
        model.train({"y": torch.randn(8, 3), "x": torch.randn(8, 2)})
    assert all(torch.equal(a, b) for a, b in zip(before, p.parameters()))


def test_the_loss_prints_its_class_and_sympy_s_complaint_where_its_formula_does_not_print() -> None:
    """``repr`` and the f-strings of error messages show the class and sympy's complaint; ``str`` of the sum raises
    sympy's error, as Pixyz's does (the user asked to print it); the term alone prints as under Pixyz (sympy's
    LaTeX of a string)."""
    import sympy

    model, p = _model()
    assert str(_Zero(p)) == sympy.latex("u")
    assert repr(model.loss_cls).startswith("AddLoss (its formula does not print: TypeError")
    assert f"{model.loss_cls}" == repr(model.loss_cls)
    with pytest.raises(TypeError):
        str(model.loss_cls)


class _Unprintable(Loss):
    """A user's term whose ``_symbol`` raises (a typo in it, or its own error)."""

    def __init__(self, how: str, vector: bool = False) -> None:
        super().__init__(["x", "y"])
        self.how, self.vector = how, vector

    @property
    def _symbol(self) -> Any:
        if self.how == "raise":
            raise RuntimeError("my symbol failed")
        import sympy

        return sympy.Symbol(self.nmae)  # type: ignore[attr-defined]  (the typo)

    def forward(self, x_dict: Any, **kwargs: Any) -> Any:
        v = x_dict["x"].sum(-1) * 0
        return (v if self.vector else v.sum()), {}


@pytest.mark.parametrize("how", ["raise", "typo"])
def test_a_term_whose_formula_raises_trains_and_its_errors_keep_their_own_message(how: str) -> None:
    """Pixyz needs the formula only when the user prints it (p489: ours raised in ``Model.train`` for the
    terms' names, and a loss of shape (3,) got the symbol's error instead of its own)."""
    torch.manual_seed(0)
    p = _P()
    data = {"x": torch.randn(6, 2), "y": torch.randn(6, 3)}
    model = Model((-p.log_prob()).mean() + _Unprintable(how), distributions=[p],
                  optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    twin = _P()
    twin.load_state_dict(p.state_dict())
    first = -torch.distributions.Normal(twin.net(data["y"]), 1.0).log_prob(data["x"]).sum(-1).mean()
    assert float(model.train(data)) == pytest.approx(float(first), rel=1e-6)
    vector = Model((-p.log_prob()).mean() + _Unprintable(how, vector=True), distributions=[p])
    from pyro_dgm.utils.checks import ShapeError

    with pytest.raises(ShapeError, match="has shape"):
        vector.train(data)
    with pytest.raises(AttributeError if how == "typo" else RuntimeError):
        str(model.loss_cls)  # (printing, which the user asks for, raises as under Pixyz)
