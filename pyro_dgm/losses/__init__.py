"""The Loss API: loss terms built from distributions, combined with arithmetic, evaluated with ``.eval``."""
from pyro_dgm.losses.base import Loss
from pyro_dgm.losses.pdf import LogProb, Prob

__all__ = ["Loss", "LogProb", "Prob"]
