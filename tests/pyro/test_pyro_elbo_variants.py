"""Pyro's other ELBOs, importance sampling, effect handlers and model inspection on pyro_dgm models and guides.

``joint.model`` and ``q.guide`` are Pyro callables, so each of Pyro's tools must see on them exactly what it sees on
the same VAE written in plain Pyro with the same networks: run from the same seed, the two give the same numbers.
This file proves it, each time against a plain-Pyro twin that calls ``pyro.module`` under pyro_dgm's names (so the
param stores match too), for

- ``TraceGraph_ELBO`` on a hierarchical model with a non-reparameterized latent (Bernoulli ``z1``, with a decaying
  average baseline) above a reparameterized one (Normal ``z2``): its estimator needs the provenance of ``z1``
  through pyro_dgm's networks, so the losses, the gradients and the baseline's state agree only if that provenance
  survives them; also with vectorized particles;
- ``RenyiELBO`` (alpha 0.5 and 0, several particles, sequential and vectorized): ``loss`` and ``loss_and_grads``;
- ``TraceTailAdaptive_ELBO`` (vectorized particles, fully reparameterized guide): the gradients, and the same
  refusal of a non-reparameterized guide;
- ``Trace_ELBO(num_particles=k, vectorize_particles=True)`` with ``max_plate_nesting`` 1, 2 or guessed by Pyro;
- ``pyro.infer.Importance`` (log weights, log evidence, ESS, the empirical marginal; the guide or the prior as the
  proposal), ``vectorized_importance_weights`` and ``psis_diagnostic``;
- the handlers ``do`` (the trace outside and inside it), ``reparam`` with ``LocScaleReparam`` (fixed and learned
  centering; the model's and the guide's ``z``, and an ELBO on the reparameterized model with ``AutoNormal``),
  ``uncondition``, ``seed`` and ``lift``: the same site names, types, observed flags, values and log-densities;
- ``pyro.infer.inspect.get_dependencies`` and ``get_model_relations``: the same graph.

What was silently wrong, now refused: a value computed by the user's code from a site (``mu + 0.5``) and given to
a pyro_dgm model under vectorized particles is read with one batch dim (the limitation the "For Pyro users" page
states); when the number of particles equals the data size, nothing raised and the log-likelihood was counted N
times. It is a ``ValueError`` naming the distribution and the variable now.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from dgm_fixtures import Decoder, Encoder, standard_prior
from pyro.infer import (EmpiricalMarginal, Importance, RenyiELBO, Trace_ELBO, TraceGraph_ELBO,
                        TraceTailAdaptive_ELBO)
from pyro.infer.autoguide import AutoNormal
from pyro.infer.importance import psis_diagnostic, vectorized_importance_weights
from pyro.infer.inspect import get_dependencies, get_model_relations
from pyro.infer.reparam import LocScaleReparam
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from pyro_dgm.distributions import Bernoulli, Normal

X, Z, N, S = 6, 2, 5, 3
SEED = 7

Model = Callable[..., Any]


# ------------------------------------------------------------------------------------------------ the VAE
@pytest.fixture
def vae() -> tuple[Decoder, Encoder, Any, Tensor]:
    """p(x|z) (logits), q(z|x) (one network cut in two), the joint p(x|z)p(z) and binary data."""
    torch.manual_seed(0)
    p, q = Decoder(X, Z, logits=True), Encoder(X, Z, split=True)
    return p, q, p * standard_prior(Z), torch.bernoulli(torch.full((N, X), 0.3))


def plain_vae(p: Decoder, q: Encoder) -> tuple[Model, Model]:
    """The same model and guide in plain Pyro, on the same networks, registered under pyro_dgm's names."""
    def model(x: Tensor) -> None:
        pyro.module("p(x|z)", p)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), Z), torch.ones(len(x), Z)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=p.net(z)).to_event(1), obs=x)

    def guide(x: Tensor) -> None:
        pyro.module("q(z|x)", q)
        with pyro.plate("data", len(x)):
            h = q.net(x)
            pyro.sample("z", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))

    return model, guide


# ------------------------------------------------------------------------------------------------ a discrete latent
BASELINE = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}


class PriorZ2(Normal):
    """p(z2|z1) = N(loc(z1), softplus(s(z1)) + 1e-3)."""

    def __init__(self) -> None:
        super().__init__(var=["z2"], cond_var=["z1"], name="p")
        self.net = nn.Linear(Z, 2 * Z)

    def forward(self, z1: Tensor) -> dict[str, Tensor]:
        h = self.net(z1)
        return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 1e-3}


