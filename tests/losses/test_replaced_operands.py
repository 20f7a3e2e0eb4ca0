"""A loss whose operand or distribution is replaced, set to ``None`` or deleted after it was made (Pixyz's losses read
their attributes at each evaluation): what the formula caches about itself follows (probe p291). The reference is
the same formula built afresh with the new operand."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb, Parameter


def _terms() -> tuple[Any, Any, Any, dict[str, torch.Tensor]]:
    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    q = Normal(loc=torch.ones(2), scale=2 * torch.ones(2), var=["x"], name="q")
    a, b, c = (-p.log_prob()).mean().named("A"), (-q.log_prob()).mean().named("B"), (-p.log_prob()).sum().named("C")
    return a, b, c, {"x": torch.randn(4, 2, generator=torch.Generator().manual_seed(0))}


def _value_and_terms(loss: Any, values: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    value, terms = loss.eval(values, return_terms=True)
    return float(value), {k: float(v) for k, v in terms.items()}


@pytest.mark.parametrize("how", ["setattr", "add_module", "register_module"])
def test_return_terms_follow_an_operand_replaced_after_an_evaluation(how: str) -> None:
    """Probe p291: ``s = a + b``, evaluated with ``return_terms=True``, then ``s.loss2 = c``: the value was ``a + c``
    but the terms were ``{'A': ...}`` alone (the list of terms was cached as fixed once built). They are those of
    ``a + c`` built afresh now."""
    a, b, c, values = _terms()
    s = a + b
    assert set(_value_and_terms(s, values)[1]) == {"A", "B"}
    if how == "setattr":
        s.loss2 = c
    else:
        getattr(s, how)("loss2", c)
    assert _value_and_terms(s, values) == _value_and_terms(a + c, values)
    assert s.term_names == ["A", "C"]


def test_return_terms_leave_out_an_operand_set_to_none_which_counts_as_zero() -> None:
    a, b, _, values = _terms()
    s = a + b
    _value_and_terms(s, values)
    s.loss2 = None
    value, terms = _value_and_terms(s, values)
    assert terms == {"A": pytest.approx(_value_and_terms(a, values)[0])} and value == terms["A"]


def test_a_formula_of_parameters_only_that_gets_a_distributions_term_gives_a_tensor_as_built_afresh() -> None:
    """``Parameter("x") + Parameter("y")`` evaluates to the number computed from the given values (Pixyz's); with its
    second operand replaced by a log-density it gives the tensor that ``Parameter("x") + p.log_prob()`` gives; and a
    formula with a constant among its leaves, made of parameters only by a replacement, the number (the "parameters
    only" answer was cached once)."""
    p = Normal(loc=0., scale=1., var=["x"])
    s = Parameter("x") + Parameter("y")
    assert s.eval({"x": 2., "y": 3.}) == 5.
    s.loss2 = p.log_prob()
    x = torch.tensor([2.])
    fresh = (Parameter("x") + p.log_prob()).eval({"x": x})
    out = s.eval({"x": x, "y": 3.})  # (its input variables are those it was made with, as under Pixyz)
    assert isinstance(out, torch.Tensor) and isinstance(fresh, torch.Tensor)
    torch.testing.assert_close(out, fresh)
    torch.testing.assert_close(out, x + torch.distributions.Normal(0., 1.).log_prob(x))
    t = Parameter("x") * 2 + Parameter("y")  # a constant among its leaves: a tensor (the answer cached: no)
    assert isinstance(t.eval({"x": 2., "y": 3.}), torch.Tensor)
    t.loss1 = Parameter("x")  # parameters only now: the number, as built afresh
    assert t.eval({"x": 2., "y": 3.}) == (Parameter("x") + Parameter("y")).eval({"x": 2., "y": 3.}) == 5.
    assert not isinstance(t.eval({"x": 2., "y": 3.}), torch.Tensor)


def test_deleting_an_operand_of_a_compiled_loss_raises_pixyzs_attribute_error_as_eagerly() -> None:
    """Probe p291: after ``del loss.loss2``, a compiled loss raised ``'AddLoss' object has no attribute
    '_dgm_term_names'`` (an internal property whose own ``AttributeError`` ``nn.Module.__getattr__`` replaced); it
    raises what the eager loss and Pixyz raise, naming ``loss2``."""
    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    x = {"x": torch.zeros(3, 2)}
    messages = []
    for compiled in (False, True):
        loss = (-p.log_prob()).mean() + (-p.log_prob()).sum()
        if compiled:
            loss.compile(backend="eager")
        expected = -2 * torch.distributions.Normal(0., 1.).log_prob(torch.zeros(())) * (1 + 3)
        torch.testing.assert_close(loss.eval(x), expected)
        del loss.loss2
        with pytest.raises(AttributeError) as info:
            loss.eval(x)
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "'AddLoss' object has no attribute 'loss2'"


def test_replacing_a_terms_distribution_is_followed_by_the_terms_text_and_value() -> None:
    """``LogProb(p1).p = p2``: the term evaluates ``p2`` (as Pixyz's reads ``self.p``) and the top-level formula's
    term names follow, as the distributions' renamings do."""
    p1 = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="a")
    p2 = Normal(loc=torch.ones(2), scale=torch.ones(2), var=["x"], name="b")
    inner = LogProb(p1)
    loss = -inner.mean()
    x = {"x": torch.zeros(3, 2)}
    assert loss.term_names == [r"\log a(x)"]
    loss.eval(x)
    inner.p = p2
    assert loss.term_names == [r"\log b(x)"]
    torch.testing.assert_close(loss.eval(x), -(-LogProb(p2)).eval(x).neg().mean())
