"""Pyro's inference tools meet pyro_dgm models where plain Pyro draws its lines, each against a plain-Pyro twin.

- A latent Bernoulli is a discrete site, as a plain ``dist.Bernoulli`` is: the autoguides and HMC refuse it with
  Pyro's own error, and ``TraceEnum_ELBO`` enumerates it to plain Pyro's loss. (pyro_dgm's Bernoulli scores any real
  value by the cross-entropy, as Pixyz does, which does not make the site continuous.)
- A joint's model and a guide inside nested user plates (``groups`` at dim -2, ``data`` at dim -1, data of shape
  ``[G, N, X]``) read both plates as batch dims, as the same model written in plain Pyro does: the same traces and
  the same ELBO.
- ``PyroELBO`` with ``TraceGraph_ELBO``: Pyro's loss, and the gradient of Pyro's surrogate (score-function terms),
  equal to what ``TraceGraph_ELBO.loss_and_grads`` computes; an ELBO with no differentiable loss (``RenyiELBO``) is
  refused when the term is built, naming what works.
- A pyro_dgm loss as ``SVI``'s loss: keyword arguments that name no variable are options of ``eval`` (a network's
  keyword, ``mask=``), as ``Model.train(data, **options)`` takes them (they were dropped); Pyro's plates, scales and
  masks around the step, which cannot reach its formula, are refused naming the handler (they were ignored, or added
  dims to its draws); a NaN loss warns as Pyro's ELBOs warn; a loss with one input variable takes it positionally
  (``svi.step(x)``, as Pyro scripts pass data), one with several says to name them.
- Positional values that a joint's model and its guide read under other names (each takes them in its own order)
  are refused, naming both orders (the model observed one variable's values as another's).
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.infer.mcmc import NUTS
from pyro.poutine.util import site_is_subsample
from dgm_fixtures import Encoder, standard_prior
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import KullbackLeibler, PyroELBO

X, Z = 5, 2


class Decoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(Z, X)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(z), "scale": torch.ones_like(self.net.bias)}


def _sites(tr: Any) -> dict[str, tuple[tuple[int, ...], float]]:
    tr.compute_log_prob()
    return {n: (tuple(s["value"].shape), float(s["log_prob"].sum().detach())) for n, s in tr.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)}


# --------------------------------------------------------------------------------------- a latent Bernoulli
def _bernoulli_latent_models() -> tuple[Any, Any, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    p = Decoder()
    joint = p * Bernoulli(probs=0.3, var=["z"], features_shape=[Z])

    def plain(x: torch.Tensor) -> None:
        pyro.module(p.pyro_name, p)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(probs=torch.full((len(x), Z), 0.3)).to_event(1))
            pyro.sample("x", dist.Normal(p.net(z), 1.).to_event(1), obs=x)

    return joint.model, plain, p.net, torch.randn(4, X)


def test_a_latent_bernoulli_is_a_discrete_site_as_in_plain_pyro() -> None:
    ours, plain, _, x = _bernoulli_latent_models()
    assert poutine.trace(ours).get_trace(x=x).nodes["z"]["fn"].support.is_discrete
    for guide in (AutoNormal, AutoDelta):
        messages = []
        for model in (plain, ours):
            pyro.clear_param_store()
            with pytest.raises(ValueError, match="Continuous inference cannot handle discrete sample site 'z'") as e:
                SVI(model, guide(model), pyro.optim.Adam({"lr": 0.1}), Trace_ELBO()).step(x)
            messages.append(str(e.value))
        assert messages[0] == messages[1]
    with pytest.raises(ValueError, match="discrete sample site 'z'"):
        NUTS(ours).setup(0, x=x)
    # scoring is still Pixyz's cross-entropy, for any real value (grey levels)
    lp = Bernoulli(probs=0.3, var=["z"], features_shape=[Z]).get_log_prob({"z": torch.full((1, Z), 0.25)})
    torch.testing.assert_close(lp, Z * (0.25 * torch.tensor(0.3).log() + 0.75 * torch.tensor(0.7).log()).reshape(1))


class ScalarDecoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(1, X)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(z.unsqueeze(-1)), "scale": torch.ones_like(self.net.bias)}


def test_an_enumerated_latent_bernoulli_gives_plain_pyros_loss() -> None:
    # one binary latent per data point (Pyro enumerates a site without event dims)
    torch.manual_seed(0)
    p = ScalarDecoder()
    ours = (p * Bernoulli(probs=0.3, var=["z"])).model
    x = torch.randn(4, X)

    def plain(x: torch.Tensor) -> None:
        pyro.module(p.pyro_name, p)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(probs=torch.full((len(x),), 0.3)))
            pyro.sample("x", dist.Normal(p.net(z.unsqueeze(-1)), 1.).to_event(1), obs=x)

    def empty_guide(x: torch.Tensor) -> None:
        pass

    losses = []
    for model in (plain, ours):
        pyro.clear_param_store()
        losses.append(TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(model, "parallel"), empty_guide, x))
    # -log p(x) = -sum_n log sum_z p(z) N(x_n; w z + b, I), written out
    zs = torch.tensor([0., 1.])
    with torch.no_grad():
        log_px_z = torch.distributions.Normal(p.net(zs[:, None])[:, None], 1.).log_prob(x).sum(-1)  # [2, N]
    exact = -torch.logsumexp(torch.tensor([0.7, 0.3]).log()[:, None] + log_px_z, 0).sum().item()
    assert losses[0] == pytest.approx(exact, rel=1e-5)
    assert losses[1] == pytest.approx(exact, rel=1e-5)


# ----------------------------------------------------------------------------------------- nested plates
def test_a_joint_and_a_guide_inside_nested_plates_match_plain_pyro() -> None:
    torch.manual_seed(0)
    p, q = Decoder(), Encoder(X, Z, split=True)
    joint = p * standard_prior(Z)
    G, N = 3, 4
    x = torch.randn(G, N, X)

    def plain_model(x: torch.Tensor) -> None:
        pyro.module(p.pyro_name, p)
        with pyro.plate("groups", G, dim=-2), pyro.plate("data", N, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), torch.ones(Z)).to_event(1))
            pyro.sample("x", dist.Normal(p.net(z), 1.).to_event(1), obs=x)

    def plain_guide(x: torch.Tensor) -> None:
        pyro.module(q.pyro_name, q)
        with pyro.plate("groups", G, dim=-2), pyro.plate("data", N, dim=-1):
            out = q.forward(x)
            pyro.sample("z", dist.Normal(out["loc"], out["scale"]).to_event(1))

    def ours_model(x: torch.Tensor) -> None:
        with pyro.plate("groups", G, dim=-2), pyro.plate("data", N, dim=-1):
            joint.model(x=x)

    def ours_guide(x: torch.Tensor) -> None:
        with pyro.plate("groups", G, dim=-2), pyro.plate("data", N, dim=-1):
            q.guide(x=x)

    results = []
    for model, guide in ((plain_model, plain_guide), (ours_model, ours_guide)):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        m = _sites(poutine.trace(model).get_trace(x))
        pyro.set_rng_seed(1)
        g = _sites(poutine.trace(guide).get_trace(x))
        pyro.set_rng_seed(1)
        results.append((m, g, Trace_ELBO(max_plate_nesting=2).loss(model, guide, x)))
    (pm, pg, pl), (om, og, ol) = results
    assert pm.keys() == om.keys() and pg.keys() == og.keys()
    for k in pm:
        assert pm[k][0] == om[k][0] and pm[k][1] == pytest.approx(om[k][1], rel=1e-5)
    for k in pg:
        assert pg[k][0] == og[k][0] == (G, N, Z) and pg[k][1] == pytest.approx(og[k][1], rel=1e-5)
    assert pl == pytest.approx(ol, rel=1e-5)


# ------------------------------------------------------------------------------------ PyroELBO's estimators
def _score_function_pair() -> tuple[Any, Any, Any, torch.Tensor]:
    torch.manual_seed(0)
    enc = nn.Linear(X, Z)
    dec = nn.Linear(Z, X)

    def model(x: torch.Tensor) -> None:
        pyro.module("dec", dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(torch.full((len(x), Z), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("enc", enc)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=enc(x)).to_event(1))

    return model, guide, [*enc.parameters(), *dec.parameters()], torch.randn(6, X)


def test_pyro_elbo_with_tracegraph_elbo_has_pyros_loss_and_surrogate_gradient() -> None:
    model, guide, params, x = _score_function_pair()
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    ref_loss = TraceGraph_ELBO().loss_and_grads(model, guide, x)
    ref_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    pyro.set_rng_seed(3)
    value = PyroELBO(model, guide, elbo=TraceGraph_ELBO()).eval({"x": x})
    value.backward()
    assert value.item() == pytest.approx(ref_loss, rel=1e-6)
    for p, g in zip(params, ref_grads):
        torch.testing.assert_close(p.grad, g)
    assert any(g.abs().sum() > 0 for g in ref_grads[:2])  # the encoder is trained by the score-function term


def test_pyro_elbo_refuses_an_elbo_without_a_differentiable_loss() -> None:
    model, guide, _, _ = _score_function_pair()
    with pytest.raises(TypeError, match="RenyiELBO gives no differentiable loss.*Trace_ELBO"):
        PyroELBO(model, guide, elbo=pyro.infer.RenyiELBO(alpha=0.5))


# ------------------------------------------------------------------------------- a pyro_dgm loss inside SVI
class ShiftedEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__(X, Z, split=True)

    def forward(self, x: torch.Tensor, shift: float = 0.) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        return {"loc": out["loc"] + shift, "scale": out["scale"]}


def _shifted_kl() -> tuple[Any, Any, torch.Tensor]:
    torch.manual_seed(0)
    q = ShiftedEncoder()
    return q, KullbackLeibler(q, standard_prior(Z)).sum(), torch.randn(6, X)


def test_svi_passes_keywords_that_name_no_variable_to_eval_as_model_train_does() -> None:
    # svi.step(x=x, shift=5.) is loss.eval({"x": x}, shift=5.) (a network's keyword; IterativeLoss's mask= alike)
    from pyro_dgm.models import Model

    q, loss, x = _shifted_kl()
    expected = loss.eval({"x": x}, shift=5.).item()
    assert expected != pytest.approx(loss.eval({"x": x}).item())
    pyro.clear_param_store()
    svi = SVI(lambda **_: None, lambda **_: None, pyro.optim.SGD({"lr": 0.01}), loss=loss)
    assert svi.evaluate_loss(x=x, shift=5.) == pytest.approx(expected, rel=1e-6)
    assert svi.step(x=x, shift=5.) == pytest.approx(expected, rel=1e-6)
    stepped = [p.detach().clone() for p in q.parameters()]
    q2, loss2, _ = _shifted_kl()
    Model(loss2, distributions=[q2], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.01}).train({"x": x},
                                                                                                      shift=5.)
    for a, b in zip(stepped, q2.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("handler", ["plate", "scale", "mask"])
def test_a_loss_refuses_pyro_weighting_handlers_around_the_step(handler: str) -> None:
    # Trace_ELBO would weight (or batch) the sites by them; a pyro_dgm loss has none to weight: it says so
    _, loss, x = _shifted_kl()
    svi = SVI(lambda **_: None, lambda **_: None, pyro.optim.SGD({"lr": 0.01}), loss=loss)
    around = {"plate": lambda: pyro.plate("particles", 3, dim=-2), "scale": lambda: poutine.scale(scale=0.5),
              "mask": lambda: poutine.mask(mask=False)}[handler]()
    with around, pytest.raises(ValueError, match=rf"D_{{KL}}.*inside (pyro\.plate\('particles'\)|poutine\."
                                                 rf"{handler}).*weight the loss itself"):
        svi.step(x=x)


def test_a_nan_loss_in_svi_warns_as_pyros_elbos_do() -> None:
    _, loss, x = _shifted_kl()
    x = x.clone()
    x[0, 0] = float("nan")
    svi = SVI(lambda **_: None, lambda **_: None, pyro.optim.SGD({"lr": 0.01}), loss=loss)
    with pyro.validation_enabled(False), pytest.warns(UserWarning, match="Encountered NaN: loss"):
        svi.evaluate_loss(x=x)  # (with validation, the Normal's NaN loc is refused first)


def test_a_loss_with_one_input_takes_it_positionally_as_pyro_scripts_pass_it() -> None:
    q, loss, x = _shifted_kl()
    svi = SVI(lambda *_: None, lambda *_: None, pyro.optim.SGD({"lr": 0.01}), loss=loss)
    assert svi.evaluate_loss(x) == pytest.approx(loss.eval({"x": x}).item(), rel=1e-6)
    both = loss + KullbackLeibler(q.replace_var(x="y"), standard_prior(Z)).sum()
    with pytest.raises(TypeError, match=r"pass the data by name \(svi.step\(x=..., y=...\)\)"):
        SVI(lambda *_: None, lambda *_: None, pyro.optim.SGD({"lr": 0.01}), loss=both).evaluate_loss(x)
    assert SVI(lambda *_: None, lambda *_: None, pyro.optim.SGD({"lr": 0.01}), loss=both).evaluate_loss(
        x, y=x) == pytest.approx(2 * loss.eval({"x": x}).item(), rel=1e-6)


# ------------------------------------------------------------------- positional data of a model and its guide
class TwoViewEncoder(Normal):
    def __init__(self, cond_var: list[str]) -> None:
        super().__init__(var=["z"], cond_var=cond_var, name="q")
        self.net = nn.Linear(2 * X, 2 * Z)

    def forward(self, **views: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(torch.cat([views["x"], views["x2"]], -1))
        return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 1e-3}


def test_positional_values_a_model_and_its_guide_would_read_under_other_names_are_refused() -> None:
    # SVI passes the same *args to both: the joint's model reads them in its pyro_arg_names order (['x2', 'x'] for
    # this product), the guide in its inputs' order; where they differ, x2's values were silently observed as x
    torch.manual_seed(0)
    p, second = Decoder(), Decoder()
    second.pyro_name = "p2"  # its own names in Pyro's param store
    p2 = second.replace_var(x="x2")
    joint = p2 * p * standard_prior(Z)
    x, x2 = torch.randn(4, X), torch.randn(4, X) + 3.
    assert joint.pyro_arg_names == ["x2", "x"]

    def loss(q: Any, *args: Any, **kwargs: Any) -> float:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        return Trace_ELBO().loss(joint.model, q.guide, *args, **kwargs)

    swapped, agreeing = TwoViewEncoder(["x", "x2"]), TwoViewEncoder(["x2", "x"])
    agreeing.load_state_dict(swapped.state_dict())
    by_name = loss(swapped, x=x, x2=x2)
    with pytest.raises(ValueError, match=r"model\(\) reads a positional value as 'x2' that .*'s guide read as 'x'.*"
                                         r"pass the data by name"):
        loss(swapped, x, x2)
    assert loss(agreeing, x2, x) == pytest.approx(by_name, rel=1e-6)  # the same order in both: positional works
