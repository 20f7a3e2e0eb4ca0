"""Loss arithmetic equals arithmetic on the evaluated values; LaTeX text follows the user's order."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import (E, KullbackLeibler, LogProb, Loss, MaxLoss, MinLoss, Parameter, ValueLoss,
                             ConstantVar)

finite = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)
nonzero = finite.filter(lambda v: abs(v) > 1e-2)


@settings(max_examples=60, deadline=None)
@given(a=finite, b=nonzero, c=finite, x=finite, y=nonzero)
def test_operators_equal_arithmetic_on_values(a: float, b: float, c: float, x: float, y: float) -> None:
    """Float64 values; the numbers of the formula are float32 buffers (Pixyz's ``ValueLoss``), so the expected
    values use them rounded to float32."""
    X, Y = Parameter("x"), Parameter("y")
    values = {"x": torch.tensor(x, dtype=torch.float64), "y": torch.tensor(y, dtype=torch.float64)}
    a, b, c = (float(torch.tensor(v, dtype=torch.float32)) for v in (a, b, c))
    cases = [
        (X + a, x + a), (a + X, a + x), (X - a, x - a), (a - X, a - x), (X * a, x * a), (a * X, a * x),
        (X / b, x / b), (a / Y, a / y), (-X, -x), (abs(X - c), abs(x - c)), (X.abs(), abs(x)),
        ((X + a) * (Y - c) / b, (x + a) * (y - c) / b), (-(X - Y) + a * X, -(x - y) + a * x),
        (abs(Y) ** 0.5, abs(y) ** 0.5), (2 ** (X / 50), 2 ** (x / 50)), (X ** 2, x ** 2),
        (MinLoss(X, Y), min(x, y)), (MaxLoss(X, a), max(x, a)), (X - torch.tensor(c, dtype=torch.float64), x - c),
    ]
    for loss, expected in cases:
        got = loss.eval(values)
        assert math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-9), (str(loss), float(got), expected)


def test_tensor_operands_broadcast_and_mean_sum() -> None:
    X = Parameter("x")
    w = torch.tensor([1., 2., 3.])
    x = torch.tensor([4., 5., 6.])
    assert torch.equal((X * w).eval({"x": x}), x * w)
    assert torch.equal((w * X).eval({"x": x}), w * x)  # Tensor.__mul__ defers to Loss.__rmul__
    assert float((X * w).mean().eval({"x": x})) == pytest.approx(float((x * w).mean()))
    assert float((X * w).sum().eval({"x": x})) == pytest.approx(float((x * w).sum()))


def test_distribution_terms_compose_like_their_values() -> None:
    q = Normal(loc="x", scale=2., var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[3], name="p_{prior}")
    lp = LogProb(prior)
    values = {"x": torch.randn(5, 3), "z": torch.randn(5, 3)}
    kl = KullbackLeibler(q, prior)
    loss = (3 * kl - lp / 2) ** 2
    expected = (3 * kl.eval(values) - lp.eval(values) / 2) ** 2
    assert torch.allclose(loss.eval(values), expected)
    assert loss.input_var == ["x", "z"]  # the union of the children, in order


def test_input_var_is_ordered_union() -> None:
    loss = Parameter("b") + Parameter("a") * Parameter("b") - Parameter("c")
    assert loss.input_var == ["b", "a", "c"]


def test_constant_var_fixes_inputs() -> None:
    loss = ConstantVar(Parameter("x") * Parameter("y") * Parameter("w"), {"y": 3.})
    assert loss.input_var == {"x", "w"}  # a set, as Pixyz's (pixyz_compat/test_pixyz_suite_losses.py)
    assert list(loss.input_var) == ["x", "w"] and repr(loss.input_var) == "{'x', 'w'}"  # iterated in a fixed order
    assert (loss + Parameter("a")).input_var == ["x", "w", "a"]
    assert float(loss.eval({"x": 2., "w": 1.})) == 6.0


def test_value_loss_and_loss_is_a_pyro_elbo() -> None:
    import pyro.infer

    assert isinstance(ValueLoss(2) + 1, pyro.infer.ELBO)
    assert float((ValueLoss(2) + 1).eval()) == 3.0


def test_return_dict_semantics() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    x = torch.zeros(4, 1)
    loss = E(q, LogProb(p)).mean()
    value, out = loss.eval({"x": x, "extra": 1}, return_dict=True)
    assert set(out) == {"x", "extra", "z"} and out["x"] is x  # return_all keeps the given values
    value, only = loss.eval({"x": x, "extra": 1}, return_dict=True, return_all=False)
    assert set(only) == {"z"}


def test_return_terms_reports_top_level_terms() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[1], name="p_{prior}")
    kl = KullbackLeibler(q, prior)
    reconst = -E(q, LogProb(p))
    loss = (kl + 0.5 * reconst.named("reconst")).mean()
    x = torch.randn(6, 1)
    value, terms = loss.eval({"x": x}, return_terms=True)
    assert list(terms) == [kl.loss_text, "reconst"]
    assert torch.allclose(terms[kl.loss_text], kl.eval({"x": x}))
    assert torch.allclose(value, (terms[kl.loss_text] + 0.5 * terms["reconst"]).mean())  # the same evaluation
    assert not terms["reconst"].requires_grad


def test_latex_of_the_readme_vae_loss(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, _ = vae
    reconst = -E(q, LogProb(p))
    kl = KullbackLeibler(q, prior)
    assert str((kl + reconst).mean()) == (r"mean \left(D_{KL} \left[q(z|x)||p_{prior}(z) \right] - "
                                          r"\mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] \right)")
    assert (kl + reconst).mean()._repr_latex_().startswith("$$mean")
    # str() is Pixyz's text (sympy orders the terms: Pixyz prints "- D_KL - E"); .latex keeps the user's order
    assert str((reconst - kl).mean()) == (r"mean \left(- D_{KL} \left[q(z|x)||p_{prior}(z) \right] - "
                                          r"\mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] \right)")
    assert (reconst - kl).mean().latex == (r"mean \left(- \mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] - "
                                           r"D_{KL} \left[q(z|x)||p_{prior}(z) \right] \right)")
    assert str(p.log_prob().expectation(q)) == r"\mathbb{E}_{q(z|x)} \left[\log p(x|z) \right]"


def test_latex_parentheses_by_precedence(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, _ = vae
    kl = KullbackLeibler(q, prior)
    beta = Parameter("beta")
    lp = LogProb(p)
    str = lambda loss: loss.latex  # noqa: E731  (the hand-built text, in the user's order; str() is sympy's, Pixyz's)
    assert str(beta * kl) == r"beta D_{KL} \left[q(z|x)||p_{prior}(z) \right]"
    assert str(beta * (lp - kl)) == (r"beta \left(\log p(x|z) - D_{KL} \left[q(z|x)||p_{prior}(z) \right]\right)")
    assert str(lp - (lp + beta)) == r"\log p(x|z) - \left(\log p(x|z) + beta\right)"
    assert str(lp - -beta) == r"\log p(x|z) - \left(- beta\right)"
    assert str(lp ** 2) == r"\left(\log p(x|z)\right)^{2}"
    assert str((lp + 1) / beta) == r"\frac{\log p(x|z) + 1}{beta}"
    assert str(-(lp + 1)) == r"- \left(\log p(x|z) + 1\right)"
    assert str(lp + (-2)) == r"\log p(x|z) - 2"
    assert str(lp.sum()) == r"sum \left(\log p(x|z) \right)"
    assert str(abs(lp)) == r"|\log p(x|z)|"


def test_every_loss_is_a_loss(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    lp, pr = p.log_prob(), p.prob()
    assert isinstance(lp, Loss) and isinstance(pr, Loss)
    # their values: torch's Bernoulli density at the decoder's probabilities, and they compose like any loss
    z = torch.randn(x.shape[0], 2)
    ref = torch.distributions.Bernoulli(probs=torch.sigmoid(p.net(z))).log_prob(x).sum(-1)
    values = {"x": x, "z": z}
    assert torch.allclose(lp.eval(values), ref, atol=1e-5)
    assert torch.allclose(pr.eval(values), ref.exp(), atol=1e-6)
    assert torch.allclose((2 * lp - pr).mean().eval(values), (2 * ref - ref.exp()).mean(), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(numbers=st.lists(st.sampled_from([2, 3, 0.5, 10]), min_size=1, max_size=4), x=finite)
def test_latex_of_numbers_multiplied_never_puts_two_numbers_side_by_side(numbers: list[float], x: float) -> None:
    """``2 * (3 * d)`` printed ``2 3 d``, which reads as 23 d (probe p200): a factor whose text starts with a number
    is joined by ``\\cdot``. Every number printed must be followed by an operator, a variable or the end, and the
    value must be the product."""
    import re

    d = Parameter("d")
    loss, value = d, x
    for n in numbers:
        loss, value = n * loss, n * value
    assert not re.search(r"[0-9.] +[0-9.]", loss.latex), loss.latex
    assert loss.latex.count(r"\cdot") == len(numbers) - 1
    assert float(loss.eval({"d": torch.tensor(x, dtype=torch.float64)})) == pytest.approx(value, rel=1e-6, abs=1e-6)


def test_latex_of_a_number_times_a_product_that_starts_with_a_number() -> None:
    d = Parameter("d")
    assert (2 * (ValueLoss(3) * d)).latex == r"2 \cdot 3 d"
    assert (3 * (3 * (5 - d))).latex == r"3 \cdot 3 \left(5 - d\right)"
    assert (2 * d).latex == "2 d" and (d * 2).latex == r"d \cdot 2"  # (unchanged)
