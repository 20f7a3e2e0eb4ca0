"""A one-row global draw fed to the next level of a hierarchical model, under Pyro's JIT (``JitTrace_ELBO`` and
friends, ``NUTS(jit_compile=True)``), against plain-Pyro twins (probe p98).

Under ``torch.jit.trace`` a size is a traced tensor, and the call took any traced size as the data's: the one-row
``tau`` given to ``q_w.guide(tau=tau)`` opened a data plate of size 1, which the model then replayed, so its own
data plate of 6 rows became a subsample of 1 and the likelihood was scaled by 6 (a silently wrong loss and
gradient: 152.78 where the twin gives 25.87); a model ``p_w.model(tau=tau)`` followed by ``p_x.model(x=x, w=w)``
was refused ("the trace holds the plate 'data' of size 1"). Outside the JIT the call opens no plate for one row; the
traced size's value decides now, as a twin's ``pyro.plate("data", len(x))`` is an int under the JIT.
"""
from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceGraph_ELBO, Trace_ELBO

from pyro_dgm.distributions import Normal
from test_pyro_round6 import D, N, QW  # q(w|tau): a network of a global input (one row)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the JIT's tracer warnings)
        yield


def _data() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(0))


def _plain_model(x: torch.Tensor) -> None:
    tau = pyro.sample("tau", dist.Normal(torch.zeros(1, D), 1.0).to_event(1))
    w = pyro.sample("w", dist.Normal(tau, 0.5).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(w, 1.0).to_event(1), obs=x)


@pytest.mark.parametrize("elbo", [JitTrace_ELBO, JitTraceGraph_ELBO, JitTraceEnum_ELBO])
def test_a_guide_given_a_global_draw_under_the_jit(elbo):
    torch.manual_seed(3)
    q_w = QW()
    start = {k: v.clone() for k, v in q_w.state_dict().items()}

    def ours(x):
        tau = pyro.sample("tau", dist.Normal(torch.zeros(1, D), 1.0).to_event(1))
        q_w.guide(tau=tau)

    def twin(x):
        pyro.module("q(w|\\tau)", q_w)
        tau = pyro.sample("tau", dist.Normal(torch.zeros(1, D), 1.0).to_event(1))
        pyro.sample("w", dist.Normal(q_w.net(tau), 0.7).to_event(1))

    results = []
    for guide in (ours, twin):
        q_w.load_state_dict(start)
        pyro.clear_param_store()
        loss_fn = elbo(ignore_jit_warnings=True, max_plate_nesting=1)
        for seed in range(3):  # the first call traces, the others run the trace
            q_w.net.weight.grad = None
            pyro.set_rng_seed(seed)
            loss = loss_fn.loss_and_grads(_plain_model, guide, _data())
        results.append((loss, q_w.net.weight.grad.clone()))
    (loss, grad), (twin_loss, twin_grad) = results
    assert loss == pytest.approx(twin_loss, rel=1e-6)  # was 152.78 (the likelihood scaled by 6) against 25.87
    assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-6)


def _hierarchical():
    p_tau = Normal(loc=torch.zeros(D), scale=torch.ones(D), var=["tau"], name="p")
    p_w = Normal(loc="tau", scale=torch.full((D,), 0.5), var=["w"], cond_var=["tau"], name="p")
    p_x = Normal(loc="w", scale=torch.ones(D), var=["x"], cond_var=["w"], name="p")

    def model(x):
        tau = p_tau.model()["tau"]
        w = p_w.model(tau=tau)["w"]
        p_x.model(x=x, w=w)

    return model


def _guide(x: torch.Tensor) -> None:
    a = pyro.param("a", torch.zeros(1, D))
    b = pyro.param("b", torch.zeros(1, D))
    pyro.sample("tau", dist.Normal(a, 1.0).to_event(1))
    pyro.sample("w", dist.Normal(b, 1.0).to_event(1))


@pytest.mark.parametrize("elbo", [Trace_ELBO, JitTrace_ELBO])
def test_a_hierarchical_model_trains_as_its_twin(elbo):
    losses = []
    for model in (_hierarchical(), _plain_model):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(model, _guide, pyro.optim.Adam({"lr": 0.1}), elbo())
        losses.append([svi.step(_data()) for _ in range(3)])  # was refused under the JIT
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_hierarchical_model_under_nuts_with_the_jit():
    means = []
    for model in (_hierarchical(), _plain_model):
        pyro.set_rng_seed(0)
        mcmc = MCMC(NUTS(model, jit_compile=True, ignore_jit_warnings=True), num_samples=10, warmup_steps=10,
                    disable_progbar=True)
        mcmc.run(_data())  # was refused
        means.append(mcmc.get_samples()["w"].mean(0).flatten())
    assert torch.allclose(means[0], means[1], rtol=1e-5, atol=1e-6)
