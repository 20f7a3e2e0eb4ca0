"""Small helpers shared by the layers: error text (:mod:`.checks`), printing (:mod:`.latex`) and shapes
(:mod:`.shapes`)."""
from pyro_dgm.utils.latex import print_latex

__all__ = ["print_latex"]
