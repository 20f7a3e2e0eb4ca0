"""Twenty-first round: leftovers of the differential fuzz of the Distribution API (probe p85), under Pixyz 0.3.3 and
here (:mod:`pixyz_harness`).

- ``sample_shape`` behind a ``Deterministic`` of given inputs (or an ``EmpiricalDistribution``'s data): the factor
  reading its output drew one value for all the ``sample_shape`` draws (``x`` of shape ``(3, 2)``, Pixyz's
  ``(4, 3, 2)``), as if the output were a draw of the pass. Such an output holds no draw, so the factor now draws
  ``sample_shape`` values as one reading the given inputs does; a child of a *random* parent still draws one value
  per parent draw (docs/porting.md), through a ``Deterministic`` too.
- ``InverseTransformedDistribution.sample`` (and ``TransformedDistribution``'s) given a value of the prior's variable
  put that key after the drawn one (Pixyz keeps ``x_dict``'s order, then the new keys).
- ``return_hidden=False`` given to a product's ``sample`` (or by ``graph.set_option``) still returned the latent of
  an ``InverseTransformedDistribution`` factor.
- A ``Deterministic`` with several outputs returned them in ``var``'s order, where Pixyz keeps ``forward``'s.
"""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, run_both


def _keys_and_values(d: dict) -> tuple[list, dict]:
    return list(d), d


# ---------------------------------------------------------------- sample_shape behind a Deterministic

def prog_sample_shape_behind(kind: str) -> Any:
    import torch

    from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal

    class Double(Deterministic):
        def __init__(self, var: str = "h", cond: str = "z") -> None:
            super().__init__(var=[var], cond_var=[cond], name="f")
            self.cond = cond

        def forward(self, **inputs: torch.Tensor) -> dict:
            return {self.var[0]: inputs[self.cond] * 2}

    q = Normal(loc="h", scale=1., var=["x"], cond_var=["h"], name="q")
    r = Normal(loc=0., scale=1., var=["s"], features_shape=[2], name="r")
    z = torch.randn(3, 2)
    if kind == "deterministic":
        joint = r * q * Double()
    elif kind == "two deterministics":
        joint = q * Double("h", "g") * Double("g", "z")
    else:
        joint = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="q") * EmpiricalDistribution(["z"])
    out = joint.sample({"z": z}, sample_shape=[4])
    return {k: tuple(v.shape) for k, v in out.items()}, out


@pytest.mark.parametrize("kind", ["deterministic", "two deterministics", "empirical"])
def test_a_child_of_a_deterministic_of_given_inputs_draws_sample_shape_values(kind: str) -> None:
    ref, ours = run_both(lambda: prog_sample_shape_behind(kind))
    assert_same(ref, ours)  # was: x of shape (3, 2), one draw for the 4 samples
    assert ours[0]["x"] == (4, 3, 2)
    if kind == "deterministic":
        assert _shapes_behind_a_random_parent() == {"z": (4, 1, 2), "h": (4, 1, 2), "x": (4, 1, 2)}


def _shapes_behind_a_random_parent() -> dict:
    """A Deterministic of a random parent: one x per draw of z (kept, docs/porting.md; Pixyz's x: (4, 4, 1, 2))."""
    import torch

    from pyro_dgm.distributions import Deterministic, Normal

    class Double(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["z"], name="f")

        def forward(self, z: torch.Tensor) -> dict:
            return {"h": z * 2}

    q = Normal(loc="h", scale=1., var=["x"], cond_var=["h"], name="q")
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p")
    out = (q * Double() * prior).sample(sample_shape=[4])
    return {k: tuple(v.shape) for k, v in out.items()}


# ---------------------------------------------------------------- flows: a given latent, return_hidden in a product

