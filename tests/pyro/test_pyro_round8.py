"""Pyro's inference machinery on pyro_dgm parts (round 8 of probes).

- ``pyro.condition(joint.model, data={"x": x})``, Pyro's idiom for observed data, called the model without data, so
  it opened no data plate: one global ``z`` for every row of ``x``. Under validation Pyro refused the shapes; without
  it, SVI trained that other model silently. The rows of the conditioned values now size the data plate, as
  ``joint.model(x=x)`` does, and the numbers are those of the plain-Pyro twin.
- ``PyroELBO(..., elbo=TraceTailAdaptive_ELBO(...))`` was accepted and its value was ``inf`` (that ELBO has no loss
  value), so ``Model.train`` reported a non-finite loss; it is refused where it is built, as ``RenyiELBO`` is.
- Calling a joint as Pyro's ``Trace_ELBO()(joint, q)`` does (a distribution's call is its network, as in Pixyz)
  says to pass ``joint.model`` and ``q.guide``.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceTailAdaptive_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import PyroELBO

X = torch.bernoulli(torch.full((5, 6), 0.3), generator=torch.Generator().manual_seed(0))


class Dec(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(2, 6)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(z)}


def _joint() -> tuple[Dec, object]:
    torch.manual_seed(0)
    dec = Dec()
    return dec, dec * Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")


def _svi_losses(model: object, steps: int = 3) -> list[float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    return [svi.step() for _ in range(steps)]


@pytest.mark.parametrize("validate", [True, False])
def test_conditioned_data_sizes_the_data_plate_as_the_plain_pyro_twin(validate: bool) -> None:
    dec, joint = _joint()
    with pyro.validation_enabled(validate):
        cond = pyro.condition(joint.model, data={"x": X})
        tr = poutine.trace(cond).get_trace()
        assert tuple(tr.nodes["z"]["value"].shape) == (5, 2)
        assert [f.name for f in tr.nodes["z"]["cond_indep_stack"]] == ["data"]
        net = nn.Linear(2, 6)
        net.load_state_dict(dec.net.state_dict())  # (before SVI trains dec.net)
        ours = _svi_losses(cond)

        def twin() -> None:  # the hand-written Pyro model, with a copy of the same weights
            pyro.module("twin", net)
            with pyro.plate("data", 5):
                z = pyro.sample("z", dist.Normal(torch.zeros(5, 2), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=net(z)).to_event(1))

        ref = _svi_losses(pyro.condition(twin, data={"x": X}))
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(ref), rtol=1e-5, atol=1e-4)


def test_a_condition_inside_the_users_plate_and_one_row_keep_their_meaning() -> None:
    _, joint = _joint()
    with poutine.trace() as tr, pyro.plate("rows", 5):  # the user's own plate at dim -1: no data plate of ours
        pyro.condition(joint.model, data={"x": X})()
    assert [f.name for f in tr.trace.nodes["z"]["cond_indep_stack"]] == ["rows"]
    one = poutine.trace(pyro.condition(joint.model, data={"x": X[:1]})).get_trace()  # one row: global sites
    assert tuple(one.nodes["z"]["value"].shape) == (1, 2) and not one.nodes["z"]["cond_indep_stack"]


def test_tail_adaptive_elbo_is_refused_where_it_is_built() -> None:
    _, joint = _joint()
    q = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="q")
    with pytest.raises(TypeError, match="TraceTailAdaptive_ELBO gives no differentiable loss"):
        PyroELBO(joint.model, q.guide, elbo=TraceTailAdaptive_ELBO(num_particles=2, vectorize_particles=True))


def test_calling_a_joint_as_a_pyro_model_says_to_pass_model_and_guide() -> None:
    _, joint = _joint()
    with pytest.raises(NotImplementedError, match=r"\.model and \.guide"):
        joint()
