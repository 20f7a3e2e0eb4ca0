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
from pyro_dgm.utils import get_dict_values, tolist  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["MixtureOfNormal", "Normal"]