class DecoderZ2(Bernoulli):
    """p(x|z2) = Bernoulli(logits=net(z2))."""

    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z2"], name="p")
        self.net = nn.Linear(Z, X)

    def forward(self, z2: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(z2)}


class EncoderZ1(Bernoulli):
    """q(z1|x) = Bernoulli(logits=net(x)), not reparameterizable: TraceGraph_ELBO's baseline on its site."""

    def __init__(self) -> None:
        super().__init__(var=["z1"], cond_var=["x"], name="q", infer=BASELINE)
        self.net = nn.Linear(X, Z)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(x)}


def cat_x(x: Tensor, z1: Tensor) -> Tensor:
    """[x, z1] on the last dim, x broadcast to z1's batch dims (vectorized particles)."""
    return torch.cat([x.expand(z1.shape[:-1] + x.shape[-1:]), z1], -1)


class EncoderZ2(Normal):
    """q(z2|x,z1) = N(loc([x, z1]), softplus(s([x, z1])) + 1e-3)."""

    def __init__(self) -> None:
        super().__init__(var=["z2"], cond_var=["x", "z1"], name="q")
        self.net = nn.Linear(X + Z, 2 * Z)

    def forward(self, x: Tensor, z1: Tensor) -> dict[str, Tensor]:
        h = self.net(cat_x(x, z1))
        return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 1e-3}


@pytest.fixture
def deep() -> tuple[list[nn.Module], Any, Any, Model, Model, Tensor]:
    """p(x|z2)p(z2|z1)p(z1) with a Bernoulli z1, q(z2|x,z1)q(z1|x), their plain-Pyro twins and binary data."""
    torch.manual_seed(0)
    pz2, px, qz1, qz2 = PriorZ2(), DecoderZ2(), EncoderZ1(), EncoderZ2()
    joint = px * pz2 * Bernoulli(probs=0.5, var=["z1"], features_shape=[Z], name="p")

    def model(x: Tensor) -> None:
        pyro.module(pz2.pyro_name, pz2)  # pyro_dgm's names: the formulas, e.g. p(z_{2}|z_{1})
        pyro.module(px.pyro_name, px)
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Bernoulli(torch.full((len(x), Z), 0.5)).to_event(1))
            h = pz2.net(z1)
            z2 = pyro.sample("z2", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=px.net(z2)).to_event(1), obs=x)

    def guide(x: Tensor) -> None:
        pyro.module(qz1.pyro_name, qz1)
        pyro.module(qz2.pyro_name, qz2)
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Bernoulli(logits=qz1.net(x)).to_event(1), infer=BASELINE)
            h = qz2.net(cat_x(x, z1))
            pyro.sample("z2", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))

    x = torch.bernoulli(torch.full((N, X), 0.3))
    return [pz2, px, qz1, qz2], joint, qz2 * qz1, model, guide, x


# ------------------------------------------------------------------------------------------------ helpers
def params_of(*modules: nn.Module) -> list[Tensor]:
    return [t for m in modules for t in m.parameters()]


def run_elbo(make_elbo: Callable[[], Any], method: str, model: Model, guide: Model, params: list[Tensor],
             *args: Any, steps: int = 1) -> tuple[list[Any], list[Tensor], dict[str, Tensor]]:
    """``steps`` calls of ``make_elbo().<method>(model, guide, *args)`` from SEED and an empty param store.

    Returns
    -------
    the values returned, the ``.grad`` of ``params`` (zeros where none) and a copy of the param store.
    """
    pyro.clear_param_store()
    for t in params:
        t.grad = None
    pyro.set_rng_seed(SEED)
    elbo = make_elbo()
    out = [getattr(elbo, method)(model, guide, *args) for _ in range(steps)]
    grads = [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in params]
    store = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return out, grads, store


def loss_and_autograd(elbo: Any, model: Model, guide: Model, params: list[Tensor],
                      *args: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``elbo.differentiable_loss`` from SEED and its gradient in ``params``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    loss = elbo.differentiable_loss(model, guide, *args)
    return loss, torch.autograd.grad(loss, params)


def assert_same_runs(ours: tuple, ref: tuple) -> None:
    """The values, gradients and param stores of two :func:`run_elbo` runs agree, and the gradients are not 0."""
    assert ours[0] == pytest.approx(ref[0], rel=1e-6, abs=1e-6)
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b)
    assert all(float(g.abs().sum()) > 0 for g in ref[1])  # every network is trained: the comparison is not 0 == 0
    assert sorted(ours[2]) == sorted(ref[2])
    for k in ref[2]:
        torch.testing.assert_close(ours[2][k], ref[2][k])


