"""Pixyz's ``lru_cache_for_sample_dict``: memoize a method on dicts of samples, across calls.

Pixyz decorates ``get_params`` with it, so a network runs once for the same input tensor, and a Pixyz program may
decorate its own ``get_params`` to reuse an expensive encoder between ``sample`` and ``get_log_prob``. We keep
that: a second call with the same inputs returns the first call's values without running the networks.

Pixyz's cache keys on the input tensors alone, so it also returns values that are no longer right. Ours
recomputes where Pixyz would have returned:

* **stale values after an optimizer step** (or any in-place change of the module's parameters or buffers, or of an
  input tensor): the key holds every parameter's and buffer's ``_version``, and where its data lies (``p.data = t``,
  as ``vector_to_parameters`` and ``module.double()`` do, moves it). A change in place through ``.data``
  (``p.data.clamp_(...)``) hides from autograd's version counter, so it is not seen (Pixyz's cache misses it too):
  change parameters in place under ``torch.no_grad()`` instead (``p.clamp_(...)``, ``p.copy_(t)``);
* **a graph that a backward pass has freed** (Pixyz's second ``backward`` raises "Trying to backward through the
  graph a second time"): an entry is dropped when a gradient flows through one of its tensors;
* **values computed before a forward hook was added, removed or replaced** (of the module's submodules, or a global
  one): the key holds which hooks there are;
* **a value computed under ``torch.no_grad()``** for a call that needs gradients (or the reverse), or one computed
  in ``train()`` mode (dropout) for ``eval()``: the key holds both modes.

Results are equal to the undecorated method's in every case (computed once, or again). The size is
:func:`~pyro_dgm.utils.cache_maxsize` when the decorator is applied, as in Pixyz (``0``: no caching; ``None``: no
limit); entries of a module whose parameters changed are dropped at its next call, so training keeps at most one
step's entries alive.
"""
from __future__ import annotations

import functools
import operator
import weakref
from collections import OrderedDict
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor, nn
from pyro_dgm.utils.modules import hooks_state, register_registration_hooks
from pyro_dgm.utils.versions import data_ptrs, storage_refs, version
from pyro_dgm.utils.compat import is_compiling

__all__ = ["lru_cache_for_sample_dict"]

F = TypeVar("F", bound=Callable[..., Any])


class _Uncacheable(Exception):
    """An argument that cannot be part of a key (unhashable and not a dict, list or tuple): call uncached."""


def _freeze(value: Any, anchors: list[Any]) -> Any:
    """A hashable key for ``value``: tensors by identity and version (kept alive in ``anchors``, so an id is not
    reused while the entry lives), dicts and sequences item by item, other values as themselves."""
    if isinstance(value, Tensor):
        if value.is_inference():  # no version counter (torch.inference_mode): an in-place change would go unseen
            raise _Uncacheable
        anchors.append(value)
        return ("tensor", id(value), value._version)
    if isinstance(value, dict):
        return ("dict", tuple((k, _freeze(v, anchors)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v, anchors) for v in value))
    try:
        hash(value)
    except TypeError:
        raise _Uncacheable from None
    return value


#: bumped when any module registers a parameter, buffer or submodule (global hooks, installed at the first
#: decoration): an owner's flat list of tensors and submodules is rebuilt then, and its entries dropped
_STRUCTURE = [0]
_WATCHING = [False]


class _Pending:
    """A registration made inside compiled code, not counted yet (:func:`current_structure` counts it)."""

    changed = False


_PENDING = _Pending()


def _structure_changed(*_: Any) -> None:
    if is_compiling():  # traced code that assigns a buffer (an EMA statistic in a forward) only stores a flag: a
        _PENDING.changed = True  # read of the count would make the compiled code guard on its value, and every call
        return  # compile again; run eagerly (torch.compiler.disable), the hook would split every such graph and
        # refuse fullgraph=True in any program, pyro_dgm's or not. The store is replayed after the compiled call
    _STRUCTURE[0] += 1


