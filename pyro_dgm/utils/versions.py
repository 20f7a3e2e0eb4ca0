"""Version counters of tensors, for the caches that must notice an in-place change of what they were given."""
from __future__ import annotations

from typing import Hashable

from torch import Tensor

__all__ = ["version"]


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
