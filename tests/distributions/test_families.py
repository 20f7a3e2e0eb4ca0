"""The parametric families against ``torch.distributions`` objects built by hand.

Every family is described once in :data:`FAMILIES`: its parameters, the reference log-density (element-wise over the
feature dims), the reference distribution for the moments, and how to draw values to score. The tests then check
log-densities, entropies and moments over hypothesis-drawn parameters and shapes, sample shapes, gradients, sample
statistics, parameters given by name or by a network, and state_dict round trips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.testing import assert_close

from pyro_dgm.distributions import (Bernoulli, Beta, Categorical, Dirichlet, FactorizedBernoulli, Gamma, Laplace,
                                    Multinomial, Normal, RelaxedBernoulli, RelaxedCategorical)

TOL = dict(rtol=1e-4, atol=1e-5)  # float32 sums of a few terms; a wrong wiring is off by O(1)
SETTINGS = settings(max_examples=25, deadline=None)
TOTAL_COUNT = 3  # Multinomial

# ---------------------------------------------------------------------------------------------- the families
# Element kinds of a parameter: a hypothesis strategy for random cases and a deterministic range for fixed ones.
ELEMENTS: dict[str, tuple[Any, tuple[float, float]]] = {
    "real": (st.floats(-3, 3), (-1.5, 2.0)),
    "pos": (st.floats(0.2, 4), (0.5, 2.5)),
    "prob": (st.floats(0.05, 0.95), (0.15, 0.8)),
    "conc": (st.floats(0.5, 4), (0.8, 3.0)),
    "weight": (st.floats(0.05, 1), (0.1, 1.0)),  # normalized over the last dim into probs
}


def bernoulli_bce(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """Pixyz's Bernoulli score, written out: defined for any x in [0, 1]."""
    probs = p["probs"]
    return x * probs.log() + (1 - x) * torch.log1p(-probs)


def grey_values(p: dict[str, Tensor], n: int) -> Tensor:
    """Values in [0, 1] with exact zeros and ones among them (grey-level pixels)."""
    shape = (n, *p["probs"].shape)
    u, pick = torch.rand(shape), torch.rand(shape)
    return torch.where(pick < 0.3, torch.zeros(()), torch.where(pick < 0.5, torch.ones(()), u))


def hard_argmax(x: Tensor) -> Tensor:
    return F.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)


