"""Small pieces shared by the model modules: what a builder returns, batch pools, Pixyz's cache switch."""
from __future__ import annotations

import itertools
import types
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

_COUNTER = itertools.count()


def unique(name: str) -> str:
    """A fresh name for ``pyro.module``: Pyro's param store is global, so two contenders must not share names."""
    return f"{name}_{next(_COUNTER)}"


@dataclass
class Built:
    """A built contender: ``step()`` does one training step; ``loss(batch)`` the objective's value, no update."""

    step: Callable[[], Any]
    loss: Callable[[Any], float]


class BatchCycle:
    """Hands out the batches of a pool in turn (one counter per contender).

    The pool holds distinct tensor objects and is longer than Pixyz's 20-entry cache can remember, so a batch object
    seen again is never answered from Pixyz's stale cache (Pixyz 0.3.3 keys it by tensor id and value).
    """

    def __init__(self, pool: Sequence[Any]) -> None:
        self.pool = pool
        self.i = 0

    def __call__(self) -> Any:
        b = self.pool[self.i % len(self.pool)]
        self.i += 1
        return b


def make_optimizer(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam as every contender uses it (``foreach`` left to torch's default on both CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr)


# ------------------------------------------------------------------------------------------------ Pixyz's cache
def _pixyz_uncached_get_params() -> Callable[..., Any]:
    """``DistributionBase.get_params`` without its ``lru_cache``.

    Pixyz 0.3.3 decorates ``get_params`` with ``@lru_cache_for_sample_dict()`` (``pixyz/utils.py``), which calls
    ``functools.lru_cache(maxsize=cache_maxsize())`` when the class body runs, i.e. at the first import of
    ``pixyz.distributions``. ``pixyz.utils.set_cache_maxsize(0)`` after that changes nothing. The decorated method is
    ``frozen_wrapper`` -> (closure ``wrapper``) the ``lru_cache`` object -> ``__wrapped__``, which accepts plain dicts:
    that is the method without a cache, and we set it on each instance.
    """
    return _pixyz_lru().__wrapped__


def pixyz_set_cache(dists: Sequence[Any], on: bool) -> None:
    """Turn Pixyz's memo cache off (``on=False``) for these distributions only, in this process."""
    if on:
        return
    raw = _pixyz_uncached_get_params()
    for d in dists:
        # nn.Module.__setattr__ puts a plain function in __dict__, which shadows the class's cached method
        object.__setattr__(d, "get_params", types.MethodType(raw, d))


def _pixyz_lru() -> Any:
    from pixyz.distributions.distributions import DistributionBase

    frozen = DistributionBase.get_params
    cells = dict(zip(frozen.__code__.co_freevars, frozen.__closure__ or ()))
    return cells["wrapper"].cell_contents


def pixyz_cache_info() -> Any:
    """Hits, misses and size of Pixyz's process-wide ``get_params`` cache."""
    return _pixyz_lru().cache_info()


def pixyz_cache_clear() -> None:
    """Empty Pixyz's process-wide cache (it keeps distributions and their outputs alive)."""
    try:
        _pixyz_lru().cache_clear()
    except ImportError:
        pass