_structure_changed._dgm_new_names_only = True  # type: ignore[attr-defined]  # (a buffer assigned anew under its name
# changes no structure: a flow skips torch's registration path for it, see flows.base.Flow.__setattr__)


def current_structure() -> int | None:
    """The count of registrations anywhere (``None`` where torch has no registration hooks), with those made inside
    compiled code since the last read. Read it outside compiled code."""
    if _PENDING.changed:
        _PENDING.changed = False
        if _STRUCTURE[0] is not None:
            _STRUCTURE[0] += 1
    return _STRUCTURE[0]


def _watch_structure() -> None:
    if _WATCHING[0]:
        return
    _WATCHING[0] = True
    if not register_registration_hooks(parameter=_structure_changed, buffer=_structure_changed,
                                       module=_structure_changed):
        _STRUCTURE[0] = None  # type: ignore[call-overload]  # an older torch: every call starts afresh (see check)


_VERSION = operator.attrgetter("_version")


def _tensors_in(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_in(v)]
    return []


def _copy(value: Any) -> Any:
    """A fresh container around the cached tensors, so a caller that changes the dict it got leaves the cache be."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _Entries:
    """One owner's entries, valid for one state of the owner (:meth:`state_of`)."""

    __slots__ = ("structure", "tensors", "modules", "state", "items", "__weakref__")

    def __init__(self) -> None:
        self.structure: int | None = -1
        self.tensors: list[Tensor] = []
        self.modules: list[nn.Module] = []
        self.state: Any = None
        self.items: OrderedDict[Any, tuple[list[Any], Any]] = OrderedDict()

    def state_of(self, owner: Any) -> Any:
        """What makes a module's results change with the same inputs: its structure, which tensors are its
        parameters and buffers (``torch.func.functional_call`` swaps them without registering anything) and their
        versions (an optimizer step or any in-place change bumps them), its submodules' train/eval modes and
        ``forward`` functions (one replaced in a later cell), and which forward hooks they (and the global ones)
        hold (a hook added, removed or replaced changes the results). Not a plain attribute that ``forward`` reads
        (``q.k = 3.0``): that needs ``q.get_params.cache_clear()`` (neither sees it under Pixyz)."""
        if not isinstance(owner, nn.Module):
            return None
        structure = current_structure()
        if structure is None or structure != self.structure:
            self.structure = structure
            self.modules = list(owner.modules())[1:]  # (its submodules: the owner itself, the weak key of these
            # entries, must not be held by them, or it is never freed)
        modules = [owner, *self.modules]
        # read afresh at every call, and kept (so an id in the state is not reused while the entries live); their
        # storages weakly (new values put at a freed storage's address, through .data twice, are another storage)
        tensors = self.tensors = [t for m in modules for d in (m._parameters, m._buffers) for t in d.values()
                                  if t is not None]
        try:
            versions = tuple(map(_VERSION, tensors))
        except RuntimeError:  # a module built under torch.inference_mode: a new state at every call
            versions = tuple(map(version, tensors))
        return (structure, tuple(map(id, tensors)), versions, tuple(data_ptrs(tensors)), storage_refs(tensors),
                tuple((m.training, type(m).forward, m.__dict__.get("forward")) for m in modules), hooks_state(modules))

    def settle(self, owner: Any) -> None:
        """After a call: what the call itself changed (a batch norm's statistics, which its forward updates) belongs
        to the entries, so that the next call with the same inputs finds them, as under Pixyz."""
        if self.state is not None:
            self.state = self.state_of(owner)

    def check(self, owner: Any) -> None:
        """Drop every entry if the owner changed since they were made."""
        state = self.state_of(owner)
        if state != self.state or state is not None and state[0] is None:
            self.state = state
            self.items.clear()