def _flows() -> tuple[Any, Any, Any]:
    import torch

    from pixyz.distributions import InverseTransformedDistribution, Normal, TransformedDistribution
    from pixyz.flows import AffineCoupling, FlowList

    class ScaleShift(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 4)

        def forward(self, x: torch.Tensor) -> tuple:
            h = self.fc(x)
            return torch.tanh(h[..., :2]), h[..., 2:]

    def coupling() -> Any:
        return FlowList([AffineCoupling(2, mask_type="channel_wise", scale_translate_net=ScaleShift())])

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{0}")
    inverse = InverseTransformedDistribution(prior, coupling(), var=["x"])
    forward = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["h"], name="p_{0}"),
                                      coupling(), var=["y"])
    return inverse, forward, Normal(loc="x", scale=1., var=["w"], cond_var=["x"], name="q")


def prog_flow_given_latent() -> Any:
    import torch

    inverse, forward, _ = _flows()
    z, a = torch.randn(3, 2), torch.randn(3, 2)
    return [_keys_and_values(inverse.sample({"z": z})),
            _keys_and_values(inverse.sample({"z": z}, return_hidden=False)),
            _keys_and_values(inverse.sample({"a": a, "z": z})),
            _keys_and_values(inverse.sample({"z": z, "a": a}, return_hidden=False)),
            _keys_and_values(forward.sample({"h": z}))]


def test_a_flow_given_its_latent_keeps_it_in_its_place() -> None:
    ref, ours = run_both(prog_flow_given_latent)
    assert_same(ref, ours)  # was: ['x', 'z'] for Pixyz's ['z', 'x'] (['a', 'x', 'z'] for ['a', 'z', 'x'])
    assert ours[0][0] == ["z", "x"]


def prog_return_hidden_in_a_product(how: str) -> Any:
    import torch

    inverse, _, q = _flows()
    joint = q * inverse
    z = torch.randn(3, 2)
    if how == "option":
        joint.graph.set_option({"return_hidden": False}, var=["x"])
        return [_keys_and_values(joint.sample(batch_n=3)), _keys_and_values(joint.sample({"z": z}))]
    return [_keys_and_values(joint.sample(batch_n=3, return_hidden=False)),
            _keys_and_values(joint.sample({"z": z}, return_hidden=False)),
            _keys_and_values(joint.sample(batch_n=3, return_hidden=False, return_all=False)),
            _keys_and_values(joint.sample(batch_n=3, return_hidden=True))]


@pytest.mark.parametrize("how", ["call", "option"])
def test_return_hidden_false_leaves_the_latent_of_a_flow_factor_out(how: str) -> None:
    ref, ours = run_both(lambda: prog_return_hidden_in_a_product(how))
    assert_same(ref, ours)  # was: z returned too (['x', 'z', 'w'] for Pixyz's ['x', 'w'])
    assert ours[0][0] == ["x", "w"]


# ---------------------------------------------------------------- a Deterministic's outputs in forward's order

def prog_deterministic_order() -> Any:
    import torch

    from pixyz.distributions import Deterministic, Normal

    class Two(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["a", "b"], cond_var=["z"], name="f")

        def forward(self, z: torch.Tensor) -> dict:
            return {"b": z * 3, "a": z * 2}

    f = Two()
    joint = Normal(loc="a", scale=1., var=["x"], cond_var=["a"], name="q") * f
    z = torch.randn(2, 1)
    return [_keys_and_values(f.sample({"z": z})), _keys_and_values(f.sample({"z": z}, return_all=False)),
            _keys_and_values(joint.sample({"z": z})), _keys_and_values(joint.sample({"z": z}, return_all=False)),
            _keys_and_values(f.replace_var(a="c").sample({"z": z}))]


def test_a_deterministic_returns_its_outputs_in_forwards_order() -> None:
    ref, ours = run_both(prog_deterministic_order)
    assert_same(ref, ours)  # was: ['z', 'a', 'b'] for Pixyz's ['z', 'b', 'a']
    assert ours[0][0] == ["z", "b", "a"]
