"""Pyro-side findings of the fifty-first round (probe p361): a scalar pyro_dgm ``Bernoulli`` enumerated in a model
by ``TraceEnum_ELBO`` gives the plain-Pyro twin's loss and gradients (what ``porting.md`` says), and observed data
that carries a dim of Pyro's vectorized particles is refused naming that plate; values that ``poutine.condition``
gives a site, and 0-dim data, are checked as observed values (probe p364)."""
from __future__ import annotations

import re

import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.utils.checks import ShapeError


class PX(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(1, 2)

    def forward(self, z: torch.Tensor) -> dict:
        return {"loc": self.fc(z.unsqueeze(-1)), "scale": torch.ones(1, 2)}


def test_a_scalar_bernoulli_enumerated_in_the_model_gives_the_plain_pyro_loss_and_gradients() -> None:
    """``p(x|z) p(z)`` with ``z`` a scalar Bernoulli enumerated in parallel: the loss and the decoder's gradients
    are those of the hand-written model (``pyro.plate`` over the data, ``infer={"enumerate": "parallel"}``), and the
    loss is the exact marginal likelihood, -sum_i log sum_z p(z) p(x_i|z), computed here by hand."""
    torch.manual_seed(0)
    px, x = PX(), torch.randn(4, 2)
    pz = Bernoulli(probs=torch.tensor(0.3), var=["z"], name="p_z", infer={"enumerate": "parallel"})
    joint = px * pz

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", 4, dim=-1):
            z = pyro.sample("z", pdist.Bernoulli(torch.tensor(0.3)), infer={"enumerate": "parallel"})
            pyro.sample("x", pdist.Normal(px.fc(z.unsqueeze(-1)), 1.).to_event(1), obs=x)

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    losses, grads = [], []
    for model in (twin, lambda x: joint.model(x=x)):
        px.zero_grad()
        loss = elbo.differentiable_loss(model, lambda x: None, x)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in px.fc.parameters()])
    torch.testing.assert_close(losses[1], losses[0])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        per_z = torch.stack([pdist.Normal(px.fc(torch.full((4, 1), v)), 1.).log_prob(x).sum(-1) for v in (0., 1.)])
        exact = -torch.logsumexp(per_z + torch.tensor([0.7, 0.3]).log().unsqueeze(-1), 0).sum()
    torch.testing.assert_close(losses[1], exact)


def test_observed_data_with_a_vectorized_particle_dim_is_refused_naming_the_plate() -> None:
    """Data computed from a global latent (``x * b.exp()``) has a dim for each of Pyro's vectorized particles; the
    model reads the data's dim 0 as its batch, so the shapes disagree. It is refused (plain Pyro runs it), and the
    error now says why and what runs instead; one particle at a time gives plain Pyro's loss."""
    pb = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["b"], features_shape=[1], name="p_b")
    px = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="p_x")
    x = torch.randn(4, 2)

    def ours(x: torch.Tensor) -> None:
        b = pb.model()["b"]
        px.model(x=x * b.exp())

    def twin(x: torch.Tensor) -> None:
        b = pyro.sample("b", pdist.Normal(torch.zeros(1, 1), 1.).to_event(1))
        with pyro.plate("data", 4, dim=-1):
            pyro.sample("x", pdist.Normal(torch.zeros(2), 1.).to_event(1), obs=x * b.exp())

    pyro.clear_param_store()
    with pytest.raises(ShapeError, match=r"p_\{x\}\(x\): the value of 'x' has shape \(3, 4, 2\).*plate "
                                         r"'num_particles_vectorized'.*vectorize_particles=False"):
        Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(
            ours, AutoNormal(ours), x)
    values = []
    for model in (twin, ours):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        values.append(Trace_ELBO(num_particles=3, max_plate_nesting=1).differentiable_loss(model, AutoNormal(model), x))
    torch.testing.assert_close(values[1], values[0])


class PD(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.f = nn.Linear(2, 3)

    def forward(self, z: torch.Tensor) -> dict:
        return {"loc": self.f(z), "scale": torch.ones(z.shape[:-1] + (3,))}


@pytest.mark.parametrize("shape", [(4, 1), (1, 1), (1,), ()])
def test_a_conditioned_value_without_the_features_is_refused_as_an_observed_one(shape: tuple) -> None:
    """Probe p364: a value that ``poutine.condition`` gives ``x`` (3 features) with a feature dim of size 1, or
    none, was scored once per feature with no error (the site's log-density of ``(4, 1)`` was each ``x[b, 0]``
    scored against all 3 features), where the same value given as data or to ``get_log_prob`` is refused. It is
    refused now, naming the distribution, the variable and the expected shape; a value with the features is scored
    as the plain-Pyro twin scores it."""
    p = PD()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    joint = p * prior
    with pytest.raises(ShapeError, match=r"PD p\(x\|z\): the value of 'x' has shape " + re.escape(str(tuple(shape)))
                       + r".*feature shape \(3,\)"):
        pyro.poutine.trace(pyro.poutine.condition(joint.model, data={"x": torch.randn(shape)})).get_trace()
    x = torch.randn(4, 3)
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(pyro.poutine.condition(lambda: joint.model(batch_n=4), data={"x": x})).get_trace()
    z = trace.nodes["z"]["value"]
    expected = pdist.Normal(p.f(z), 1.).to_event(1).log_prob(x)
    torch.testing.assert_close(trace.nodes["x"]["fn"].log_prob(x), expected)


def test_a_zero_dim_observed_value_under_features_is_refused() -> None:
    """Probe p364: ``joint.model(x=torch.tensor(0.7))`` with 3 features scored the number once per feature (the
    site's log-density the hand score of 0.7 taken 3 times), where ``get_log_prob`` refuses it. Refused now,
    naming the variable and the feature shape."""
    p = PD()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    with pytest.raises(ShapeError, match=r"the value of 'x' has shape \(\).*feature shape \(3,\).*no dim for the "
                                         r"distribution's feature dim"):
        pyro.poutine.trace((p * prior).model).get_trace(x=torch.tensor(0.7))
