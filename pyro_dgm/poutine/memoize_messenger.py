"""The memoizing effect handler: one network forward pass per distribution and inputs within one scope."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message

__all__ = ["MemoizeMessenger", "get_cache_maxsize", "set_cache_maxsize"]

_MAXSIZE = [128]


def set_cache_maxsize(maxsize: int) -> None:
    """Set how many forward passes one memoizing scope keeps (Pixyz's knob); ``0`` turns memoization off.

    It takes effect at once, for every scope opened afterwards and for entries added to open ones.

    Examples
    --------
    >>> set_cache_maxsize(0); get_cache_maxsize()
    0
    >>> set_cache_maxsize(128)
    """
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
        raise ValueError(f"set_cache_maxsize: maxsize must be a non-negative int, got {maxsize!r}")
    _MAXSIZE[0] = maxsize


def get_cache_maxsize() -> int:
    """The current :func:`set_cache_maxsize` value."""
    return _MAXSIZE[0]


def _arg_key(a: Any) -> Hashable:
    if isinstance(a, torch.Tensor):
        return (id(a), a._version)  # an in-place change bumps _version: a new key, never a stale hit
    try:
        hash(a)
    except TypeError:
        return ("id", id(a))
    return a


class MemoizeMessenger(Messenger):
    """Reuse a distribution's parameters (its network's forward pass) for the same inputs within one scope.

    Networks run through the ``"dgm_params"`` effect (see :func:`pyro_dgm.distributions.calls.run_network`). The key
    is the module, the identity and version of each input tensor, the other arguments, the module's train/eval mode
    and whether grad is enabled; a hit returns the same parameter tensors, so autograd sees one forward pass. The
    cache lives for one ``with`` block (one loss evaluation) and is cleared on exit: nothing outlives it, so a tensor
    reused across optimizer steps never meets a stale graph. Keys use Python ints only, so a lookup never
    synchronizes with a GPU. A module with ``memoizable = False`` (e.g. one with dropout) always runs.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> class Q(Normal):
    ...     calls = 0
    ...     def __init__(self):
    ...         super().__init__(var=["z"], cond_var=["x"])
    ...         self.fc = torch.nn.Linear(2, 2)
    ...     def forward(self, x):
    ...         Q.calls += 1
    ...         return {"loc": self.fc(x), "scale": torch.ones_like(x)}
    >>> q, x = Q(), torch.zeros(3, 2)
    >>> with MemoizeMessenger():
    ...     _ = q.sample({"x": x}), q.get_log_prob({"x": x, "z": x})
    >>> Q.calls
    1
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: OrderedDict[Hashable, tuple[Any, tuple[Any, ...]]] = OrderedDict()

    def __exit__(self, *exc: Any) -> None:
        self._cache.clear()
        return super().__exit__(*exc)

    @staticmethod
    def _key(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable | None:
        if not getattr(module, "memoizable", True):
            return None
        kw = tuple((k, _arg_key(v)) for k, v in kwargs.items()) if kwargs else ()
        keys = []
        for a in args:
            keys.append((id(a), a._version) if type(a) is torch.Tensor else _arg_key(a))
        return (id(module), module.training, torch.is_grad_enabled(), tuple(keys), kw)

    def lookup(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Hashable | None, Any]:
        """The key of a call and its cached value (``None`` on a miss or when memoization is off)."""
        if _MAXSIZE[0] == 0:
            return None, None
        key = self._key(module, args, kwargs)
        if key is None:
            return None, None
        hit = self._cache.get(key)
        if hit is None:
            return key, None
        self._cache.move_to_end(key)
        return key, hit[0]

    def store(self, key: Hashable | None, value: Any, keep: tuple[Any, ...]) -> None:
        """Keep ``value`` under ``key`` (and ``keep``, the arguments, so their ids cannot be reused while cached)."""
        maxsize = _MAXSIZE[0]
        if key is None or maxsize == 0:
            return
        self._cache[key] = (value, keep)
        while len(self._cache) > maxsize:
            self._cache.popitem(last=False)

    def call(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``module(*args, **kwargs)`` through the cache (the path taken when this is the only handler)."""
        key, hit = self.lookup(module, args, kwargs)
        if hit is not None:
            return hit
        value = module(*args, **kwargs)
        self.store(key, value, args)
        return value

    def _pyro_dgm_params(self, msg: Message) -> None:
        if msg["done"]:
            return
        module, *args = msg["args"]
        _, hit = self.lookup(module, tuple(args), msg["kwargs"])
        if hit is not None:
            msg["value"], msg["done"] = hit, True

    def _pyro_post_dgm_params(self, msg: Message) -> None:
        if msg["value"] is None:
            return
        module, *args = msg["args"]
        self.store(self._key(module, tuple(args), msg["kwargs"]), msg["value"], msg["args"])
