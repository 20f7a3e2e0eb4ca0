"""Pyro users' models with several pyro_dgm calls in one Pyro model, against plain-Pyro twins (round 5 of probes).

A probe ported Pyro's tutorials and found:

- every ``model()``/``guide()`` call opened ``pyro.plate("data", ...)``, so a Pyro model with two calls (a global
  prior, then the likelihood; two priors; the README's ``Normal(...).model(x=x)`` on two data sets), with its own
  ``"data"`` plate after a call, or with a variable named ``data`` failed under any trace with Pyro's "Multiple
  sample sites named 'data'". A call now takes ``"data"`` when it is free in the model's trace, else
  ``"data_<variables>"``; a call without data (a global prior's one draw) always the latter;
- ``joint.model(X=x)`` (a typo for ``x=``) drew ``x`` instead of observing it, silently: now a warning names ``x``;
- ``guide(x, None)`` (Pyro's ``guide(xs, ys=None)`` idiom) passed None to the network: now None is "not given", so
  the guide names the missing input.

Every test trains or scores the pyro_dgm model and its plain-Pyro twin from the same seed and compares.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.utils.checks import MissingVariableError

X = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
Y = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))


def _svi(model: Callable[..., Any], guide: Callable[..., Any] | None = None, steps: int = 3) -> list[float]:
    """The losses of ``steps`` SVI steps (AutoNormal unless a guide is given), from seed 0."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide or AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    return [svi.step(X) for _ in range(steps)]


prior_w = Normal(loc=0., scale=1., var=["w"], features_shape=[2], name="p_w")
prior_b = Normal(loc=0., scale=1., var=["b"], features_shape=[2], name="p_b")
likelihood = Normal(loc="w", scale=1., var=["x"], cond_var=["w"])


def plain_prior_then_likelihood(x: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(w, 1.).to_event(1), obs=x)


def ours_prior_then_likelihood(x: torch.Tensor) -> None:
    w = prior_w.model()["w"]
    likelihood.model(x=x, w=w)


def ours_prior_then_a_users_data_plate(x: torch.Tensor) -> None:
    w = prior_w.model()["w"]
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(w, 1.).to_event(1), obs=x)


def plain_two_priors(x: torch.Tensor) -> None:
    pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
    pyro.sample("b", dist.Normal(torch.zeros(2), 1.).to_event(1))


def ours_two_priors(x: torch.Tensor) -> None:
    prior_w.model()
    prior_b.model()


@pytest.mark.parametrize("ours, plain", [(ours_prior_then_likelihood, plain_prior_then_likelihood),
                                         (ours_prior_then_a_users_data_plate, plain_prior_then_likelihood),
                                         (ours_two_priors, plain_two_priors)],
                         ids=["prior then likelihood", "prior then the user's data plate", "two priors"])
def test_several_calls_in_one_pyro_model_train_as_the_plain_pyro_twin(ours: Any, plain: Any) -> None:
    """AutoNormal on both: the global draws have Pixyz's batch dim of 1 here ((1, 2) where plain Pyro's are (2,)),
    which changes no number."""
    assert _svi(ours) == pytest.approx(_svi(plain), rel=1e-6)
    tr = poutine.trace(ours).get_trace(X)
    plates = {n for n, site in tr.nodes.items() if site["type"] == "sample" and site["fn"].__class__.__name__ ==
              "_Subsample"}
    assert plates <= {"data", "data_w", "data_b", "data_x"}


def test_the_readme_idiom_on_two_data_sets_trains_as_the_plain_pyro_twin() -> None:
    def plain(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        with pyro.plate("data_x", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.).to_event(1), obs=x)
        with pyro.plate("data_y", len(Y)):
            pyro.sample("y", dist.Normal(mu, 1.).to_event(1), obs=Y)

    def ours(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        Normal(loc=mu, scale=1., var=["x"]).model(x=x)
        Normal(loc=mu, scale=1., var=["y"]).model(y=Y)

    def no_guide(x: torch.Tensor) -> None:
        pass

    assert _svi(ours, no_guide) == pytest.approx(_svi(plain, no_guide), rel=1e-6)
    assert [f.name for f in poutine.trace(ours).get_trace(X).nodes["y"]["cond_indep_stack"]] == ["data_y"]


def test_a_variable_named_data_trains_as_the_plain_pyro_twin() -> None:
    loc = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_z")
    obs = Normal(loc="z", scale=1., var=["data"], cond_var=["z"])

    def plain(x: torch.Tensor) -> None:
        with pyro.plate("N", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))
            pyro.sample("data", dist.Normal(z, 1.).to_event(1), obs=x)

    def ours(x: torch.Tensor) -> None:
        (obs * loc).model(data=x)

    assert _svi(ours) == pytest.approx(_svi(plain), rel=1e-6)


def test_a_keyword_that_nearly_names_a_variable_warns_that_it_is_drawn() -> None:
    """``joint.model(X=x)``: a plain Python model raises "unexpected keyword argument 'X'"; ours drew x (a data
    plate of size 1) and trained on no data. Keywords that name nothing alike pass silently (SVI gives the model
    the guide's inputs too)."""
    joint = likelihood * prior_w
    with pytest.warns(UserWarning, match=r"p\(x,w\): the keyword 'X' names no variable; 'x' is not given, so it "
                                         r"is drawn, not observed \(did you mean x=\.\.\.\?\)"):
        joint.model(X=X)
    with pytest.warns(UserWarning, match=r"'image' names no variable; 'images' is not given"):
        Normal(loc=0., scale=1., var=["images"], features_shape=[2]).model(image=X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joint.model(x=X, annealing=0.5)


class _Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x", "y"], name="q")
        self.net = nn.Linear(4, 4)

    def forward(self, x, y):  # type: ignore[no-untyped-def]
        loc, scale = self.net(torch.cat([x, y], -1)).chunk(2, -1)
        return {"loc": loc, "scale": scale.exp()}


def test_none_for_an_input_is_a_missing_input_as_in_pyros_guide_idiom() -> None:
    """Pyro's ``guide(xs, ys=None)``: torch's "expected Tensor as element 1 ... got NoneType" came from inside
    ``forward``; None now means "not given", as leaving it out does."""
    q = _Q()
    for call in (lambda: q.guide(X, None), lambda: q.guide(x=X, y=None), lambda: q.model(x=X, y=None)):
        with pytest.raises(MissingVariableError, match=r"q\(z\|x,y\): missing input variable 'y'"):
            poutine.trace(call).get_trace()
    tr = poutine.trace(q.guide).get_trace(X, X.flip(0))  # given: drawn from it
    assert tr.nodes["z"]["value"].shape == (5, 2)
