"""A fuzzer of Pyro programs built from pyro_dgm parts, against plain-Pyro twins (about 1,000 random models; one root
cause found), and Pyro's less-used machinery (round 4).

A model called without data takes its number of rows from the values a ``poutine.condition`` around it gives its
variables. It took dim 0 of each such value: a global latent conditioned on draws of shape ``[S, 1, D]`` (Pyro's
``Predictive(parallel=True)`` runs the model under a plate over the ``S`` samples) was taken for ``S`` rows of data,
and the call opened a data plate of size ``S``: the model's next call, on ``N`` rows, was refused, and where
``N == S`` the global latent was scored ``S`` times over. A factor without inputs knows its event dims: its rows are
the dim left of them (1 here: no plate), as in the plain-Pyro model.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive

from pyro_dgm.distributions import Normal


def _models(n: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A hierarchical model, global ``w`` then ``n`` rows of ``x`` given ``w``: pyro_dgm's, and its plain twin."""
    prior_w = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["w"])
    lik = Normal(loc="w", scale=1.0, var=["x"], cond_var=["w"])

    def ours(x: torch.Tensor) -> Any:
        w = prior_w.model()["w"]  # no data: a global site
        return lik.model(x=x, w=w)

    def twin(x: torch.Tensor) -> Any:
        w = pyro.sample("w", dist.Normal(torch.zeros(1, 2), 1.0).to_event(1))
        with pyro.plate("data", n, dim=-1):
            pyro.sample("x", dist.Normal(w, 1.0).to_event(1), obs=x)
    return ours, twin


@pytest.mark.parametrize("n", [5, 4])  # 4: as many rows as samples, which ran and scored w 4 times over
def test_predictive_in_parallel_over_a_global_latent_drawn_without_data(n: int) -> None:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    w = torch.randn(4, 1, 2, generator=torch.Generator().manual_seed(1))
    out = {}
    for name, model in zip(("ours", "twin"), _models(n)):
        pyro.set_rng_seed(3)
        out[name] = Predictive(model, posterior_samples={"w": w}, parallel=True)(x)
    assert {k: v.shape for k, v in out["ours"].items()} == {k: v.shape for k, v in out["twin"].items()}
    for k in out["twin"]:
        torch.testing.assert_close(out["ours"][k], out["twin"][k])


# (under a plate of 4 at dim -2, data of shape [4, 2] reads as [G, X], one row per group: not a case here)
@pytest.mark.parametrize("n, plate", [(5, True), (3, True), (5, False), (4, False)])
def test_a_model_conditioned_on_draws_of_a_global_latent_scores_it_once(n: int, plate: bool) -> None:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    w = torch.randn(4, 1, 2, generator=torch.Generator().manual_seed(1))
    traces = {}
    for name, model in zip(("ours", "twin"), _models(n)):
        with pyro.plate("samples", 4, dim=-2) if plate else contextlib.nullcontext():
            traces[name] = poutine.trace(poutine.condition(model, data={"w": w})).get_trace(x)
    for name in ("w", "x"):
        assert traces["ours"].nodes[name]["fn"].batch_shape == traces["twin"].nodes[name]["fn"].batch_shape
    # the closed form: sum over samples of log N(w_s; 0, I) plus sum over samples and rows of log N(x_n; w_s, I)
    nd = torch.distributions.Normal
    expected = nd(0.0, 1.0).log_prob(w).sum() + nd(w, 1.0).log_prob(x).sum()
    torch.testing.assert_close(traces["ours"].log_prob_sum(), expected)
    torch.testing.assert_close(traces["twin"].log_prob_sum(), expected)


def test_a_root_factor_conditioned_on_data_still_takes_its_rows() -> None:
    """``pyro.condition(p.model, data={"x": x})`` of a factor without inputs, on ``N`` rows: a data plate of ``N``
    (the dim left of the event dims is the data's, as dim 0 was)."""
    p = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"])
    x = torch.randn(6, 3)
    tr = poutine.trace(poutine.condition(p.model, data={"x": x})).get_trace()
    assert tr.nodes["x"]["is_observed"] and [f.size for f in tr.nodes["x"]["cond_indep_stack"]] == [6]
    torch.testing.assert_close(tr.log_prob_sum(), torch.distributions.Normal(0.0, 1.0).log_prob(x).sum())


def test_a_categorical_observed_in_a_pyro_model_scores_a_soft_label_by_its_arg_max() -> None:
    """porting.md: Pixyz scores a categorical value by its arg-max (``2 * onehot``, soft labels); a pyro_dgm model
    observing one does the same (the log-probability of the arg-max class), as its ``get_log_prob`` does."""
    from pyro_dgm.distributions import Categorical

    probs = torch.tensor([0.2, 0.3, 0.5])
    p = Categorical(probs=probs, var=["y"])
    y = torch.tensor([[0.0, 2.0, 0.0], [0.7, 0.2, 0.1]])
    tr = poutine.trace(p.model).get_trace(y=y)
    expected = probs.log()[torch.tensor([1, 0])].sum()
    torch.testing.assert_close(tr.log_prob_sum(), expected)
    torch.testing.assert_close(p.get_log_prob({"y": y}).sum(), expected)


@pytest.mark.parametrize("shape, features", [((3,), None), ((4, 3), None), ((2, 3), [2, 3])])
def test_a_root_value_without_a_batch_dim_is_one_example_in_a_pyro_model(shape: tuple[int, ...],
                                                                           features: list[int] | None) -> None:
    """``p.model(x=x)`` of a factor without inputs whose value is all feature dims (``x`` of ``(3,)`` for a ``loc``
    of ``(3,)``): it opened a data plate of ``x.shape[0]`` over it and scored it that many times; it is one example,
    as ``get_log_prob`` scores it (and as the model conditioned on ``x`` already did)."""
    if features is None:
        p = Normal(loc=torch.zeros(shape), scale=torch.ones(shape), var=["x"])
    else:
        p = Normal(loc=0.0, scale=1.0, var=["x"], features_shape=features)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum()
    for tr in (poutine.trace(p.model).get_trace(x=x),
               poutine.trace(poutine.condition(p.model, data={"x": x})).get_trace()):
        torch.testing.assert_close(tr.log_prob_sum(), expected)
    torch.testing.assert_close(p.get_log_prob({"x": x}).sum(), expected)
