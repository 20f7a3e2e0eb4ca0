"""The two ways the tutorial for Pyro users gives to say which dim of the data is the data's when a plate over
copies of the model has the size of the data's rows, against plain-Pyro twins.

A value that no trace holds has as many batch dims as its leading dims fit the open plates (sizes only), so ``x`` of
``[B, D]`` inside the user's own ``pyro.plate("particles", B, dim=-2)`` alone is read as ``[particles, data]``.
Opening the data plate at dim -1 around the call, or letting Pyro make the particles (``vectorize_particles=True``),
gives the twin's shapes and numbers for any ``P``, ``P == B`` included.
"""
from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal

B, D, Z = 4, 3, 2


class Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(D, Z)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(x), "scale": torch.ones(1)}


class Decoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(Z, D)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(z), "scale": torch.ones(1)}


@pytest.fixture()
def parts() -> tuple[Encoder, Decoder, Normal, torch.Tensor]:
    torch.manual_seed(0)
    q, px = Encoder(), Decoder()
    prior = Normal(loc=torch.zeros(Z), scale=torch.ones(Z), var=["z"], features_shape=[Z])
    return q, px, prior, torch.randn(B, D)


def _twin(q: Encoder, px: Decoder, particles: int | None):
    def plates() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if particles is not None:
            stack.enter_context(pyro.plate("particles", particles, dim=-2))
        stack.enter_context(pyro.plate("data", B, dim=-1))
        return stack

    def guide(x):
        with plates():
            pyro.sample("z", dist.Normal(q.fc(x), 1.0).to_event(1))

    def model(x):
        with plates():
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(px.fc(z), 1.0).to_event(1), obs=x)

    return model, guide


def _log_probs(model, guide, x):
    pyro.set_rng_seed(1)
    gt = poutine.trace(guide).get_trace(x)
    mt = poutine.trace(poutine.replay(model, trace=gt)).get_trace(x)
    return gt.nodes["z"]["value"].shape, gt.log_prob_sum().item(), mt.log_prob_sum().item()


@pytest.mark.parametrize("P", [B, B + 1, 1])
def test_data_plate_opened_by_the_user_reads_the_rows(parts, P):
    q, px, prior, x = parts
    joint = px * prior

    def guide(x):
        with pyro.plate("particles", P, dim=-2), pyro.plate("data", B, dim=-1):
            q.guide(x=x)

    def model(x):
        with pyro.plate("particles", P, dim=-2), pyro.plate("data", B, dim=-1):
            joint.model(x=x)

    shape, lq, lp = _log_probs(model, guide, x)
    t_shape, t_lq, t_lp = _log_probs(*_twin(q, px, P), x)
    assert shape == t_shape == (P, B, Z)
    assert lq == pytest.approx(t_lq, rel=1e-6)
    assert lp == pytest.approx(t_lp, rel=1e-6)


@pytest.mark.parametrize("P", [B, B + 1])
def test_vectorized_particles_of_the_data_size(parts, P):
    q, px, prior, x = parts
    joint = px * prior
    model, guide = _twin(q, px, None)
    pyro.set_rng_seed(2)
    ours = Trace_ELBO(num_particles=P, vectorize_particles=True, max_plate_nesting=1).loss(joint.model, q.guide, x=x)
    pyro.set_rng_seed(2)
    twin = Trace_ELBO(num_particles=P, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x)
    assert ours == pytest.approx(twin, rel=1e-6)
