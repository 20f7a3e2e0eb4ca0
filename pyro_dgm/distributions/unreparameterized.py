r"""A Pyro site's distribution drawn without reparameterization: what ``sample(reparam=False)`` (Pixyz's default)
hands Pyro inside a handler, so that an inference algorithm scores the site by its score function, not by a pathwise
gradient that the value (drawn without a graph) does not carry."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor

__all__ = ["Unreparameterized"]


class Unreparameterized(TorchDistribution):
    r"""``base`` with ``has_rsample = False``: its draws carry no gradient, and Pyro's ELBOs give the site's
    parameters the score-function term :math:`\nabla \log q(z)` (``Trace_ELBO``'s surrogate), as for any
    distribution without a reparameterized sampler. Log-densities, shapes and moments are ``base``'s.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> loc = torch.zeros(2, requires_grad=True)
    >>> d = Unreparameterized(dist.Normal(loc, 1.))
    >>> d.has_rsample, d.sample().requires_grad, d.log_prob(torch.ones(2)).requires_grad
    (False, False, True)
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base: Any, validate_args: bool | None = None) -> None:
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self) -> Any:  # type: ignore[override]
        return self.base.support

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.base.has_enumerate_support

    def enumerate_support(self, expand: bool = True) -> Tensor:
        return self.base.enumerate_support(expand)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.base.sample(torch.Size(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "Unreparameterized":
        return Unreparameterized(self.base.expand(torch.Size(batch_shape)))

    @property
    def mean(self) -> Tensor:
        return self.base.mean

    @property
    def variance(self) -> Tensor:
        return self.base.variance

    def entropy(self) -> Tensor:
        return self.base.entropy()
