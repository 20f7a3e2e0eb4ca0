"""Sixtieth round (probes p415, p416), under Pixyz and here (:mod:`pixyz_harness`):

* ``WassersteinDistance`` flattened each draw to ``(batch, features)`` before its metric: over a variable of
  feature shape ``(3, 2)`` the default metric gave one norm per row (4 values) where Pixyz's ``PairwiseDistance``
  gives one per row and leading feature (4 × 3), and a user's metric over dims ``(1, 2)`` raised ``IndexError``.
  The metric gets the draws as they are now. A scalar variable's default metric stays one distance per row, where
  Pixyz computes one norm of the batch's differences (porting.md).
* A value of the wrong kind given for a variable that is a parameter (``Normal(loc="x")`` given ``{"x": "abc"}``,
  also as an expert of a ``ProductOfNormal``) was blamed on the parameter or on the expert's ``forward()``: the
  error names the variable now.
* ``loss.num_particles = 7`` after construction (a Pyro user's habit) is a plain attribute under Pixyz and changed
  nothing here either, silently: it warns now, and still runs as under Pixyz.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm


def _wasserstein(xshape: tuple[int, ...], fshape: list[int], metric: Callable | None = None, grad: bool = False
                 ) -> Callable[[], Any]:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import WassersteinDistance

        p = Normal(loc="x", scale=torch.tensor(1e-3), var=["z"], cond_var=["x"], name="p")
        q = Normal(loc=torch.zeros(fshape), scale=torch.tensor(1e-3), var=["z"], name="q")
        w = WassersteinDistance(p, q) if metric is None else WassersteinDistance(p, q, metric=metric)
        x = torch.randn(*xshape).requires_grad_(grad)
        value = w.eval({"x": x})
        if grad:  # (Pixyz's draws are not reparameterized: no gradient there, porting.md)
            value.sum().backward()
        return {"value": value.detach(), "grad": x.grad, "next": torch.rand(2)}
    return program


@pytest.mark.parametrize("xshape, fshape", [((4, 3, 2), [3, 2]), ((4, 2, 3, 2), [2, 3, 2]), ((1, 3, 2), [3, 2]),
                                            ((4, 2), [2]), ((4, 1), [1])])
def test_wasserstein_default_metric_gets_the_draws_as_they_are(xshape: tuple[int, ...], fshape: list[int]) -> None:
    """``PairwiseDistance(p=2)`` of the draws: the norm over the last dim, one value per row and leading feature
    (shape ``xshape[:-1]``); the value and the next draw as Pixyz's. By hand: the scales are 1e-3, so the value is
    the norm of ``x`` over its last dim within about 1e-2, and its gradient (here, with the reparameterized draws)
    ``x`` over that norm."""
    ref, ours = run_both(_wasserstein(xshape, fshape))
    assert_same(ref, ours, rtol=1e-5, atol=1e-5)
    assert ours["value"].shape == xshape[:-1]
    torch.manual_seed(0)  # (the harness's seed: the first draw is x)
    x = torch.randn(*xshape)
    torch.testing.assert_close(ours["value"], x.norm(dim=-1), atol=2e-2, rtol=0)
    with_grad = run_pyro_dgm(_wasserstein(xshape, fshape, grad=True))
    torch.testing.assert_close(with_grad["grad"], x / x.norm(dim=-1, keepdim=True), atol=5e-2, rtol=0)


@pytest.mark.parametrize("name", ["abs_over_features", "squared_flattened"])
def test_wasserstein_user_metric_over_the_feature_dims(name: str) -> None:
    """A metric written for Pixyz's draws of shape ``(4, 3, 2)``: ``.sum(dim=(1, 2))`` raised ``IndexError`` here
    (the draws were ``(4, 6)``); both metrics give Pixyz's values and gradients."""
    metric = {"abs_over_features": lambda a, b: (a - b).abs().sum(dim=(1, 2)),
              "squared_flattened": lambda a, b: ((a - b) ** 2).flatten(1).sum(-1)}[name]
    ref, ours = run_both(_wasserstein((4, 3, 2), [3, 2], metric))
    assert_same(ref, ours, rtol=1e-5, atol=1e-5)
    assert ours["value"].shape == (4,)


