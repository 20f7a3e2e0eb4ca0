"""The closed forms of the hot path (``pyro_dgm.distributions.closed_forms``).

Scoring, reparameterized draws and the analytic KL of the common families skip the distribution objects (under
torch's argument validation, after making the objects' checks). These tests hold them to the objects they replace:
the same values (compared with ``torch.distributions``), the same random stream, the same gradients, the same
errors, and the general path wherever a closed form does not apply (a Pyro handler listening, a family of its own,
``closed_forms.disabled()``).
"""
from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from dgm_fixtures import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro import poutine
from torch import nn

from pyro_dgm.distributions import Bernoulli, FactorizedBernoulli, Normal, ProductOfNormal, closed_forms
from pyro_dgm.losses import ELBO, Expectation, KullbackLeibler, LogProb

shapes = st.tuples(st.integers(1, 4), st.integers(1, 5))
seeds = st.integers(0, 2 ** 16)


@pytest.fixture
def no_validation():  # type: ignore[no-untyped-def]
    was = closed_forms.validating()
    pyro.enable_validation(False)
    yield
    pyro.enable_validation(was)


def _normal_params(shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), \
        torch.rand(shape, generator=g, dtype=torch.float64) * 2 + 0.1


# ---------------------------------------------------------------------------------------------- the formulas
@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds)
def test_normal_log_prob_is_torchs(shape, seed):  # type: ignore[no-untyped-def]
    loc, scale = _normal_params(shape, seed)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    lp = closed_forms.LOG_PROB[dist.Normal]({"loc": loc, "scale": scale}, x, (-1,))
    torch.testing.assert_close(lp, torch.distributions.Normal(loc, scale).log_prob(x).sum(-1), rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds, log10_scale=st.floats(-3, 3))
def test_normal_log_prob_in_float32_is_torchs(shape, seed, log10_scale):  # type: ignore[no-untyped-def]
    # float32 takes a shorter arrangement than torch's (5 operations where torch's takes 9): the same value and
    # gradients up to float32 rounding (a few ulps of the largest term), over scales from 1e-3 to 1e3
    loc, scale = (t.float() for t in _normal_params(shape, seed))
    scale = scale * 10.0 ** log10_scale
    x = loc + scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)) * 3
    ours = [t.clone().requires_grad_() for t in (loc, scale, x)]
    ref = [t.clone().requires_grad_() for t in (loc, scale, x)]
    lp = closed_forms.LOG_PROB[dist.Normal]({"loc": ours[0], "scale": ours[1]}, ours[2], (-1,))
    lp_ref = torch.distributions.Normal(ref[0], ref[1]).log_prob(ref[2]).sum(-1)
    torch.testing.assert_close(lp, lp_ref, rtol=1e-5, atol=1e-5)
    lp.sum().backward()
    lp_ref.sum().backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_normal_log_prob_in_half_precision_is_torchs_to_the_bit(dtype):  # type: ignore[no-untyped-def]
    # (Pixyz's numbers under autocast: torch's arrangement, whose rounding differs from the float32 one by more than
    # a half-precision ulp)
    g = torch.Generator().manual_seed(3)
    loc, x = torch.randn(4, 6, generator=g).to(dtype), torch.randn(4, 6, generator=g)
    scale = (torch.rand(4, 6, generator=g) + 0.1).to(dtype)
    lp = closed_forms.LOG_PROB[dist.Normal]({"loc": loc, "scale": scale}, x, ())
    assert torch.equal(lp, torch.distributions.Normal(loc, scale, validate_args=False).log_prob(x))