@dataclass(frozen=True)
class Family:
    cls: type
    params: dict[str, str]  # parameter name -> element kind
    score: Callable[[dict[str, Tensor], Tensor], Tensor]  # element-wise reference log-density
    moments: Callable[[dict[str, Tensor]], D.Distribution]  # reference for entropy, mean and variance
    values: Callable[[dict[str, Tensor], int], Tensor]  # n values to score, shape [n, *value_shape]
    simplex: bool = False  # the last feature dim is the family's event dim
    index: bool = False  # values are indices: the last feature dim is absent from values
    logits: Callable[[Tensor], Tensor] | None = None  # probs -> logits, for families that also take logits
    relaxed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "Normal": Family(Normal, {"loc": "real", "scale": "pos"},
                     score=lambda p, x: D.Normal(p["loc"], p["scale"]).log_prob(x),
                     moments=lambda p: D.Normal(p["loc"], p["scale"]),
                     values=lambda p, n: D.Normal(p["loc"], p["scale"]).sample((n,))),
    "Laplace": Family(Laplace, {"loc": "real", "scale": "pos"},
                      score=lambda p, x: D.Laplace(p["loc"], p["scale"]).log_prob(x),
                      moments=lambda p: D.Laplace(p["loc"], p["scale"]),
                      values=lambda p, n: D.Laplace(p["loc"], p["scale"]).sample((n,))),
    "Bernoulli": Family(Bernoulli, {"probs": "prob"}, score=bernoulli_bce,
                        moments=lambda p: D.Bernoulli(p["probs"]), values=grey_values, logits=torch.logit),
    "FactorizedBernoulli": Family(FactorizedBernoulli, {"probs": "prob"},
                                  score=lambda p, x: torch.where(x == 0, torch.zeros(()), bernoulli_bce(p, x)),
                                  moments=lambda p: D.Bernoulli(p["probs"]), values=grey_values, logits=torch.logit),
    # relaxed samples are scored by Pixyz's cross-entropy under the hard Bernoulli; its moments are the hard ones
    "RelaxedBernoulli": Family(RelaxedBernoulli, {"probs": "prob"}, score=bernoulli_bce,
                               moments=lambda p: D.Bernoulli(p["probs"]), values=grey_values, logits=torch.logit,
                               relaxed=True),
    "Categorical": Family(Categorical, {"probs": "weight"},
                          score=lambda p, x: D.OneHotCategorical(p["probs"]).log_prob(x),
                          moments=lambda p: D.OneHotCategorical(p["probs"]),
                          values=lambda p, n: D.OneHotCategorical(p["probs"]).sample((n,)),
                          simplex=True, logits=torch.log),
    "CategoricalIndex": Family(Categorical, {"probs": "weight"},
                               score=lambda p, x: D.Categorical(p["probs"]).log_prob(x),
                               moments=lambda p: D.Categorical(p["probs"]),
                               values=lambda p, n: D.Categorical(p["probs"]).sample((n,)),
                               simplex=True, index=True, logits=torch.log, extra={"one_hot": False}),
    # relaxed samples are scored under the one-hot categorical of their arg-max
    "RelaxedCategorical": Family(RelaxedCategorical, {"probs": "weight"},
                                 score=lambda p, x: D.OneHotCategorical(p["probs"]).log_prob(hard_argmax(x)),
                                 moments=lambda p: D.OneHotCategorical(p["probs"]),
                                 values=lambda p, n: torch.softmax(2 * torch.randn(n, *p["probs"].shape), -1),
                                 simplex=True, logits=torch.log, relaxed=True),
    "Multinomial": Family(Multinomial, {"probs": "weight"},
                          score=lambda p, x: D.Multinomial(TOTAL_COUNT, p["probs"]).log_prob(x),
                          moments=lambda p: D.Multinomial(TOTAL_COUNT, p["probs"]),
                          values=lambda p, n: D.Multinomial(TOTAL_COUNT, p["probs"]).sample((n,)),
                          simplex=True, logits=torch.log, extra={"total_count": TOTAL_COUNT}),
    "Dirichlet": Family(Dirichlet, {"concentration": "conc"},
                        score=lambda p, x: D.Dirichlet(p["concentration"]).log_prob(x),
                        moments=lambda p: D.Dirichlet(p["concentration"]),
                        values=lambda p, n: F.normalize(D.Dirichlet(p["concentration"]).sample((n,)).clamp(min=1e-4),
                                                        p=1, dim=-1),
                        simplex=True),
    "Beta": Family(Beta, {"concentration1": "conc", "concentration0": "conc"},
                   score=lambda p, x: D.Beta(p["concentration1"], p["concentration0"]).log_prob(x),
                   moments=lambda p: D.Beta(p["concentration1"], p["concentration0"]),
                   values=lambda p, n: D.Beta(p["concentration1"], p["concentration0"]).sample((n,))
                   .clamp(1e-4, 1 - 1e-4)),
    "Gamma": Family(Gamma, {"concentration": "conc", "rate": "pos"},
                    score=lambda p, x: D.Gamma(p["concentration"], p["rate"]).log_prob(x),
                    moments=lambda p: D.Gamma(p["concentration"], p["rate"]),
                    values=lambda p, n: D.Gamma(p["concentration"], p["rate"]).sample((n,)).clamp(min=1e-4)),
}
NAMES = list(FAMILIES)