def sample_sites(tr: poutine.Trace) -> dict[str, dict]:
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}


def assert_same_trace(ours: poutine.Trace, ref: poutine.Trace) -> None:
    """The same sites in the same order (sample and param), each with the same observed flag, value, shapes,
    plates and log-density."""
    assert [(n, s["type"]) for n, s in ours.nodes.items()] == [(n, s["type"]) for n, s in ref.nodes.items()]
    ours.compute_log_prob()
    ref.compute_log_prob()
    for name, r in sample_sites(ref).items():
        o = ours.nodes[name]
        assert o["is_observed"] == r["is_observed"], name
        assert [f.name for f in o["cond_indep_stack"]] == [f.name for f in r["cond_indep_stack"]], name
        assert (o["fn"].batch_shape, o["fn"].event_shape) == (r["fn"].batch_shape, r["fn"].event_shape), name
        torch.testing.assert_close(o["value"], r["value"], msg=name)
        torch.testing.assert_close(o["log_prob_sum"], r["log_prob_sum"], msg=name)


def traces(run: Callable[[Model], poutine.Trace], ours: Model, ref: Model) -> tuple[poutine.Trace, poutine.Trace]:
    """``run(ours)`` and ``run(ref)``, each from SEED and an empty param store."""
    out = []
    for fn in (ours, ref):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        out.append(run(fn))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------------ TraceGraph_ELBO
@pytest.mark.parametrize("vectorize", [False, True], ids=["sequential", "vectorized"])
def test_tracegraph_elbo_with_a_discrete_latent_and_a_baseline_equals_plain_pyro(deep, vectorize: bool) -> None:
    nets, joint, q, model, guide, x = deep
    params = params_of(*nets)
    kw = dict(num_particles=S, vectorize_particles=True, max_plate_nesting=1) if vectorize else {}
    # three steps: the decaying average baseline of z1 (a param-store entry) is updated by each
    ours = run_elbo(lambda: TraceGraph_ELBO(**kw), "loss_and_grads", joint.model, q.guide, params, x, steps=3)
    ref = run_elbo(lambda: TraceGraph_ELBO(**kw), "loss_and_grads", model, guide, params, x, steps=3)
    assert_same_runs(ours, ref)
    assert "__baseline_avg_downstream_cost_z1" in ours[2]
    ours = run_elbo(lambda: TraceGraph_ELBO(**kw), "loss", joint.model, q.guide, params, x)
    ref = run_elbo(lambda: TraceGraph_ELBO(**kw), "loss", model, guide, params, x)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)


# ------------------------------------------------------------------------------------------------ RenyiELBO
@pytest.mark.parametrize("alpha", [0.5, 0.0])
@pytest.mark.parametrize("vectorize", [False, True], ids=["sequential", "vectorized"])
def test_renyi_elbo_equals_plain_pyro(vae, alpha: float, vectorize: bool) -> None:
    p, q, joint, x = vae
    model, guide = plain_vae(p, q)
    params = params_of(p, q)
    kw = dict(vectorize_particles=True, max_plate_nesting=1) if vectorize else {}

    def make() -> RenyiELBO:
        return RenyiELBO(alpha=alpha, num_particles=S, **kw)

    for method in ("loss", "loss_and_grads"):
        ours = run_elbo(make, method, joint.model, q.guide, params, x)
        ref = run_elbo(make, method, model, guide, params, x)
        if method == "loss":
            assert ours[0] == pytest.approx(ref[0], rel=1e-6)
        else:
            assert_same_runs(ours, ref)


def test_renyi_elbo_with_a_discrete_latent_equals_plain_pyro(deep) -> None:
    nets, joint, q, model, guide, x = deep
    params = params_of(*nets)

    def make() -> RenyiELBO:
        return RenyiELBO(alpha=0.5, num_particles=S, vectorize_particles=True, max_plate_nesting=1)

    assert_same_runs(run_elbo(make, "loss_and_grads", joint.model, q.guide, params, x),
                     run_elbo(make, "loss_and_grads", model, guide, params, x))