def test_normal_log_prob_is_finite_where_torchs_square_underflows():  # type: ignore[no-untyped-def]
    # a float32 scale of 1e-30 squares to 0: torch's (and Pixyz's) log-density of the mean is 0/0 = NaN; the
    # closed form is -log(scale) - log(sqrt(2 pi)) = 69.0776 - 0.9189
    loc, scale = torch.zeros(1), torch.full((1,), 1e-30)
    assert torch.isnan(torch.distributions.Normal(loc, scale).log_prob(loc)).all()
    lp = closed_forms.LOG_PROB[dist.Normal]({"loc": loc, "scale": scale}, loc.clone(), ())
    torch.testing.assert_close(lp, torch.tensor([30 * math.log(10) - 0.5 * math.log(2 * math.pi)]))


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds, by_logits=st.booleans())
def test_bernoulli_log_prob_is_the_cross_entropy(shape, seed, by_logits):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x = torch.rand(shape, generator=g, dtype=torch.float64)  # grey levels: the cross-entropy form
    params = {"logits": probs.log() - (1 - probs).log()} if by_logits else {"probs": probs}
    lp = closed_forms.LOG_PROB[Bernoulli.pyro_dist](params, x, (-1,))
    expected = (x * probs.log() + (1 - x) * (1 - probs).log()).sum(-1)
    torch.testing.assert_close(lp, expected, rtol=1e-10, atol=1e-10)
    binary = torch.bernoulli(probs, generator=g)  # on {0, 1}, torch's Bernoulli
    torch.testing.assert_close(closed_forms.LOG_PROB[Bernoulli.pyro_dist](params, binary, ()),
                               torch.distributions.Bernoulli(probs=probs).log_prob(binary), rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds)
def test_normal_rsample_is_torchs_stream_and_gradient(shape, seed):  # type: ignore[no-untyped-def]
    loc, scale = (t.requires_grad_() for t in _normal_params(shape, seed))
    torch.manual_seed(seed)
    z = closed_forms.RSAMPLE[dist.Normal]({"loc": loc, "scale": scale})
    torch.manual_seed(seed)
    expected = torch.distributions.Normal(loc, scale).rsample()
    assert torch.equal(z, expected)
    g_loc, g_scale = torch.autograd.grad(z.sum(), (loc, scale))
    assert torch.equal(g_loc, torch.ones_like(loc))  # dz/dloc = 1, dz/dscale = eps
    torch.testing.assert_close(g_scale, ((z - loc) / scale).detach())


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds)
def test_normal_kl_is_torchs(shape, seed):  # type: ignore[no-untyped-def]
    p_loc, p_scale = _normal_params(shape, seed)
    q_loc, q_scale = _normal_params(shape, seed + 1)
    P, Q = torch.distributions.Normal(p_loc, p_scale), torch.distributions.Normal(q_loc, q_scale)
    kl = closed_forms.KL[dist.Normal, dist.Normal]({"loc": p_loc, "scale": p_scale}, {"loc": q_loc, "scale": q_scale})
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(P, Q), rtol=1e-10, atol=1e-12)
    std = closed_forms.KL_TO_STANDARD[dist.Normal]({"loc": p_loc, "scale": p_scale})
    S = torch.distributions.Normal(torch.zeros(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64))
    torch.testing.assert_close(std, torch.distributions.kl_divergence(P, S), rtol=1e-10, atol=1e-12)


def test_standard_form_is_recognized_only_for_standard_constants():
    assert closed_forms.IS_STANDARD[dist.Normal]({"loc": torch.zeros(1, 3), "scale": torch.ones(1, 3)})
    assert not closed_forms.IS_STANDARD[dist.Normal]({"loc": torch.zeros(1, 3), "scale": torch.full((1, 3), 2.)})
    assert not closed_forms.IS_STANDARD[dist.Normal]({"loc": torch.tensor([[0., 1e-7]]), "scale": torch.ones(1, 2)})


# ---------------------------------------------------------------------------------------------- the hot path
class _Enc(Encoder):
    """The shared q(z|x), 6 -> 3, two linear heads, scale softplus(.) + 0.1 (its own name for the errors' text)."""

    def __init__(self) -> None:
        super().__init__(6, 3, min_scale=0.1)


def _losses():  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    q, p = _Enc(), Decoder(6, 3)
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[3], name="p_{prior}")
    shifted = Normal(loc=0.5, scale=2., var=["z"], features_shape=[3], name="r")
    return (q, p, prior), {
        "analytic": (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).sum(),
        "analytic, other prior": (KullbackLeibler(q, shifted) - Expectation(q, LogProb(p))).mean(),
        "MC": -ELBO(p * prior, q).sum(),
        "MC, 3 samples": -ELBO(p * prior, q, sample_shape=[3]).mean(),
        "element-wise": (-Expectation(q, p.log_prob(sum_features=False).sum())),
        "replace_var": (KullbackLeibler(q.replace_var(x="y"), prior) - LogProb(p.replace_var(x="y"))).sum(),
    }


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("name", ["analytic", "analytic, other prior", "MC", "MC, 3 samples", "element-wise",
                                  "replace_var"])