def batch_feature_shape(fam: Family, fshape: tuple[int, ...]) -> tuple[int, ...]:
    """The feature dims left in the element-wise log-density (a simplex family's event dim is summed by torch)."""
    return fshape[:-1] if fam.simplex else fshape


def value_shape(fam: Family, fshape: tuple[int, ...]) -> tuple[int, ...]:
    return fshape[:-1] if fam.index else fshape


def sum_after_batch(t: Tensor, n_lead: int = 1) -> Tensor:
    """Sum every dim after the first ``n_lead`` (written with reshape, not with the code under test)."""
    return t.reshape(*t.shape[:n_lead], -1).sum(-1)


def build(fam: Family, kwargs: dict[str, Any], **more: Any) -> Any:
    return fam.cls(var=["x"], **fam.extra, **kwargs, **more)


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    fshape: tuple[int, ...]
    kwargs: dict[str, Any]  # what the constructor gets
    ref: dict[str, Tensor]  # the same parameters as full [*features_shape] tensors of probs etc.
    batch: int
    seed: int
    feature_dims: list[int]


@st.composite
def cases(draw: Any, fam: Family) -> Case:
    if fam.simplex:
        fshape = (*draw(st.lists(st.integers(1, 3), max_size=1)), draw(st.integers(2, 4)))
    else:
        fshape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n = math.prod(fshape)
    kwargs: dict[str, Any] = {}
    ref: dict[str, Tensor] = {}
    all_scalar = True
    for pname, kind in fam.params.items():
        elem = ELEMENTS[kind][0]
        if kind == "weight":  # probs on the simplex: always a full tensor
            w = torch.tensor(draw(st.lists(elem, min_size=n, max_size=n))).reshape(fshape)
            ref[pname] = kwargs[pname] = w / w.sum(-1, keepdim=True)
            all_scalar = False
        elif draw(st.booleans()):  # a number, broadcast to features_shape
            v = draw(elem)
            kwargs[pname], ref[pname] = v, torch.full(fshape, v)
        else:
            t = torch.tensor(draw(st.lists(elem, min_size=n, max_size=n))).reshape(fshape)
            kwargs[pname], ref[pname] = t, t
            all_scalar = False
    if fam.logits is not None and draw(st.booleans()):
        kwargs["logits"] = fam.logits(torch.as_tensor(kwargs.pop("probs")))
    if fam.relaxed:
        kwargs["temperature"] = draw(st.floats(0.2, 2))
    if all_scalar or draw(st.booleans()):
        kwargs["features_shape"] = list(fshape)
    nb = len(batch_feature_shape(fam, fshape))
    feature_dims = sorted(draw(st.sets(st.integers(1, nb), min_size=1))) if nb else []
    return Case(fshape, kwargs, ref, draw(st.integers(1, 3)), draw(st.integers(0, 2 ** 16)), feature_dims)


def fixed_params(fam: Family, fshape: tuple[int, ...], flip: bool = False) -> dict[str, Tensor]:
    """Deterministic parameters of shape ``fshape`` (``flip`` gives another set of the same shape)."""
    n = math.prod(fshape)
    out = {}
    for pname, kind in fam.params.items():
        lo, hi = ELEMENTS[kind][1]
        t = torch.linspace(lo, hi, n).reshape(fshape)
        t = t.flip(-1) if flip else t
        out[pname] = t / t.sum(-1, keepdim=True) if kind == "weight" else t
    return out


def fixed(fam: Family, fshape: tuple[int, ...] = (2, 3), flip: bool = False) -> tuple[Any, dict[str, Tensor]]:
    ref = fixed_params(fam, fshape, flip)
    kwargs: dict[str, Any] = dict(ref)
    if fam.relaxed:
        kwargs["temperature"] = 0.5
    return build(fam, kwargs), ref


