"""A number or a list that ``poutine.condition`` gives a site, against plain-Pyro twins (round 15).

The value came back from the site and reached the next factor, which raised a bare ``AttributeError: 'float' object
has no attribute 'dim'``. Pyro's own distributions refuse such values too (the twins raise, a bare error of their
own), so a clear refusal that names the distribution and the variable is what is expected: a ``NotATensorError`` (a
``TypeError`` and a ``ValueError``).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.utils.checks import NotATensorError


class Double(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["h"], cond_var=["z"], name="f")

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"h": 2 * z}


def _joint():
    px = Normal(loc="h", scale=1.0, var=["x"], cond_var=["h"])
    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2])
    return px * Double() * pz


def _twin(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        h = pyro.deterministic("h", 2 * z, event_dim=1)
        pyro.sample("x", dist.Normal(h, 1.0).to_event(1), obs=x)


@pytest.mark.parametrize("name, owner", [("z", "p(z)"), ("h", "f(h|z)")])
@pytest.mark.parametrize("value", [0.0, [0.0, 1.0]], ids=["float", "list"])
def test_condition_with_a_non_tensor(name, owner, value):
    x = torch.randn(3, 2)
    with pytest.raises(Exception):  # noqa: B017 (plain Pyro refuses it too, with its own raw error: any type)
        poutine.trace(poutine.condition(_twin, data={name: value})).get_trace(x).log_prob_sum()
    with pytest.raises(NotATensorError) as info:
        poutine.trace(poutine.condition(_joint().model, data={name: value})).get_trace(x=x)
    text = str(info.value)
    assert owner in text and repr(name) in text and type(value).__name__ in text
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_condition_with_tensors_still_matches_the_twin():
    x = torch.randn(3, 2)
    z = torch.randn(3, 2)
    ours = poutine.trace(poutine.condition(_joint().model, data={"z": z})).get_trace(x=x)
    twin = poutine.trace(poutine.condition(_twin, data={"z": z})).get_trace(x)
    assert ours.log_prob_sum().item() == pytest.approx(twin.log_prob_sum().item(), rel=1e-6)
    assert torch.equal(ours.nodes["h"]["value"], twin.nodes["h"]["value"])
