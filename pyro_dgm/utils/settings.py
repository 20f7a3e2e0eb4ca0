"""Pixyz's global settings (``pixyz.utils``): the numerical ``epsilon`` and the cache size.

``epsilon()`` is the small constant Pixyz programs add inside logarithms and square roots
(``torch.log(x + epsilon())``); :func:`set_epsilon` changes what it returns. The cache size maps onto the memoizing
handler's (:func:`pyro_dgm.poutine.set_cache_maxsize`), which memoizes the networks within one loss evaluation,
and sizes the caches that :func:`~pyro_dgm.utils.lru_cache_for_sample_dict` decorates from then on (Pixyz's global
cache).
"""
from __future__ import annotations

import operator
import sys

import torch

from pyro_dgm.utils.lru_cache import lru_cache_for_sample_dict

__all__ = ["epsilon", "set_epsilon", "cache_maxsize", "set_cache_maxsize", "lru_cache_for_sample_dict"]


def set_epsilon(eps: float) -> None:
    """Set the value :func:`epsilon` returns.

    Examples
    --------
    >>> set_epsilon(1e-06); epsilon()
    1e-06
    >>> set_epsilon(1e-07)

    Raises
    ------
    ValueError
        If ``eps`` is not a number, or numbers (an array, a tensor), of at least 0 (a string or ``None`` failed later
        inside a flow's formula, and a negative one made a batch norm's output NaN; Pixyz accepts either).
    """
    try:
        values = torch.as_tensor(eps)
    except (TypeError, ValueError, RuntimeError):
        values = None
    if values is None or values.is_complex() or not bool((values >= 0).all()):
        raise ValueError(f"set_epsilon: eps must be a number (or numbers) of at least 0 (Pixyz's default is 1e-07), "
                         f"got {eps!r}")
    sys.modules["pyro_dgm.utils"]._EPSILON = eps  # type: ignore[attr-defined]


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
    # read from the package, as Pixyz's module global is: ``mock.patch("pyro_dgm.utils._EPSILON", ...)`` works
    return sys.modules["pyro_dgm.utils"]._EPSILON  # type: ignore[attr-defined,no-any-return]


def set_cache_maxsize(cache_maxsize: int | None) -> None:
    """Set how many network results one memoizing scope keeps (:func:`pyro_dgm.poutine.set_cache_maxsize`).

    ``0`` turns memoization off; ``None`` (functools' "no limit") keeps every result of the scope. The value is
    recorded in ``pyro_dgm.utils._CACHE_MAXSIZE`` (Pixyz's module global), which :func:`cache_maxsize` reads.

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
        try:  # (as functools.lru_cache, which Pixyz's sizes, reads it: a negative size is 0, True is 1, numpy ints
            _set(max(operator.index(cache_maxsize), 0))  # are ints; Pixyz keeps anything else, and functools
        except TypeError:  # refuses it when lru_cache_for_sample_dict decorates next: the memoizer keeps its size)
            pass
    sys.modules["pyro_dgm.utils"]._CACHE_MAXSIZE = cache_maxsize  # type: ignore[attr-defined]


def cache_maxsize() -> int | None:
    """The size last set with :func:`set_cache_maxsize` (``None`` means no limit).

    Our default (128 network results per loss evaluation) differs from Pixyz's (20 entries of its global cache):
    the two caches do not count the same things, and the value changes no result of a deterministic network, only
    how often it reruns (a network that draws, dropout in training mode, draws anew when it reruns: with ``0``, an
    encoder read by two terms of one loss gives each its own dropout mask, as Pixyz's uncached networks do).
    As in Pixyz, it is read from the module global ``_CACHE_MAXSIZE``, so ``mock.patch`` of it works.

    Examples
    --------
    >>> cache_maxsize()
    128
    """
    return sys.modules["pyro_dgm.utils"]._CACHE_MAXSIZE  # type: ignore[attr-defined,no-any-return]
