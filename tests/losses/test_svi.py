"""The Pyro path: SVI(model, guide, optim, loss=our_loss).step(...) optimizes exactly our_loss.eval(...)."""
from __future__ import annotations

import copy

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI

from pyro_dgm.losses import E, KullbackLeibler, LogProb


def _loss(q, p, prior):  # type: ignore[no-untyped-def]
    return (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()


@pytest.mark.parametrize("call", ["by name", "dict", "positional"])
def test_svi_step_equals_manual_backward_and_adam(vae, call: str) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    q2, p2 = copy.deepcopy(q), copy.deepcopy(p)
    loss = _loss(q, p, prior)
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss=loss)
    pyro.set_rng_seed(7)
    step = {"by name": lambda: svi.step(x=x), "dict": lambda: svi.step({"x": x}), "positional": lambda: svi.step(x)}
    svi_values = [step[call]() for _ in range(3)]  # (one input variable: svi.step(x) is unambiguous)

    manual = _loss(q2, p2, prior)
    opt = torch.optim.Adam(list(q2.parameters()) + list(p2.parameters()), lr=0.05)
    pyro.set_rng_seed(7)
    manual_values = []
    for _ in range(3):
        opt.zero_grad()
        value = manual.eval({"x": x})
        value.backward()
        opt.step()
        manual_values.append(float(value.detach()))

    assert svi_values == pytest.approx(manual_values, abs=1e-6)
    for a, b in zip(list(q.parameters()) + list(p.parameters()), list(q2.parameters()) + list(p2.parameters())):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(q.loc.weight, copy.deepcopy(q2).loc.weight * 0)  # parameters moved


def test_svi_updates_every_network_in_the_loss(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    before = [t.detach().clone() for t in list(q.parameters()) + list(p.parameters())]
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss=_loss(q, p, prior))
    svi.step(x=x)
    after = list(q.parameters()) + list(p.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


def test_evaluate_loss_equals_eval_without_grad(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    loss = _loss(q, p, prior)
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss=loss)
    pyro.set_rng_seed(11)
    a = svi.evaluate_loss(x=x)
    pyro.set_rng_seed(11)
    b = float(loss.eval({"x": x}).detach())
    assert isinstance(a, float) and a == pytest.approx(b, abs=1e-6)


def test_svi_with_a_non_scalar_loss_says_to_reduce(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss=KullbackLeibler(q, prior))
    with pytest.raises(ValueError, match=r"shape \(8,\).*mean\(\) or loss.sum\(\)"):
        svi.step(x=x)


def test_svi_rejects_positional_data_it_cannot_name(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss=_loss(q, p, prior))
    with pytest.raises(TypeError, match=r"pass the data by name \(svi.step\(x=...\)\).*one positional value only"):
        svi.step(x, x)  # two values, one input variable
