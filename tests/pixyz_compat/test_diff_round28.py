"""Twenty-eighth round: products of experts found by the docs audit (probe p103), under Pixyz 0.3.3 and here
(:mod:`pixyz_harness`), and against the closed form in float64.

- An expert of tiny float32 scale (1e-20 to 1e-30) gave a product whose scale never went below 1.08e-19 (the
  precisions were floored at ``1 / tiny``): 10 to 10^11 times the most certain expert's scale, which a product never
  exceeds. porting.md promised the product to float32's precision; it is now computed relative to the smallest scale
  (Pixyz drops such an expert, or gives NaN).
- A constant expert (no inputs) beside a conditional expert with a constant scale (``scale=torch.tensor(1.)``) was
  refused ("the experts' parameters differ in shape"); Pixyz runs the program but leaves the constant expert out
  (porting.md), so here the product of every expert of the formula is computed, broadcasting the constant one.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import run_both, run_pyro_dgm


def _product(scale: float, dtype: torch.dtype) -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    class Expert(Normal):
        def __init__(self, loc: torch.Tensor, sc: torch.Tensor, name: str) -> None:
            super().__init__(var=["z"], cond_var=[name], name="q" + name)
            self.l, self.sc = loc, sc

        def forward(self, **inputs: torch.Tensor) -> dict:
            return {"loc": self.l, "scale": self.sc}

    a = Expert(torch.tensor([[1., 2.]], dtype=dtype), torch.tensor([[scale, 1.]], dtype=dtype), "a")
    b = Expert(torch.tensor([[3., 2.]], dtype=dtype), torch.tensor([[1., 1.]], dtype=dtype), "b")
    return ProductOfNormal([a, b]).get_params({"a": torch.ones(1, 1), "b": torch.ones(1, 1)})


@pytest.mark.parametrize("scale", [1e-20, 1e-25, 1e-30, 1e-10])
def test_an_expert_of_tiny_float32_scale_gives_the_exact_product(scale: float) -> None:
    precision = torch.tensor([1 + scale ** -2 + 1, 3.], dtype=torch.float64)  # the standard prior and two experts
    loc = torch.tensor([scale ** -2 + 3, 4.], dtype=torch.float64) / precision
    ours = run_pyro_dgm(lambda: _product(scale, torch.float32))
    assert torch.allclose(ours["loc"].double(), loc, rtol=1e-6)
    assert torch.allclose(ours["scale"].double(), precision.rsqrt(), rtol=1e-5, atol=0)  # (was 1.08e-19 at most)
    ref64, ours64 = run_both(lambda: _product(scale, torch.float64))  # (in float64 both libraries are exact)
    assert torch.allclose(ours64["scale"], ref64["scale"], rtol=1e-12, atol=0)


def test_a_missing_expert_leaves_finite_gradients() -> None:
    from pyro_dgm.distributions import Normal, ProductOfNormal

    loc = torch.tensor([[1., 2.]], requires_grad=True)
    scale = torch.tensor([[0., 0.5]], requires_grad=True)  # missing for the first feature (Pixyz's convention)
    a = Normal(loc="a", scale="s", var=["z"], cond_var=["a", "s"], name="qa")
    b = Normal(loc="b", scale=torch.ones(2), var=["z"], cond_var=["b"], name="qb")
    params = ProductOfNormal([a, b]).get_params({"a": loc, "s": scale, "b": torch.zeros(1, 2)})
    (params["loc"].sum() + params["scale"].sum()).backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()
    assert loc.grad[0, 0] == 0  # the missing expert's location does not move the product


def _constant_beside_a_conditional_expert(features_shape: Any) -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    e = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    kw = {} if features_shape is None else {"features_shape": features_shape}
    c = Normal(loc=torch.tensor(4.), scale=torch.tensor(1.), var=["z"], name="r", **kw)
    return ProductOfNormal([e, c]).get_params({"x": torch.ones(2, 1)})


@pytest.mark.parametrize("features_shape", [None, [1]], ids=["scalar", "features_1"])
def test_a_constant_expert_beside_a_conditional_one_is_multiplied_in(features_shape: Any) -> None:
    ref, ours = run_both(lambda: _constant_beside_a_conditional_expert(features_shape))
    assert torch.allclose(ours["loc"], torch.full((2, 1), 5 / 3))  # N(0,1) N(1,1) N(4,1): 5/3 (was refused)
    assert torch.allclose(ours["scale"], torch.tensor(1 / 3) ** 0.5)
    assert torch.allclose(ref["loc"], torch.full((2, 1), 0.5))  # Pixyz leaves the constant expert out


def test_an_expert_of_weight_zero_counts_for_nothing_whatever_its_scale() -> None:
    from pyro_dgm.distributions import Normal, ProductOfNormal

    a = Normal(loc="a", scale="s", var=["z"], cond_var=["a", "s"], name="qa")
    b = Normal(loc="b", scale=torch.ones(2), var=["z"], cond_var=["b"], name="qb")
    values = {"a": torch.tensor([[5., 5.]]), "s": torch.tensor([[1e-30, 1.]]), "b": torch.tensor([[1., 2.]])}
    weighted = ProductOfNormal([a, b], weight_modalities=[1., 0., 1.]).get_params(values)
    alone = ProductOfNormal([b]).get_params({"b": values["b"]})
    assert torch.allclose(weighted["loc"], alone["loc"]) and torch.allclose(weighted["scale"], alone["scale"])