# ---------------------------------------------------------------------------------------------- 1. against torch
@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_log_prob_matches_torch(name: str, data: Any) -> None:
    fam = FAMILIES[name]
    case = data.draw(cases(fam))
    p = build(fam, case.kwargs)
    # constants are buffers of shape [1, *features_shape] holding what was given; as in Pixyz, when features_shape
    # is inferred, numbers given before the first tensor parameter (in Pixyz's parameter order) have shape [1]
    assert p.features_shape == torch.Size(case.fshape)
    leading = not case.kwargs.get("features_shape")
    order = list(p.buffer_order or ())
    for k in sorted((k for k in case.kwargs if k != "features_shape"),
                    key=lambda k: order.index(k) if k in order else len(order)):
        v = torch.as_tensor(case.kwargs[k], dtype=torch.float32)
        leading = leading and v.dim() == 0
        want = (1,) if leading else (1, *case.fshape)
        assert p.get_buffer(k).shape == want
        assert_close(p.get_buffer(k), v.expand(want[1:])[None])

    torch.manual_seed(case.seed)
    x = fam.values(case.ref, case.batch)
    elementwise = fam.score(case.ref, x)  # [batch, *batch_feature_shape]
    assert_close(p.get_log_prob({"x": x}), sum_after_batch(elementwise), **TOL)
    assert_close(p.get_log_prob({"x": x}, sum_features=False), elementwise, **TOL)
    if case.feature_dims:
        assert_close(p.get_log_prob({"x": x}, feature_dims=case.feature_dims),
                     elementwise.sum(dim=case.feature_dims), **TOL)
        assert_close(p.get_log_prob({"x": x}, sum_features=False, feature_dims=case.feature_dims), elementwise,
                     **TOL)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_entropy_mean_variance_match_torch(name: str, data: Any) -> None:
    fam = FAMILIES[name]
    case = data.draw(cases(fam))
    p = build(fam, case.kwargs)
    ref = fam.moments(case.ref)
    h = ref.entropy()[None]  # [1, *batch_feature_shape]: the constants' batch dim of 1
    assert_close(p.get_entropy(), sum_after_batch(h), **TOL)
    assert_close(p.get_entropy(sum_features=False), h, **TOL)
    if case.feature_dims:
        assert_close(p.get_entropy(feature_dims=case.feature_dims), h.sum(dim=case.feature_dims), **TOL)
    # torch's index Categorical has a NaN mean and variance by definition; the wrapper must pass them on as they are
    assert_close(p.sample_mean(), ref.mean[None], equal_nan=True, **TOL)
    assert_close(p.sample_variance(), ref.variance[None], equal_nan=True, **TOL)


def test_documented_scoring_semantics() -> None:
    # Bernoulli scores grey levels by cross-entropy: 0.3 log 0.2 + 0.7 log 0.8
    b = Bernoulli(probs=0.2, var=["x"])
    assert_close(b.get_log_prob({"x": torch.tensor([0.3])}), torch.tensor([0.3 * math.log(0.2) + 0.7 * math.log(0.8)]))
    # FactorizedBernoulli ignores zeros: only the 1 counts
    fb = FactorizedBernoulli(probs=torch.tensor([0.2, 0.4, 0.9]), var=["x"])
    assert_close(fb.get_log_prob({"x": torch.tensor([[0., 1., 0.], [0., 0., 0.]])}), torch.tensor([math.log(0.4), 0.]))
    # the relaxed categorical scores its relaxed samples under the categorical of the arg-max
    rc = RelaxedCategorical(temperature=0.5, probs=torch.tensor([0.5, 0.5]), var=["y"])
    y = rc.sample(batch_n=20)["y"]
    assert ((y > 0) & (y < 1)).all()
    assert_close(rc.get_log_prob({"y": y}), torch.full((20,), math.log(0.5)))
    rc = RelaxedCategorical(temperature=0.5, probs=torch.tensor([0.2, 0.8]), var=["y"])
    assert_close(rc.get_log_prob({"y": torch.tensor([[0.6, 0.4], [0.45, 0.55]])}),
                 torch.tensor([math.log(0.2), math.log(0.8)]))
    # the relaxed Bernoulli scores hard values as the Bernoulli does
    rb = RelaxedBernoulli(temperature=0.5, probs=torch.tensor([0.2, 0.7]), var=["x"])
    assert_close(rb.get_log_prob({"x": torch.tensor([[1., 0.]])}), torch.tensor([math.log(0.2) + math.log(0.3)]))


