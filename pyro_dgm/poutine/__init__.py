"""pyro_dgm's effect handlers.

Networks run through the ``"dgm_params"`` effect (:data:`pyro_dgm.distributions.effects.run_network`); :func:`memoize`
answers it from a cache scoped to one ``with`` block, so the encoder of a VAE loss runs once per evaluation.
"""
from pyro_dgm.poutine.handlers import memoize
from pyro_dgm.poutine.memoize_messenger import MemoizeMessenger, get_cache_maxsize, set_cache_maxsize

__all__ = ["memoize", "MemoizeMessenger", "set_cache_maxsize", "get_cache_maxsize"]
