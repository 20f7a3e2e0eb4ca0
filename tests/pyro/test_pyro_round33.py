"""Thirty-third round (probe p399): an adversarial term evaluated under Pyro's handlers. The critic runs on each
side of one evaluation; its outputs are no random choice and are not sites (they were two sites named ``t``, and
``poutine.trace`` of one evaluation raised ``DuplicateSiteError``); the generator's draws are sites, which the
handlers see and set."""
from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
from pyro_dgm.losses import AdversarialJensenShannon, AdversarialKullbackLeibler, AdversarialWassersteinDistance


class G(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.model = nn.Linear(2, 3)

    def forward(self, z: torch.Tensor) -> dict:
        return {"x": self.model(z)}


class D(Deterministic):
    def __init__(self, probability: bool = True) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.model = nn.Linear(3, 1)
        self.probability = probability

    def forward(self, x: torch.Tensor) -> dict:
        h = self.model(x)
        return {"t": torch.sigmoid(h) if self.probability else h}


def _term(name: str) -> tuple:
    torch.manual_seed(0)
    g, d = G(), D(probability=name != "wasserstein")
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    gen = (g * prior).marginalize_var("z")
    data = EmpiricalDistribution(["x"])
    term = {"js": lambda: AdversarialJensenShannon(data, gen, discriminator=d),
            "kl": lambda: AdversarialKullbackLeibler(gen, data, discriminator=d),
            "wasserstein": lambda: AdversarialWassersteinDistance(data, gen, discriminator=d)}[name]()
    return term, g, d


def _by_hand(name: str, g: G, d: D, x: torch.Tensor, z: torch.Tensor, discriminator: bool) -> torch.Tensor:
    """The term's value for the generator's draw ``G(z)``, written with torch: Pixyz's formulas."""
    y_data, y_gen = d.forward(x)["t"], d.forward(g.forward(z)["x"])["t"]
    if name == "wasserstein":
        return -(y_data.mean() - y_gen.mean()) if discriminator else y_data.mean().detach() - y_gen.mean()
    if name == "kl":  # p = the generator, q = the data
        if discriminator:
            return F.binary_cross_entropy(y_gen, torch.ones_like(y_gen)) + F.binary_cross_entropy(
                y_data, torch.zeros_like(y_data))
        return torch.log(y_gen).mean() - torch.log1p(-y_gen).mean()
    if discriminator:  # p = the data (label 1), q = the generator (label 0)
        return F.binary_cross_entropy(y_data, torch.ones_like(y_data)) + F.binary_cross_entropy(
            y_gen, torch.zeros_like(y_gen))
    return F.binary_cross_entropy(y_data, torch.zeros_like(y_data)).detach() + F.binary_cross_entropy(
        y_gen, torch.ones_like(y_gen))


@pytest.mark.parametrize("name", ["js", "kl", "wasserstein"])
@pytest.mark.parametrize("discriminator", [False, True])
def test_a_traced_adversarial_evaluation_records_the_generators_draws_alone(name: str, discriminator: bool) -> None:
    """``poutine.trace`` of one evaluation (either side): the sample sites are the generator's ``z`` and ``x``,
    ``z`` drawn from the prior (its site's log-density is the standard normal's), and the value is the untraced
    evaluation's from the same seed (it raised ``DuplicateSiteError`` for the critic's ``t``, probe p399)."""
    term, g, d = _term(name)
    x = torch.randn(4, 3)
    pyro.set_rng_seed(1)
    plain = term.eval({"x": x}, discriminator=discriminator)
    pyro.set_rng_seed(1)
    tr = poutine.trace(lambda: term.eval({"x": x}, discriminator=discriminator)).get_trace()
    sites = [n for n, s in tr.nodes.items() if s["type"] == "sample"]
    assert sites == ["z", "x"]
    z = tr.nodes["z"]["value"]
    assert z.shape == (4, 2)
    tr.compute_log_prob()
    assert torch.allclose(tr.nodes["z"]["log_prob"], torch.distributions.Normal(0., 1.).log_prob(z).sum(-1))
    assert torch.equal(tr.nodes["_RETURN"]["value"], plain)
    assert torch.allclose(plain, _by_hand(name, g, d, x, z, discriminator), atol=1e-6)


@pytest.mark.parametrize("name", ["js", "kl", "wasserstein"])
def test_conditioning_the_generators_draw_gives_the_terms_value_and_gradient_there(name: str) -> None:
    """``poutine.condition(..., {"z": z0})`` on the generator's loss: the value and the generator's gradients are
    the hand-written formula's at ``G(z0)`` (the critic's outputs being no sites, nothing else is set)."""
    term, g, d = _term(name)
    x, z0 = torch.randn(4, 3), torch.randn(4, 2)
    value = poutine.condition(lambda: term.eval({"x": x}), data={"z": z0})()
    grads = torch.autograd.grad(value, list(g.parameters()))
    want = _by_hand(name, g, d, x, z0, False)
    want_grads = torch.autograd.grad(want, list(g.parameters()))
    assert torch.allclose(value, want, atol=1e-6)
    for a, b in zip(grads, want_grads):
        assert torch.allclose(a, b, atol=1e-6)