# ------------------------------------------------------------------------------------------------ TraceTailAdaptive
def test_tail_adaptive_elbo_gradients_equal_plain_pyro(vae) -> None:
    p, q, joint, x = vae
    model, guide = plain_vae(p, q)
    params = params_of(p, q)

    def make() -> TraceTailAdaptive_ELBO:
        return TraceTailAdaptive_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)

    ours = run_elbo(make, "loss_and_grads", joint.model, q.guide, params, x, steps=2)
    ref = run_elbo(make, "loss_and_grads", model, guide, params, x, steps=2)
    assert ours[0] == ref[0] == [float("inf")] * 2  # this ELBO gives gradients only
    assert_same_runs(ours, ref)


@pytest.mark.needs_validation
def test_tail_adaptive_elbo_refuses_a_discrete_guide_as_plain_pyro_does(deep) -> None:
    nets, joint, q, model, guide, x = deep
    elbo = TraceTailAdaptive_ELBO(num_particles=S, vectorize_particles=True, max_plate_nesting=1)
    for m, g in ((model, guide), (joint.model, q.guide)):
        pyro.clear_param_store()
        with pytest.raises(NotImplementedError, match="fully reparameterized"):
            elbo.loss_and_grads(m, g, x)


# ------------------------------------------------------------------------------------------------ Trace_ELBO particles
@pytest.mark.parametrize("max_plate_nesting", [1, 2, None], ids=["nesting1", "nesting2", "guessed"])
def test_vectorized_trace_elbo_on_the_joint_equals_plain_pyro(vae, max_plate_nesting: int | None) -> None:
    p, q, joint, x = vae
    model, guide = plain_vae(p, q)
    params = params_of(p, q)
    kw = {} if max_plate_nesting is None else {"max_plate_nesting": max_plate_nesting}
    elbos = []
    for m, g in ((joint.model, q.guide), (model, guide)):
        elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, **kw)  # a new one: a guess is stored in it
        elbos.append((elbo, loss_and_autograd(elbo, m, g, params, x)))
    (e_ours, ours), (e_ref, ref) = elbos
    # the data plate, and the particle plate left of it (Pyro adds it to a given nesting, or guesses it)
    assert e_ours.max_plate_nesting == e_ref.max_plate_nesting == (max_plate_nesting or 1) + 1
    torch.testing.assert_close(ours[0], ref[0])
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b)
    values = []
    for m, g in ((joint.model, q.guide), (model, guide)):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        values.append(Trace_ELBO(num_particles=4, vectorize_particles=True, **kw).loss(m, g, x))
    assert values[0] == pytest.approx(values[1], rel=1e-6)


# ------------------------------------------------------------------------------------------------ importance sampling
def test_importance_sampling_equals_plain_pyro(vae) -> None:
    p, q, joint, x = vae
    model, guide = plain_vae(p, q)
    results = {}
    for key, (m, g) in (("ours", (joint.model, q.guide)), ("ref", (model, guide))):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        imp = Importance(m, g, num_samples=8).run(x)
        pyro.set_rng_seed(SEED + 1)
        draws = EmpiricalMarginal(imp, "z").sample((4,))
        results[key] = (torch.stack(imp.log_weights), imp.get_log_normalizer(), imp.get_normalized_weights(),
                        imp.get_ESS(), draws)
    for a, b in zip(results["ours"], results["ref"]):
        torch.testing.assert_close(a, b)
    assert 1.0 < float(results["ours"][3]) < 8.0  # the weights are not all equal: a real test of the weights


def test_importance_with_the_prior_as_proposal_weighs_by_the_likelihood(vae) -> None:
    p, q, joint, x = vae
    model, _ = plain_vae(p, q)
    runs = []
    for m in (joint.model, model):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        runs.append(Importance(m, None, num_samples=4).run(x))
    torch.testing.assert_close(torch.stack(runs[0].log_weights), torch.stack(runs[1].log_weights))
    torch.testing.assert_close(runs[0].get_ESS(), runs[1].get_ESS())
    for tr, lw in zip(runs[0].exec_traces, runs[0].log_weights):  # the prior cancels: log w = log p(x|z)
        z = tr.nodes["z"]["value"]
        torch.testing.assert_close(lw, p.get_log_prob({"x": x, "z": z}).sum())


