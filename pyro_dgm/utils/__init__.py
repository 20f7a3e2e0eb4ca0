"""Small helpers shared by the layers: error text (:mod:`.checks`) and printing (:mod:`.latex`)."""
from pyro_dgm.utils.latex import print_latex

__all__ = ["print_latex"]
