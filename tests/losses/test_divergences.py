"""Analytic KL and entropy against closed forms and against Monte Carlo estimates.

Monte Carlo tolerances: a Monte Carlo estimate here is the mean of N independent single-sample estimates (one per
batch element, all with the same parameters), so its standard error is std(estimates) / sqrt(N). We accept a gap of 5
standard errors (a false alarm has probability below 1e-6 for a roughly normal mean).
"""
from __future__ import annotations

import math

import pytest
import torch

from pyro_dgm.distributions import Gamma, Laplace, Normal
from pyro_dgm.losses import CrossEntropy, Entropy, KullbackLeibler

N = 20000


def _q(loc: float, scale: float) -> Normal:
    """q(z|x) = N(loc + 0 * x, scale) per feature; x only sets the batch size."""
    return Normal(loc="x", scale=scale, var=["z"], cond_var=["x"], name="q"), loc


def _normal_kl(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    return (torch.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5).sum(-1)


def test_analytic_kl_matches_closed_form_and_monte_carlo() -> None:
    m1, s1 = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 1.5, 1.0])
    m2, s2 = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 2.0])
    q = Normal(loc="x", scale=s1, var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=m2, scale=s2, var=["z"], name="p")
    x = m1.expand(N, 3)
    kl = KullbackLeibler(q, p).eval({"x": x})
    closed = _normal_kl(m1, s1, m2, s2)
    assert kl.shape == (N,)
    assert torch.allclose(kl, closed.expand(N), atol=1e-5)
    mc = KullbackLeibler(q, p, analytical=False).eval({"x": x})
    se = mc.std() / math.sqrt(N)
    assert abs(float(mc.mean() - closed)) < 5 * float(se)


def test_kl_dim_sums_over_given_dims() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=0., scale=1., var=["z"], features_shape=[3])
    x = torch.tensor([[1., 2., 3.]])
    assert torch.allclose(KullbackLeibler(q, p, dim=1).eval({"x": x}), torch.tensor([7.0]))
    elementwise = KullbackLeibler(q, p, sum_features=False).eval({"x": x})
    torch.testing.assert_close(elementwise, torch.tensor([[0.5, 2.0, 4.5]]))  # (x - 0)^2 / 2 per dim
    torch.testing.assert_close(KullbackLeibler(q, p, dim=[]).eval({"x": x}), torch.tensor([7.0]))  # Pixyz: not given
    with pytest.raises(ValueError, match="sum_features=False.*dim=1"):
        KullbackLeibler(q, p, dim=1, sum_features=False)


def test_kl_of_mean_field_products_is_the_sum_of_factor_kls() -> None:
    q1 = Normal(loc="x", scale=0.5, var=["z1"], cond_var=["x"], name="q")
    q2 = Normal(loc="x", scale=2.0, var=["z2"], cond_var=["x"], name="q")
    p1 = Normal(loc=0., scale=1., var=["z1"], features_shape=[2])
    p2 = Normal(loc=1., scale=1., var=["z2"], features_shape=[2])
    x = torch.randn(5, 2)
    joint = KullbackLeibler(q1 * q2, p2 * p1).eval({"x": x})  # factor order does not matter
    parts = KullbackLeibler(q1, p1).eval({"x": x}) + KullbackLeibler(q2, p2).eval({"x": x})
    assert torch.allclose(joint, parts)


def test_kl_of_non_mean_field_products_raises_and_monte_carlo_works() -> None:
    q1 = Normal(loc="x", scale=1., var=["z1"], cond_var=["x"], name="q")
    q2 = Normal(loc="z1", scale=1., var=["z2"], cond_var=["z1"], name="q")
    p1 = Normal(loc=0., scale=1., var=["z1"], features_shape=[2])
    p2 = Normal(loc=0., scale=1., var=["z2"], features_shape=[2])
    x = torch.randn(4, 2)
    with pytest.raises(NotImplementedError, match="analytical=False"):
        KullbackLeibler(q1 * q2, p1 * p2).eval({"x": x})
    assert KullbackLeibler(q1 * q2, p1 * p2, analytical=False).eval({"x": x}).shape == (4,)