def test_feature_dims_beyond_the_event_dim_raise_naming_the_distribution() -> None:
    p = Categorical(probs=torch.tensor([0.2, 0.8]), var=["y"])
    with pytest.raises(ValueError, match=r"Categorical p\(y\).*feature_dims=\[1\]"):
        p.get_log_prob({"y": torch.eye(2)}, feature_dims=[1])
    with pytest.raises(ValueError, match=r"Categorical p\(y\).*feature_dims=\[1\]"):
        p.get_entropy(feature_dims=[1])


# ---------------------------------------------------------------------------------------------- 2. shapes, gradients
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch_n, sample_shape", [(None, ()), (4, ()), (None, (5,)), (4, (5, 2))])
def test_constant_sample_shapes(name: str, batch_n: int | None, sample_shape: tuple[int, ...]) -> None:
    fam = FAMILIES[name]
    fshape = (2, 3)
    p, ref = fixed(fam, fshape)
    lead = (*sample_shape, batch_n or 1)
    vshape = value_shape(fam, fshape)
    x = p.sample(batch_n=batch_n, sample_shape=sample_shape)["x"]
    assert x.shape == lead + vshape
    support = D.constraints.unit_interval if name == "RelaxedBernoulli" else (
        D.constraints.simplex if name == "RelaxedCategorical" else fam.moments(ref).support)
    assert support.check(x).all()
    # Pixyz sums every dim but the first; the private _get_log_prob keeps the sample dims
    assert p.get_log_prob({"x": x}).shape == lead[:1]
    assert p._dgm_get_log_prob({"x": x}).shape == lead
    assert p.get_log_prob({"x": x}, sum_features=False).shape == lead + batch_feature_shape(fam, fshape)
    if name.startswith("Relaxed"):  # Pixyz: the relaxed families' sample(sample_mean=True) raises
        with pytest.raises(NotImplementedError, match=name):
            p.sample(batch_n=batch_n, sample_shape=sample_shape, sample_mean=True)
        return
    m = p.sample(batch_n=batch_n, sample_shape=sample_shape, sample_mean=True)["x"]
    assert_close(m, fam.moments(ref).mean.expand(lead + vshape), equal_nan=True)


def test_dist_batch_and_event_shapes() -> None:
    d = Normal(loc=torch.zeros(2, 3), scale=1., var=["x"]).dist(batch_n=4)
    assert (d.batch_shape, d.event_shape) == ((4,), (2, 3))
    d = Categorical(probs=torch.full((2, 3), 1 / 3), var=["x"], one_hot=False).dist()
    assert (d.batch_shape, d.event_shape) == ((1,), (2,))


class Q(Normal):
    """q(z|x) with a network for both parameters."""

    def __init__(self, d_in: int = 3, d_out: int = 2) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.loc_net = nn.Linear(d_in, d_out)
        self.scale_net = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"loc": self.loc_net(x), "scale": F.softplus(self.scale_net(x)) + 0.1}


class QLoc(Normal):
    """q(z|x) with a network for ``loc`` and a constant ``scale`` (a buffer)."""

    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q", scale=torch.tensor([0.5, 2.0]))
        self.net = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"loc": self.net(x)}


