"""PyroELBO: a term from plain Pyro model/guide whose gradients are Pyro's own."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import KullbackLeibler, PyroELBO

torch.manual_seed(0)
DEC = nn.Linear(2, 3)
ENC = nn.Linear(3, 4)


def model(x):  # type: ignore[no-untyped-def]
    pyro.module("dec", DEC)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.).to_event(1))
        pyro.sample("x", dist.Normal(DEC(z), 1.).to_event(1), obs=x)


def guide(x):  # type: ignore[no-untyped-def]
    pyro.module("enc", ENC)
    with pyro.plate("data", x.shape[0]):
        h = ENC(x)
        pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def _grads() -> list[torch.Tensor]:
    out = [p.grad.clone() for m in (DEC, ENC) for p in m.parameters()]
    for m in (DEC, ENC):
        m.zero_grad()
    return out


def test_pyro_elbo_gradients_equal_pyros_loss_and_grads() -> None:
    x = torch.randn(5, 3)
    for m in (DEC, ENC):
        m.zero_grad()
    pyro.set_rng_seed(3)
    ref = Trace_ELBO().loss_and_grads(model, guide, x)
    ref_grads = _grads()
    pyro.set_rng_seed(3)
    ours = PyroELBO(model, guide).loss_and_grads(None, None, x=x)
    assert abs(ours - ref) < 1e-5
    for a, b in zip(_grads(), ref_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_pyro_elbo_composes_with_our_terms() -> None:
    x = torch.randn(5, 3)
    q = Normal(loc="x", scale=1., var=["w"], cond_var=["x"], name="q")
    prior = Normal(loc=0., scale=1., var=["w"], features_shape=[3], name="p_{prior}")
    term = KullbackLeibler(q, prior).sum()
    loss = PyroELBO(model, guide) + 0.5 * term
    assert loss.input_var == ["x"]
    pyro.set_rng_seed(4)
    value = loss.eval({"x": x})
    pyro.set_rng_seed(4)
    expected = Trace_ELBO().differentiable_loss(model, guide, x) + 0.5 * term.eval({"x": x})
    assert torch.allclose(value, expected)
    assert str(loss).startswith(r"-\mathrm{ELBO}_{Trace\_ELBO} \left[model, guide \right] + 0.5 sum")


def test_pyro_elbo_of_pyro_dgm_model_and_guide_takes_their_inputs() -> None:
    """A distribution's .model/.guide take data by keyword: the term reads the guide's inputs, and equals Pyro's."""
    import pyro
    from pyro.infer import Trace_ELBO as _TraceELBO

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import PyroELBO as _PyroELBO

    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * Normal(loc=0., scale=1., var=["z"], features_shape=[1])
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    term = _PyroELBO(p.model, q.guide)
    assert term.input_var == ["x"]
    x = torch.randn(5, 1)
    pyro.set_rng_seed(3)
    ours = term.eval({"x": x})
    pyro.set_rng_seed(3)
    theirs = _TraceELBO().differentiable_loss(p.model, q.guide, x=x)
    assert torch.allclose(ours, theirs)
