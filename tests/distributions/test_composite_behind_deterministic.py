"""A conditional mixture or flow reading a ``Deterministic``'s outputs of given inputs draws ``sample_shape`` values,
as it does given those values directly, and as a ``Normal`` in its place does (``test_diff_round21.py``).

Pixyz 0.3.3 runs neither program (its ``MixtureModel`` takes no conditioning variables, its flow's prior fails on
the conditional input), so the reference is this library's own direct case: the same distribution given ``h``
itself, drawn under the same seed. It drew one value for all the ``sample_shape`` draws before
(``composite.expand_root`` took the ``Deterministic``'s output for a draw of the pass).
"""
from __future__ import annotations

import pytest
import torch

from pyro_dgm.distributions import Categorical, Deterministic, MixtureModel, Normal, TransformedDistribution
from pyro_dgm.flows import FlowList, PlanarFlow


class Double(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["h"], cond_var=["c"], name="f")

    def forward(self, c: torch.Tensor) -> dict:
        return {"h": 2 * c}


def _composite(kind: str):
    torch.manual_seed(0)
    if kind == "mixture":
        components = [Normal(loc="h", scale=float(k + 1), var=["x"], cond_var=["h"], name=f"c{k}") for k in range(2)]
        return MixtureModel(components, Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="r")), "x"
    prior = Normal(loc="h", scale=1., var=["z"], cond_var=["h"], name="p")
    return TransformedDistribution(prior, FlowList([PlanarFlow(1)]), var=["x"]), "x"


@pytest.mark.parametrize("kind", ["mixture", "flow"])
def test_sample_shape_behind_a_deterministic_of_given_inputs(kind: str) -> None:
    dist, x = _composite(kind)
    c = torch.linspace(-1, 1, 3).unsqueeze(-1)
    torch.manual_seed(1)
    direct = dist.sample({"h": 2 * c}, sample_shape=[4])
    torch.manual_seed(1)
    behind = (dist * Double()).sample({"c": c}, sample_shape=[4])
    assert behind[x].shape == direct[x].shape == (4, 3, 1)  # was (3, 1) behind the Deterministic
    torch.testing.assert_close(behind[x], direct[x])
    assert behind["h"].shape == (3, 1)  # the Deterministic's output itself is one value


@pytest.mark.parametrize("kind", ["mixture", "flow"])
def test_a_child_of_a_drawn_parent_still_draws_one_value_per_draw(kind: str) -> None:
    dist, x = _composite(kind)
    parent = Normal(loc="c", scale=1., var=["w"], cond_var=["c"], name="g")

    class FromW(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["w"], name="f")

        def forward(self, w: torch.Tensor) -> dict:
            return {"h": 2 * w}

    out = (dist * FromW() * parent).sample({"c": torch.zeros(3, 1)}, sample_shape=[4])
    assert out["w"].shape == out[x].shape == (4, 3, 1)  # one x per drawn w, not (4, 4, 3, 1)