class QBernoulli(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"])
        self.net = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"probs": torch.sigmoid(self.net(x))}


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_network_sample_shapes_and_log_prob(batch: int, sample_shape: tuple[int, ...]) -> None:
    q = Q()
    x = torch.randn(batch, 3)
    out = q.sample({"x": x}, sample_shape=sample_shape)
    z = out["z"]
    assert out["x"] is x and z.shape == (*sample_shape, batch, 2)
    with torch.no_grad():
        params = q(x)
        expected = D.Normal(params["loc"], params["scale"]).log_prob(z).sum(-1)
        lp = q._dgm_get_log_prob({"x": x, "z": z})
        lp_pixyz = q.get_log_prob({"x": x, "z": z})
    assert lp.shape == (*sample_shape, batch)
    assert_close(lp, expected)
    assert_close(lp_pixyz, expected.flatten(1).sum(1) if expected.dim() > 1 else expected)  # Pixyz's [L]
    assert q.get_log_prob({"x": x, "z": z}, sum_features=False).shape == (*sample_shape, batch, 2)
    # sample_mean=True returns the network's loc, repeated over sample_shape
    m = q.sample({"x": x}, sample_shape=sample_shape, sample_mean=True)["z"]
    assert_close(m, params["loc"].expand(*sample_shape, batch, 2))


@pytest.mark.parametrize("sample_shape", [(), (5,)])
def test_joint_of_families_scores_its_own_samples(sample_shape: tuple[int, ...]) -> None:
    # each factor's log-density has shape sample_shape + batch, so the joint's is their sum (it used to fail for a
    # sample_shape: the conditional factor took x's sample dims for feature dims)
    prior = Normal(loc=0., scale=1., var=["x"], features_shape=[3])
    p = Normal(var=["y"], cond_var=["x"], loc="x", scale=2.)
    s = (p * prior).sample(batch_n=4, sample_shape=sample_shape)
    lp = (p * prior)._dgm_get_log_prob(s)
    expected = D.Normal(0., 1.).log_prob(s["x"]).sum(-1) + D.Normal(s["x"], 2.).log_prob(s["y"]).sum(-1)
    assert lp.shape == (*sample_shape, 4)
    assert_close(lp, expected)
    assert_close((p * prior).get_log_prob(s), expected.flatten(1).sum(1) if sample_shape else expected)
    # the same after a network: z of shape sample_shape + batch + features (as q(z|x) draws it) scored by q(z|x),
    # then by p(y|z), which must take z's sample dims for batch dims too
    q, x = Q(), torch.randn(4, 3)
    py = Bernoulli(var=["y"], cond_var=["z"], probs="z")
    z = 0.05 + 0.9 * torch.rand(*sample_shape, 4, 2)  # valid Bernoulli parameters
    y = torch.rand_like(z).round()
    with torch.no_grad():
        params = q(x)
        expected = (D.Normal(params["loc"], params["scale"]).log_prob(z).sum(-1) + D.Bernoulli(z).log_prob(y).sum(-1))
        assert_close((py * q)._dgm_get_log_prob({"x": x, "z": z, "y": y}), expected)


def test_reparam_samples_carry_the_reparameterized_gradient() -> None:
    q = Q()
    x = torch.randn(4, 3)
    z = q.sample({"x": x}, sample_shape=[5], reparam=True)["z"]
    weights = list(q.parameters())
    grads = torch.autograd.grad(z.sum(), weights)
    # z = loc + scale * eps with eps fixed: the gradient must be the one of that expression
    params = q(x)
    eps = ((z - params["loc"]) / params["scale"]).detach()
    expected = torch.autograd.grad((params["loc"] + params["scale"] * eps).sum(), weights)
    for g, e in zip(grads, expected):
        assert_close(g, e)
    assert all(g.abs().sum() > 0 for g in grads)


def test_non_reparam_samples_carry_no_gradient() -> None:
    x = torch.randn(4, 3)
    z = Q().sample({"x": x}, sample_shape=[5], reparam=False)["z"]
    assert not z.requires_grad
    qb = QBernoulli()
    assert not qb.has_reparam and Q().has_reparam
    assert not qb.sample({"x": x}, reparam=True)["z"].requires_grad  # a Bernoulli cannot be reparameterized


