"""Small helpers shared by the layers: error text (:mod:`.checks`), printing (:mod:`.latex`), shapes
(:mod:`.shapes`) and per-thread random generators (:mod:`.random`: :func:`generator`), plus Pixyz's ``pixyz.utils``
helpers with Pixyz's behaviour (:mod:`.dicts`, :mod:`.settings`, :mod:`.lru_cache`)."""
#: Pixyz's numerical epsilon (``pixyz.utils._EPSILON``), read by :func:`epsilon` and set by :func:`set_epsilon`
_EPSILON = 1e-07
#: the memoizing cache's size as last set (``pixyz.utils._CACHE_MAXSIZE``), read by :func:`cache_maxsize`
_CACHE_MAXSIZE = 128

from pyro_dgm.utils.dicts import (FrozenSampleDict, delete_dict_values, detach_dict, get_dict_values, replace_dict_keys,
                                  replace_dict_keys_split, sum_samples, tolist)
from pyro_dgm.utils.latex import convert_latex_name, print_latex
from pyro_dgm.utils.random import current_generator, generator, uniform
from pyro_dgm.utils.settings import (cache_maxsize, epsilon, lru_cache_for_sample_dict, set_cache_maxsize,
                                     set_epsilon)

__all__ = ["print_latex", "convert_latex_name", "set_epsilon", "epsilon", "set_cache_maxsize", "cache_maxsize",
           "get_dict_values", "delete_dict_values", "detach_dict", "replace_dict_keys", "replace_dict_keys_split",
           "FrozenSampleDict", "lru_cache_for_sample_dict", "tolist", "sum_samples", "generator", "current_generator",
           "uniform"]


def __getattr__(name: str) -> object:
    """``Math``, IPython's, which Pixyz's module imports (here on first use: IPython is optional)."""
    if name == "Math":
        from IPython.display import Math

        return Math
    raise AttributeError(f"module 'pyro_dgm.utils' has no attribute {name!r}")