def test_vectorized_importance_weights_and_psis_equal_plain_pyro(vae) -> None:
    p, q, joint, x = vae
    model, guide = plain_vae(p, q)
    out = []
    for m, g in ((joint.model, q.guide), (model, guide)):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        log_w, model_tr, _ = vectorized_importance_weights(m, g, x, num_samples=6, max_plate_nesting=1)
        k_hat = psis_diagnostic(m, g, x, num_particles=100, max_simultaneous_particles=50, max_plate_nesting=1)
        out.append((log_w.detach(), model_tr.nodes["z"]["value"].detach(), k_hat))
    assert out[0][0].shape == (6,) and out[0][1].shape == (6, N, Z)
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])
    assert math.isfinite(out[0][2]) and out[0][2] == pytest.approx(out[1][2], rel=1e-5)


# ------------------------------------------------------------------------------------------------ handlers
Z0 = torch.linspace(-1.5, 1.5, N * Z).reshape(N, Z)


def _do_outside(fn: Model, x: Tensor) -> poutine.Trace:
    return poutine.trace(poutine.do(fn, data={"z": Z0})).get_trace(x)


def _do_inside(fn: Model, x: Tensor) -> poutine.Trace:
    tm = poutine.trace(fn)
    poutine.do(tm, data={"z": Z0})(x)
    return tm.trace


def _reparam(centered: float | None) -> Callable[[Model, Tensor], poutine.Trace]:
    def run(fn: Model, x: Tensor) -> poutine.Trace:
        return poutine.trace(poutine.reparam(fn, config={"z": LocScaleReparam(centered)})).get_trace(x)
    return run


def _uncondition(fn: Model, x: Tensor) -> poutine.Trace:
    return poutine.trace(poutine.uncondition(fn)).get_trace(x)


def _seed(fn: Model, x: Tensor) -> poutine.Trace:
    pyro.set_rng_seed(123)  # the handler's seed, not this one, gives the draws
    return poutine.trace(poutine.seed(fn, rng_seed=11)).get_trace(x)


# keyed by the parameter's name in its module (lift strips "<module name>$$$"): the decoder's, the model's only ones
LIFT_PRIOR = {"net.weight": dist.Normal(torch.zeros(X, Z), 1.0).to_event(2),
              "net.bias": dist.Normal(torch.zeros(X), 1.0).to_event(1)}


def _lift(fn: Model, x: Tensor) -> poutine.Trace:
    return poutine.trace(poutine.lift(fn, prior=LIFT_PRIOR)).get_trace(x)


HANDLERS = {"do_outside": _do_outside, "do_inside": _do_inside, "reparam_fixed": _reparam(0.0),
            "reparam_learned": _reparam(None), "uncondition": _uncondition, "seed": _seed, "lift": _lift}


@pytest.mark.parametrize("handler", list(HANDLERS))
def test_a_handler_on_the_joint_gives_the_plain_pyro_trace(vae, handler: str) -> None:
    p, q, joint, x = vae
    model, _ = plain_vae(p, q)
    ours, ref = traces(lambda fn: HANDLERS[handler](fn, x), joint.model, model)
    assert_same_trace(ours, ref)
    sites = sample_sites(ours)
    # and what each handler is for, on our trace
    if handler == "do_outside":  # z is drawn from the prior, x scored at the intervention
        assert not torch.equal(sites["z"]["value"], Z0)
        torch.testing.assert_close(sites["x"]["log_prob_sum"], p.get_log_prob({"x": x, "z": Z0}).sum())
    elif handler == "do_inside":
        assert sites["z__CF"]["is_observed"] and sites["z__CF"]["value"] is Z0
    elif handler.startswith("reparam"):
        assert not sites["z_decentered"]["is_observed"] and sites["z"]["is_observed"]  # z: a Delta of the draw
        assert ("z_centered" in ours.nodes) == (handler == "reparam_learned")
    elif handler == "uncondition":
        assert not sites["x"]["is_observed"] and not torch.equal(sites["x"]["value"], x)
    elif handler == "seed":
        again = poutine.trace(poutine.seed(joint.model, rng_seed=11)).get_trace(x)
        torch.testing.assert_close(again.nodes["z"]["value"], sites["z"]["value"])
    elif handler == "lift":  # the params are sample sites; as with plain pyro.module, the network keeps its weights
        assert {"p(x|z)$$$net.weight", "p(x|z)$$$net.bias"} <= set(sites)
        torch.testing.assert_close(sites["x"]["log_prob_sum"],
                                   p.get_log_prob({"x": x, "z": sites["z"]["value"]}).sum())