def test_values_and_gradients_match_the_general_path(name, validate):  # type: ignore[no-untyped-def]
    (q, p, _), losses = _losses()
    loss = losses[name]
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    data = {"x": x, "y": x, "z": torch.randn(5, 3)}
    pyro.enable_validation(validate)
    out = {}
    for closed in (False, True):  # the distribution objects, then the closed forms
        torch.manual_seed(11)
        if closed:
            value = loss.eval(data)
        else:
            with closed_forms.disabled():
                value = loss.eval(data)
        grads = torch.autograd.grad(value, [*q.parameters(), *p.parameters()], allow_unused=True)
        out[closed] = (value, grads)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(out[True][1], out[False][1]):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("validate", [True, False])
def test_the_hot_path_builds_no_distribution_objects(validate, monkeypatch):  # type: ignore[no-untyped-def]
    pyro.enable_validation(validate)
    (q, p, prior), losses = _losses()
    built = []
    for cls in (dist.Normal, Bernoulli.pyro_dist):
        init = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _init=init, **k: (built.append(type(self)),
                                                                                  _init(self, *a, **k))[1])
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    losses["analytic"].eval({"x": x}).backward()
    losses["MC"].eval({"x": x}).backward()
    assert built == []
    with closed_forms.disabled():  # the general path builds them (the check above would see it)
        losses["analytic"].eval({"x": x})
    assert dist.Normal in built and Bernoulli.pyro_dist in built


def test_draws_are_pyro_sites_when_a_handler_listens(no_validation):  # type: ignore[no-untyped-def]
    (q, _, _), _ = _losses()
    x = torch.randn(4, 6)
    with poutine.trace() as tr:
        z = q.sample({"x": x}, reparam=True)["z"]
    assert tr.trace.nodes["z"]["type"] == "sample" and tr.trace.nodes["z"]["value"] is z
    with poutine.condition(data={"z": torch.zeros(4, 3)}):
        assert torch.equal(q.sample({"x": x}, reparam=True)["z"], torch.zeros(4, 3))


def test_families_with_their_own_class_keep_it(no_validation):  # type: ignore[no-untyped-def]
    p = FactorizedBernoulli(probs=torch.tensor([0.25, 0.5]), var=["x"])  # zeros are missing features: log 1 = 0
    assert torch.allclose(p.get_log_prob({"x": torch.tensor([[1., 0.]])}), torch.tensor([math.log(0.25)]))
    a = Normal(loc="x", scale=1., var=["z"], cond_var=["x"])
    poe = ProductOfNormal([a], name="q")
    assert not poe._dgm_plain and poe._dgm_closed_lp is None  # it builds its distribution its own way
    z = poe.sample({"x": torch.zeros(2, 1)}, reparam=True)["z"]
    assert z.shape == (2, 1)


def test_the_standard_form_follows_in_place_changes(no_validation):  # type: ignore[no-untyped-def]
    (q, _, prior), _ = _losses()
    kl = KullbackLeibler(q, prior)
    x = torch.randn(4, 6)
    before = kl.eval({"x": x})
    with torch.no_grad():
        prior.loc.fill_(1.0)  # no longer N(0, I): the cached test must not answer
    after = kl.eval({"x": x})
    with closed_forms.disabled():
        torch.testing.assert_close(after, kl.eval({"x": x}))
    assert not torch.allclose(before, after)


def test_errors_name_the_distribution_without_validation(no_validation):  # type: ignore[no-untyped-def]
    (q, p, prior), _ = _losses()
    with pytest.raises(ValueError, match=r"_Enc q\(z\|x\).*'z'.*\(4, 2\)"):
        q.get_log_prob({"x": torch.randn(4, 6), "z": torch.randn(4, 2)})
    with pytest.raises(ValueError, match=r"missing.*'x'|'x'.*missing"):
        KullbackLeibler(q, prior).eval({"y": torch.randn(4, 6)})
    class Mismatched(_Enc):  # loc and scale that do not broadcast
        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"loc": self.loc(x), "scale": torch.ones(x.shape[0], 2)}

    with pytest.raises(ValueError, match=r"Mismatched q\(z\|x\).*loc.*scale"):
        Mismatched().sample({"x": torch.randn(4, 6)}, reparam=True)
    narrow = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="r")
    with pytest.raises(ValueError, match=r"KullbackLeibler.*q\(z\|x\).*r\(z\)"):
        KullbackLeibler(q, narrow).eval({"x": torch.randn(4, 6)})


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=seeds, wide=st.booleans())
def test_standard_normal_log_prob_is_torchs(shape, seed, wide):  # type: ignore[no-untyped-def]
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    n, f = shape
    params = {"loc": torch.zeros(1, f, dtype=torch.float64), "scale": torch.ones(1, f, dtype=torch.float64)}
    if wide:  # a value narrower than the parameters broadcasts to them, as torch's log_prob does
        x = x[:, :1]
    lp = closed_forms.LOG_PROB_STANDARD[dist.Normal](params, x, ())
    expected = torch.distributions.Normal(params["loc"], params["scale"]).log_prob(x)
    assert lp.shape == expected.shape
    torch.testing.assert_close(lp, expected, rtol=1e-12, atol=1e-12)


