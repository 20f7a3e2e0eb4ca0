"""Pyro's other inference tools on a pyro_dgm joint: MCMC (NUTS) and the autoguides that are not mean-field.

Each runs on ``joint.model`` and on the same model written in plain Pyro, from the same seed: a pyro_dgm joint is
that Pyro model (the same sites, shapes and log-densities), so the two runs draw the same numbers. The posterior is
known in closed form (a Normal prior and a Normal likelihood), which checks that the runs are right, not only equal.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoLaplaceApproximation, AutoMultivariateNormal

from pyro_dgm.distributions import Normal

X = torch.tensor([[1.0, -1.0]])
SCALE = 0.5  # likelihood scale: the posterior is N(x / (1 + SCALE^2), SCALE^2 / (1 + SCALE^2)) per feature


def _joint():
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    return Normal(loc="z", scale=SCALE, var=["x"], cond_var=["z"], name="p") * prior


def _plain_pyro(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, SCALE).to_event(1), obs=x)


def test_nuts_on_a_joint_draws_what_it_draws_on_the_plain_pyro_model() -> None:
    joint = _joint()
    draws = []
    for model in (lambda x: joint.model(x=x), _plain_pyro):
        pyro.set_rng_seed(0)
        mcmc = MCMC(NUTS(model), num_samples=150, warmup_steps=100, disable_progbar=True)
        mcmc.run(X)
        draws.append(mcmc.get_samples()["z"])
    torch.testing.assert_close(draws[0], draws[1])
    mean = draws[0].reshape(-1, 2).mean(0)
    # the posterior sd is 0.45; 150 correlated draws leave the mean within about 0.1 of the exact one
    torch.testing.assert_close(mean, X[0] / (1 + SCALE ** 2), atol=0.3, rtol=0.0)


@pytest.mark.parametrize("guide_cls", [AutoMultivariateNormal, AutoIAFNormal, AutoLaplaceApproximation])
def test_an_autoguide_trains_on_a_joint_as_on_the_plain_pyro_model(guide_cls) -> None:
    joint = _joint()
    losses, draws, medians = [], [], []
    for model in (lambda x: joint.model(x=x), _plain_pyro):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = guide_cls(model, num_transforms=1) if guide_cls is AutoIAFNormal else guide_cls(model)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        losses.append([svi.step(X) for _ in range(150)])
        pyro.set_rng_seed(1)
        draws.append(torch.stack([guide(X)["z"].detach() for _ in range(200)]))
        if guide_cls is AutoMultivariateNormal:  # (the others have no median in Pyro)
            medians.append(guide.median(X)["z"].detach())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-6)
    torch.testing.assert_close(draws[0], draws[1])
    if medians:
        torch.testing.assert_close(medians[0], medians[1])
    if guide_cls is not AutoLaplaceApproximation:  # (its guide is a point mass until laplace_approximation())
        # after 150 Adam steps the guide's mass sits near the posterior mean (0.8, -0.8): the SVI noise and the
        # 200 draws' error (sd 0.45 / sqrt(200)) are about 0.1
        torch.testing.assert_close(draws[0].reshape(-1, 2).mean(0), X[0] / (1 + SCALE ** 2), atol=0.3, rtol=0.0)