def test_missing_analytic_kl_raises_not_implemented_naming_the_fix() -> None:
    q = Gamma(concentration=1., rate=1., var=["z"], features_shape=[1], name="q")
    p = Laplace(loc=0., scale=1., var=["z"], features_shape=[1])
    with pytest.raises(NotImplementedError, match=r"Gamma.*Laplace.*analytical=False"):
        KullbackLeibler(q, p).eval()
    mc = KullbackLeibler(q, p, analytical=False, sample_shape=[4]).eval()
    # z ~ Exp(1) > 0, so log q(z) - log p(z) = -z - (-log 2 - |z|) = log 2 for every draw: the estimate is exact
    assert torch.allclose(mc, torch.full_like(mc, math.log(2)), atol=1e-6)


def test_analytic_entropy_matches_closed_form_and_monte_carlo() -> None:
    s = torch.tensor([0.5, 2.0])
    p = Normal(loc="x", scale=s, var=["z"], cond_var=["x"])
    x = torch.zeros(N, 2)
    h = Entropy(p).eval({"x": x})
    closed = (0.5 * torch.log(2 * math.pi * math.e * s ** 2)).sum()
    assert torch.allclose(h, closed.expand(N), atol=1e-5)
    mc = Entropy(p, analytical=False).eval({"x": x})
    assert abs(float(mc.mean() - closed)) < 5 * float(mc.std() / math.sqrt(N))


def test_cross_entropy_analytic_and_monte_carlo_agree() -> None:
    p = Normal(loc="x", scale=1., var=["z"], cond_var=["x"])
    q = Normal(loc=1., scale=2., var=["z"], features_shape=[1], name="q")
    x = torch.zeros(N, 1)
    exact = CrossEntropy(p, q, analytical=True).eval({"x": x})
    # H[p, q] = 0.5 log(2 pi s_q^2) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2)
    closed = 0.5 * math.log(2 * math.pi * 4) + (1 + 1) / 8
    assert torch.allclose(exact, torch.full((N,), closed), atol=1e-5)
    mc = CrossEntropy(p, q).eval({"x": x})
    assert abs(float(mc.mean()) - closed) < 5 * float(mc.std() / math.sqrt(N))


def test_entropy_of_mean_field_product_is_the_sum() -> None:
    a = Normal(loc=0., scale=2., var=["a"], features_shape=[1])
    b = Normal(loc=0., scale=3., var=["b"], features_shape=[1])
    assert torch.allclose(Entropy(a * b).eval(), Entropy(a).eval() + Entropy(b).eval())


def test_analytic_kl_of_a_batch_of_bernoullis_against_a_constant_prior_is_the_closed_form() -> None:
    """A binary-latent VAE's regularizer: q(z|x) of batch 5 against a prior of batch 1. torch's Bernoulli pair
    indexes one distribution with the other's mask, unbroadcast, and raised ``IndexError`` (under Pixyz too);
    KL = sum_i p log(p / r) + (1 - p) log((1 - p) / (1 - r)) per row."""
    from pyro_dgm.distributions import Bernoulli

    q = Bernoulli(probs="x", var=["z"], cond_var=["x"], name="q")
    prior = Bernoulli(probs=torch.tensor(0.5), var=["z"], features_shape=[4], name="p_{prior}")
    p = torch.linspace(0.1, 0.9, 20).reshape(5, 4)
    expected = (p * torch.log(p / 0.5) + (1 - p) * torch.log((1 - p) / 0.5)).sum(-1)
    torch.testing.assert_close(KullbackLeibler(q, prior).eval({"x": p}), expected)
    torch.testing.assert_close(KullbackLeibler(prior, q).eval({"x": p}),
                               (0.5 * torch.log(0.5 / p) + 0.5 * torch.log(0.5 / (1 - p))).sum(-1))
