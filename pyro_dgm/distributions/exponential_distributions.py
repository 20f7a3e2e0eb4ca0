"""Pixyz's module ``pixyz.distributions.exponential_distributions``: the parametric families (see :mod:`.exponential`).

``BernoulliTorchOld`` and ``CategoricalTorchOld`` are the torch classes Pixyz scores with: the Bernoulli
log-density as a cross-entropy with logits (values in [0, 1] allowed), the categorical log-density of the arg-max of
a (relaxed) one-hot value.

Examples
--------
>>> import torch
>>> BernoulliTorchOld(probs=torch.tensor([0.5])).log_prob(torch.tensor([0.3]))
tensor([-0.6931])
>>> CategoricalTorchOld(probs=torch.tensor([0.2, 0.8])).log_prob(torch.tensor([0.3, 0.7])).exp()
tensor(0.8000)
"""
import pyro.distributions as _dist
import torch.nn.functional as _F
from torch import Tensor as _Tensor
from torch.distributions import constraints as _constraints
from torch.distributions.utils import broadcast_all as _broadcast_all

from pyro_dgm.distributions.exponential import (Bernoulli, Beta, Categorical, Dirichlet, FactorizedBernoulli, Gamma,
                                                Laplace, Multinomial, Normal, RelaxedBernoulli, RelaxedCategorical)
from pyro_dgm.distributions.family import DistributionBase
from pyro_dgm.utils import get_dict_values, sum_samples  # noqa: F401  (helpers Pixyz's module namespace has)
# the torch classes under the names Pixyz's module imports them as (programs import them from there)
from torch.distributions import Bernoulli as BernoulliTorch  # noqa: F401
from torch.distributions import Beta as BetaTorch  # noqa: F401
from torch.distributions import Dirichlet as DirichletTorch  # noqa: F401
from torch.distributions import Gamma as GammaTorch  # noqa: F401
from torch.distributions import Laplace as LaplaceTorch  # noqa: F401
from torch.distributions import Multinomial as MultinomialTorch  # noqa: F401
from torch.distributions import Normal as NormalTorch  # noqa: F401
from torch.distributions import RelaxedBernoulli as RelaxedBernoulliTorch  # noqa: F401
from torch.distributions import RelaxedOneHotCategorical as RelaxedOneHotCategoricalTorch  # noqa: F401
from torch.distributions.one_hot_categorical import OneHotCategorical as CategoricalTorch  # noqa: F401
from torch.distributions.utils import broadcast_all  # noqa: F401
from torch.nn.functional import binary_cross_entropy_with_logits  # noqa: F401

__all__ = ["Normal", "BernoulliTorchOld", "Bernoulli", "RelaxedBernoulli", "FactorizedBernoulli",
           "CategoricalTorchOld", "Categorical", "RelaxedCategorical", "Multinomial", "Dirichlet", "Beta", "Laplace",
           "Gamma", "DistributionBase"]


class BernoulliTorchOld(_dist.Bernoulli):
    """Bernoulli scored by ``-binary_cross_entropy_with_logits``, defined for any value in [0, 1] (Pixyz's)."""

    support = _constraints.unit_interval

    def log_prob(self, value: _Tensor) -> _Tensor:
        logits, value = _broadcast_all(self.logits, value)
        return -_F.binary_cross_entropy_with_logits(logits, value, reduction="none")


class CategoricalTorchOld(_dist.OneHotCategorical):
    """One-hot categorical that scores the arg-max of the value (Pixyz's; a relaxed value counts as its arg-max)."""

    def log_prob(self, value: _Tensor) -> _Tensor:
        return self._categorical.log_prob(value.max(-1)[1])
