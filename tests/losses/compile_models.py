"""Small models of every kind whose loss the compile tests trace: the README VAE, a deep Markov model
(``IterativeLoss``), M2 (semi-supervised), a Real NVP density model, a planar-flow posterior, a GAN and a Glow
step (dequantization, actnorm, 1x1 convolution, affine coupling).

Each builder returns ``(loss, batch)``: ``batch(seed)`` gives a fresh input dict of a fixed shape, as a new batch of
a data loader would (new tensors every call).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pyro
import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch._dynamo.utils import counters

from pyro_dgm.distributions import Bernoulli, Categorical, Deterministic, EmpiricalDistribution, Normal
from pyro_dgm.distributions import InverseTransformedDistribution, PlanarFlowDistribution, RealNVPDistribution
from pyro_dgm.flows import ActNorm2d, AffineCoupling, ChannelConv, FlowList, Preprocess, Squeeze
from pyro_dgm.layers import ScaleTranslate
from pyro_dgm.losses import ELBO, AdversarialJensenShannon, E, IterativeLoss, KullbackLeibler, LogProb, Parameter

X, Z, Y, H, B, T = 12, 3, 4, 16, 8, 4


@pytest.fixture(autouse=True)
def fresh_dynamo(request: Any) -> Iterator[None]:
    """The compile tests' set-up (a test module imports it): a fresh compiler cache and counters, and torch's
    argument validation off, as ``Model(compile=...)`` evaluates (its checks read values: each would split the
    graph; the conftest restores the setting after the test). These tests set validation themselves: the suite's
    second run (``--validate-args=off``) skips them."""
    if request.config.getoption("--validate-args") == "off":
        pytest.skip("the compile tests set argument validation themselves; they run once, in the first run")
    dynamo.reset()
    counters.clear()
    pyro.enable_validation(False)
    yield
    dynamo.reset()
Batch = Callable[[int], dict[str, Any]]


def _mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, H), nn.ReLU(), nn.Linear(H, o))


class Encoder(Normal):  # q(z|x)
    def __init__(self, cond: tuple[str, ...] = ("x",), x_dim: int = X) -> None:
        super().__init__(var=["z"], cond_var=list(cond), name="q")
        self.net = _mlp(x_dim, 2 * Z)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(torch.cat(list(inputs.values()), -1))
        return {"loc": h[..., :Z], "scale": nn.functional.softplus(h[..., Z:]) + 1e-3}


class Decoder(Bernoulli):  # p(x|z)
    def __init__(self, cond: tuple[str, ...] = ("z",), z_dim: int = Z) -> None:
        super().__init__(var=["x"], cond_var=list(cond), name="p")
        self.net = _mlp(z_dim, X)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": torch.sigmoid(self.net(torch.cat(list(inputs.values()), -1)))}


def _prior() -> Normal:
    return Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z], name="p_{prior}")


def _binary(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g).round()


def vae() -> tuple[Any, Batch]:
    """The README's VAE: KL[q(z|x) || p(z)] - E_q[log p(x|z)], the mean over the batch."""
    q, p = Encoder(), Decoder()
    loss = (KullbackLeibler(q, _prior()) - E(q, LogProb(p))).mean()
    return loss, lambda s: {"x": _binary(torch.Generator().manual_seed(s), B, X)}


class _Trans(Normal):  # p(z|z_prev)
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["z_prev"], name="p")
        self.net = _mlp(Z, 2 * Z)

    def forward(self, z_prev: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(z_prev)
        return {"loc": h[..., :Z], "scale": nn.functional.softplus(h[..., Z:]) + 1e-3}


def dmm() -> tuple[Any, Batch]:
    """A deep Markov model: the sum over t of -E_q[log p(x_t|z_t)] + KL[q(z_t|x_t, z_{t-1}) || p(z_t|z_{t-1})]."""
    trans, emit, comb = _Trans(), Decoder(), Encoder(("x", "z_prev"), X + Z)
    step = -E(comb, LogProb(emit)) + KullbackLeibler(comb, trans)
    loss = IterativeLoss(step, max_iter=T, series_var=["x"], update_value={"z": "z_prev"}).mean()

    def batch(s: int) -> dict[str, Any]:
        return {"x": _binary(torch.Generator().manual_seed(s), T, B, X), "z_prev": torch.zeros(B, Z)}
    return loss, batch


class _Classifier(Categorical):  # f(y|x)
    def __init__(self) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="f")
        self.net = _mlp(X, Y)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": torch.softmax(self.net(x), -1)}


