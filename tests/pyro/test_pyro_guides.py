"""M2 (the semi-supervised VAE of Kingma et al. 2014) as a pyro_dgm model and guide against Pyro's own ss-VAE.

The plain-Pyro reference is the model/guide pair of Pyro's ``examples/vae/ss_vae_M2.py``: ``y`` observed in the model
when labelled; in the guide ``y`` is drawn from ``q(y|x)`` only when it is not given, and ``z`` from ``q(z|x,y)``.
Both versions share the same networks and run from the same seed, so the losses and the gradients must agree to
float precision, labelled batches (``Trace_ELBO`` and ``TraceEnum_ELBO``) and unlabelled ones (``TraceEnum_ELBO``
with ``y`` enumerated in parallel: by ``Categorical(..., infer={"enumerate": "parallel"})`` on our side, by
``config_enumerate`` on Pyro's).
"""
from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from torch import Tensor, nn

from pyro_dgm.distributions import Bernoulli, Categorical, Normal

X, Y, Z, B = 8, 3, 2, 5


def cat(a: Tensor, b: Tensor) -> Tensor:
    """Concatenate the last dims, broadcasting the others (an enumerated y is [K, 1, K], x is [B, X])."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(shape + a.shape[-1:]), b.expand(shape + b.shape[-1:])], -1)


class Nets(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc_y = nn.Linear(X, Y)
        self.enc_z = nn.Linear(X + Y, 2 * Z)
        self.dec = nn.Linear(Z + Y, X)


# ------------------------------------------------------------------------------------------- Pyro's ss-VAE (M2)
def pyro_m2(nets: Nets):
    def model(xs, ys=None):
        pyro.module("ss_vae", nets)
        n = xs.shape[0]
        with pyro.plate("data", n):
            zs = pyro.sample("z", dist.Normal(torch.zeros(n, Z), torch.ones(n, Z)).to_event(1))
            ys = pyro.sample("y", dist.OneHotCategorical(torch.ones(n, Y) / Y), obs=ys)
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(cat(zs, ys))).to_event(1), obs=xs)

    def guide(xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(F.softmax(nets.enc_y(xs), -1)))
            h = nets.enc_z(cat(xs, ys))
            pyro.sample("z", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))

    return model, guide


# ------------------------------------------------------------------------------------------- the same in pyro_dgm
def dgm_m2(nets: Nets):
    class Decoder(Bernoulli):  # p(x|y,z)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y", "z"], name="p")
            self.nets = nets

        def forward(self, y, z):
            return {"logits": self.nets.dec(cat(z, y))}

    class EncoderY(Categorical):  # q(y|x), enumerated under TraceEnum_ELBO
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="q", infer={"enumerate": "parallel"})
            self.nets = nets

        def forward(self, x):
            return {"probs": F.softmax(self.nets.enc_y(x), -1)}

    class EncoderZ(Normal):  # q(z|x,y)
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "y"], name="q")
            self.nets = nets

        def forward(self, x, y):
            h = self.nets.enc_z(cat(x, y))
            return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 1e-3}

    prior_z = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[Z], name="p")
    prior_y = Categorical(probs=torch.ones(Y) / Y, var=["y"], name="p")
    return Decoder() * prior_y * prior_z, EncoderZ() * EncoderY()


@pytest.fixture
def m2():
    torch.manual_seed(3)
    nets = Nets()
    xs = torch.bernoulli(torch.full((B, X), 0.4))
    ys = F.one_hot(torch.tensor([0, 2, 1, 2, 0]), Y).float()
    return nets, xs, ys


def loss_and_grads(nets: Nets, elbo, model, guide, *args, **kwargs):
    pyro.set_rng_seed(11)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
    assert not [w for w in seen if "guide but not model" in str(w.message)]  # a given y is not a guide site
    params = list(nets.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def assert_same(ref, ours):
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    for g_ref, g_ours in zip(ref[1], ours[1]):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceEnum_ELBO])
def test_labelled_batch_equals_pyro_ss_vae(m2, elbo):
    nets, xs, ys = m2
    model, guide = pyro_m2(nets)
    p, q = dgm_m2(nets)
    ref = loss_and_grads(nets, elbo(max_plate_nesting=1), model, guide, xs, ys)
    ours = loss_and_grads(nets, elbo(max_plate_nesting=1), p.model, q.guide, x=xs, y=ys)
    assert_same(ref, ours)
    assert all(float(g.abs().sum()) == 0 for g in ours[1][:2])  # q(y|x) plays no part in a labelled batch


def test_given_variable_is_an_input_of_the_guide_not_a_site(m2):
    nets, xs, ys = m2
    _, q = dgm_m2(nets)
    tr = poutine.trace(q.guide).get_trace(x=xs, y=ys)
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample" and n in ("y", "z")] == ["z"]
    tr = poutine.trace(q.guide).get_trace(x=xs)
    assert [n for n in ("y", "z") if n in tr.nodes] == ["y", "z"]  # unlabelled: y is drawn


def test_unlabelled_batch_with_enumeration_equals_pyro_ss_vae(m2):
    nets, xs, _ = m2
    model, guide = pyro_m2(nets)
    p, q = dgm_m2(nets)
    ref = loss_and_grads(nets, TraceEnum_ELBO(max_plate_nesting=1), model, config_enumerate(guide), xs)
    ours = loss_and_grads(nets, TraceEnum_ELBO(max_plate_nesting=1), p.model, q.guide, x=xs)
    assert_same(ref, ours)
    assert float(ours[1][0].abs().sum()) > 0  # q(y|x) is trained by the unlabelled ELBO


def test_enumerated_guide_sites_carry_the_infer_option(m2):
    nets, xs, _ = m2
    p, q = dgm_m2(nets)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    model_tr, guide_tr = next(elbo._get_traces(p.model, q.guide, (), {"x": xs}))
    y = guide_tr.nodes["y"]
    assert y["infer"]["enumerate"] == "parallel" and y["value"].shape == (Y, 1, Y)  # one value per class
    assert guide_tr.nodes["z"]["fn"].batch_shape == (Y, B) and guide_tr.nodes["z"]["fn"].event_shape == (Z,)
    assert model_tr.nodes["x"]["fn"].batch_shape == (Y, B) and model_tr.nodes["x"]["fn"].event_shape == (X,)


def test_m2_trains_with_svi_as_pyro_does(m2):
    # a few SVI steps alternating labelled and unlabelled batches: both versions move the weights identically
    nets, xs, ys = m2
    start = {k: v.clone() for k, v in nets.state_dict().items()}
    runs = []
    for version in ("pyro", "dgm"):
        nets.load_state_dict(start)
        nets.zero_grad(set_to_none=True)  # SVI leaves zero grads, which Adam would count as a step
        pyro.clear_param_store()
        pyro.set_rng_seed(5)
        if version == "pyro":
            model, guide = pyro_m2(nets)
            guide = config_enumerate(guide)
            step = [lambda: svi.step(xs, ys), lambda: svi.step(xs)]
        else:
            model, guide = dgm_m2(nets)
            model, guide = model.model, guide.guide
            step = [lambda: svi.step(x=xs, y=ys), lambda: svi.step(x=xs)]
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}),
                  TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False))
        losses = [step[i % 2]() for i in range(6)]
        runs.append((losses, {k: v.clone() for k, v in nets.state_dict().items()}))
    (ref_losses, ref_w), (our_losses, our_w) = runs
    assert our_losses == pytest.approx(ref_losses, rel=1e-5)
    for k in ref_w:
        torch.testing.assert_close(our_w[k], ref_w[k], rtol=1e-5, atol=1e-6)
        assert not torch.equal(our_w[k], start[k]), k
