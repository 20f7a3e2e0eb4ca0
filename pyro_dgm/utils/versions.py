"""Version counters of tensors, for the caches that must notice an in-place change of what they were given."""
from __future__ import annotations

import weakref

from typing import Any, Hashable, Sequence

from torch import Tensor

__all__ = ["version", "data_ptr", "data_ptrs", "storages", "storage_refs"]


def version(t: Tensor) -> Hashable:
    """``t._version``, which every in-place change bumps; for an inference tensor (made under
    ``torch.inference_mode``, which keeps no counter) a new object, equal to no other, so that a cache keyed on it
    misses rather than hands back a stale entry.

    Examples
    --------
    >>> import torch
    >>> t = torch.zeros(2)
    >>> before = version(t); _ = t.add_(1); version(t) == before
    False
    >>> with torch.inference_mode():
    ...     u = torch.zeros(2)
    >>> version(u) == version(u)
    False
    """
    try:
        return t._version
    except RuntimeError:  # "Inference tensors do not track version counter."
        return object()


def storages(tensors: Sequence[Tensor]) -> list[Any]:
    """The storages of the tensors that have one: held beside their :func:`data_ptrs` (by a holder that lives for one
    evaluation), they keep those addresses from being handed to other values while the holder lives (values put in
    place through ``p.data = t`` twice may otherwise land where the first replacement's were freed, at the same
    address as before). A long-lived holder compares :func:`storage_refs` instead, which keep no memory alive.

    Examples
    --------
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1024))
    >>> held = storages([p]); p.data = torch.ones(1024); p.data = torch.zeros(1024)
    >>> held[0].data_ptr() != p.data_ptr()
    True
    """
    out = []
    for t in tensors:
        try:
            out.append(t.untyped_storage())
        except (RuntimeError, ValueError, NotImplementedError):  # (no storage: a lazy or wrapper tensor)
            pass
    return out


def storage_refs(tensors: Sequence[Tensor]) -> tuple[Any, ...]:
    """Weak references to the tensors' storages (``None`` for a tensor without one), which compare equal only while
    the same storages live: beside :func:`data_ptrs` they tell new values put at a freed storage's address (through
    ``p.data = t`` twice) from the old ones, without keeping the old ones' memory (a model converted by ``.half()``
    frees its float weights). torch keeps one Python object per live storage, so the reference lives as long as the
    storage does.

    Examples
    --------
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1024))
    >>> before = storage_refs([p]); p.data = torch.ones(1024); p.data = torch.zeros(1024)
    >>> storage_refs([p]) == before
    False
    """
    out = []
    for t in tensors:
        try:
            out.append(weakref.ref(t.untyped_storage()))
        except (RuntimeError, ValueError, NotImplementedError, TypeError):  # (no storage: a lazy or wrapper tensor)
            out.append(None)
    return tuple(out)


def data_ptrs(tensors: Sequence[Tensor]) -> list[Any]:
    """Where each tensor's data lies: assigning ``p.data`` (``vector_to_parameters``, ``module.double()``) moves it
    without a new version. ``None`` for a tensor without storage (an uninitialized lazy parameter).

    Examples
    --------
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> before = data_ptrs([p]); torch.nn.utils.vector_to_parameters(torch.ones(2), [p]); data_ptrs([p]) == before
    False
    """
    try:
        return [t.data_ptr() for t in tensors]
    except (RuntimeError, ValueError):  # (a lazy module's UninitializedParameter, a tensor subclass without storage)
        return [data_ptr(t) for t in tensors]


def data_ptr(t: Tensor) -> Any:
    """``t.data_ptr()``, or ``None`` for a tensor without storage (see :func:`data_ptrs`)."""
    try:
        return t.data_ptr()
    except (RuntimeError, ValueError):
        return None