def test_cond_var_parameter_reparam_gradient_is_one() -> None:
    p = Normal(var=["y"], cond_var=["x"], loc="x", scale=1.)
    x = torch.randn(4, 3, requires_grad=True)
    y = p.sample({"x": x}, reparam=True)["y"]
    (g,) = torch.autograd.grad(y.sum(), x)  # d(x + 1 * eps)/dx
    assert_close(g, torch.ones(4, 3))
    assert not p.sample({"x": x})["y"].requires_grad


# ---------------------------------------------------------------------------------------------- 3. statistics
N_DRAWS = 20_000


@pytest.mark.parametrize("name", NAMES)
def test_sample_moments_agree_with_analytic(name: str) -> None:
    # Each coordinate's sample mean is compared with the analytic mean within 5 standard errors sqrt(var / N)
    # (and the variance about the analytic mean within 5 standard errors sqrt((m4 - var^2) / N), m4 the empirical
    # fourth central moment). With N = 20000 the CLT makes a 5-SE miss a 6e-7 event per coordinate, so with the fixed
    # seed the test is deterministic and still far from its edge, while a wrong parameter, broadcast or temperature
    # moves the statistics by O(sd), i.e. by ~140 standard errors.
    # Relaxed samples are compared through their arg-max, which is exactly Bernoulli/categorical distributed
    # (the logistic/Gumbel-max trick), whatever the temperature.
    fam = FAMILIES[name]
    p, ref = fixed(fam)
    x = p.sample(batch_n=N_DRAWS // 2, sample_shape=[2])["x"].reshape(N_DRAWS, *value_shape(fam, (2, 3)))
    if name == "RelaxedBernoulli":
        x = (x > 0.5).float()
    elif name == "RelaxedCategorical":
        x = hard_argmax(x)
    elif fam.index:
        x = F.one_hot(x, 3).float()
    moments = D.OneHotCategorical(ref["probs"]) if fam.index else fam.moments(ref)
    mean, var = moments.mean, moments.variance
    assert (x.mean(0) - mean).abs().le(5 * (var / N_DRAWS).sqrt()).all()
    dev = x - mean
    se_var = ((dev ** 4).mean(0) - var ** 2).clamp(min=0).div(N_DRAWS).sqrt()
    assert ((dev ** 2).mean(0) - var).abs().le(5 * se_var + 1e-6).all()


@pytest.mark.parametrize("temperature", [0.3, 1.5])
def test_relaxed_samples_follow_the_concrete_law(temperature: float) -> None:
    # X = sigmoid((logit p + L) / t), L logistic, so P(X <= c) = sigmoid(t logit(c) - logit p); a two-category
    # Gumbel-softmax is the same law for its first coordinate. The empirical frequency must lie within 5 standard
    # errors sqrt(q (1 - q) / N) (see test_sample_moments_agree_with_analytic): this checks that temperature is used.
    probs = torch.tensor([0.3, 0.6])
    c = torch.tensor([0.2, 0.5, 0.9])
    expected = torch.sigmoid(temperature * torch.logit(c)[:, None] - torch.logit(probs)).T  # [2 probs, 3 cuts]
    se = (expected * (1 - expected) / N_DRAWS).sqrt()
    x = RelaxedBernoulli(temperature=temperature, probs=probs, var=["x"]).sample(batch_n=N_DRAWS)["x"]
    freq = (x[:, :, None] <= c).float().mean(0)
    assert (freq - expected).abs().le(5 * se).all()
    for k, pk in enumerate(probs.tolist()):
        y = RelaxedCategorical(temperature=temperature, probs=torch.tensor([pk, 1 - pk]), var=["y"])
        y1 = y.sample(batch_n=N_DRAWS)["y"][:, 0]
        assert ((y1[:, None] <= c).float().mean(0) - expected[k]).abs().le(5 * se[k]).all()


# ---------------------------------------------------------------------------------------------- 4. names, state
def test_parameter_given_as_cond_var_name() -> None:
    p = Normal(var=["y"], cond_var=["x"], loc="x", scale=1.)
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    assert_close(p.get_log_prob({"x": x, "y": y}), D.Normal(x, 1.).log_prob(y).sum(-1))
    assert p.sample({"x": x})["y"].shape == (4, 3)
    assert p.sample({"x": x}, sample_shape=[5])["y"].shape == (5, 4, 3)
    assert_close(p.sample_mean({"x": x}), x)
    assert_close(p.sample_variance({"x": x}), torch.ones(4, 3))
    assert_close(p.get_entropy({"x": x}), torch.full((4,), 3 * 0.5 * math.log(2 * math.pi * math.e)))
    with pytest.raises(ValueError, match="'x'"):
        p.get_log_prob({"y": y})


@pytest.mark.parametrize("name", NAMES)
def test_constant_state_dict_round_trip_and_dtype(name: str) -> None:
    fam = FAMILIES[name]
    p1, ref = fixed(fam)
    p2, _ = fixed(fam, flip=True)
    x = fam.values(ref, 4)
    assert set(p1.state_dict()) == set(fam.params) | ({"temperature"} if fam.relaxed else set())
    assert not torch.equal(p1.get_log_prob({"x": x}), p2.get_log_prob({"x": x}))
    p2.load_state_dict(p1.state_dict())
    assert torch.equal(p1.get_log_prob({"x": x}), p2.get_log_prob({"x": x}))
    p2.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in p2.buffers())
    x64 = x if fam.index else x.double()
    lp = p2.get_log_prob({"x": x64}, sum_features=False)
    assert lp.dtype == torch.float64
    assert_close(lp, fam.score({k: v.double() for k, v in ref.items()}, x64))


