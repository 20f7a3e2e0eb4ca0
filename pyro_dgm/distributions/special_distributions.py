"""Pixyz's module ``pixyz.distributions.special_distributions``: :class:`Deterministic` and
:class:`EmpiricalDistribution` (see :mod:`.special`).

Examples
--------
>>> import torch
>>> from pyro_dgm.distributions.special_distributions import EmpiricalDistribution
>>> EmpiricalDistribution(["x"]).sample({"x": torch.ones(2)})["x"]
tensor([1., 1.])
"""
from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.special import Deterministic, EmpiricalDistribution

__all__ = ["Deterministic", "EmpiricalDistribution", "Distribution"]
