"""pyro_dgm: deep generative models written as their formulas (Pixyz's design), on Pyro.

Importing it changes nothing in Pyro or torch: no global settings, no patched classes, no registered KLs, no
hooks. (Pyro's first import sets torch's argument validation to Python's ``__debug__``: where importing pyro_dgm is
what first imports Pyro, a setting the program made before is kept; Pyro's own flag is as Pyro sets it.)
"""
from torch.distributions import Distribution as _TorchDistribution

_validating = _TorchDistribution._validate_args  # Pyro's first import sets it to __debug__: the user's setting stays

from pyro_dgm import distributions, flows, layers, losses, models, poutine, utils  # noqa: E402
from pyro_dgm.utils.latex import print_latex  # noqa: E402

_TorchDistribution.set_default_validate_args(_validating)
del _validating

name = "pyro_dgm"  # Pixyz's ``pixyz.name`` holds the package's name too
__version__ = "0.1.0"
__all__ = ["name", "distributions", "flows", "layers", "losses", "models", "poutine", "utils", "print_latex", "__version__"]
