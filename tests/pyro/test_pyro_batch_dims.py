"""Batch dims inside Pyro: vectorized particles, parallel ``Predictive`` and enumeration in a ``pyro.markov`` loop.

A value given from outside a pyro_dgm call has one batch dim (Pixyz's rule), except inside Pyro, where a value that
is a site of an active trace (a draw with particle, sample or enumeration dims on the left of the plates' dims)
keeps that site's event dims, so everything left of them is batch. Each test compares with the same model written
in plain Pyro, with the same networks and seed: values and gradients must agree.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from dgm_fixtures import Decoder, Encoder
from pyro.infer import Predictive, Trace_ELBO, TraceEnum_ELBO

from pyro_dgm.distributions import Categorical, Normal

X, Z, N, S = 6, 2, 5, 4


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return Decoder(X, Z, logits=True), Encoder(X, Z, split=True), torch.bernoulli(torch.full((N, X), 0.3))


def pairs(p: Decoder, q: Encoder, new: bool = False):
    """(model, guide) written with our .dist() objects, and the same in plain Pyro on the same networks."""
    def prior(n):
        return dist.Normal(torch.zeros(n, Z), torch.ones(n, Z)).to_event(1)

    def model_dgm(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior(len(x)))
            pyro.sample("x", p.dist({"z": z}), obs=x)
            if new:  # a posterior predictive draw
                pyro.sample("x_new", p.dist({"z": z}))

    def guide_dgm(x):
        pyro.module("q", q)
        with pyro.plate("data", len(x)):
            pyro.sample("z", q.dist({"x": x}))

    def model_pyro(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior(len(x)))
            pyro.sample("x", dist.Bernoulli(logits=p.net(z)).to_event(1), obs=x)
            if new:
                pyro.sample("x_new", dist.Bernoulli(logits=p.net(z)).to_event(1))

    def guide_pyro(x):
        pyro.module("q", q)
        with pyro.plate("data", len(x)):
            h = q.net(x)
            pyro.sample("z", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))

    return (model_dgm, guide_dgm), (model_pyro, guide_pyro)


def loss_grads(elbo, model, guide, params, *args):
    pyro.set_rng_seed(7)
    loss = elbo.differentiable_loss(model, guide, *args)
    return loss, torch.autograd.grad(loss, params)


def test_outside_pyro_a_given_value_keeps_one_batch_dim(nets):
    p, _, _ = nets
    d = p.dist({"z": torch.randn(S, N, Z)})  # Pixyz's rule: [S] batch, the rest features
    assert (tuple(d.batch_shape), tuple(d.event_shape)) == ((S,), (N, X))
    with pyro.plate("data", N):  # one plate: one batch dim, as Pixyz's rule says
        d = p.dist({"z": torch.randn(S, N, Z)})
    assert (tuple(d.batch_shape), tuple(d.event_shape)) == ((S,), (N, X))


def test_with_no_trace_the_plates_say_how_many_batch_dims(nets):
    p, q, x = nets
    with pyro.plate("particles", S, dim=-2), pyro.plate("data", N, dim=-1):
        d = p.dist({"z": torch.randn(S, N, Z)})  # its leading dims fit the plates (S, N)
        assert (tuple(d.batch_shape), tuple(d.event_shape)) == ((S, N), (X,))
        d = q.dist({"x": x})  # data [N, X]: X does not fit the plate of size N at dim -1, so one batch dim
        assert (tuple(d.batch_shape), tuple(d.event_shape)) == ((N,), (Z,))
        one_dim = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"])
        d = one_dim.dist({"z": torch.randn(N, 1)})  # [N, 1]: 1 is not the plate's size (N data, 1-dim features)
        assert (tuple(d.batch_shape), tuple(d.event_shape)) == ((N,), (1,))


def test_vectorized_particles_through_dist_equal_plain_pyro(nets):
    p, q, x = nets
    (m, g), (m_ref, g_ref) = pairs(p, q)
    params = [*p.parameters(), *q.parameters()]
    elbo = Trace_ELBO(num_particles=S, vectorize_particles=True, max_plate_nesting=1)
    ref = loss_grads(elbo, m_ref, g_ref, params, x)
    ours = loss_grads(elbo, m, g, params, x)
    torch.testing.assert_close(ours[0], ref[0])
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b)
    # the particle dim is a batch dim of p(x|z): batch (S, N), event (X,)
    with pyro.plate("particles", S, dim=-2):
        tr = poutine.trace(poutine.replay(m, trace=poutine.trace(g).get_trace(x))).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (S, N, Z)
    assert (tuple(tr.nodes["x"]["fn"].batch_shape), tuple(tr.nodes["x"]["fn"].event_shape)) == ((S, N), (X,))


def test_parallel_predictive_through_dist_equals_plain_pyro(nets):
    p, q, x = nets
    (m, g), (m_ref, g_ref) = pairs(p, q, new=True)
    out = {}
    for key, (model, guide) in (("ours", (m, g)), ("ref", (m_ref, g_ref))):
        pyro.set_rng_seed(3)
        out[key] = Predictive(model, guide=guide, num_samples=S, parallel=True, return_sites=["z", "x_new"])(x)
    ours, ref = out["ours"], out["ref"]
    assert ours["z"].shape == (S, N, Z) and ours["x_new"].shape == (S, N, X)
    torch.testing.assert_close(ours["z"], ref["z"])
    torch.testing.assert_close(ours["x_new"], ref["x_new"])
    assert not torch.equal(ours["x_new"][0], ours["x_new"][1])  # one draw of x per posterior sample
