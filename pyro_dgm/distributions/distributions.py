"""Pixyz's module ``pixyz.distributions.distributions``: the base classes and the operations on distributions.

Our classes live in :mod:`.base` (Distribution), :mod:`.family` (DistributionBase), :mod:`.joint` (products and
their graph), :mod:`.ops` (renaming, marginalizing) and :mod:`.factor`; this module gives them Pixyz's module path.

Examples
--------
>>> from pyro_dgm.distributions.distributions import Distribution, MultiplyDistribution
>>> from pyro_dgm.distributions import Normal
>>> isinstance(Normal(var=["x"], loc=0., scale=1.) * Normal(var=["y"], loc=0., scale=1.), MultiplyDistribution)
True
"""
from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.factor import Factor
from pyro_dgm.distributions.family import DistributionBase
from pyro_dgm.distributions.joint import DistGraph, MultiplyDistribution
from pyro_dgm.distributions.ops import MarginalizeVarDistribution, ReplaceVarDistribution
from pyro_dgm.losses.pdf import LogProb, Prob
from pyro_dgm.utils import (convert_latex_name, delete_dict_values, get_dict_values,  # noqa: F401  (helpers
                            lru_cache_for_sample_dict, replace_dict_keys, sum_samples, tolist)  # Pixyz's has)

__all__ = ["Factor", "DistGraph", "Distribution", "DistributionBase", "MultiplyDistribution",
           "ReplaceVarDistribution", "MarginalizeVarDistribution", "LogProb", "Prob"]
