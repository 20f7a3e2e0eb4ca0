r"""The variational autoencoder: :class:`VAE` minimizes :math:`mean(-\mathbb{E}_{q(z|x)}[\log p(x|z)] + R)`."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.losses.base import Loss, is_operand
from pyro_dgm.losses.special import LossArgumentError
from pyro_dgm.models.model import Model
from pyro_dgm.models.parts import model_distributions
from pyro_dgm.utils import tolist  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["VAE"]


class VAE(Model):
    r"""Variational autoencoder (Kingma and Welling 2013), Pixyz 0.3.3's ``VAE``.

    The loss is the reconstruction term plus a regularizer, averaged over the batch:
    :math:`mean(-\mathbb{E}_{q(z|x)}[\log p(x|z)] + R)`. The KL term to a prior is *not* added for you: pass it as
    ``regularizer=KullbackLeibler(q, prior)`` (as in Pixyz).

    Parameters
    ----------
    encoder : Distribution
        :math:`q(z|x)`.
    decoder : Distribution
        :math:`p(x|z)`.
    other_distributions : list of Distribution, optional
        More distributions to train with the same optimizer.
    regularizer : Loss, optional
        Added to the reconstruction term inside the mean (e.g. a KL divergence); none when omitted. A number is
        added as a constant term, as in Pixyz (and a tensor, as loss arithmetic adds one).
    optimizer, optimizer_params, clip_grad_norm, clip_grad_value, retain_graph, compile
        As in :class:`~pyro_dgm.models.Model`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Bernoulli, Normal
    >>> from pyro_dgm.losses import KullbackLeibler
    >>> from pyro_dgm.models import VAE
    >>> class Q(Normal):
    ...     def __init__(self):
    ...         super().__init__(var=["z"], cond_var=["x"], name="q")
    ...         self.loc, self.scale = nn.Linear(4, 2), nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return {"loc": self.loc(x), "scale": nn.functional.softplus(self.scale(x))}
    >>> class P(Bernoulli):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], cond_var=["z"], name="p")
    ...         self.net = nn.Linear(2, 4)
    ...     def forward(self, z):
    ...         return {"probs": torch.sigmoid(self.net(z))}
    >>> q, p = Q(), P()
    >>> prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    >>> model = VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer_params={"lr": 0.05})
    >>> print(model.loss_cls)
    mean \left(D_{KL} \left[q(z|x)||p_{prior}(z) \right] - \mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] \right)
    >>> x = torch.tensor([[1., 1., 0., 0.], [0., 0., 1., 1.]]).repeat(8, 1)
    >>> before = model.test({"x": x})
    >>> for _ in range(100):
    ...     _ = model.train({"x": x})
    >>> bool(model.test({"x": x}) < before - 0.5)
    True
    """

    def __init__(self, encoder: Distribution, decoder: Distribution,
                 other_distributions: Sequence[nn.Module] | None = (), regularizer: Loss | None = None,
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 retain_graph: bool = False, compile: bool | Mapping[str, Any] = False) -> None:
        distributions = model_distributions("VAE", other_distributions, encoder=encoder, decoder=decoder)
        reconstruction = -decoder.log_prob().expectation(encoder)
        if regularizer is None:
            loss = reconstruction.mean()
        else:
            if not is_operand(regularizer):  # (a bool is the number 1 or 0 there, as in Pixyz)
                # a TypeError, and the ValueError of Pixyz's loss arithmetic
                raise LossArgumentError(f"VAE: regularizer must be a pyro_dgm Loss (e.g. KullbackLeibler(q, prior)) "
                                        f"or a number, got {type(regularizer).__module__}."
                                        f"{type(regularizer).__qualname__}")
            loss = (reconstruction + regularizer).mean()  # (a number too, as in Pixyz: a constant term)
        super().__init__(loss, test_loss=loss, distributions=distributions, optimizer=optimizer,
                         optimizer_params=optimizer_params, clip_grad_norm=clip_grad_norm,
                         clip_grad_value=clip_grad_value, retain_graph=retain_graph,
                         compile=compile)
