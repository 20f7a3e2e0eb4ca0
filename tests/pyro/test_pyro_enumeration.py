"""A Markov model with an enumerated discrete latent, written with pyro_dgm calls per step inside ``pyro.markov``,
against the same model in plain Pyro (same networks, same data): ``TraceEnum_ELBO`` sums the latent out exactly, so
the losses (-log p(x)) and their gradients must agree.

The latent ``z_t`` is a one-hot Categorical with ``infer={"enumerate": "parallel"}``; each step's networks see the
enumerated value of ``z_{t-1}`` (shape ``[K, 1, ..., 1, K]``, its enumeration dim left of the data plate), which a
pyro_dgm call must read as batch dims, not as features.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO
from torch import nn

from pyro_dgm.distributions import Categorical, Normal

K, D, T, B = 3, 2, 4, 5


class Nets(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.init = nn.Parameter(torch.randn(1, K))
        self.trans = nn.Linear(K, K)
        self.emit = nn.Linear(K, 2 * D)

    def emission(self, z):
        h = self.emit(z)
        return h[..., :D], F.softplus(h[..., D:]) + 0.1


def plain_pyro(nets: Nets):
    def model(xs):
        pyro.module("hmm", nets)
        with pyro.plate("data", B, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                logits = nets.init if t == 0 else nets.trans(z)
                z = pyro.sample(f"z_{t}", dist.OneHotCategorical(logits=logits), infer={"enumerate": "parallel"})
                loc, scale = nets.emission(z)
                pyro.sample(f"x_{t}", dist.Normal(loc, scale).to_event(1), obs=xs[:, t])
    return model


def ours(nets: Nets):
    class Init(Categorical):  # p(z_0)
        def __init__(self) -> None:
            super().__init__(var=["z"], name="p", infer={"enumerate": "parallel"})
            self.nets = nets

        def forward(self):
            return {"logits": self.nets.init}

    class Trans(Categorical):  # p(z_t|z_{t-1})
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["z_prev"], name="p", infer={"enumerate": "parallel"})
            self.nets = nets

        def forward(self, z_prev):
            return {"logits": self.nets.trans(z_prev)}

    class Emit(Normal):  # p(x_t|z_t)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.nets = nets

        def forward(self, z):
            loc, scale = self.nets.emission(z)
            return {"loc": loc, "scale": scale}

    return Init(), Trans(), Emit()


def model_with_dist(nets: Nets):
    init, trans, emit = ours(nets)

    def model(xs):  # the sites are the user's, the distributions ours (.dist)
        with pyro.plate("data", B, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                d = init.dist() if t == 0 else trans.dist({"z_prev": z})
                z = pyro.sample(f"z_{t}", d, infer={"enumerate": "parallel"})
                pyro.sample(f"x_{t}", emit.dist({"z": z}), obs=xs[:, t])
    return model


def model_with_model_calls(nets: Nets):
    init, trans, emit = ours(nets)
    steps = [emit.replace_var(z="z_0", x="x_0") * init.replace_var(z="z_0")] + [
        emit.replace_var(z=f"z_{t}", x=f"x_{t}") * trans.replace_var(z=f"z_{t}", z_prev=f"z_{t - 1}")
        for t in range(1, T)]

    def model(xs):  # one pyro_dgm model call per step, given the previous step's (enumerated) z
        with pyro.plate("data", B, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                given = {f"x_{t}": xs[:, t]} if t == 0 else {f"z_{t - 1}": z, f"x_{t}": xs[:, t]}
                z = steps[t].model(**given)[f"z_{t}"]
    return model


def guide(xs):  # every latent is enumerated in the model
    pass


def loss_grads(model, nets, xs):
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, xs)
    return loss, torch.autograd.grad(loss, list(nets.parameters()))


@pytest.mark.parametrize("build", [model_with_dist, model_with_model_calls])
def test_markov_enumeration_equals_plain_pyro(build):
    torch.manual_seed(0)
    nets = Nets()
    xs = torch.randn(B, T, D)
    ref = loss_grads(plain_pyro(nets), nets, xs)
    got = loss_grads(build(nets), nets, xs)
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b)


def test_enumerated_loss_is_the_exact_marginal_likelihood():
    # the forward algorithm by hand: -log p(x) = -logsumexp over the paths, the same number TraceEnum_ELBO gives
    torch.manual_seed(1)
    nets = Nets()
    xs = torch.randn(B, T, D)
    eye = torch.eye(K)
    with torch.no_grad():
        loc, scale = nets.emission(eye)  # [K, D]
        log_emit = dist.Normal(loc, scale).to_event(1).log_prob(xs.unsqueeze(-2))  # [B, T, K]
        log_trans = torch.log_softmax(nets.trans(eye), -1)  # [K_prev, K]
        alpha = torch.log_softmax(nets.init, -1) + log_emit[:, 0]
        for t in range(1, T):
            alpha = torch.logsumexp(alpha.unsqueeze(-1) + log_trans, -2) + log_emit[:, t]
        expected = -torch.logsumexp(alpha, -1).sum()
        got = TraceEnum_ELBO(max_plate_nesting=1).loss(model_with_model_calls(nets), guide, xs)
    assert got == pytest.approx(float(expected), rel=1e-5)