def m2() -> tuple[Any, Batch]:
    """M2 (Kingma et al. 2014): labelled and unlabelled ELBOs and the classifier's NLL weighted by alpha."""
    q, p, f, prior = Encoder(("x", "y"), X + Y), Decoder(("z", "y"), Z + Y), _Classifier(), _prior()
    q_u = q.replace_var(x="x_u", y="y_u") * f.replace_var(x="x_u", y="y_u")
    p_u = p.replace_var(x="x_u", y="y_u") * prior
    loss = -ELBO(p_u, q_u).mean() - ELBO(p * prior, q).mean() + (Parameter("alpha") * -f.log_prob()).mean()

    def batch(s: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(s)
        return {"x": _binary(g, B, X), "y": torch.eye(Y)[torch.randint(0, Y, (B,), generator=g)],
                "x_u": _binary(g, B, X), "alpha": torch.tensor(0.1)}
    return loss, batch


def flow() -> tuple[Any, Batch]:
    """A Real NVP density model trained by maximum likelihood: -log p(x), the mean over the batch."""
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    p = RealNVPDistribution(prior, dim=2, num_multiscale_layers=2, var=["x"], hidden_features=H)
    loss = -LogProb(p).mean()
    return loss, lambda s: {"x": torch.randn(B, 2, generator=torch.Generator().manual_seed(s))}


def planar() -> tuple[Any, Batch]:
    """Variational inference with a planar-flow posterior: E_q[log q(z|h) - log p(z)], where scoring q's own draw
    reads the flows' memory of it (no inversion)."""
    q0 = Normal(loc="h", scale=torch.tensor(1.), var=["z_0"], cond_var=["h"], name="q")
    q = PlanarFlowDistribution(q0, dim=2, num_layers=3, var=["z"])
    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    loss = E(q, LogProb(q) - LogProb(p)).mean()
    return loss, lambda s: {"h": torch.randn(B, 2, generator=torch.Generator().manual_seed(s))}


class _Generator(Deterministic):  # x = g(z)
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="g")
        self.net = _mlp(Z, X)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": torch.sigmoid(self.net(z))}


class _Discriminator(Deterministic):  # d(x) in (0, 1)
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = _mlp(X, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"t": torch.sigmoid(self.net(x))}


def gan() -> tuple[Any, Batch]:
    """A GAN's generator loss: the Jensen-Shannon divergence estimated by a discriminator."""
    p = (_Generator() * _prior()).marginalize_var("z")
    loss = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, _Discriminator())
    return loss, lambda s: {"x": _binary(torch.Generator().manual_seed(s), B, X)}


class _CouplingNet(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, H, 3, padding=1), nn.ReLU(), nn.Conv2d(H, 2 * channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def glow(initialize: bool = True) -> tuple[Any, Batch]:
    """One Glow step on 8x8 images with 17 grey levels, by maximum likelihood: the dequantizing ``Preprocess``
    draws noise, ``ActNorm2d`` sets itself from its first training batch (here, with ``initialize``, from one eager
    evaluation of the builder)."""
    net = ScaleTranslate(_CouplingNet(4), 4, event_dim=3)
    flows = FlowList([Preprocess(dequantize=True, alpha=0.05, num_levels=17), Squeeze(), ActNorm2d(4),
                      ChannelConv(4, decomposed=True),
                      AffineCoupling(4, mask_type="channel_wise", event_dim=3, scale_translate_net=net)])
    prior = Normal(loc=torch.zeros(4, 4, 4), scale=torch.tensor(1.), var=["z"], name="p_{prior}")
    p = InverseTransformedDistribution(prior, flows, var=["x"], name="p")
    loss = -LogProb(p).mean()

    def batch(s: int) -> dict[str, Any]:
        return {"x": torch.randint(0, 17, (B, 1, 8, 8), generator=torch.Generator().manual_seed(s)) / 16.}

    if initialize:
        with torch.no_grad():
            loss.eval(batch(1000))
    return loss, batch


BUILDERS: dict[str, Callable[[], tuple[Any, Batch]]] = {"vae": vae, "dmm": dmm, "m2": m2, "flow": flow,
                                                        "planar": planar, "gan": gan, "glow": glow}
