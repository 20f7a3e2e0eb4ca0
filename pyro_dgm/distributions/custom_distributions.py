"""Pixyz's module ``pixyz.distributions.custom_distributions``: :class:`CustomProb` (see :mod:`.special`).

Examples
--------
>>> import torch
>>> from pyro_dgm.distributions.custom_distributions import CustomProb
>>> p = CustomProb(lambda x: -x.pow(2).sum(-1), var=["x"])
>>> p.get_log_prob({"x": torch.ones(1, 2)})
tensor([-2.])
"""
from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.special import CustomProb
from pyro_dgm.utils import get_dict_values, sum_samples  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["CustomProb", "Distribution"]
