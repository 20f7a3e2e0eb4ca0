"""Products of Gaussian experts against the closed form: precision-weighted means, missing experts left out."""
from __future__ import annotations

import itertools
from typing import Any

import pyro
import pyro.poutine as poutine
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Categorical, Normal
from pyro_dgm.distributions import poe as poe_module
from pyro_dgm.distributions.poe import ElementWiseProductOfNormal, NormalPoE, ProductOfNormal


class Expert(Normal):
    """q(z|v) with a network: loc and scale depend on the input."""

    def __init__(self, v: str, d_in: int, d_z: int = 3) -> None:
        super().__init__(var=["z"], cond_var=[v], name=f"q_{v}")
        self.net = nn.Linear(d_in, 2 * d_z)
        self.v = v

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        loc, s = self.net(inputs[self.v]).chunk(2, -1)
        return {"loc": loc, "scale": nn.functional.softplus(s) + 0.1}


def _closed_form(params: list[tuple[torch.Tensor, torch.Tensor]], weights: list[float]) -> tuple[torch.Tensor, ...]:
    """The normalized product of N(loc_k, scale_k^2)^{w_k}: precision-weighted mean, summed precisions."""
    prec = sum(w / s ** 2 for (_, s), w in zip(params, weights))
    loc = sum(w * m / s ** 2 for (m, s), w in zip(params, weights)) / prec
    return loc, prec.rsqrt()


@pytest.fixture
def experts() -> dict[str, Expert]:
    torch.manual_seed(0)
    return {"x": Expert("x", 4), "y": Expert("y", 2), "w": Expert("w", 5)}


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"x": torch.randn(6, 4), "y": torch.randn(6, 2), "w": torch.randn(6, 5)}


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 0.3]])
def test_product_matches_closed_form_for_every_subset_of_experts(experts, inputs, weights) -> None:
    q = ProductOfNormal(list(experts.values()), weight_modalities=weights, name="q", features_shape=[3])
    w = weights or [1.0] * 4
    std = (torch.zeros(1, 3), torch.ones(1, 3))
    for r in range(4):
        for subset in itertools.combinations(["x", "y", "w"], r):
            given = {v: inputs[v] for v in subset}
            params = [std] + [tuple(experts[v].get_params({v: inputs[v]}).values()) for v in subset]
            ws = [w[0]] + [w[1 + ["x", "y", "w"].index(v)] for v in subset]
            loc, scale = _closed_form(params, ws)
            got = q.get_params(given)
            assert torch.allclose(got["loc"], loc.expand_as(got["loc"]), atol=1e-6), subset
            assert torch.allclose(got["scale"], scale.expand_as(got["scale"]), atol=1e-6), subset
            if r:  # the log-density is that Normal's, summed over the features
                z = torch.randn(6, 3)
                expected = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
                assert torch.allclose(q.get_log_prob({"z": z, **given}), expected, atol=1e-5), subset


def test_no_expert_given_is_the_prior(experts) -> None:
    q = ProductOfNormal(list(experts.values()), features_shape=[3])
    s = q.sample(batch_n=5)
    assert s["z"].shape == (5, 3)
    assert torch.allclose(q.get_log_prob({"z": s["z"]}), Normal(loc=torch.zeros(3), scale=1.0, var=["z"])
                          .get_log_prob({"z": s["z"]}))


def test_explicit_prior_expert(experts, inputs) -> None:
    prior = Normal(loc=torch.tensor([1.0, -1.0, 0.5]), scale=torch.tensor([2.0, 0.5, 1.0]), var=["z"],
                   name="p_{prior}")
    q = NormalPoE(prior, [experts["x"]], name="q")
    assert q.prob_joint_factorized_and_text == r"q(z|x) \propto p_{prior}(z)q_{x}(z|x)"  # names typeset as Pixyz
    loc, scale = _closed_form([tuple(prior.get_params().values()), tuple(experts["x"].get_params(inputs).values())],
                              [1.0, 1.0])
    got = q.get_params({"x": inputs["x"]})
    assert torch.allclose(got["loc"], loc) and torch.allclose(got["scale"], scale)


