"""Small models and data shared by the Model API tests (and the DDP worker script): the shared encoder and decoder
(``tests/dgm_fixtures.py``) at the digits' sizes, a classifier, the digits."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
from torch import nn

try:
    from dgm_fixtures import Decoder, Encoder
except ModuleNotFoundError:  # imported by ddp_worker.py, a script torchrun runs: tests/ is not on sys.path there
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from dgm_fixtures import Decoder, Encoder

from pyro_dgm.distributions import Categorical, Normal
from pyro_dgm.losses import KullbackLeibler, Loss
from pyro_dgm.models import ML, VAE

X_DIM, Z_DIM, HIDDEN = 64, 4, 32  # 8x8 digits, the latent size, one hidden layer


def digits_nets(z_dim: int = Z_DIM, h: int = HIDDEN) -> tuple[Encoder, Decoder]:
    """q(z|x) and p(x|z) for the digits: the shared networks with one hidden layer of ``h`` ReLU units."""
    return Encoder(X_DIM, z_dim, h), Decoder(X_DIM, z_dim, h)


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
    q, p = digits_nets(z_dim, h)
    prior = Normal(loc=torch.zeros(z_dim), scale=torch.ones(z_dim), var=["z"], name="p_{prior}")
    return VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer_params={"lr": lr}, **kwargs)


def make_ml(lr: float = 0.1, **kwargs) -> ML:  # type: ignore[no-untyped-def]
    """A softmax classifier trained by maximum likelihood."""
    return ML(Classifier(), optimizer_params={"lr": lr}, **kwargs)


class Dot(Loss):
    """(w . k) of ``module.w`` and the value ``k``: its gradient with respect to ``w`` is ``k`` (a loss whose gradients
    a test chooses: infinite, NaN, finite with a value that overflows)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(["k"])
        self.module = module

    @property
    def latex(self) -> str:
        return "w k"

    def forward(self, values, **kwargs):  # type: ignore[no-untyped-def]
        return (self.module.w * values["k"]).sum()
