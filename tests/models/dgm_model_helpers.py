"""Small models and data shared by the Model API tests (and the DDP worker script)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Categorical, Normal
from pyro_dgm.losses import KullbackLeibler
from pyro_dgm.models import ML, VAE


class Encoder(Normal):
    """q(z|x) with a small MLP."""

    def __init__(self, x_dim: int = 64, z_dim: int = 4, h: int = 32) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(x_dim, h), nn.ReLU())
        self.loc = nn.Linear(h, z_dim)
        self.scale = nn.Linear(h, z_dim)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.net(x)
        return {"loc": self.loc(h), "scale": nn.functional.softplus(self.scale(h)) + 1e-3}


class Decoder(Bernoulli):
    """p(x|z) with a small MLP."""

    def __init__(self, x_dim: int = 64, z_dim: int = 4, h: int = 32) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, h), nn.ReLU(), nn.Linear(h, x_dim))

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"probs": torch.sigmoid(self.net(z))}


class Classifier(Categorical):
    """p(y|x): a linear softmax classifier."""

    def __init__(self, x_dim: int = 64, n_classes: int = 10) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="p")
        self.net = nn.Linear(x_dim, n_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"probs": torch.softmax(self.net(x), dim=-1)}


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits: pixels scaled to [0, 1] (float32, [1797, 64]) and one-hot labels ([1797, 10])."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = nn.functional.one_hot(torch.tensor(d.target), 10).float()
    return x, y


def make_vae(z_dim: int = 4, h: int = 32, lr: float = 1e-2, **kwargs) -> VAE:  # type: ignore[no-untyped-def]
    """A VAE with a KL regularizer to N(0, I) (MC sampling in the reconstruction term)."""
    q, p = Encoder(z_dim=z_dim, h=h), Decoder(z_dim=z_dim, h=h)
    prior = Normal(loc=torch.zeros(z_dim), scale=torch.ones(z_dim), var=["z"], name="p_{prior}")
    return VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer_params={"lr": lr}, **kwargs)


def make_ml(lr: float = 0.1, **kwargs) -> ML:  # type: ignore[no-untyped-def]
    """A softmax classifier trained by maximum likelihood."""
    return ML(Classifier(), optimizer_params={"lr": lr}, **kwargs)
