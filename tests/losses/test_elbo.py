"""ELBO <= IWELBO_k <= log p(x) on a linear-Gaussian model whose marginal is known, and IWELBO_k -> log p(x).

Model: z ~ N(0, 1), x | z ~ N(w z, s^2), so p(x) = N(0, w^2 + s^2). The proposal q(z|x) = N(c x, t^2) is not the
posterior, so the bounds are strict. (The importance-weighted bound is a *lower* bound, tighter than the ELBO.)
"""
from __future__ import annotations

import math

import torch

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import ELBO, IWELBO, LogMarginal

W, S, C, T = 2.0, 0.5, 0.2, 0.8


class Lik(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], scale=S)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": W * z}


class Prop(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], scale=T, name="q")

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"loc": C * x}


def _setup(n: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[1])
    p, q = Lik() * prior, Prop()
    x = torch.randn(n, 1) * math.sqrt(W ** 2 + S ** 2)
    log_px = torch.distributions.Normal(0., math.sqrt(W ** 2 + S ** 2)).log_prob(x).squeeze(-1)
    post_var = S ** 2 / (W ** 2 + S ** 2)
    post = torch.distributions.Normal(W * x / (W ** 2 + S ** 2), math.sqrt(post_var))
    exact_elbo = log_px - torch.distributions.kl_divergence(torch.distributions.Normal(C * x, T), post).squeeze(-1)
    return p, q, x, log_px, exact_elbo


def test_elbo_matches_its_closed_form() -> None:
    n = 4000
    p, q, x, log_px, exact = _setup(n)
    elbo = ELBO(p, q).eval({"x": x})
    diff = elbo - exact  # mean 0; standard error std / sqrt(n); accept 5 standard errors
    assert abs(float(diff.mean())) < 5 * float(diff.std() / math.sqrt(n))
    assert float(exact.mean()) < float(log_px.mean())


def test_elbo_below_iwelbo_below_log_marginal_and_gap_shrinks() -> None:
    n = 300
    p, q, x, log_px, exact_elbo = _setup(n)
    gaps, ses = [], []
    for k in (1, 10, 100, 1000):
        bound = IWELBO(p, q, k=k, chunk_size=64).eval({"x": x})
        assert bound.shape == (n,)
        if k == 1:  # IWELBO_1 is a one-sample ELBO: unbiased for the closed-form ELBO (5 standard errors)
            diff = bound - exact_elbo
            assert abs(float(diff.mean())) < 5 * float(diff.std() / math.sqrt(n))
        gap = log_px - bound
        gaps.append(float(gap.mean()))
        ses.append(float(gap.std() / math.sqrt(n)))
    # ELBO gap here is E[KL(q || posterior)] ~ 6 nats; it shrinks with k (to ~0.003 at k=1000)
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]
    assert gaps[3] > -5 * ses[3]  # still a lower bound of log p(x), up to Monte Carlo error
    assert gaps[3] < 0.02


def test_log_marginal_is_iwelbo_and_chunks_cover_k() -> None:
    p, q, x, log_px, _ = _setup(50)
    assert LogMarginal is IWELBO
    b = LogMarginal(p, q, k=7, chunk_size=3)  # chunks of 3, 3, 1
    assert b.input_var == ["x"]
    assert b.eval({"x": x}).shape == (50,)