def test_zero_scale_expert_is_missing_for_that_element() -> None:
    a = Normal(loc="x", scale="s", var=["z"], cond_var=["x", "s"])
    q = ProductOfNormal([a])
    x = torch.tensor([[4.0, 4.0]])
    got = q.get_params({"x": x, "s": torch.tensor([[1.0, 0.0]])})
    assert torch.allclose(got["loc"], torch.tensor([[2.0, 0.0]]))  # element 2: the prior alone
    assert torch.allclose(got["scale"], torch.tensor([[0.5 ** 0.5, 1.0]]))


def test_samples_follow_the_product() -> None:
    torch.manual_seed(0)
    a = Normal(loc="x", scale=0.5, var=["z"], cond_var=["x"])
    b = Normal(loc="y", scale=2.0, var=["z"], cond_var=["y"])
    q = ProductOfNormal([a, b])
    x, y = torch.full((1, 1), 3.0), torch.full((1, 1), -2.0)
    z = q.sample({"x": x, "y": y}, sample_shape=[40000])["z"]
    prec = 1 + 4 + 0.25
    assert z.shape == (40000, 1, 1)
    assert abs(float(z.mean()) - (12 - 0.5) / prec) < 4 * (1 / prec) ** 0.5 / 200  # 4 standard errors
    assert abs(float(z.var()) - 1 / prec) < 0.02 / prec * 4


def test_elementwise_experts_missing_per_sample() -> None:
    """Expert i is the network on x with every element but x_i zeroed; where x_i == 0 it is left out."""
    torch.manual_seed(0)

    class Attr(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["a"], name="q")
            self.net = nn.Linear(4, 4)

        def forward(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
            loc, s = self.net(a).chunk(2, -1)
            return {"loc": loc, "scale": nn.functional.softplus(s) + 0.1}

    net = Attr()
    q = ElementWiseProductOfNormal(net, name="q")
    a = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, -1.0, 0.5, 2.0]])
    got = q.get_params({"a": a})
    for n in range(3):
        params = [(torch.zeros(2), torch.ones(2))]
        for i in range(4):
            if a[n, i] != 0:
                only = torch.zeros(1, 4)
                only[0, i] = a[n, i]
                pp = net.get_params({"a": only})
                params.append((pp["loc"][0], pp["scale"][0]))
        loc, scale = _closed_form(params, [1.0] * len(params))
        assert torch.allclose(got["loc"][n], loc, atol=1e-6) and torch.allclose(got["scale"][n], scale, atol=1e-6)
    z = q.sample({"a": a})["z"]
    assert z.shape == (3, 2) and q.get_log_prob({"a": a, "z": z}).shape == (3,)


def test_poe_as_a_pyro_guide_with_a_missing_modality(experts, inputs) -> None:
    pyro.clear_param_store()
    q = ProductOfNormal([experts["x"], experts["y"]], name="q", features_shape=[3])
    tr = poutine.trace(q.guide).get_trace(x=inputs["x"])  # y missing
    assert tr.nodes["z"]["value"].shape == (6, 3) and not tr.nodes["z"]["is_observed"]
    assert torch.allclose(tr.nodes["z"]["fn"].base_dist.loc, q.get_params({"x": inputs["x"]})["loc"])
    px = Normal(loc="z", scale=1.0, var=["xr"], cond_var=["z"])
    model = px * Normal(loc=torch.zeros(3), scale=1.0, var=["z"])
    loss = Trace_ELBO().differentiable_loss(model.model, q.guide, xr=torch.randn(6, 3), x=inputs["x"])
    loss.backward()
    assert torch.isfinite(loss) and experts["x"].net.weight.grad is not None and experts["y"].net.weight.grad is None


def test_renamed_product(experts, inputs) -> None:
    q = ProductOfNormal([experts["x"], experts["y"]], features_shape=[3]).replace_var(x="image", z="h")
    assert q.prob_text == "p(h|y,image)"  # Pixyz's: a renamed variable moves to the end of the order
    s = q.sample({"image": inputs["x"]})
    assert torch.allclose(s["h"] * 0 + q.get_params({"image": inputs["x"]})["loc"],
                          ProductOfNormal([experts["x"], experts["y"]], features_shape=[3]).get_params(
                              {"x": inputs["x"]})["loc"])


def test_printing(experts) -> None:
    q = ProductOfNormal([experts["x"], experts["y"]], name="q")
    text = str(q)
    assert r"q(z|x,y) \propto p(z)q_{x}(z|x)q_{y}(z|y)" in text and "Linear(in_features=4" in text


