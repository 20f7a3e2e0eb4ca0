"""Lower-case handler functions, as in ``pyro.poutine``: :func:`memoize`."""
from __future__ import annotations

from typing import Any, Callable, TypeVar, overload

from pyro_dgm.poutine.memoize_messenger import MemoizeMessenger

__all__ = ["memoize"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def memoize(fn: None = ...) -> MemoizeMessenger: ...


@overload
def memoize(fn: F) -> F: ...


def memoize(fn: Callable[..., Any] | None = None) -> Any:
    """Memoize network forward passes within a call of ``fn`` (or a ``with`` block when ``fn`` is None).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"])
    >>> with memoize():
    ...     z = q.sample({"x": torch.zeros(2, 1)})["z"]
    >>> tuple(z.shape)
    (2, 1)
    """
    msngr = MemoizeMessenger()
    return msngr(fn) if fn is not None else msngr
