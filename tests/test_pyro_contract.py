"""The contract between pyro_dgm distributions and Pyro.

``dist.model(**data)`` and ``dist.guide(**data)`` are ordinary Pyro callables: one ``pyro.sample`` site per variable,
observed where the data gives it, inside a ``pyro.plate("data", N, dim=-1)`` unless the caller opened one. So every
Pyro effect handler (trace, condition, block, replay, scale, mask, plate), SVI with Pyro's ELBOs and Pyro's
autoguides must work on them unchanged, and importing pyro_dgm must leave Pyro and torch as they were.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from dgm_fixtures import Decoder, Encoder
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from pyro_dgm.distributions import Normal

ROOT = Path(__file__).resolve().parents[1]
X_DIM, Z_DIM, N = 6, 2, 5


def make_vae(x_dim: int = X_DIM, z_dim: int = Z_DIM, hidden: int = 0) -> tuple[Decoder, Normal, Encoder]:
    """p(x|z) (logits), the prior and q(z|x) (one network, its output cut in two): the shared test networks."""
    p = Decoder(x_dim, z_dim, hidden, logits=True)
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[z_dim], name="p_{prior}")
    return p, prior, Encoder(x_dim, z_dim, hidden, split=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the networks here are tiny: intra-op threads only add synchronization, which on a busy 2-core machine made
    # the SVI test 7x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()  # the param store is global: no test sees another's networks
    yield
    pyro.clear_param_store()


@pytest.fixture
def vae():
    p, prior, q = make_vae()
    x = torch.rand(N, X_DIM)  # grey levels: our Bernoulli scores any value in [0, 1]
    return p, prior, p * prior, q, x


def sample_sites(tr: poutine.Trace) -> dict[str, dict]:
    """The random variables of a trace (not its plates' subsample sites)."""
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}


def site_log_probs(tr: poutine.Trace) -> dict[str, Tensor]:
    tr.compute_log_prob()
    return {n: s["log_prob"] for n, s in sample_sites(tr).items()}


# ---------------------------------------------------------------------------------------------------- trace
def test_trace_has_observed_x_latent_z_and_the_joint_log_prob(vae):
    p, prior, joint, q, x = vae
    tr = poutine.trace(joint.model).get_trace(x=x)
    sites = sample_sites(tr)
    assert set(sites) == {"x", "z"}
    assert sites["x"]["is_observed"] and sites["x"]["value"] is x
    assert not sites["z"]["is_observed"]
    z = sites["z"]["value"]
    assert z.shape == (N, Z_DIM)  # the prior has no input: one draw per data point
    assert sites["z"]["fn"].event_shape == (Z_DIM,) and sites["x"]["fn"].event_shape == (X_DIM,)
    expected = joint.get_log_prob({"x": x, "z": z})
    assert expected.shape == (N,)
    torch.testing.assert_close(tr.log_prob_sum(), expected.sum())
    lps = site_log_probs(tr)
    torch.testing.assert_close(lps["z"], prior.get_log_prob({"z": z}))
    torch.testing.assert_close(lps["x"], p.get_log_prob({"x": x, "z": z}))


# ---------------------------------------------------------------------------------------------------- handlers
def test_condition_makes_z_observed_with_the_given_value(vae):
    p, prior, joint, q, x = vae
    z0 = torch.randn(N, Z_DIM)
    tr = poutine.trace(poutine.condition(joint.model, data={"z": z0})).get_trace(x=x)
    z = tr.nodes["z"]
    assert z["is_observed"] and z["value"] is z0
    torch.testing.assert_close(site_log_probs(tr)["x"], p.get_log_prob({"x": x, "z": z0}))


def test_block_hides_z_from_an_outer_trace(vae):
    _, _, joint, _, x = vae
    tr = poutine.trace(poutine.block(joint.model, hide=["z"])).get_trace(x=x)
    assert "z" not in tr.nodes and "x" in tr.nodes
    tr_all = poutine.trace(joint.model).get_trace(x=x)
    assert "z" in tr_all.nodes  # block, not the model, removed it


def test_replay_reuses_the_guide_sample_and_scores_it_under_p(vae):
    p, prior, joint, q, x = vae
    guide_tr = poutine.trace(q.guide).get_trace(x=x)
    zq = guide_tr.nodes["z"]["value"]
    assert zq.requires_grad  # the guide's sample is reparameterized
    tr = poutine.trace(poutine.replay(joint.model, trace=guide_tr)).get_trace(x=x)
    assert tr.nodes["z"]["value"] is zq
    lps = site_log_probs(tr)
    torch.testing.assert_close(lps["z"], prior.get_log_prob({"z": zq}))
    torch.testing.assert_close(lps["x"], p.get_log_prob({"x": x, "z": zq}))
    torch.testing.assert_close(tr.log_prob_sum(), joint.get_log_prob({"x": x, "z": zq}).sum())