def test_errors(experts) -> None:
    with pytest.raises(ValueError, match="at least one expert"):
        ProductOfNormal([])
    with pytest.raises(ValueError, match="every expert must generate"):
        ProductOfNormal([experts["x"], Normal(loc="y", scale=1.0, var=["h"], cond_var=["y"])])
    with pytest.raises(ValueError, match="experts must be Normal"):
        ProductOfNormal([experts["x"], Categorical(probs=torch.ones(3) / 3, var=["z"])])
    with pytest.raises(ValueError, match="expected 3 weights"):
        ProductOfNormal([experts["x"], experts["y"]], weight_modalities=[1.0, 1.0])
    two = Normal(loc="a", scale="b", var=["z"], cond_var=["a", "b"])
    with pytest.raises(ValueError, match=r"given only some of its inputs; missing \['b'\]"):
        ProductOfNormal([two]).get_params({"a": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match="one conditioning variable"):
        ElementWiseProductOfNormal(two)


# ------------------------------------------------------------------ the product's numbers against its closed form
def _terms(scales: list[torch.Tensor], locs: list[torch.Tensor], weights: list[float]) -> list[Any]:
    return [(torch.tensor(w, dtype=s.dtype), s, m, False) for s, m, w in zip(scales, locs, weights)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), k=st.integers(1, 4), log10=st.floats(-8, 8), stacked=st.booleans())
def test_the_product_is_the_closed_form_to_rounding(seed, k, log10, stacked):  # type: ignore[no-untyped-def]
    # float32 scales around 10**log10 (a decade either side), weights from 0.5 to 2: the product's location and scale
    # are the float64 closed form's to float32's rounding; in float64, its gradients are the closed form's
    g = torch.Generator().manual_seed(seed)
    scales = [(10 ** (log10 + 2 * torch.rand(3, 2, generator=g) - 1)).float() for _ in range(k)]
    locs = [torch.randn(3, 2, generator=g) for _ in range(k)]
    weights = (0.5 + 1.5 * torch.rand(k, generator=g)).tolist()

    def terms_of(scales: list[torch.Tensor], locs: list[torch.Tensor]) -> list[Any]:
        if stacked and k > 1:  # (several experts along dim 0, as a product given a stacked expert gives them)
            return [(torch.tensor(weights[0], dtype=scales[0].dtype), torch.stack(scales), torch.stack(locs), True)]
        return _terms(scales, locs, weights)

    ws = [weights[0]] * k if stacked and k > 1 else weights
    ref = _closed_form([(m.double(), s.double()) for m, s in zip(locs, scales)], ws)
    for a, c in zip(poe_module._combine(terms_of(scales, locs)), ref):
        torch.testing.assert_close(a.double(), c, rtol=1e-5, atol=1e-6 * float(c.abs().max()))
    # the gradients, in float64: the location's derivative for a scale is a difference of terms of size
    # |loc| / scale that cancel (0 for one expert), which leaves a few ulps of those terms in either computation
    scales64 = [t.double().requires_grad_() for t in scales]
    locs64 = [t.double().requires_grad_() for t in locs]
    leaves = [*scales64, *locs64]
    grads = torch.autograd.grad(sum(t.sum() for t in poe_module._combine(terms_of(scales64, locs64))), leaves)
    ref_grads = torch.autograd.grad(sum(t.sum() for t in _closed_form(list(zip(locs64, scales64)), ws)), leaves)
    cancelled = 32 * torch.finfo(torch.float64).eps * (1 + max(float(m.detach().abs().max()) for m in locs64)) / min(
        float(s.detach().min()) for s in scales64)  # (the size of the cancelling terms, times a few ulps)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()) + cancelled)


@pytest.mark.parametrize("dtype, s", [(torch.float32, 1e-15), (torch.float32, 1e-17), (torch.float64, 1e-110),
                                      (torch.bfloat16, 1e-15), (torch.float16, 0.01)])
