"""A distribution with its own ``sample``/``get_log_prob`` (no family) observed inside a user's plate over copies of
the model, against plain-Pyro twins (round 14).

Its site's event dims were the value's dims less the batch dims of the value *and its inputs* together: inside
``pyro.plate("particles", P, dim=-2)`` the input ``z`` has batch dims ``(P, B)``, so an observed ``x_0`` of shape
``(B, D)`` got no event dim, and Pyro refused the site ("get_log_prob() ... returned shape (P, B); a Pyro site needs
one log-density per batch element"). The twin runs. The event dims are now the value's own.
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_dgm.distributions import Distribution, Normal

P = 3


class HalfNormal(Distribution):
    """x_0 ~ N(z, 1) tempered by 1/2, written with its own sample and get_log_prob (no family)."""

    def __init__(self) -> None:
        super().__init__(var=["x_0"], cond_var=["z"], name="p")

    def sample(self, x_dict: Any = {}, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # noqa: B006
        return {"x_0": x_dict["z"] + torch.randn_like(x_dict["z"])}

    def get_log_prob(self, x_dict: Any, sum_features: bool = True, feature_dims: Any = None,
                     **kwargs: Any) -> torch.Tensor:
        return 0.5 * torch.distributions.Normal(x_dict["z"], 1.).log_prob(x_dict["x_0"]).sum(-1)


def _log_prob_sums(model: Any) -> dict[str, float]:
    pyro.set_rng_seed(0)
    tr = poutine.trace(model).get_trace()
    tr.compute_log_prob()
    return {n: (tuple(s["log_prob"].shape), float(s["log_prob_sum"]))
            for n, s in tr.nodes.items() if s["type"] == "sample" and "log_prob" in s}


@pytest.mark.parametrize("b, d", [(4, 2), (2, 3), (4, 1), (1, 3)])
def test_an_observed_value_of_a_distribution_without_a_family_inside_a_particles_plate(b: int, d: int) -> None:
    x = torch.randn(b, 2, d, generator=torch.Generator().manual_seed(0))
    x0, x1 = x[:, 0], x[:, 1]
    pz = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[d], name="p")
    px1 = Normal(loc="x_0", scale=torch.tensor(1.), var=["x_1"], cond_var=["x_0"], name="p")
    joint = HalfNormal() * pz

    def ours() -> None:
        with pyro.plate("particles", P, dim=-2):
            joint.model(x_0=x0)
            px1.model(x_0=x0, x_1=x1)

    def plain() -> None:
        with pyro.plate("particles", P, dim=-2), pyro.plate("data", b, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.).to_event(1))
            with poutine.scale(scale=0.5):
                pyro.sample("x_0", dist.Normal(z, 1.).to_event(1), obs=x0)
            pyro.sample("x_1", dist.Normal(x0, 1.).to_event(1), obs=x1)

    ref, got = _log_prob_sums(plain), _log_prob_sums(ours)
    for name in ("z", "x_0", "x_1"):
        assert got[name][0] == ref[name][0], name
        assert got[name][1] == pytest.approx(ref[name][1], rel=1e-5), name
