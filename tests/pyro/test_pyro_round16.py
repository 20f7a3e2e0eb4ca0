"""A distribution without inputs whose constants are scalars, observing data inside nested plates that cover
several of the data's dims, against plain-Pyro twins (round 16).

Pixyz's convention reads such a value's first dim as the batch and the rest as features. Inside Pyro plates that
cover the data's leading dims (``groups`` at dim -2 and ``data`` at dim -1 over a value of shape ``[G, N]``), the
plates say which dims are batch dims, as for a distribution with inputs: the call was refused ("Shape mismatch inside
plate('data')") for ``[G, N]``, ``[G, N, D]`` and ``[G, 1]``, and a ``[1, N]`` value was scored as one row of ``N``
features under a plate of ``N``: its log-density counted ``N`` times.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_dgm.distributions import Bernoulli, Normal

G, N, D = 3, 5, 4


def _nested(call, x):
    with pyro.plate("groups", G, dim=-2):
        with pyro.plate("data", N, dim=-1):
            call(x)


def _trace(model, x):
    tr = poutine.trace(model).get_trace(x)
    tr.compute_log_prob()
    return tr


@pytest.mark.parametrize("shape, event", [((G, N), 0), ((G, N, D), 1), ((G, 1), 0), ((1, N), 0)])
def test_scalar_normal_in_groups_and_data_plates_matches_pyro(shape, event):
    torch.manual_seed(0)
    x = torch.randn(shape)
    p = Normal(loc=torch.tensor(0.5), scale=torch.tensor(2.0), var=["x"])
    twin_fn = dist.Normal(0.5, 2.0)
    if event:
        twin_fn = twin_fn.expand([D]).to_event(1)
    ours = _trace(lambda x: _nested(lambda v: p.model(x=v), x), x)
    twin = _trace(lambda x: _nested(lambda v: pyro.sample("x", twin_fn, obs=v), x), x)
    assert ours.nodes["x"]["fn"].event_shape == twin.nodes["x"]["fn"].event_shape
    assert ours.nodes["x"]["log_prob"].shape == twin.nodes["x"]["log_prob"].shape == (G, N)
    torch.testing.assert_close(ours.log_prob_sum(), twin.log_prob_sum())
    # and the closed form: every entry of x scored once
    closed = torch.distributions.Normal(0.5, 2.0).log_prob(x).sum() * (G * N / x.shape[:2].numel())
    torch.testing.assert_close(ours.log_prob_sum(), closed)


def test_scalar_bernoulli_in_groups_and_data_plates_matches_pyro():
    torch.manual_seed(1)
    x = torch.randint(0, 2, (G, N)).float()
    p = Bernoulli(probs=torch.tensor(0.3), var=["x"])
    ours = _trace(lambda x: _nested(lambda v: p.model(x=v), x), x)
    twin = _trace(lambda x: _nested(lambda v: pyro.sample("x", dist.Bernoulli(0.3), obs=v), x), x)
    torch.testing.assert_close(ours.log_prob_sum(), twin.log_prob_sum())


def test_trace_elbo_with_group_latent_matches_pyro():
    """A plain-Pyro group latent beside the pyro_dgm likelihood of every entry: the ELBO and its gradient."""
    torch.manual_seed(2)
    x = torch.randn(G, N)
    p = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["x"])

    def model(x, ours):
        with pyro.plate("groups", G, dim=-2):
            pyro.sample("m", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            with pyro.plate("data", N, dim=-1):
                if ours:
                    p.model(x=x)
                else:
                    pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    loc = torch.zeros(G, 1, 1, requires_grad=True)

    def guide(x, ours):
        with pyro.plate("groups", G, dim=-2):
            pyro.sample("m", dist.Normal(loc, 1.0).to_event(1))

    losses = []
    for ours in (True, False):
        pyro.set_rng_seed(3)
        loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x, ours)
        (g,) = torch.autograd.grad(loss, loc)
        losses.append((loss, g))
    torch.testing.assert_close(losses[0][0], losses[1][0])
    torch.testing.assert_close(losses[0][1], losses[1][1])


def test_one_data_plate_keeps_pixyz_features():
    """Control: under one data plate a ``[N, D]`` value keeps Pixyz's reading (N rows of D features)."""
    torch.manual_seed(4)
    x = torch.randn(N, D)
    p = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["x"])

    def ours(x):
        with pyro.plate("data", N):
            p.model(x=x)

    def twin(x):
        with pyro.plate("data", N):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([D]).to_event(1), obs=x)

    a, b = _trace(ours, x), _trace(twin, x)
    assert a.nodes["x"]["fn"].event_shape == (D,)
    torch.testing.assert_close(a.log_prob_sum(), b.log_prob_sum())


def test_a_sample_option_given_to_model_is_warned_of():
    """``joint.model(batch_n=5)`` draws one row (the plain-Pyro twin refuses an unknown keyword): a warning names
    the option and the way to draw N rows; inside ``pyro.plate("data", N)`` the model draws N rows."""
    px = Normal(loc="z", scale=torch.tensor(1.0), var=["x"], cond_var=["z"])
    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2])
    joint = px * pz
    with pytest.warns(UserWarning, match=r"batch_n= is an option of sample\(\), not data.*pyro.plate\('data', N\)"):
        out = joint.model(batch_n=N)
    assert out["x"].shape == (1, 2)
    with pyro.plate("data", N):
        assert joint.model()["x"].shape == (N, 2)
