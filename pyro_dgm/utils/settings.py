"""Pixyz's global settings (``pixyz.utils``): the numerical ``epsilon`` and the cache size.

``epsilon()`` is the small constant Pixyz programs add inside logarithms and square roots
(``torch.log(x + epsilon())``); :func:`set_epsilon` changes what it returns. The cache size maps onto the memoizing
handler's (:func:`pyro_dgm.poutine.set_cache_maxsize`), which replaces Pixyz's global cache: see
:func:`lru_cache_for_sample_dict`.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

__all__ = ["epsilon", "set_epsilon", "cache_maxsize", "set_cache_maxsize", "lru_cache_for_sample_dict"]

F = TypeVar("F", bound=Callable[..., Any])

_EPSILON: list[float] = [1e-07]
_UNBOUNDED = [False]  # set_cache_maxsize(None) was asked (functools.lru_cache's "no limit")


def set_epsilon(eps: float) -> None:
    """Set the value :func:`epsilon` returns.

    Examples
    --------
    >>> set_epsilon(1e-06); epsilon()
    1e-06
    >>> set_epsilon(1e-07)
    """
    _EPSILON[0] = eps


def epsilon() -> float:
    """Pixyz's small constant for numerical safety, ``1e-07`` unless :func:`set_epsilon` changed it.

    Examples
    --------
    >>> import torch
    >>> epsilon()
    1e-07
    >>> torch.log(torch.tensor(0.) + epsilon())
    tensor(-16.1181)
    """
    return _EPSILON[0]


def set_cache_maxsize(cache_maxsize: int | None) -> None:
    """Set how many network results one memoizing scope keeps (:func:`pyro_dgm.poutine.set_cache_maxsize`).

    ``0`` turns memoization off; ``None`` (functools' "no limit") keeps every result of the scope.

    Examples
    --------
    >>> old = cache_maxsize()
    >>> set_cache_maxsize(100); cache_maxsize()
    100
    >>> set_cache_maxsize(old)
    """
    from pyro_dgm.poutine.memoize_messenger import set_cache_maxsize as _set

    if cache_maxsize is None:
        _set(sys.maxsize)
    else:
        _set(cache_maxsize)
    _UNBOUNDED[0] = cache_maxsize is None


def cache_maxsize() -> int | None:
    """The memoizing scope's size (``None`` after ``set_cache_maxsize(None)``).

    Our default (128 network results per loss evaluation) differs from Pixyz's (20 entries of its global cache):
    the two caches do not count the same things, and the value changes no result, only how often networks rerun.

    Examples
    --------
    >>> cache_maxsize()
    128
    """
    from pyro_dgm.poutine.memoize_messenger import get_cache_maxsize

    size = get_cache_maxsize()
    return None if _UNBOUNDED[0] and size == sys.maxsize else size


def lru_cache_for_sample_dict() -> Callable[[F], F]:
    """Pixyz's decorator that memoizes a method on dicts of samples; here it returns the method unchanged.

    pyro_dgm memoizes every network call inside one loss evaluation with :class:`pyro_dgm.poutine.MemoizeMessenger`
    (keyed by the input tensors' identity and version, cleared after the evaluation), so a method decorated for
    Pixyz's global cache is already memoized where it calls a network, and a decorated method always computes what
    the undecorated one does (a cache hit in Pixyz returns the same value).

    Examples
    --------
    >>> class Twice:
    ...     @lru_cache_for_sample_dict()
    ...     def get(self, x_dict):
    ...         return {k: 2 * v for k, v in x_dict.items()}
    >>> Twice().get({"x": 1})
    {'x': 2}
    """
    def decorate(fn: F) -> F:
        return fn

    return decorate
