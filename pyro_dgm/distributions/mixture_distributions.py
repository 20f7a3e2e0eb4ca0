"""Pixyz's module ``pixyz.distributions.mixture_distributions``: :class:`MixtureModel` and
:class:`PosteriorMixtureModel` (see :mod:`.mixture`).

Examples
--------
>>> from pyro_dgm.distributions.mixture_distributions import MixtureModel, PosteriorMixtureModel
>>> MixtureModel.__name__, PosteriorMixtureModel.__name__
('MixtureModel', 'PosteriorMixtureModel')
"""
from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.mixture import MixtureModel, PosteriorMixtureModel
from pyro_dgm.utils.latex import convert_latex_name

__all__ = ["MixtureModel", "PosteriorMixtureModel", "Distribution", "convert_latex_name"]