def test_wasserstein_of_a_scalar_variable_is_one_distance_per_row() -> None:
    """Draws of shape ``(4,)``: Pixyz's ``PairwiseDistance`` reads them as one vector and returns the norm of the
    batch's differences (a scalar, no estimate of E|x_p - x_q|); here one distance per row, ``|x_i - 0|`` within
    the scales' 1e-3, whose mean estimates W'. A user's metric gets the ``(4,)`` draws as under Pixyz."""
    ref, ours = run_both(_wasserstein((4,), []))
    torch.manual_seed(0)
    x = torch.randn(4)
    assert ref["value"].shape == () and ours["value"].shape == (4,)
    torch.testing.assert_close(ref["value"], x.norm(), atol=1e-2, rtol=0)  # (Pixyz's: what the docs say it does)
    torch.testing.assert_close(ours["value"], x.abs(), atol=1e-2, rtol=0)
    assert torch.equal(ref["next"], ours["next"])
    ref, ours = run_both(_wasserstein((4,), [], lambda a, b: (a - b).abs() * (a.dim() == 1)))
    assert_same(ref, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["normal", "product"])
def test_a_variable_given_as_text_is_named(kind: str) -> None:
    """``Normal(loc="x")`` given ``{"x": "abc"}`` (alone, or as the expert of a ``ProductOfNormal``): Pixyz raises
    torch's ``ValueError`` (alone) or ``TypeError`` (the product's stacking); here an error of both types, whose
    text names the variable ``'x'`` and the parameter it feeds (it named the parameter alone, or blamed the
    expert's ``forward()``)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ProductOfNormal

        q = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q")
        d = q if kind == "normal" else ProductOfNormal([q])
        try:
            d.sample({"x": "abc"})
        except Exception as e:
            return {"value_error": isinstance(e, ValueError), "type_error": isinstance(e, TypeError), "text": str(e)}
        return {}

    ref, ours = run_both(program)
    assert ref["value_error"] == (kind == "normal") and ref["type_error"] == (kind == "product")
    assert ours["value_error"] and ours["type_error"]
    assert "the value of 'x' (given as parameter loc) is builtins.str" in ours["text"]
    assert "forward()" not in ours["text"]


def test_num_particles_set_after_construction_warns_and_changes_nothing() -> None:
    """A Pixyz program setting ``loss.num_particles = 7`` (a plain attribute there) runs with the same value and
    gradient; here it warns that the option has no effect, naming the class and the option (value 1 and
    ``vectorize_particles = False`` do not warn)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        loc = torch.tensor([0.5, -1.], requires_grad=True)
        q = Normal(loc=loc, scale=torch.tensor(0.7), var=["z"], name="q")
        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
        kl = KullbackLeibler(q, p)
        kl.num_particles = 7
        value = kl.eval().sum()
        value.backward()
        return {"value": value.detach(), "grad": loc.grad, "particles": kl.num_particles}

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ref, ours = run_both(program)
    assert_same(ref, ours)
    texts = [str(w.message) for w in seen if "num_particles" in str(w.message)]
    assert len(texts) == 1 and "KullbackLeibler.num_particles = 7 has no effect" in texts[0]
    # by hand: KL(N(m, 0.7) || N(0, 1)) summed over the two features, and its gradient m
    m = torch.tensor([0.5, -1.])
    expected = (-torch.log(torch.tensor(0.7)) + (0.49 + m ** 2) / 2 - 0.5).sum()
    torch.testing.assert_close(ours["value"], expected)
    torch.testing.assert_close(ours["grad"], m)

    def defaults() -> Any:
        from pixyz.distributions import Normal

        loss = Normal(loc=0., scale=1., var=["x"]).log_prob().mean()
        loss.num_particles = 1
        loss.vectorize_particles = False
        return loss.num_particles

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_pyro_dgm(defaults) == 1