def test_scale_halves_the_log_prob(vae):
    _, _, joint, _, x = vae
    fixed = poutine.condition(joint.model, data={"z": torch.randn(N, Z_DIM)})
    full = poutine.trace(fixed).get_trace(x=x).log_prob_sum()
    half = poutine.trace(poutine.scale(fixed, scale=0.5)).get_trace(x=x).log_prob_sum()
    assert full.abs() > 1.0
    torch.testing.assert_close(half, 0.5 * full)


def test_mask_zeroes_the_masked_data_points(vae):
    p, prior, joint, _, x = vae
    z0 = torch.randn(N, Z_DIM)
    fixed = poutine.condition(joint.model, data={"z": z0})
    mask = torch.tensor([True, False, True, False, True])
    lps = site_log_probs(poutine.trace(poutine.mask(fixed, mask=mask)).get_trace(x=x))
    for name, expected in (("x", p.get_log_prob({"x": x, "z": z0})), ("z", prior.get_log_prob({"z": z0}))):
        assert lps[name].shape == (N,)
        assert (lps[name][~mask] == 0).all()
        torch.testing.assert_close(lps[name][mask], expected[mask])
        assert (expected[~mask] != 0).all()  # the zeros come from the mask


@pytest.mark.parametrize("plate_name", ["data", "batch"])
def test_a_users_plate_over_the_batch_replaces_ours(vae, plate_name):
    _, _, joint, _, x = vae
    fixed = poutine.condition(joint.model, data={"z": torch.randn(N, Z_DIM)})
    plain = poutine.trace(fixed).get_trace(x=x)
    with pyro.plate(plate_name, N):
        inside = poutine.trace(fixed).get_trace(x=x)
    for tr, expected_plate in ((plain, "data"), (inside, plate_name)):
        for name, site in sample_sites(tr).items():
            assert [f.name for f in site["cond_indep_stack"]] == [expected_plate], name  # one plate, not nested
    for name in ("x", "z"):
        assert inside.nodes[name]["fn"].batch_shape == plain.nodes[name]["fn"].batch_shape == (N,)
        assert inside.nodes[name]["value"].shape == plain.nodes[name]["value"].shape
    torch.testing.assert_close(inside.log_prob_sum(), plain.log_prob_sum())


def test_a_subsampling_plate_scales_the_minibatch(vae):
    # Pyro's minibatch pattern: the caller's plate has the data set's size and the model sees the minibatch
    _, _, joint, _, x = vae
    fixed = poutine.condition(joint.model, data={"z": torch.randn(N, Z_DIM)})
    plain = poutine.trace(fixed).get_trace(x=x)
    with pyro.plate("data", 10 * N, subsample_size=N):
        scaled = poutine.trace(fixed).get_trace(x=x)
    assert scaled.nodes["x"]["fn"].batch_shape == (N,)
    torch.testing.assert_close(scaled.log_prob_sum(), 10 * plain.log_prob_sum())


def test_predictive_draws_from_the_guide_and_the_model(vae):
    _, _, joint, q, x = vae
    out = pyro.infer.Predictive(joint.model, guide=q.guide, num_samples=7, parallel=True)(x=x)
    assert out["z"].shape == (7, N, Z_DIM) and out["x"].shape == (7, N, X_DIM)
    assert not torch.equal(out["z"][0], out["z"][1])  # one draw of z per sample, not a broadcast one


def test_vectorized_particles(vae):
    p, prior, joint, q, x = vae
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True).loss(joint.model, q.guide, x=x)
    assert math.isfinite(loss)
    # what the vectorized ELBO does: a particle plate left of the data plate
    with pyro.plate("particles", 3, dim=-2):
        guide_tr = poutine.trace(q.guide).get_trace(x=x)
        tr = poutine.trace(poutine.replay(joint.model, trace=guide_tr)).get_trace(x=x)
    z = tr.nodes["z"]["value"]
    assert z.shape == (3, N, Z_DIM)
    lps = site_log_probs(tr)
    assert lps["x"].shape == lps["z"].shape == (3, N)
    torch.testing.assert_close(lps["x"][1], p.get_log_prob({"x": x, "z": z[1]}))
    torch.testing.assert_close(lps["z"][2], prior.get_log_prob({"z": z[2]}))


