"""What Pyro shows of a pyro_dgm model (``pyro.render_model``), ``JitTrace_ELBO`` on it, and data passed
positionally (``joint.model(x)``, ``svi.step(x)``), each against the same VAE written in plain Pyro."""
from __future__ import annotations

import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from dgm_fixtures import Decoder, Encoder
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Categorical, FactorizedBernoulli, Normal, RelaxedBernoulli

X, Z, N = 6, 2, 5
PYRO_DGM = str(Path(__file__).resolve().parents[2] / "pyro_dgm")


@pytest.fixture
def vae():
    torch.manual_seed(0)
    p = Decoder(X, Z, 8, logits=True, activation=nn.Tanh)
    q = Encoder(X, Z, 8, split=True, activation=nn.Tanh)
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[Z], name="p_{prior}")
    return p * prior, q, p


def plain(p: Decoder, q: Encoder):
    def model(x):
        pyro.module("decoder", p)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], Z), torch.ones(x.shape[0], Z)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=p.net(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", q)
        with pyro.plate("data", x.shape[0]):
            h = q.net(x)
            pyro.sample("z", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))

    return model, guide


# ------------------------------------------------------------------------------------------------ render_model
def test_render_model_shows_the_family_names_as_plain_pyro_does(vae):
    pytest.importorskip("graphviz")
    joint, q, p = vae
    x = torch.bernoulli(torch.full((N, X), 0.5))
    model, _ = plain(p, q)
    ours = pyro.render_model(joint.model, model_args=(x,), render_distributions=True).source
    ref = pyro.render_model(model, model_args=(x,), render_distributions=True).source
    assert "x ~ Bernoulli\\l" in ours and "BernoulliBCE" not in ours
    assert ours == ref  # the same graph: plate, nodes, edge, distributions
    with_params = pyro.render_model(joint.model, model_args=(x,), render_params=True,
                                    render_distributions=True).source
    assert "p(x|z)$$$net.0.weight" in with_params  # pyro.module's naming: <pyro_name>$$$<parameter>


@pytest.mark.parametrize("family, expected", [
    (lambda: FactorizedBernoulli(probs=torch.full((X,), 0.5), var=["x"]), "FactorizedBernoulli"),
    (lambda: RelaxedBernoulli(temperature=0.5, probs=torch.full((X,), 0.5), var=["x"]), "RelaxedBernoulli"),
    (lambda: Categorical(probs=torch.ones(3) / 3, var=["x"]), "OneHotCategorical"),
])
def test_site_distributions_carry_readable_class_names(family, expected):
    tr = poutine.trace(family().model).get_trace()
    fn = tr.nodes["x"]["fn"]
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):  # what render_model unwraps
        fn = fn.base_dist
    assert type(fn).__name__ == expected


# ------------------------------------------------------------------------------------------------ JitTrace_ELBO
def train(model, guide, elbo, batches):
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    return [svi.step(b) for b in batches]  # positional data, as JIT-compiled Pyro code passes it


def test_jit_trace_elbo_equals_plain_pyro_and_warns_nothing_from_pyro_dgm(vae):
    joint, q, p = vae
    start = {k: v.clone() for k, v in {**p.state_dict(), **{"q" + k: v for k, v in q.state_dict().items()}}.items()}
    batches = [torch.bernoulli(torch.full((N, X), 0.3 + 0.1 * i)) for i in range(4)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ours = train(joint.model, q.guide, JitTrace_ELBO(), batches)
    ours_w = [t.detach().clone() for t in (*p.parameters(), *q.parameters())]
    p.load_state_dict({k: v for k, v in start.items() if not k.startswith("q")})
    q.load_state_dict({k[1:]: v for k, v in start.items() if k.startswith("q")})
    for t in (*p.parameters(), *q.parameters()):
        t.grad = None
    ref = train(*plain(p, q), JitTrace_ELBO(), batches)
    ref_w = [t.detach() for t in (*p.parameters(), *q.parameters())]
    assert ours == pytest.approx(ref, rel=1e-5)
    for a, b in zip(ours_w, ref_w):
        torch.testing.assert_close(a, b)
    from_us = [w for w in seen if w.category.__name__ == "TracerWarning" and w.filename.startswith(PYRO_DGM)]
    assert not from_us, [(w.filename, w.lineno, str(w.message)[:80]) for w in from_us]


# ------------------------------------------------------------------------------------------------ positional data
def test_positional_data_equals_data_by_name_and_plain_pyro(vae):
    joint, q, p = vae
    x = torch.bernoulli(torch.full((N, X), 0.5))
    tr = poutine.trace(joint.model).get_trace(x)
    assert tr.nodes["x"]["is_observed"] and tr.nodes["x"]["value"] is x
    assert joint.pyro_arg_names == ["x"] and q.pyro_arg_names == ["x", "z"]
    losses = {}
    for key, (model, guide, args, kwargs) in {
            "positional": (joint.model, q.guide, (x,), {}), "by name": (joint.model, q.guide, (), {"x": x}),
            "plain": (*plain(p, q), (x,), {})}.items():
        pyro.set_rng_seed(4)
        loss = Trace_ELBO().differentiable_loss(model, guide, *args, **kwargs)
        losses[key] = (loss, torch.autograd.grad(loss, [*p.parameters(), *q.parameters()]))
    for key in ("positional", "by name"):
        torch.testing.assert_close(losses[key][0], losses["plain"][0])
        for a, b in zip(losses[key][1], losses["plain"][1]):
            torch.testing.assert_close(a, b)


def test_too_many_positional_values_say_how_to_call(vae):
    joint, q, _ = vae
    x = torch.zeros(N, X)
    with pytest.raises(TypeError, match=r"model\(\) takes its data by name, e.g. model\(x=...\), or as 1 "
                                        r"positional value\(s\) in the order \['x'\]; got 2"):
        joint.model(x, x)
    with pytest.raises(TypeError, match=r"guide\(\) .* in the order \['x'\]; got 2"):
        q.guide(x, x)  # a guide takes only its inputs positionally (not z, which it draws)