def lru_cache_for_sample_dict() -> Callable[[F], F]:
    """Memoize a method on dicts of samples (Pixyz's decorator): the same inputs give the first call's values.

    The cache never returns what recomputing would not: see :mod:`pyro_dgm.utils.lru_cache` for where Pixyz's
    would (after an optimizer step, after a backward pass, across ``no_grad``).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> class Encoder(Normal):
    ...     def __init__(self):
    ...         super().__init__(var=["z"], cond_var=["x"])
    ...         self.calls = 0
    ...     def forward(self, x):
    ...         self.calls += 1
    ...         return {"loc": x, "scale": torch.ones_like(x)}
    ...     @lru_cache_for_sample_dict()
    ...     def get_params(self, params_dict={}, **kwargs):
    ...         return super().get_params(params_dict, **kwargs)
    >>> q, x = Encoder(), torch.zeros(1, 2)
    >>> _ = q.sample({"x": x}); _ = q.get_log_prob({"z": x, "x": x})
    >>> q.calls  # the network ran once
    1
    >>> _ = q.sample({"x": torch.zeros(1, 2)}); q.calls  # another tensor: it runs again
    2
    """
    from pyro_dgm.utils.settings import cache_maxsize

    maxsize = cache_maxsize()
    if maxsize is not None:  # (as functools.lru_cache reads Pixyz's: a negative size is 0, True is 1; anything
        if not isinstance(maxsize, int):  # but a Python int is refused when decorating, a numpy int too)
            raise TypeError(f"lru_cache_for_sample_dict: the cache size set by set_cache_maxsize must be an integer "
                            f"or None, got {maxsize!r}")
        maxsize = max(int(maxsize), 0)

    def decorate(fn: F) -> F:
        if maxsize == 0:
            return fn
        _watch_structure()
        caches: weakref.WeakKeyDictionary[Any, _Entries] = weakref.WeakKeyDictionary()

        @functools.wraps(fn)
        def cached(owner: Any, *args: Any, **kwargs: Any) -> Any:
            if is_compiling():  # a traced call: Python-level keys would make the compiler guard
                return fn(owner, *args, **kwargs)
            anchors: list[Any] = []
            try:
                key = (_freeze(args, anchors), _freeze(kwargs, anchors), torch.is_grad_enabled(),
                       torch.is_inference_mode_enabled(), torch._C._get_tracing_state())  # (a TorchScript trace,
                # Pyro's JIT ELBOs', cannot take a value computed before it began or in another trace)
                entries = caches.get(owner)
                if entries is None:
                    entries = caches[owner] = _Entries()
            except (_Uncacheable, TypeError):  # an unhashable argument, or an owner without weak references
                return fn(owner, *args, **kwargs)
            entries.check(owner)
            hit = entries.items.get(key)
            if hit is not None and all(a is b for a, b in zip(hit[0], anchors)):
                entries.items.move_to_end(key)
                return _copy(hit[1])
            result = fn(owner, *args, **kwargs)
            entries.settle(owner)
            entries.items[key] = (anchors, result)
            if maxsize is not None and len(entries.items) > maxsize:
                entries.items.popitem(last=False)
            ref = weakref.ref(entries)

            def forget(_grad: Tensor, key: Any = key) -> None:  # a backward pass went through: its graph is freed
                live = ref()
                if live is not None:
                    live.items.pop(key, None)

            for t in _tensors_in(result):
                if t.requires_grad and t.grad_fn is not None:
                    t.register_hook(forget)
            return _copy(result)

        def cache_clear() -> None:
            """Forget every entry (of every instance): for a change the cache cannot see, a plain attribute that
            ``forward`` reads (``q.k = 3.0``), as ``functools.lru_cache``'s ``cache_clear``."""
            caches.clear()

        cached.cache_clear = cache_clear  # type: ignore[attr-defined]  # (also on the bound method:
        return cached  # type: ignore[return-value]  # q.get_params.cache_clear())

    return decorate
