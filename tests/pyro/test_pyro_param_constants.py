"""A Pyro user's ``pyro.param`` given to a distribution as a constant parameter is learned, as in plain Pyro.

Plain Pyro writes ``pyro.sample("x", dist.Normal(mu, 1.), obs=x)`` with ``mu = pyro.param("mu", ...)``; the same
model written with a pyro_dgm distribution built inside the model function, ``Normal(loc=mu, scale=1., var=["x"])``,
must send the gradient to ``mu`` (the constant stays attached to the tensor given, as in Pixyz).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
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


X = torch.tensor([[0.5, -1.0], [1.5, 2.0], [2.5, 0.5], [3.5, 1.0]])
LIKELIHOOD = Normal(loc="mu", scale=torch.ones(2), var=["x"], cond_var=["mu"])


def _latent_as_a_constant(x: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.).to_event(1))
    Normal(loc=mu, scale=torch.ones(2), var=["x"]).model(x=x)


def _latent_as_an_input(x: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.).to_event(1))
    LIKELIHOOD.model(x=x, mu=mu)


@pytest.mark.parametrize("model, vectorize", [(_latent_as_a_constant, False), (_latent_as_an_input, True)],
                         ids=["constant", "input-vectorized"])
def test_a_global_latent_in_the_likelihood_gets_the_conjugate_posterior(model, vectorize: bool) -> None:
    # mu ~ N(0, I), x_i | mu ~ N(mu, I), n points: the posterior of mu is N(sum(x) / (n + 1), I / (n + 1)). The
    # likelihood is a pyro_dgm Normal whose loc is the sampled mu: its gradient must reach mu (and so the guide).
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.995}),
              Trace_ELBO(num_particles=8, vectorize_particles=vectorize, max_plate_nesting=1))
    for _ in range(500):
        svi.step(X)
    loc, scale = guide.locs.mu.detach(), guide.scales.mu.detach()
    # tolerance: 8 particles and a decayed learning rate leave the estimates within a few hundredths (0.06 ~ 0.13 of
    # the posterior's standard deviation, 1/sqrt(5) = 0.45); a detached loc leaves them at the prior, N(0, 1)
    torch.testing.assert_close(loc, X.sum(0) / (len(X) + 1), atol=0.06, rtol=0)
    torch.testing.assert_close(scale, torch.full((2,), (len(X) + 1) ** -0.5), atol=0.06, rtol=0)


def test_a_constant_with_a_plate_dim_is_refused_naming_the_plate() -> None:
    # under vectorize_particles the sampled mu has shape (8, 1, 2): as a constant it would be 8 x 2 features, and the
    # likelihood of each particle would sum over all of them; refused, with the input form as the fix
    svi = SVI(_latent_as_a_constant, lambda x: pyro.sample("mu", dist.Normal(torch.zeros(2), 1.).to_event(1)),
              pyro.optim.Adam({"lr": 0.05}), Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1))
    with pytest.raises(ValueError, match=r"Normal p\(x\): constant parameter loc has shape \(8, 1, 2\).*"
                                         r"'num_particles_vectorized' \(size 8.*cond_var=\['<name>'\]"):
        svi.step(X)
