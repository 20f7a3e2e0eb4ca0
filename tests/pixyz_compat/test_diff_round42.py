"""Forty-second round: a flow distribution given a value of the wrong shape where a layer of its ``FlowList`` cannot
take that shape, and a GAN's discriminator trained by a ``pyro.optim`` optimizer, under Pixyz and here
(:mod:`pixyz_harness`).
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pyro_dgm


def _image_flow_given_a_flat_value() -> Any:
    import torch

    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, ChannelConv, FlowList, Squeeze

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 8, 1)

        def forward(self, x: torch.Tensor) -> tuple:
            s, t = self.conv(x).chunk(2, dim=1)
            return torch.tanh(s), t

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[8, 1, 1])
    flow = FlowList([AffineCoupling(8, mask_type="channel_wise", scale_translate_net=Net(), inverse_mask=False),
                     Squeeze(), ChannelConv(8)])
    p = InverseTransformedDistribution(prior=prior, flow=flow, var=["x"])
    return p.get_log_prob({"x": torch.randn(2, 8)})


def test_a_flat_value_given_to_an_image_flow_list_is_named_and_stays_a_runtime_error() -> None:
    """``InverseTransformedDistribution`` over ``FlowList([AffineCoupling, Squeeze(), ChannelConv])`` given a value
    of shape ``(2, 8)`` where it takes ``(..., 2, 2, 2)``: Pixyz meets torch's ``RuntimeError`` (conv2d's input
    dims). Here the list's shape bookkeeping asked ``Squeeze`` for the shape of a 2-d input and Python's "not enough
    values to unpack" came out, naming nothing (probe p227). The error names the distribution, the variable and the
    shape it expects, and is a ``RuntimeError`` as Pixyz's is (and a ``ValueError``)."""
    ref_kind, our_kind = raises_same(_image_flow_given_a_flat_value)
    assert issubclass(ref_kind, RuntimeError)
    assert issubclass(our_kind, RuntimeError) and issubclass(our_kind, ValueError)
    with pytest.raises(ValueError) as info:
        run_pyro_dgm(_image_flow_given_a_flat_value)
    text = str(info.value)
    assert "InverseTransformedDistribution" in text and "'x'" in text and "(..., 2, 2, 2)" in text
    assert "(2, 8)" in text


def _gan_steps(d_optimizer: Any, d_optimizer_params: Any, steps: int = 3) -> Any:
    import torch

    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.models import GAN

    torch.manual_seed(0)

    class G(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = torch.nn.Linear(3, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.net(z)}

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": self.net(x)}

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[3], name="p_{prior}")
    d = D()
    kw = {"d_optimizer": d_optimizer}
    if d_optimizer_params is not None:
        kw["d_optimizer_params"] = d_optimizer_params
    model = GAN((G() * prior).marginalize_var("z"), d, **kw)
    data = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    losses = [torch.stack(model.train({"x": data})) for _ in range(steps)]
    return torch.stack(losses), [p.detach().clone() for p in d.parameters()]


@pytest.mark.parametrize("how", ["factory", "factory without arguments", "instance"])
def test_a_pyro_optim_optimizer_trains_the_discriminator_as_its_torch_class_does(how: str) -> None:
    """``GAN(p, d, d_optimizer=pyro.optim.Adam)``: the generator's ``optimizer=`` takes ``pyro.optim`` optimizers
    (as a ``Model``'s does); the discriminator's raised Pyro's bare ``AssertionError`` without
    ``d_optimizer_params``, and a ``TypeError`` about a lambda's keyword with them (Pixyz takes neither; probe
    p226). It builds the torch optimizer the ``pyro.optim`` one wraps: the losses and the discriminator's weights
    after three steps are those of ``torch.optim.Adam`` with the same arguments."""
    import pyro.optim

    lr = {"lr": 0.05} if how != "factory without arguments" else {}
    ref = _gan_steps(torch.optim.Adam, dict(lr))
    if how == "factory":
        ours = _gan_steps(pyro.optim.Adam, dict(lr))
    elif how == "factory without arguments":
        ours = _gan_steps(pyro.optim.Adam, None)
    else:
        ours = _gan_steps(pyro.optim.Adam(dict(lr)), None)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pyro_optim_optimizer_with_clip_args_for_the_discriminator_is_refused_by_name() -> None:
    """The term has no place for a ``pyro.optim`` optimizer's ``clip_args``: a ``ValueError`` that names the term
    and the arguments, rather than clipping silently ignored."""
    import pyro.optim

    with pytest.raises(ValueError, match=r"clip_args=\{'clip_norm': 1\.0\}"):
        _gan_steps(pyro.optim.Adam({"lr": 0.05}, {"clip_norm": 1.0}), None)


def _product_of_normal_with_no_expert_given() -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    e1 = Normal(var=["z"], cond_var=["a"], loc="a", scale=torch.tensor(1.0), name="p1")
    e2 = Normal(var=["z"], cond_var=["b"], loc="b", scale=torch.tensor(2.0), name="p2")
    poe = ProductOfNormal([e1, e2])
    return {"params": poe.get_params({}), "mean": poe.sample_mean({}), "draw": poe.sample()["z"].shape,
            "entropy": poe.get_entropy({}), "one given": poe.get_params({"a": torch.ones(3, 1)})}


def test_a_product_of_normals_given_no_expert_is_the_0_d_prior_as_under_pixyz() -> None:
    """``ProductOfNormal`` of experts of scalar features, none of whose inputs is given: the product is its standard
    normal prior, whose parameters Pixyz gives 0-d (``loc`` 0, ``scale`` 1, a draw of shape ``()``, the entropy
    0.5 log(2 pi e) as a 0-d tensor). Here they had a batch dim of 1 that no input asked for (probe p229). With one
    expert given, the batch and feature dims are the expert's, as before."""
    ref, ours = run_both(_product_of_normal_with_no_expert_given)
    assert_same(ref, ours)
    assert ours["entropy"].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
