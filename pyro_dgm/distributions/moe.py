"""Pixyz's module ``pixyz.distributions.moe``: :class:`MixtureOfNormal`, the mixture of experts of normal
experts (see :mod:`.mixture`).

Examples
--------
>>> from pyro_dgm.distributions.moe import MixtureOfNormal
>>> MixtureOfNormal.__name__
'MixtureOfNormal'
"""
from pyro_dgm.distributions.exponential import Normal
from pyro_dgm.distributions.mixture import MixtureOfNormal

__all__ = ["MixtureOfNormal", "Normal"]
