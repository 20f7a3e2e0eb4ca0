"""Pyro-side findings of the fifty-first round (probe p361): a scalar pyro_dgm ``Bernoulli`` enumerated in a model
by ``TraceEnum_ELBO`` gives the plain-Pyro twin's loss and gradients (what ``porting.md`` says), and observed data
that carries a dim of Pyro's vectorized particles is refused naming that plate."""
from __future__ import annotations

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