@pytest.mark.parametrize("cls", [Q, QLoc])
def test_network_state_dict_round_trip(cls: type) -> None:
    q1, q2 = cls(), cls()
    x = torch.randn(4, 3)
    z = q1.sample({"x": x})["z"]
    assert not torch.equal(q1.get_log_prob({"x": x, "z": z}), q2.get_log_prob({"x": x, "z": z}))
    q2.load_state_dict(q1.state_dict())
    assert torch.equal(q1.get_log_prob({"x": x, "z": z}), q2.get_log_prob({"x": x, "z": z}))
    if cls is QLoc:
        assert "scale" in q1.state_dict()
        q2.to(torch.float64)
        assert q2.get_buffer("scale").dtype == torch.float64
        assert q2.get_log_prob({"x": x.double(), "z": z.double()}).dtype == torch.float64


# ---------------------------------------------------------------------------------------------- 5. get_params
@pytest.mark.parametrize("name", NAMES)
def test_get_params_returns_the_constants(name: str) -> None:
    fam = FAMILIES[name]
    p, ref = fixed(fam)
    params = p.get_params()
    expected = {k: v[None] for k, v in ref.items()}
    if fam.relaxed:
        expected["temperature"] = torch.full((1, 2, 3), 0.5)
    assert set(params) == set(expected)
    for k in expected:
        assert_close(params[k], expected[k])


def test_get_params_returns_network_outputs_and_named_inputs() -> None:
    x = torch.randn(4, 3)
    q = Q()
    params = q.get_params({"x": x})
    assert set(params) == {"loc", "scale"}
    assert_close(params["loc"], q.loc_net(x))
    assert_close(params["scale"], F.softplus(q.scale_net(x)) + 0.1)
    assert_close(q.get_params(x)["loc"], q.loc_net(x))  # a bare tensor stands for the single input variable
    q = QLoc()
    params = q.get_params({"x": x})
    assert_close(params["loc"], q.net(x))
    assert_close(params["scale"], torch.tensor([[0.5, 2.0]]))
    params = Normal(var=["y"], cond_var=["x"], loc="x", scale=2.).get_params({"x": x})
    assert params["loc"] is x
    assert_close(params["scale"], torch.tensor([2.]))
