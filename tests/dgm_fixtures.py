"""The encoder/decoder pair the tests share: q(z|x) (:class:`Encoder`), p(x|z) (:class:`Decoder`) and the standard
prior, at any size.

One pair of classes, with the few choices the tests need to exercise different code paths:

- the encoder's two outputs come from two linear heads over an optional hidden layer (as in Pixyz's and the README's
  VAE; ``split=False``), or from one network whose ``2 * z_dim`` outputs are cut in two halves (``split=True``, as in
  Pyro's examples);
- the decoder gives Bernoulli ``probs`` (a sigmoid; ``logits=False``) or ``logits`` (``logits=True``).

The scale is ``softplus(.) + min_scale``. A network is built in a fixed order (the hidden layer, then the heads), so a
seed gives the same weights as the classes the tests defined one by one before. The file is imported as a plain
module: pytest puts ``tests/`` on ``sys.path`` (the folder of the top ``conftest.py``).

>>> import torch
>>> q, p = Encoder(x_dim=4, z_dim=2, hidden=8), Decoder(x_dim=4, z_dim=2, logits=True)
>>> out = q(torch.zeros(3, 4))
>>> tuple(out["loc"].shape), bool((out["scale"] > 1e-3).all()), sorted(p(torch.zeros(3, 2)))
((3, 2), True, ['logits'])
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_dgm.distributions import Bernoulli, Normal

__all__ = ["mlp", "Encoder", "Decoder", "standard_prior", "vae_training_run"]


def mlp(n_in: int, n_out: int, hidden: int = 0, activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Module:
    """``Linear(n_in, n_out)``, or with ``hidden`` units: ``Linear(n_in, hidden), activation(), Linear(hidden, n_out)``."""
    if not hidden:
        return nn.Linear(n_in, n_out)
    return nn.Sequential(nn.Linear(n_in, hidden), activation(), nn.Linear(hidden, n_out))


class Encoder(Normal):
    """q(z|x) = N(loc(x), softplus(s(x)) + min_scale).

    Parameters
    ----------
    x_dim, z_dim : int
    hidden : int, default 0
        Units of the hidden layer (0: none).
    split : bool, default False
        False: ``net`` is the hidden layer and its activation (an identity without one), ``loc`` and ``scale`` are
        two linear heads over it. True: ``net`` (see :func:`mlp`) gives ``2 * z_dim`` outputs, loc then s.
    activation : callable returning a module, default ``nn.ReLU``
    min_scale : float, default 1e-3
    name : str, default "q"
    """

    def __init__(self, x_dim: int = 6, z_dim: int = 2, hidden: int = 0, *, split: bool = False,
                 activation: Callable[[], nn.Module] = nn.ReLU, min_scale: float = 1e-3, name: str = "q") -> None:
        super().__init__(var=["z"], cond_var=["x"], name=name)
        self.z_dim, self.split, self.min_scale = z_dim, split, min_scale
        if split:
            self.net = mlp(x_dim, 2 * z_dim, hidden, activation)
        else:
            self.net = nn.Sequential(nn.Linear(x_dim, hidden), activation()) if hidden else nn.Identity()
            self.loc = nn.Linear(hidden or x_dim, z_dim)
            self.scale = nn.Linear(hidden or x_dim, z_dim)

    def loc_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The parameters as plain tensors (what a hand-written Pyro guide computes from the same networks)."""
        h = self.net(x)
        if self.split:
            loc, s = h[..., :self.z_dim], h[..., self.z_dim:]
        else:
            loc, s = self.loc(h), self.scale(h)
        return loc, F.softplus(s) + self.min_scale

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        loc, scale = self.loc_scale(x)
        return {"loc": loc, "scale": scale}


class Decoder(Bernoulli):
    """p(x|z) = Bernoulli(sigmoid(net(z))), or Bernoulli(logits=net(z)) with ``logits=True``; ``net`` is
    :func:`mlp` ``(z_dim, x_dim, hidden, activation)``."""

    def __init__(self, x_dim: int = 6, z_dim: int = 2, hidden: int = 0, *, logits: bool = False,
                 activation: Callable[[], nn.Module] = nn.ReLU, name: str = "p") -> None:
        super().__init__(var=["x"], cond_var=["z"], name=name)
        self.output_logits = logits
        self.net = mlp(z_dim, x_dim, hidden, activation)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        out = self.net(z)
        return {"logits": out} if self.output_logits else {"probs": torch.sigmoid(out)}


def standard_prior(z_dim: int, name: str = "p_{prior}") -> Normal:
    """p(z) = N(0, I) over ``z_dim`` features (scalar constants with ``features_shape=[z_dim]``)."""
    return Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[z_dim], name=name)


class SqrtLoc(Normal):
    """p(x|y) = N(sqrt(w y), 1), w one parameter (no bias): finite everywhere, an infinite derivative in ``w`` at
    ``w y = 0`` (the non-finite-gradient tests)."""

    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, y: Tensor) -> dict[str, Tensor]:
        return {"loc": torch.sqrt(self.w * y), "scale": torch.ones_like(y)}


def vae_training_run(compile: bool | dict, device: torch.device | str = "cpu", steps: int = 4) -> list[float]:
    """What ``Model.train`` gives over ``steps`` steps of the Monte Carlo VAE (6 inputs, 2 latents, 16 hidden units,
    Adam at 1e-2) on new batches of one shape, from fixed seeds: the losses it returned, all read after the last step
    (a compiled step must not hand out memory its next run overwrites), then the sums of the trained weights.
    Compiled or not (``compile``, ``Model``'s option) under inductor's ``fallback_random`` (the eager draws), and
    without validation, as compiled code runs; so two runs that differ only in ``compile`` give equal lists."""
    import pyro
    import torch._inductor.config as inductor

    from pyro_dgm.losses import ELBO
    from pyro_dgm.models import Model

    g = torch.Generator().manual_seed(3)
    batches = [torch.bernoulli(torch.full((16, 6), 0.5), generator=g).to(device) for _ in range(steps)]
    torch.manual_seed(0)
    q, p, prior = Encoder(6, 2, 16).to(device), Decoder(6, 2, 16).to(device), standard_prior(2).to(device)
    model = Model(-ELBO(p * prior, q).mean(), distributions=[q, p], optimizer_params={"lr": 1e-2}, compile=compile)
    validating = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(False)
    try:
        with inductor.patch(fallback_random=True):
            losses = []
            for s, x in enumerate(batches):
                torch.manual_seed(10 + s)
                losses.append(model.train({"x": x}))
    finally:
        pyro.enable_validation(validating)
    return [float(v) for v in losses] + [float(t.detach().sum()) for d in (q, p) for t in d.parameters()]