# ---------------------------------------------------------------------------------------------------- SVI
def _digits(n: int) -> Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data[:n], dtype=torch.float32) / 16.0


def test_svi_trains_a_vae_on_digits_and_optimizes_the_networks():
    x = _digits(512)
    p, prior, q = make_vae(x_dim=64, z_dim=4, hidden=32)
    joint = p * prior
    before = {id(t): t.detach().clone() for t in [*p.parameters(), *q.parameters()]}
    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = []
    for step in range(150):
        idx = torch.randint(0, len(x), (128,))
        losses.append(svi.step(x=x[idx]) / 128)  # -ELBO per image
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    # -ELBO per image: 64 log 2 = 44 nats at the very start, about 34 averaged over the first 20 steps and about 26
    # over the last 20 (seeds 0-11). Ask for a drop of at least 5 nats per image, and for a clearly trained model.
    assert last < first - 5.0 and last < 30.0, (first, last)
    store = pyro.get_param_store()
    stored = {id(store[name]) for name in store.keys()}
    for net in (p, q):
        for pname, prm in net.named_parameters():
            assert id(prm) in stored, pname  # the network's own tensors, registered by pyro.module
            assert not torch.equal(prm.detach(), before[id(prm)]), pname  # and the optimizer moved them


def test_trace_mean_field_elbo_agrees_with_trace_elbo_in_expectation():
    x = _digits(16)
    p, prior, q = make_vae(x_dim=64, z_dim=4, hidden=16)
    joint = p * prior
    batches, particles = 30, 64

    def estimates(elbo: pyro.infer.ELBO) -> Tensor:
        return torch.tensor([elbo.loss(joint.model, q.guide, x=x) for _ in range(batches)])

    kw = dict(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    mf = estimates(TraceMeanField_ELBO(**kw))
    mc = estimates(Trace_ELBO(**kw))
    assert torch.isfinite(mf).all() and torch.isfinite(mc).all()
    se = math.sqrt(mf.var() / batches + mc.var() / batches)
    assert abs(mf.mean() - mc.mean()) < 4 * se + 1e-3, (float(mf.mean()), float(mc.mean()), se)
    assert mf.std() < mc.std()  # the analytic KL (kl_divergence of the two Normals) removes its sampling noise


def test_autonormal_recovers_the_conjugate_posterior():
    # z_i ~ N(0, 1), x_i | z_i ~ N(z_i, sigma^2). Completing the square in z_i:
    #   log p(z_i | x_i) = -z_i^2 / 2 - (x_i - z_i)^2 / (2 sigma^2) + const
    #                    = -(1 + 1/sigma^2) z_i^2 / 2 + (x_i / sigma^2) z_i + const,
    # a Normal with precision 1 + 1/sigma^2 = (1 + sigma^2) / sigma^2, so
    #   variance = sigma^2 / (1 + sigma^2),  mean = variance * x_i / sigma^2 = x_i / (1 + sigma^2).
    sigma = 0.5
    joint = Normal(loc="z", scale=sigma, var=["x"], cond_var=["z"]) * Normal(
        loc=0.0, scale=1.0, var=["z"], features_shape=[1])
    x = torch.tensor([[-1.0], [0.0], [0.5], [2.0]])
    guide = AutoNormal(joint.model)
    svi = SVI(joint.model, guide, pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.99}),
              Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1))
    for _ in range(400):
        svi.step(x=x)
    # z is local: one variational loc/scale per data point, inside the model's "data" plate
    frames = guide.prototype_trace.nodes["z"]["cond_indep_stack"]
    assert [(f.name, f.size, f.dim) for f in frames] == [("data", len(x), -1)]
    loc, scale = guide.locs.z.detach(), guide.scales.z.detach()
    assert loc.shape == scale.shape == (len(x), 1)
    torch.testing.assert_close(loc, x / (1 + sigma ** 2), atol=0.05, rtol=0)
    torch.testing.assert_close(scale, torch.full_like(x, sigma / math.sqrt(1 + sigma ** 2)), atol=0.05, rtol=0)


