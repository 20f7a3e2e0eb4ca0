"""Fifty-second round (probe p373), under Pixyz and here (:mod:`pixyz_harness`): a density over two of its own
variables (``CustomProb(var=["x", "y"])``, ``EmpiricalDistribution(["x", "y"])``) in a product, and a mixture
whose component is a mixture, drawn from the same seed."""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def test_a_custom_density_over_two_variables_multiplies_as_under_pixyz() -> None:
    """``q(w|x) * c(x, y)``: refused as a cycle ``x -> y -> x`` (the density's own variables, which are its inputs
    too, were taken for parents of each other); it is Pixyz's joint, in either order, and scores as by hand
    (3 features of N(w; x, 1) at w = x, plus c = -0.5 x^2 - 0.3 y per feature)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import CustomProb, Normal

        c = CustomProb(lambda x, y: -0.5 * x ** 2 - 0.3 * y, var=["x", "y"], name="c")
        q = Normal(loc="x", scale=torch.ones(3), var=["w"], cond_var=["x"], name="q")
        x, y = torch.ones(2, 3), torch.ones(2, 3)
        out = {}
        for name, joint in (("qc", q * c), ("cq", c * q)):
            out[name] = (str(joint), sorted(joint.var), sorted(joint.cond_var),
                         joint.get_log_prob({"x": x, "y": y, "w": x}))
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    by_hand = 3 * (-0.5 * math.log(2 * math.pi)) + 3 * (-0.5 - 0.3)
    torch.testing.assert_close(ours["qc"][3], torch.full((2,), by_hand))


def test_the_data_distribution_over_two_variables_multiplies_as_under_pixyz() -> None:
    """``q(z|x,y) * p_data(x,y)`` (a semi-supervised model's data distribution): refused as a cycle; Pixyz's joint,
    and the expectation of ``log q`` under it is Pixyz's value."""
    def program() -> Any:
        import torch

        from pixyz.distributions import EmpiricalDistribution, Normal
        from pixyz.losses import Expectation, LogProb

        data = EmpiricalDistribution(["x", "y"])
        q = Normal(loc="x", scale="y", var=["z"], cond_var=["x", "y"], name="q")
        joint = q * data
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(4, 2, generator=g), torch.rand(4, 2, generator=g) + 0.5
        torch.manual_seed(1)
        value = Expectation(joint, LogProb(q)).eval({"x": x, "y": y})
        return str(joint), sorted(joint.var), value

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("reparam", [False, True])
def test_a_mixture_of_mixtures_draws_pixyzs_values(reparam: bool) -> None:
    """An outer mixture of an inner mixture (N(10), N(20)) and N(-5): Pixyz's inner ``sample()`` draws its
    component first, then that component only; here the inner one drew both components, then the index, so row 2
    came from N(10) where Pixyz's came from N(20), and every later draw differed. Now the same rows, components and
    random stream after."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal

        def normal(loc: float, name: str) -> Any:
            return Normal(loc=torch.tensor([loc]), scale=torch.tensor([1e-3]), var=["x"], name=name)

        inner = MixtureModel([normal(10., "a"), normal(20., "b")],
                             Categorical(probs=torch.tensor([.5, .5]), var=["z"], name="pz"), name="inner")
        outer = MixtureModel([inner, normal(-5., "c")],
                             Categorical(probs=torch.tensor([.5, .5]), var=["u"], name="pu"), name="outer")
        torch.manual_seed(0)
        hidden = outer.sample(batch_n=6, return_hidden=True, reparam=reparam)
        plain = outer.sample(batch_n=5, reparam=reparam)
        return hidden["x"], hidden["u"], plain["x"], torch.rand(3)

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert {round(float(v)) for v in ours[0].flatten()} == {10, 20, -5}  # (every component chosen at this seed)