class _Signed(Normal):
    """q(z|x) whose network can return a negative scale."""

    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(2, 2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"loc": self.fc(x), "scale": x}


def test_under_validation_bad_arguments_raise_torchs_error():  # type: ignore[no-untyped-def]
    pyro.enable_validation(True)
    q = _Signed()
    good, bad = torch.ones(3, 2), -torch.ones(3, 2)
    q.get_log_prob({"x": good, "z": good})  # fine
    for call in (lambda: q.get_log_prob({"x": bad, "z": good}), lambda: q.sample({"x": bad}, reparam=True),
                 lambda: KullbackLeibler(q, Normal(loc=0., scale=1., var=["z"], features_shape=[2])).eval({"x": bad})):
        with pytest.raises(ValueError, match=r"_Signed q\(z\|x\).*scale.*GreaterThan"):
            call()
    p = Bernoulli(probs=torch.full((2,), 0.25), var=["x"])
    for validate in (True, False):  # a value outside [0, 1]: scored as Pixyz does, x log p + (1 - x) log(1 - p)
        pyro.enable_validation(validate)
        for fast in (True, False):
            with contextlib.nullcontext() if fast else closed_forms.disabled():
                lp = p.get_log_prob({"x": torch.tensor([[2.0, -1.5]] * 3)})
            want = 2.0 * math.log(0.25) - math.log(0.75) - 1.5 * math.log(0.25) + 2.5 * math.log(0.75)
            torch.testing.assert_close(lp, torch.full((3,), want))


def test_the_checks_are_the_objects_checks():  # type: ignore[no-untyped-def]
    ok = {"loc": torch.zeros(2), "scale": torch.ones(2)}
    assert closed_forms.valid_params(dist.Normal, ok)
    assert not closed_forms.valid_params(dist.Normal, {**ok, "scale": torch.tensor([1., 0.])})
    assert not closed_forms.valid_params(dist.Normal, {**ok, "loc": torch.tensor([0., float("nan")])})
    assert closed_forms.valid_params(dist.Normal, {**ok, "scale": -torch.ones(2)}, skip=("scale",))
    assert closed_forms.valid_value(Bernoulli.pyro_dist, torch.tensor([0., 0.3, 1.]))
    assert closed_forms.valid_value(Bernoulli.pyro_dist, torch.tensor([0., 1.5]))  # Pixyz scores any real value
    assert not closed_forms.valid_value(Bernoulli.pyro_dist, torch.tensor([0., float("nan")]))
    assert not closed_forms.valid_value(dist.Normal, torch.tensor([float("nan")]))


def test_a_replaced_constant_is_never_taken_for_the_standard_one() -> None:
    # The "is it N(0, I)?" answer of a constant prior is cached under its buffers' ids; a buffer replaced twice can
    # land at the first one's freed address (in 1-3 tries under pymalloc), so the cache must hold the buffers.

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"loc": x, "scale": torch.ones_like(x)}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
    q, x = Q(), torch.zeros(3, 2)
    kl = KullbackLeibler(q, prior)
    for _ in range(50):
        kl.eval({"x": x})  # cached as standard
        prior.loc = torch.full((2,), 5.0)
        prior.sample(batch_n=1)  # (nothing else holds the first buffer now)
        prior.loc = torch.full((2,), 5.0)
        want = torch.distributions.kl_divergence(torch.distributions.Normal(x, 1.0),
                                                 torch.distributions.Normal(prior.loc, 1.0)).sum(-1)
        torch.testing.assert_close(kl.eval({"x": x}), want)
        lp = prior.get_log_prob({"z": x})
        torch.testing.assert_close(lp, torch.distributions.Normal(prior.loc, 1.0).log_prob(x).sum(-1))
        prior.loc = torch.zeros(2)