# ---------------------------------------------------------------------------------------------------- import
_SNAPSHOT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributions as td, torch.distributions.kl as tkl, torch.utils.hooks
    import torch.optim.optimizer as optim_module, torch.nn.modules.module as module_module
    import pyro, pyro.distributions as pd, pyro.infer.util, pyro.poutine.util, pyro.distributions.util
    from pyro.distributions.torch_distribution import TorchDistributionMixin
    from pyro.poutine.runtime import _PYRO_STACK

    if sys.argv[1] == "changed":  # not the defaults, so an import that resets them shows up too
        pyro.enable_validation(False)
        td.Distribution.set_default_validate_args(False)
        torch.set_default_dtype(torch.float64)
        pyro.set_rng_seed(1)

    def attrs(cls):
        return {k: repr(v) for k, v in sorted(vars(cls).items()) if not k.startswith("__")}

    def snapshot():
        return {
            "validate_args": td.Distribution._validate_args,
            "kl_registry": sorted(f"{p.__name__}-{q.__name__}" for p, q in tkl._KL_REGISTRY),
            "pyro_validation": [pyro.infer.util.is_validation_enabled(), pyro.poutine.util.is_validation_enabled(),
                                pyro.distributions.util.is_validation_enabled()],
            "pyro_settings": {k: repr(v) for k, v in pyro.settings.get().items()},
            "bernoulli_support": [repr(pd.Bernoulli.support), repr(td.Bernoulli.support)],
            "dtype": str(torch.get_default_dtype()),
            "grad": torch.is_grad_enabled(),
            "rng": torch.get_rng_state().tolist(),
            "pyro_stack": len(_PYRO_STACK),
            "param_store": list(pyro.get_param_store().keys()),
            "hooks": [len(optim_module._global_optimizer_pre_hooks),
                      len(optim_module._global_optimizer_post_hooks),
                      len(module_module._global_forward_hooks),
                      len(module_module._global_forward_pre_hooks),
                      len(module_module._global_backward_hooks),
                      torch.utils.hooks.RemovableHandle.next_id],  # a user's first hook's id
            "classes": {c.__name__: attrs(c) for c in (td.Distribution, TorchDistributionMixin, pd.Bernoulli,
                                                       pd.Normal, torch.nn.Module)},
        }

    before = snapshot()
    import pyro_dgm, pyro_dgm.distributions, pyro_dgm.losses, pyro_dgm.models, pyro_dgm.poutine  # noqa: E401
    print(json.dumps({"before": before, "after": snapshot()}))
""")


@pytest.mark.parametrize("state", ["default", "changed"])
def test_import_changes_no_global_state(state):
    out = subprocess.run([sys.executable, "-c", _SNAPSHOT, state], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    before, after = res["before"], res["after"]
    assert before["kl_registry"], "the snapshot reads the registry"
    for key in before:
        assert after[key] == before[key], f"importing pyro_dgm changed {key}"


# ---------------------------------------------------------------------------------------------------- entry points
def test_a_network_named_model_stays_reachable():
    class WithModel(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.model = nn.Linear(X_DIM, 2 * Z_DIM)
            self.guide = nn.Linear(1, 1)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            h = self.model(x)
            return {"loc": h[..., :Z_DIM], "scale": F.softplus(h[..., Z_DIM:])}

    q = WithModel()
    assert isinstance(q.model, nn.Linear) and q.model is q._modules["model"]
    assert isinstance(q.guide, nn.Linear)
    assert q.sample({"x": torch.rand(N, X_DIM)})["z"].shape == (N, Z_DIM)  # forward can call self.model
    assert sorted(n for n, _ in q.named_parameters()) == ["guide.bias", "guide.weight", "model.bias", "model.weight"]

    plain = Encoder(X_DIM, Z_DIM, split=True)
    assert not isinstance(plain.model, nn.Module) and callable(plain.model)
    tr = poutine.trace(plain.model).get_trace(x=torch.rand(N, X_DIM))
    assert set(sample_sites(tr)) == {"z"} and tr.nodes["z"]["value"].shape == (N, Z_DIM)
    tr = poutine.trace(plain.guide).get_trace(x=torch.rand(N, X_DIM))
    assert set(sample_sites(tr)) == {"z"}


def test_sampling_without_a_handler_builds_no_pyro_message(monkeypatch, vae):
    import pyro.poutine.runtime as runtime
    import pyro.primitives as primitives

    calls = []

    def counting(target):
        def wrapper(*args, **kwargs):
            calls.append(target)
            return target(*args, **kwargs)
        return wrapper

    for module in (runtime, primitives):
        monkeypatch.setattr(module, "apply_stack", counting(module.apply_stack))
        monkeypatch.setattr(module, "Message", counting(module.Message))
    _, _, joint, q, x = vae
    out = joint.sample(batch_n=N)
    assert out["x"].shape == (N, X_DIM) and out["z"].shape == (N, Z_DIM)
    q.sample({"x": x}, reparam=True)
    joint.get_log_prob(out)
    assert calls == []
    poutine.trace(joint.model).get_trace(x=x)  # the counter works: a handler does build messages
    assert calls
