"""A Pyro user's ``pyro.param`` given to a distribution as a constant parameter is learned, as in plain Pyro.

Plain Pyro writes ``pyro.sample("x", dist.Normal(mu, 1.), obs=x)`` with ``mu = pyro.param("mu", ...)``; the same
model written with a pyro_dgm distribution built inside the model function, ``Normal(loc=mu, scale=1., var=["x"])``,
must send the gradient to ``mu`` (the constant stays attached to the tensor given, as in Pixyz).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_dgm.distributions import Normal


def _fit(model, x: torch.Tensor, steps: int = 300) -> dict[str, torch.Tensor]:
    pyro.clear_param_store()
    svi = SVI(model, lambda x: None, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x)
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def test_maximum_likelihood_with_a_param_as_the_loc_equals_plain_pyro() -> None:
    # no latent variable: the ELBO is log p(x) exactly, so both runs take the same deterministic Adam steps towards
    # the maximum-likelihood estimates mu = mean(x), sigma = std(x) (population form)
    x = torch.tensor([[0.5, -1.0], [1.5, 2.0], [2.5, 0.5], [3.5, 1.0]])

    def plain(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        sigma = pyro.param("sigma", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, sigma).to_event(1), obs=x)

    def ours(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        sigma = pyro.param("sigma", torch.ones(2), constraint=dist.constraints.positive)
        Normal(loc=mu, scale=sigma, var=["x"]).model(x=x)

    ref, got = _fit(plain, x), _fit(ours, x)
    assert set(ref) == set(got) == {"mu", "sigma"}
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])
    # and the run went somewhere: mu moved from 0 most of the way to the sample mean
    assert (got["mu"] - x.mean(0)).abs().max() < 0.5 * x.mean(0).abs().max()