@pytest.mark.parametrize("centered", [0.0, None], ids=["fixed", "learned"])
def test_reparam_on_the_guide_gives_the_plain_pyro_trace(vae, centered: float | None) -> None:
    p, q, joint, x = vae
    _, guide = plain_vae(p, q)
    ours, ref = traces(lambda fn: _reparam(centered)(fn, x), q.guide, guide)
    assert_same_trace(ours, ref)
    assert not ours.nodes["z_decentered"]["is_observed"] and ours.nodes["z"]["is_observed"]


def test_elbo_of_a_reparameterized_joint_with_autonormal_equals_plain_pyro(vae) -> None:
    p, q, joint, x = vae
    model, _ = plain_vae(p, q)
    out = []
    for m in (joint.model, model):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        reparam = poutine.reparam(m, config={"z": LocScaleReparam(centered=None)})
        guide = AutoNormal(reparam)  # its init draws come from the seed too
        loss = Trace_ELBO().differentiable_loss(reparam, guide, x)
        names, guide_params = zip(*guide.named_parameters())
        out.append((loss, names, torch.autograd.grad(loss, [*p.parameters(), *guide_params])))
    assert out[0][1] == out[1][1] == ("locs.z_decentered_unconstrained", "scales.z_decentered_unconstrained")
    torch.testing.assert_close(out[0][0], out[1][0])
    for a, b in zip(out[0][2], out[1][2]):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------ inspection
def test_get_dependencies_equals_plain_pyro(deep) -> None:
    nets, joint, q, model, guide, x = deep
    for ours, ref in ((joint.model, model), (q.guide, guide)):
        pyro.clear_param_store()
        assert get_dependencies(ours, (x,)) == get_dependencies(ref, (x,))
    deps = get_dependencies(joint.model, (x,))
    assert deps["posterior_dependencies"] == {"z1": {"z1": set(), "z2": set()}, "z2": {"z2": set(), "x": set()}}


def test_get_model_relations_equals_plain_pyro(vae) -> None:
    p, q, joint, x = vae
    model, guide = plain_vae(p, q)
    for ours, ref in ((joint.model, model), (q.guide, guide)):
        pyro.clear_param_store()
        assert get_model_relations(ours, (x,)) == get_model_relations(ref, (x,))
    rel = get_model_relations(joint.model, (x,))
    assert rel["sample_sample"] == {"z": [], "x": ["z"]} and rel["observed"] == ["x"]
    assert rel["sample_dist"] == {"z": "Normal", "x": "Bernoulli"} and rel["plate_sample"] == {"data": ["z", "x"]}


# ------------------------------------------------------------------------------------------------ what differs
LIKELIHOOD = Normal(loc="mu", scale=torch.ones(2), var=["x"], cond_var=["mu"], name="p")
DATA = torch.tensor([[0.5, -1.0], [1.5, 2.0], [2.5, 0.5], [3.5, 1.0]])


def _global_guide(x: Tensor) -> None:
    pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def _with_a_derived_input(x: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    LIKELIHOOD.model(x=x, mu=mu + 0.5)  # mu + 0.5 is no site: its particle dim is not known to be one


def _with_a_site_input(x: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    LIKELIHOOD.model(x=x - 0.5, mu=mu)  # the same likelihood, with mu a site's value: its dims are known


def _plain_with_a_derived_input(x: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu + 0.5, torch.ones(2)).to_event(1), obs=x)


@pytest.mark.parametrize("particles", [len(DATA), 3], ids=["as_many_particles_as_data", "other"])
def test_a_derived_input_under_vectorized_particles_is_refused_naming_the_variable(particles: int) -> None:
    """``mu + 0.5`` (shape ``[S, 1, 2]``) is read with one batch dim (no trace holds it), so its parameters' event
    shape ``(1, 2)`` would cover the data's ``(N, 2)``: each data point scored against all of them. With
    ``S == N`` nothing else fails (4x plain Pyro's loss before); it is refused, as the documented way (a site's
    value) computes plain Pyro's loss."""
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"p\(x\|\\mu\).*'x' has shape \(4, 2\).*event shape \(1, 2\)"):
        elbo.loss(_with_a_derived_input, _global_guide, DATA)
    losses = []
    for m in (_with_a_site_input, _plain_with_a_derived_input):
        pyro.clear_param_store()
        pyro.set_rng_seed(SEED)
        losses.append(elbo.loss(m, _global_guide, DATA))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