def test_the_product_scales_derivative_is_exact_at_small_scales(dtype, s):  # type: ignore[no-untyped-def]
    # d scale / d s for one expert of scale s beside the N(0, 1) prior: (1 + s^2)^(-3/2), 1 to rounding here. A plain
    # formula (tried in this round and withdrawn, probes p256-p260) took rsqrt of the precisions' sum, whose backward
    # multiplies by the scale's cube: 0 below about 2e-13 in float32, 5 % off at 0.01 in float16
    e = Normal(var=["z"], cond_var=["m", "s"], loc="m", scale="s")
    poe = ProductOfNormal([e])
    sv = torch.tensor([[s]], dtype=dtype, requires_grad=True)
    scale = poe.get_params({"m": torch.zeros(1, 1, dtype=dtype), "s": sv})["scale"]
    (g,) = torch.autograd.grad(scale.sum(), sv)
    assert float(g) == pytest.approx((1 + s * s) ** -1.5, rel=4 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("dtype, case", [(torch.float32, (9e18, 0.0, 1e22, 1e30)), (torch.float32, (9e18, 0.0, 3e21,
                                         1e25)), (torch.bfloat16, (9e18, 0.0, 1e22, 1e30)),
                                         (torch.float64, (1e153, 0.0, 1e160, 1e300)),
                                         (torch.float16, (120.0, 0.0, 3000.0, 60000.0))])
def test_an_expert_of_subnormal_precision_keeps_its_weight_in_the_location(dtype, case):  # type: ignore
    # two experts, no prior (weight 0): the location (m1 + q m2) / (1 + q) with q = (s1 / s2)^2, where the second
    # expert's precision 1 / s2^2 is subnormal and its location huge: a plain formula kept a few bits of that
    # precision (-1.9 % in float32, 0 in bfloat16, probe p256); the relative one is exact to rounding
    s1, m1, s2, m2 = case
    a = Normal(var=["z"], cond_var=["m1", "s1"], loc="m1", scale="s1")
    b = Normal(var=["z"], cond_var=["m2", "s2"], loc="m2", scale="s2")
    poe = ProductOfNormal([a, b], weight_modalities=[0.0, 1.0, 1.0])
    t = {k: torch.tensor([[v]], dtype=dtype) for k, v in zip(("s1", "m1", "s2", "m2"), case)}
    got = poe.get_params(t)
    S1, S2, M1, M2 = (float(t[k]) for k in ("s1", "s2", "m1", "m2"))
    q = (S1 / S2) ** 2
    rel = 8 * torch.finfo(dtype).eps
    assert float(got["loc"]) == pytest.approx((M1 + q * M2) / (1 + q), rel=rel)
    assert float(got["scale"]) == pytest.approx(S1 / (1 + q) ** 0.5, rel=rel)


@pytest.mark.parametrize("big", [1e13, 1e15, 1e18])
def test_the_product_scales_derivative_is_finite_at_large_scales(big):  # type: ignore[no-untyped-def]
    # a prior N(0, big) and one expert of scale s = big: the product's scale is s / sqrt(2) at s = big, and its
    # derivative in s is 1 / (2 sqrt 2) = 0.35355. The precisions' sum (2 / big^2) is so small that its power -3/2
    # in a plain formula's rsqrt backward overflows float32 (inf, probe p258); the relative formula's sum is 2
    prior = Normal(loc=0.0, scale=big, var=["z"], name="p0")
    e = Normal(loc="x", scale="s", var=["z"], cond_var=["x", "s"], name="e")
    s = torch.tensor([[big]], requires_grad=True)
    scale = NormalPoE(prior, [e]).get_params({"x": torch.ones(1, 1), "s": s})["scale"]
    (g,) = torch.autograd.grad(scale.sum(), s)
    assert float(g) == pytest.approx(0.5 ** 1.5, rel=1e-5)


def test_an_unweighted_subnormal_precision_is_not_lifted_by_a_large_weight() -> None:
    # prior N(0, 1e22) and an expert N(1, 2e22), both weighted 1e7: (1 / 2e22)^2 is subnormal in float32 (a few
    # bits), which a plain formula weighted as it was (location 0.222 for 0.2, probe p258); the relative one is exact
    prior = Normal(loc=0.0, scale=1e22, var=["z"], name="p0")
    e = Normal(loc="x", scale=2e22, var=["z"], cond_var=["x"], name="e")
    got = NormalPoE(prior, [e], weight_modalities=[1e7, 1e7]).get_params({"x": torch.tensor([[1.0]])})
    assert float(got["loc"]) == pytest.approx(0.2, rel=1e-6)
    assert float(got["scale"]) == pytest.approx(1e22 / 1.25e7 ** 0.5, rel=1e-6)
