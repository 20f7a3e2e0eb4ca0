r"""The :class:`Flow` base class and :class:`FlowList`: invertible maps with exact log-determinants.

A flow is a Pyro ``TransformModule`` (a ``torch.distributions.Transform`` that is also an ``nn.Module``), so it can go
into ``pyro.distributions.TransformedDistribution``, and Pyro's own transforms (``Planar``, ``Radial``, ``Spline``,
``AffineAutoregressive``...) can go into a :class:`FlowList`. It also keeps Pixyz's interface:
``forward(x, y=None, compute_jacobian=True)`` returns :math:`z = f(x)` and stores :attr:`Flow.logdet_jacobian`,
``inverse(z, y=None)`` returns :math:`x = f^{-1}(z)`; ``y`` is an optional context (conditional flows).

A subclass implements two methods, each returning its output and :math:`\log|\det \partial f/\partial x|` evaluated
at the input side ``x`` (so both directions return the same number for the same pair):

- ``_dgm_forward_logdet(x, context) -> (z, logdet)``
- ``_dgm_inverse_logdet(z, context) -> (x, logdet)``

(``_forward_logdet``/``_inverse_logdet``, their names before pyro_dgm's private names took the ``_dgm_`` prefix, are
still taken as these hooks when the subclass does not override ``forward``/``inverse``.)

``logdet`` has the batch shape of ``x`` (every dim but the last ``event_dim``). Any number of leading batch dims is
accepted. As Pyro transforms, flows remember their last ``(x, z, logdet)`` (``cache_size=1``), so a value the flow has
just produced (a sample) is mapped back and scored without inverting the flow again; this is how a flow without a
closed-form inverse scores its samples, as Pixyz's ``stored_x`` does. The memory answers only the reverse of the
computation that filled it, for the same tensor objects and context, while the parameters and the tensors are
unchanged (an optimizer step, ``z.mul_(2)``, a parameter replaced or loaded by ``vector_to_parameters`` invalidates
it) and, when gradients are wanted, only if it was filled with gradients; a flow with a batch norm in training mode
runs again on a value it has produced (its batch's statistics change the map, as when Pixyz scores the value; the
prior's value of the draw is still remembered), unless the value is its last draw and its batch norms are the flows'
own (their inverse with the draw's statistics gives the draw back: :func:`_latest_draw`). A change made in place
through ``.data`` (``p.data.mul_(2)``), which torch does not count as a change, is not seen: after one, score a copy
(``x.clone()``).
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import numbers
import threading
import weakref
from typing import Any, Iterator, Sequence

import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import BatchNorm as PyroBatchNorm
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from torch.distributions.transforms import _InverseTransform
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.module import _global_buffer_registration_hooks as _global_buffer_hooks

from pyro_dgm.poutine.memoize_messenger import active_memo
from pyro_dgm.utils.attributes import set_up_subclasses
from pyro_dgm.utils.checks import EmptyListError, NotATensorError, ShapeError, SizeArgumentError
from pyro_dgm.utils.lru_cache import _watch_structure, current_structure
from pyro_dgm.utils.versions import version
from pyro_dgm.utils.modules import hooks_state, submodules
from pyro_dgm.utils.settings import epsilon
from pyro_dgm.utils.compat import is_compiling

__all__ = ["Flow", "FlowList", "ConditionedFlow", "sum_rightmost", "zero_logdet"]

_SHAPE_HINTS = {1: "(..., {n})", 2: "(..., {n}, L)", 3: "(..., {n}, H, W)"}


class _Pinned(threading.local):
    """``depth > 0`` while a flow distribution's site runs its flow in this thread: the event dims the distribution
    gave the flows it sets (from its prior's event shape) hold, instead of each input's shape deciding them (an
    input with sample dims, ``(L, N, D)``, is a batch of vectors there, where a flow alone reads Pixyz's
    ``(N, H, W)``). Per thread: evaluations run in several threads at once."""

    depth = 0


_PINNED = _Pinned()


class _NoJacobian(threading.local):
    """``depth > 0`` while ``forward(x, compute_jacobian=False)`` of a flow runs in this thread: the layers written
    for Pixyz are called with ``compute_jacobian=False`` too, as Pixyz's ``FlowList`` calls them (p484: they were
    called with True, so they computed a log-det nobody asked for and replaced the one they had stored)."""

    depth = 0


_NO_JACOBIAN = _NoJacobian()


#: bumped when a flow that a distribution set follows an input of its own (used alone): a FlowList's memo of the
#: shape it adapted its parts for is stale then (its parts must take the distribution's dims again)
_EPOCH = [0]


def _follows_input(flow: "Flow") -> bool:
    """Whether ``flow`` (``event_dim=None``) takes its event dims from each input now: unless a flow distribution set
    them from its prior (:func:`own_event_dims`) and is running it (:func:`event_dims_fixed`), or torch.compile traces
    it (Dynamo cannot trace a thread's local state: a flow a distribution set keeps the distribution's dims there).
    Flows it did not set (those a user's own flow runs inside itself) follow their inputs, as in Pixyz."""
    if not flow.__dict__.get("_dgm_dist_dims"):
        return True
    if is_compiling() or _PINNED.depth:
        return False
    _EPOCH[0] += 1  # (used alone: the distribution sets it again when it next runs it)
    return True


def own_event_dims(flow: Any) -> None:
    """Mark ``flow`` and the layers of its flow lists as flows whose event dims a flow distribution sets from its
    prior (see :func:`_follows_input`)."""
    if isinstance(flow, Flow) and not flow.__dict__.get("_dgm_dist_dims"):
        flow.__dict__["_dgm_dist_dims"] = True
        for p in getattr(flow, "_dgm_parts", ()):
            own_event_dims(p)


class _EventDimsFixed:
    """The context of :func:`event_dims_fixed` (a plain class: a site enters one at every draw and score)."""

    __slots__ = ("_on",)

    def __enter__(self) -> None:
        self._on = not is_compiling()
        if self._on:
            _PINNED.depth += 1

    def __exit__(self, *exc: Any) -> None:
        if self._on:
            _PINNED.depth -= 1


def event_dims_fixed() -> _EventDimsFixed:
    """Within the block, the flows with ``event_dim=None`` that a flow distribution sets (:func:`own_event_dims`)
    keep the event dims it gave them instead of deciding them from each input."""
    return _EventDimsFixed()


def sum_rightmost(x: Tensor, n: int) -> Tensor:
    """Sum ``x`` over its ``n`` rightmost dims (``x`` itself when ``n <= 0``).

    Examples
    --------
    >>> sum_rightmost(torch.ones(2, 3, 4), 2).tolist()
    [12.0, 12.0]
    """
    return x.sum(dim=list(range(-n, 0))) if n > 0 else x


def zero_logdet(v: Tensor, event_dim: int) -> Tensor:
    """The log-determinant of a volume-preserving map of ``v``: zeros of its batch shape (a float dtype)."""
    dtype = v.dtype if v.is_floating_point() else torch.get_default_dtype()
    return torch.zeros(v.shape[:v.dim() - event_dim], dtype=dtype, device=v.device)


def _real(event_dim: int) -> constraints.Constraint:
    """The reals with ``event_dim`` event dims (made once for up to 8 dims: a flow's ``domain`` and ``codomain``
    are read several times per evaluation; the table never changes, so torch.compile's guards on it hold)."""
    if 0 <= event_dim < len(_REALS):
        return _REALS[event_dim]
    return constraints.independent(constraints.real, event_dim)


_REALS: tuple[constraints.Constraint, ...] = (constraints.real,) + tuple(
    constraints.independent(constraints.real, n) for n in range(1, 9))


def _no_tensor_named_own(flow: Any, kind: str, name: str = "condition") -> None:
    what = ("the method of Pyro's conditional interface (flow.condition(y))" if name == "condition" else
            "a method")
    raise KeyError(f"{type(flow).__name__}: a flow's {kind} cannot be named {name!r}, {what} that pyro_dgm's "
                   f"flows have; name it otherwise (a submodule named {name}, or a plain value, is taken)")


#: pyro_dgm's method names that a Pixyz flow subclass may take for a submodule, a plain value or a method of its own
#: (its code reads its own; pyro_dgm calls ``Flow``'s)
_USERS_TO_TAKE = frozenset({"condition", "forward_with_logdet", "inverse_with_logdet"})


def _no_torch_transform_name(flow: Any, kind: str, name: str, error: type[Exception] = KeyError) -> None:
    what = "a method" if callable(getattr(type(flow), name, None)) else "an attribute"
    raise error(f"{type(flow).__name__}: a flow's {kind} cannot be named {name!r}: pyro_dgm's flows are torch "
                f"Transforms, and {name!r} is {what} of theirs that torch, Pyro and pyro_dgm use (Pixyz's flows "
                f"lack it); name it otherwise")


def _own_transform_name(cls: type, name: str) -> bool:
    """Whether a flow class defines the Transform attribute ``name`` itself (a user's subclass, not torch, Pyro or
    pyro_dgm): its own property or value, which it may set."""
    owner = next((k for k in cls.__mro__ if name in vars(k)), None)
    return owner is not None and not owner.__module__.startswith(("pyro_dgm.", "torch.", "pyro."))


class NotInvertibleError(ValueError):
    """A flow's map has no inverse at its current parameters (a planar map with w.u < -1): a value it drew is still
    mapped back from its memory of the draw, as Pixyz's flows look their draws up."""


class _Memory:
    """A flow's last computation ``x <-> z`` with its log-det, the context, and the state of its parameters.

    ``logdet`` is None when the computation did not give it (the inverse of a flow written for Pixyz, whose
    ``forward`` alone gives it: it runs when the log-det is asked for, as in Pixyz). ``parts`` holds the log-dets of
    a :class:`FlowList`'s layers, ``((layer, logdet), ...)``, stored in them when the memory answers a ``forward``."""

    __slots__ = ("x", "z", "logdet", "context", "by_inverse", "state", "parts", "versions", "kept", "eps", "stats",
                 "serial")

    def __init__(self, x: Tensor, z: Tensor, logdet: Tensor | None, context: Any, by_inverse: bool, state: tuple,
                 parts: tuple | None = None) -> None:
        self.x, self.z, self.logdet, self.context, self.by_inverse, self.state = x, z, logdet, context, by_inverse, state
        self.parts = parts
        self.kept: list[Any] = []  # the parameters and buffers whose ids `state` holds
        self.eps = epsilon()  # (the object: set_epsilon puts another in its place)
        # the module's memory outlives the evaluation: an in-place change of x or z (z.mul_(2)) invalidates it
        self.versions = None if type(state) is bool else (version(x), version(z))
        self.stats: tuple | None = None  # the flows' batch norms' batch statistics it was made with (_latest_draw)
        self.serial = 0 if is_compiling() else next(_SERIALS)  # (made after a memory_mark(): by the draw that took
        # the mark; not while torch.compile traces, where a new number each time would be a new constant to guard on)


#: numbers the memories in the order they are made (:func:`memory_mark`)
_SERIALS = itertools.count()


def memory_mark() -> int | None:
    """A number that every flow memory made from now on exceeds: a draw takes one before it runs its flow, so that
    :func:`drawn_input` knows the memory it finds was made by that draw (the parameters have not changed since).
    None while torch.compile traces (an evaluation's memories are looked up without the walk there anyway)."""
    return None if is_compiling() else next(_SERIALS)


def _only_our_buffer_hooks() -> bool:
    """Whether every global buffer registration hook installed is one of pyro_dgm's that a buffer assigned anew under
    its name means nothing to (marked ``_dgm_new_names_only``: they watch for layers and buffers added)."""
    hooks = _global_buffer_hooks
    return not hooks or all(getattr(h, "_dgm_new_names_only", False) for h in hooks.values())


def _storage(t: Tensor) -> int:
    """Where ``t``'s data lies (0 for a tensor without storage: a functorch wrapper, a lazy parameter)."""
    try:
        return t.data_ptr()
    except (RuntimeError, ValueError):
        return 0


def _state(flow: nn.Module, keep: list | None = None) -> tuple:
    """Identifies the current values of the flow's parameters and buffers (an optimizer step changes it, and so does
    a new tensor or storage put in their place: ``p.data = t``, ``vector_to_parameters``), its modules' train/eval
    modes (a batch norm computes with other statistics after ``eval()``), their ``forward`` functions (one replaced
    on the class or the instance; Pixyz's hooks a layer calls, :attr:`Flow._dgm_hook_names`) and forward hooks
    (:func:`~pyro_dgm.utils.modules.hooks_state`). The tensors are appended to ``keep``: a memory holds them, so that
    their ids, which the state holds, are not reused while it lives; their storages are held weakly (a new value put
    at a freed storage's address, through ``.data`` twice, is another storage; a converted model's old weights are
    freed). (Not :func:`~pyro_dgm.utils.epsilon`: see :func:`_recall`.)"""
    out: list[Any] = []
    mods = submodules(flow)  # one walk
    for m in mods:
        d = m.__dict__
        out.append((m.training, type(m).forward, d.get("forward"), d.get("inverse")))  # (one replaced in a later cell)
        hooks = getattr(type(m), "_dgm_hook_names", ())
        if hooks:  # (a Pixyz hook set on the class or the layer since: ActNorm2d's _center and _scale)
            out.append(tuple((getattr(type(m), n, None), m.__dict__.get(n)) for n in hooks))
        for tensors in (m._parameters, m._buffers):
            for t in tensors.values():
                if t is not None:
                    try:  # (the common case inline: a tensor with a version and storage; its storage, weakly:
                        # values put in place through .data twice may land at the address first freed)
                        entry = (id(t), t._version, t.data_ptr(), weakref.ref(t.untyped_storage()))
                    except (RuntimeError, ValueError, NotImplementedError, TypeError):
                        entry = (id(t), version(t), _storage(t))
                    out.append(entry)
                    if keep is not None:
                        keep.append(t)
    out.append(hooks_state(mods))  # (a forward hook added, removed or replaced: the networks compute otherwise)
    return tuple(out)


def _dgm_memory(flow: "Flow", x: Tensor | None = None, z: Tensor | None = None) -> _Memory | None:
    """The flow's last computation: within a loss evaluation, the evaluation's (kept by its memoizing scope,
    compared by identity), else the module's in this thread, else the module's last in any thread (what Pixyz's
    ``stored_x`` reads): a draw in another thread does not replace the one this thread scores next, and a draw made
    in one thread is still scored from its memory in another (a pool scoring what the main thread drew). Given ``x``
    or ``z``, the first of these that holds that tensor (the input, or the output).
    While torch.compile traces, only the evaluation's: a traced attribute that outlived the evaluation would make the
    compiled code guard on its tensors. An evaluation that runs partly compiled and partly eagerly (a graph break in
    a network) so shares one memory: a dequantizing flow's noise is drawn once per evaluation whichever part draws
    it."""
    memo = active_memo()
    if memo is not None:
        m = memo.noted(flow)
        if m is not None:
            return m
    if is_compiling():
        return None
    own = flow.__dict__.get("_dgm_threads")
    m = None if own is None else getattr(own, "memory", None)
    if x is None and z is None:
        return m if m is not None else flow.__dict__.get("_dgm_memory")
    if m is not None and (x is None or m.x is x) and (z is None or m.z is z):
        return m
    last = flow.__dict__.get("_dgm_memory")
    return last if last is not None and (x is None or last.x is x) and (z is None or last.z is z) else m


def _remember(flow: "Flow", x: Tensor, z: Tensor, logdet: Tensor | None, context: Any, by_inverse: bool,
              parts: tuple | None) -> None:
    memo = active_memo()
    stats = _batch_stats(flow) if not by_inverse and not is_compiling() else None
    if memo is not None:  # valid for the rest of the evaluation: its state is the grad mode alone
        m = _Memory(x, z, logdet, context, by_inverse, torch.is_grad_enabled(), parts)
        m.stats = stats
        memo.note(flow, m)
        if by_inverse:  # a value scored within an evaluation (training data): kept for the evaluation only. The
            return  # module's memory, read by later calls, would cost a walk of the weights here (a fifth of a small
            # flow's step); it would only spare an inverse run again later, which Pixyz runs (and its stored_x keeps
            # the last forward run, a draw)
    if not is_compiling():
        kept: list[Tensor] = []
        m = _Memory(x, z, logdet, context, by_inverse, _state(flow, kept), parts)
        m.kept = kept
        m.stats = stats
        d = flow.__dict__
        if "_dgm_threads" not in d:  # (a flow unpickled, or built before this record existed)
            d["_dgm_threads"] = threading.local()
        d["_dgm_threads"].memory = m  # this thread's: freed with the thread
        d["_dgm_memory"] = m


def _recall(flow: "Flow", context: Any, x: Tensor | None = None, z: Tensor | None = None,
            by_inverse: bool | None = None, since: int | None = None, any_grad: bool = False) -> _Memory | None:
    """The flow's memory if it answers this query and is still valid: same tensors and context, parameters unchanged
    since (not looked at for a memory made after the mark ``since``: by the draw that took it), and it carries
    gradients if they are wanted now."""
    m = _dgm_memory(flow, x, z)
    if m is None or m.context is not context or (x is not None and m.x is not x) or (z is not None and m.z is not z):
        return None
    if by_inverse is not None and m.by_inverse != by_inverse:
        return None
    if m.x.numel() != m.z.numel():  # a run that broadcast its input over a batch of contexts (Pyro's conditional
        return None  # transformed distribution over a base of batch shape ()): the inverse of its output is not
        # that input, and its log-det is not the output's (p489); the flow runs again, as on a copy of the value
    if type(m.state) is bool:  # the evaluation's: the parameters cannot change within it (any_grad: one made with
        return m if m.state == torch.is_grad_enabled() or (any_grad and m.state) else None  # gradients answers
        # a query without them, whose caller detaches what it reads: see drawn_input)
    if m.versions != (version(m.x), version(m.z)):  # changed in place since
        return None
    if torch.is_grad_enabled() and any(p.requires_grad for p in flow.parameters()):
        ref = m.logdet if m.logdet is not None else (m.x if m.by_inverse else m.z)  # (a missing log-det: its input)
        if not ref.requires_grad:
            return None
    if (since is None or m.serial <= since) and m.state != _state(flow):
        return None
    if m.eps is not epsilon():  # set_epsilon since (a planar flow's log-det, a batch norm's map read it): a draw's
        if m.by_inverse:  # log-det is computed again from the input it remembers, which Pixyz's sample dict holds
            return None  # and its get_log_prob maps forward; no inverse runs (a planar flow may have none)
        m.logdet, m.parts = flow._dgm_run(m.x, context, False)[1:]
        m.eps = epsilon()
    return m


def _batch_layers(flow: "Flow") -> tuple[nn.Module, ...]:
    """The layers of ``flow`` that may normalize with the statistics of the batch they run on (batch norms: the
    flows', torch's in the networks, Pyro's transform), found again only when a module anywhere has registered a
    submodule, parameter or buffer since (a layer added to the flow after its first draw). While torch.compile
    traces, they are found afresh (at trace time only: the compiled code holds the result): tracing cannot install
    torch's registration hooks, and a guard on whether they are installed would recompile once they are."""
    if is_compiling():
        return _find_batch_layers(flow)
    _watch_structure()
    structure = current_structure()
    found = flow.__dict__.get("_dgm_batch_layers_at")  # (not the name of the earlier cache, a plain tuple of
    if found is None or found[0] != structure or structure is None:  # layers, which a flow pickled before holds)
        found = flow.__dict__["_dgm_batch_layers_at"] = (structure, _find_batch_layers(flow))
    return found[1]


def _find_batch_layers(flow: "Flow") -> tuple[nn.Module, ...]:
    return tuple(m for m in submodules(flow)
                 if getattr(m, "_dgm_batch_statistics", False) or isinstance(m, (_BatchNorm, PyroBatchNorm)))


class _Marks(threading.local):
    """Per thread, the marks that code running a flow leaves on it, by ``(id(flow), key)`` (see :class:`_FlowMark`)."""

    def __init__(self) -> None:
        self.of: dict[tuple[int, str], Any] = {}


_MARKS = _Marks()


class _FlowMark:
    """``with _FlowMark(flow, key, value):`` :func:`_mark_of` ``(flow, key)`` is ``value`` within the block, in this
    thread (another thread running the flow meanwhile does not see it: p483); while torch.compile traces, which
    cannot read a thread's state, it is kept in the flow under ``key``."""

    __slots__ = ("_flow", "_key", "_value", "_traced", "_before")

    def __init__(self, flow: "Flow", key: str, value: Any) -> None:
        self._flow, self._key, self._value = flow, key, value

    def __enter__(self) -> None:
        self._traced = is_compiling()
        if self._traced:
            d = self._flow.__dict__
            self._before = d.get(self._key)
            d[self._key] = self._value
        else:
            k, marks = (id(self._flow), self._key), _MARKS.of
            self._before = marks.get(k)
            marks[k] = self._value

    def __exit__(self, *exc: Any) -> None:
        if self._traced:
            self._flow.__dict__[self._key] = self._before
        elif self._before is None:
            _MARKS.of.pop((id(self._flow), self._key), None)
        else:
            _MARKS.of[(id(self._flow), self._key)] = self._before


def _mark_of(flow: "Flow", key: str) -> Any:
    return flow.__dict__.get(key) if is_compiling() else _MARKS.of.get((id(flow), key))


def given_input(flow: "Flow", x: Tensor) -> _FlowMark:
    """``with given_input(flow, x):`` the values a flow distribution scores hold ``x``, the flow's input (Pixyz's
    ``TransformedDistribution.get_log_prob`` scores the prior at a given input, not at the inverse it computes): a
    value the flow just drew is then mapped back to ``x``, though an inverse written for Pixyz runs (:func:`_apply`)."""
    return _FlowMark(flow, "_dgm_given_input", x)


def _given_input(flow: "Flow") -> Tensor | None:
    return _mark_of(flow, "_dgm_given_input")


def _uninvertible_layer(f: nn.Module) -> bool:
    """Whether Pixyz's flows cannot invert the layer ``f`` (a planar layer): Pixyz's inverse raises there. (Read on
    the class: a missing attribute read on a module goes through ``nn.Module.__getattr__``, slow.)"""
    return getattr(type(f), "_dgm_pixyz_inverse_missing", False)


def _identity_layer(f: nn.Module) -> bool:
    """Whether ``f`` is a layer written for Pixyz without an inverse: Pixyz's default, the identity, stands for it."""
    t = type(f)
    return (issubclass(t, Flow) and t._dgm_pixyz_forward and not t._dgm_pixyz_inverse and "inverse" not in f.__dict__
            and t._dgm_inverse_logdet is Flow._dgm_inverse_logdet)


def _no_pixyz_inverse(flow: "Flow") -> bool:
    """Whether ``flow`` has a layer that Pixyz's flows cannot invert (a planar layer): Pixyz's inverse raises there."""
    return any(map(_uninvertible_layer, submodules(flow)))


def _raises_first(flow: "Flow") -> bool:
    """Whether Pixyz's inverse of ``flow`` raises before it runs any inverse written for Pixyz: its list inverts
    from the last layer and raises at a layer it cannot invert (a planar one), so the layers before that one are
    never called (p496: ours ran them, and the planar layer's numerical inverse, which splits a compiled step)."""
    parts = getattr(flow, "_dgm_parts", None)
    if not parts:
        return False
    for part in reversed(parts):
        if isinstance(part, Flow) and _no_pixyz_inverse(part):
            return True
        if getattr(part, "_dgm_runs_inverse", False) or "inverse" in getattr(part, "__dict__", {}):
            return False
    return False


def _identity_inverse(flow: "Flow") -> bool:
    """Whether ``flow`` has a layer written for Pixyz without an inverse: Pixyz's default, the identity, stands for
    it, so running the flow's inverse again does not map a draw back to its input (p496: a compiled evaluation, which
    does not look at :func:`_latest_draw`, scored such a flow's draw at the identity's value); the memory answers."""
    return any(map(_identity_layer, submodules(flow)))


def _batch_dependent(flow: "Flow") -> bool:
    """Whether ``flow`` computes with the statistics of its batch now (a batch norm in training mode): it then maps a
    value it has produced to another one than the value it came from, so its memory does not answer (Pixyz runs the
    flow on it)."""
    return any(m.training or getattr(m, "track_running_stats", True) is False for m in _batch_layers(flow))


def _latest_draw(flow: "Flow", m: _Memory) -> bool:
    """Whether ``m`` is the flow's last computation, a forward pass, in an eager evaluation: then a batch norm in
    training mode inverts with the statistics that made the draw, and the inverse of the draw is the draw (what
    Pixyz's inverse gives with its attached statistics, or its ``stored_x`` for a layer it cannot invert), without
    running the flow's inverse (a planar layer's numerical one) or detaching the statistics outside an evaluation."""
    if is_compiling():
        return False
    memo = active_memo()
    if memo is not None and memo._compiled:
        return False
    from pyro_dgm.flows.normalizations import BatchNorm1d  # (a later layer)

    # (only the flows' batch norms, whose inverse reads stored statistics: one in a network, a coupling's, runs
    # again in Pixyz's inverse and moves its running statistics; and only while they hold the draw's statistics:
    # one shared with another flow may have run since, p357)
    if m.stats is None or _dgm_memory(flow) is not m:
        return False
    layers = _batch_layers(flow)
    return (all(isinstance(b, BatchNorm1d) for b in layers) and len(layers) == len(m.stats)
            and all(getattr(b, "batch_mean", None) is s for b, s in zip(layers, m.stats)))


def _batch_stats(flow: "Flow") -> tuple | None:
    """The batch statistics the batch norms of ``flow`` hold now (each forward pass in training mode assigns new
    ones; held, so that their ids are not reused), or ``None`` where it has none."""
    layers = _batch_layers(flow)
    if not layers:
        return None
    return tuple(getattr(b, "batch_mean", None) for b in layers)


def _store(flow: "Flow", logdet: Tensor, parts: tuple | None) -> None:
    """Store a log-det as :attr:`Flow.logdet_jacobian`, and those of a FlowList's layers in them, as Pixyz's
    ``forward(..., compute_jacobian=True)`` leaves them."""
    if parts:
        for part, ld in parts:
            part._dgm_store_logdet(ld)
    flow._dgm_store_logdet(logdet)


def _drawn(flow: "Flow", context: Any, z: Tensor) -> bool:
    """Whether ``z`` is the output of the computation ``flow`` remembers (a draw), with this context, not changed in
    place since (p501: a draw changed in place is another value, which goes through the identity, as in Pixyz)."""
    m = _dgm_memory(flow, None, z)
    return (m is not None and m.context is context and m.z is z
            and (m.versions is None or m.versions == (version(m.x), version(m.z))))


def _held(flow: "Flow", context: Any, value: Tensor, inverse: bool, store: bool) -> Tensor | None:
    """The remembered input of ``value`` (its output, forward), whatever the memory's state: the answer of a flow that
    cannot map ``value`` again, at the draw's log-det (Pixyz's draw-time density, not the log-det at weights that no
    longer map x to z); ``None`` where the memory does not hold ``value``."""
    m = _dgm_memory(flow, *((None, value) if inverse else (value, None)))
    if m is None or m.context is not context or (m.z if inverse else m.x) is not value:
        return None
    if inverse and m.x.numel() != m.z.numel():  # a draw that broadcast its input over a batch of contexts (p498;
        try:  # see _recall): that input, broadcast; its log-det is computed at it
            return m.x.expand(value.shape)
        except RuntimeError:
            return None
    if store and m.logdet is not None:
        _store(flow, m.logdet, m.parts)
    if flow._dgm_keep and type(m.state) is not bool:  # the draw's log-det goes with its input (the score asks for
        _remember(flow, m.x, m.z, m.logdet, context, m.by_inverse, m.parts)  # it next)
    return m.x if inverse else m.z


def _apply(flow: "Flow", context: Any, value: Tensor, inverse: bool, store: bool = False, rerun: bool = True,
           since: int | None = None, any_grad: bool = False) -> Tensor:
    """``flow`` (or its inverse) applied to ``value``; with ``store`` (forward only) the log-determinant is stored
    as Pixyz's ``forward(..., compute_jacobian=True)`` stores it. A value this flow has just *produced* is mapped back
    from its memory (a sample is scored without inverting the flow); an input is always recomputed, so data given
    again after an optimizer step is never answered with stale values. An inverse written for Pixyz runs even for a
    value the flow remembers, as Pixyz's distributions call it, unless ``rerun`` is False (the prior's value of a
    draw, which Pixyz's ``sample`` returns without inverting). Likewise a flow that normalizes with its batch's
    statistics (a batch norm in training mode) runs again on a value it has produced, either way, as Pixyz's
    ``get_log_prob`` runs it (new statistics), unless ``rerun`` is False."""
    m = (_recall(flow, context, z=value, by_inverse=False, since=since, any_grad=any_grad) if inverse else
         _recall(flow, context, x=value, by_inverse=True, since=since, any_grad=any_grad))
    if m is not None and rerun and _batch_dependent(flow) and not (inverse and (_latest_draw(flow, m) or
                                                                                _identity_inverse(flow))):
        m = None
    if m is not None and not (store and m.logdet is None):  # (a missing log-det: forward runs for it, as in Pixyz)
        if store:
            _store(flow, m.logdet, m.parts)
        if not inverse:
            return m.z
        given = _given_input(flow)  # the scored values' input of the draw's shape, which Pixyz puts over the value
        if given is not None and given.shape != m.x.shape:  # its inverse gives (p484: the inverse's value carried a
            given = None  # gradient through a batch norm's fixed statistics; p489: a copy of the input; p491: any flow)
        if rerun and (flow._dgm_runs_inverse or "inverse" in flow.__dict__) and not _raises_first(flow):
            # an inverse written for Pixyz (or set on the instance) runs anyway: Pixyz's distributions call it before
            # they look up the value they drew
            try:
                x = flow._dgm_run(value, context, True)[0]
            except NotImplementedError:
                return m.x if given is None else given
            if given is not None:
                x = given
            elif any(_uninvertible_layer(f) or _identity_layer(f) for f in submodules(flow)):  # Pixyz's inverse
                x = m.x  # raises at a planar layer and answers its stored_x (p489: the rest of ours, numerical, is
                # not what it answers); or a layer has none, and the identity stood for it (p500)
            if flow._dgm_keep:  # still the draw, with its log-det (the one Pixyz's flow stored when drawing) and its
                # input, not the scored values' (p498: a log-det refreshed, stored_x, read at a given input)
                _remember(flow, x if given is None else m.x, value, m.logdet, context, False, m.parts)
            return x
        return m.x if given is None else given
    if inverse and _drawn(flow, context, value) and _identity_inverse(flow):  # a draw of a flow with a layer without
        answered = _held(flow, context, value, True, store)  # an inverse (Pixyz's identity stands for it): as when an
        if answered is not None:  # inverse raises, its input (p500: the identity's value was scored, where a batch
            return answered  # norm's rerun, a Pyro score without the values' u, or a broadcast draw missed the memory)
    try:
        out, ld, parts = flow._dgm_run(value, context, inverse)
    except (NotImplementedError, NotInvertibleError):
        answered = _held(flow, context, value, inverse, store)  # no inverse to recompute with (or none at the
        if answered is not None:  # current weights: a planar map folded since the draw): what it remembers is the
            return answered  # only answer, Pixyz's (its stored_x)
        raise
    if not isinstance(out, Tensor):  # (a numpy array: torch's machinery after it fails unnamed, as under Pixyz)
        raise NotATensorError(f"{type(flow).__name__}: its {'inverse' if inverse else 'forward'}() returned "
                              f"{type(out).__module__}.{type(out).__name__}; a flow must return a tensor "
                              "(torch.as_tensor(...))")
    if flow._dgm_keep:
        x, z = (out, value) if inverse else (value, out)
        _remember(flow, x, z, ld, context, inverse, parts)
    if store:
        _store(flow, ld, parts)
    return out


@contextlib.contextmanager
def logdets_kept(flow: "Flow") -> Iterator[None]:
    """Within the block, whatever runs leaves the ``logdet_jacobian`` of ``flow`` and of its layers as it was."""
    saved = [(f, f.__dict__.get("_logdet_jacobian")) for f in flow.modules() if isinstance(f, Flow)]
    try:
        yield
    finally:
        for f, ld in saved:
            f.__dict__["_logdet_jacobian"] = ld


def _quiet_logdet(flow: "Flow", x: Tensor, context: Any) -> Tensor:
    """The forward log-det at ``x`` of a flow whose inverse did not give it (one written for Pixyz): its ``forward``
    runs, and the ``logdet_jacobian`` it stores is put back, as Pixyz's ``inverse`` leaves it."""
    with logdets_kept(flow):
        return flow._dgm_run(x, context, False)[1]  # type: ignore[return-value]


def _dgm_logdet(flow: "Flow", context: Any, x: Tensor, z: Tensor) -> Tensor:
    m = _recall(flow, context, x=x, z=z)
    if m is None and x is _given_input(flow):  # the scored values' input, put over a remembered draw's by _apply:
        m = _recall(flow, context, z=z, by_inverse=False)  # Pixyz scores it with the draw's log-det, the one its
        # flow stored (or computes again at its inverse of z: the draw's input) (p492)
    if m is None:
        return Flow.forward_with_logdet(flow, x, context)[1]  # (ours: a subclass's of that name is its own)
    if m.logdet is None:
        m.logdet = _quiet_logdet(flow, x, context)
    return m.logdet


def drawn_input(flow: "Flow", z: Tensor, since: int | None = None) -> Tensor:
    """:math:`f^{-1}(z)` for a value ``z`` the flow has just drawn: the input it remembers (no inverse runs, none is
    stored), else the inverse. ``since``: the :func:`memory_mark` the draw took (its memory's parameters need no
    check). Looked up without gradients (a draw without ``reparam``), a memory made with them answers, detached
    (p489: a user's term's ``q.sample()`` within a loss evaluation missed it and ran an approximate inverse)."""
    x = _apply(flow, None, z, True, rerun=False, since=since, any_grad=True)
    return x.detach() if x.requires_grad and not torch.is_grad_enabled() else x


def refresh_logdet(flow: "Flow", z: Tensor, context: Any = None) -> None:
    """Run ``flow`` forward at :math:`x = f^{-1}(z)` and store its log-det (and its layers'), as Pixyz's
    ``TransformedDistribution.get_log_prob(..., compute_jacobian=True)`` does (with the same side effects: a batch
    norm's statistics, a dequantizer's noise). ``x`` comes from the flow's memory when it has ``z`` (a draw, or a value
    just scored), else from the inverse; the memory is kept."""
    m = _recall(flow, context, z=z)
    x = m.x if m is not None else flow.inverse(z, context)
    _, ld, parts = flow._dgm_run(x, context, False)
    _store(flow, ld, parts)


_UNSEEN = object()


def _kept_on(method: Any, name: str, make: Any) -> Any:
    """``make(method)``, kept on the function itself as its attribute ``name``: a class defined again and again, in a
    notebook cell or a function, is freed with its methods; and no process-wide container is read, on which compiled
    code would guard (p479: Dynamo guarded on a weak dictionary's keys by their place, and a key freed meanwhile
    failed the next compiled step with an ``IndexError``). A callable that takes no attribute: made each time."""
    value = getattr(method, name, _UNSEEN)
    if value is _UNSEEN:
        value = make(method)
        try:
            setattr(method, name, value)
        except (AttributeError, TypeError):
            pass
    return value


def _pixyz_signature(method: Any, jacobian: bool, skip: int = 2) -> tuple[bool, bool, bool]:
    """How :func:`_pixyz_call` passes ``y`` and ``compute_jacobian`` to ``method``: by name (two flags), or
    positionally (the third). ``skip``: the leading positional parameters it is given anyway (``self`` and the value;
    the value alone for a function set on the instance); a ``*args`` takes them and the rest (a decorator's wrapper
    without ``functools.wraps``: p480)."""
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        params = []
    kinds = inspect.Parameter
    while skip and params and params[0].kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD):
        params, skip = params[1:], skip - 1
    names = {p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
    var_kw = any(p.kind is kinds.VAR_KEYWORD for p in params)
    positional = sum(p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD) for p in params)
    positional = positional if not any(p.kind is kinds.VAR_POSITIONAL for p in params) else 2
    return "y" in names or var_kw, "compute_jacobian" in names or var_kw, positional >= (2 if jacobian else 1)


#: the attribute that keeps :func:`_pixyz_signature`'s answer on a function, per role (one function may be both a
#: flow's forward and its inverse: p480) and per kind (a class's method, or a function set on an instance)
_CALL_KEYS = {(True, 2): "_dgm_pixyz_call", (False, 2): "_dgm_pixyz_call_inverse",
              (True, 1): "_dgm_pixyz_call_own", (False, 1): "_dgm_pixyz_call_own_inverse"}


def _pixyz_call(method: Any, flow: "Flow", v: Tensor, context: Any, jacobian: bool,
                compute_jacobian: bool = True) -> Tensor:
    """Call a Pixyz-style ``forward(x, y=None, compute_jacobian=True)`` (``jacobian``) or ``inverse(z, y=None)``
    with the arguments its signature takes: ``y`` and ``compute_jacobian`` by name when it names them, else
    positionally when it takes more positional arguments, else not at all (``forward(self, x)``). ``flow`` is
    ``None`` for a function set on the flow instance (called as Pixyz calls ``self.flow.forward``, without it)."""
    skip = 1 if flow is None else 2
    sig = _kept_on(method, _CALL_KEYS[jacobian, skip], lambda m: _pixyz_signature(m, jacobian, skip))
    by_name_y, by_name_jac, positional = sig
    args = (v,) if flow is None else (flow, v)
    if by_name_y or by_name_jac:
        kwargs: dict[str, Any] = {}
        if by_name_y:
            kwargs["y"] = context
        if jacobian and by_name_jac:
            kwargs["compute_jacobian"] = compute_jacobian
        return method(*args, **kwargs)
    if positional:
        return method(*args, context, compute_jacobian) if jacobian else method(*args, context)
    return method(*args)


def _signature_or_none(method: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(method)
    except (TypeError, ValueError):
        return None


def _note_pixyz_call(flow: "Flow", args: tuple, kwargs: dict, z: Tensor) -> None:
    """Remember ``(x, z, logdet)`` after a call of a Pixyz-style ``forward`` that stored its log-det."""
    sig = _kept_on(type(flow).forward, "_dgm_signature", _signature_or_none)
    if sig is None:
        return
    try:
        bound = sig.bind(flow, *args, **kwargs)
    except TypeError:
        return
    bound.apply_defaults()
    values = list(bound.arguments.values())
    x = values[1] if len(values) > 1 else None
    named = bound.arguments
    if not isinstance(x, Tensor) or not named.get("compute_jacobian", True):
        return
    ld = flow.logdet_jacobian
    if ld is None:
        return
    flow._dgm_follow(x.shape, False)
    if x.dim() < flow._dgm_domain_event_dim:
        return
    _remember(flow, x, z, _as_logdet(ld, x, flow._dgm_domain_event_dim), named.get("y"), False, None)


def _own_method(flow: "Flow", inverse: bool) -> Any:
    """The ``forward`` (or ``inverse``) set on the flow instance (a later cell's ``flow.forward = ...``), which
    Pixyz's distributions and flow lists call (``self.flow.forward(...)``), or None; None also while it runs in this
    thread (it may call the class's method, which runs this flow: ``old = flow.forward``, then ``flow.forward =
    lambda x, ...: old(x, ...)``; other threads call it meanwhile, p483: see :class:`_FlowMark`)."""
    f = flow.__dict__.get("inverse" if inverse else "forward")
    return None if f is None or _mark_of(flow, "_dgm_own_running") else f


def _run_own(flow: "Flow", f: Any, v: Tensor, context: Any, inverse: bool) -> tuple[Tensor, Tensor | None, None]:
    """:meth:`Flow._dgm_run` through a method set on the instance, called as Pixyz calls it: the forward stores the
    log-det (``flow.logdet_jacobian``), the inverse gives none (the forward runs for it when it is asked for)."""
    jacobian = not (inverse or _NO_JACOBIAN.depth)
    with _FlowMark(flow, "_dgm_own_running", True):
        out = _pixyz_call(f, None, v, context, not inverse, jacobian)
    if not jacobian:
        return out, None, None
    ld = flow.logdet_jacobian
    if ld is None:
        raise ValueError(f"{type(flow).__name__}: the forward set on this flow did not store the log-determinant (set "
                         "self._logdet_jacobian in it, as Pixyz's flows do)")
    return out, _as_logdet(ld, v, flow._dgm_domain_event_dim), None


def _pixyz_forward_logdet(self: "Flow", x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """The forward hook of a subclass written for Pixyz: its ``forward``, which stores the log-det."""
    if _NO_JACOBIAN.depth:  # (forward(x, compute_jacobian=False) of a flow list: as Pixyz's calls it; no log-det)
        return _pixyz_call(type(self).forward, self, x, context, True, False), None  # type: ignore[return-value]
    z = _pixyz_call(type(self).forward, self, x, context, True)
    ld = self.logdet_jacobian  # (a subclass may compute it in its own property)
    if ld is None:
        raise ValueError(f"{type(self).__name__}: forward(x, y, compute_jacobian=True) did not store the "
                         "log-determinant (set self._logdet_jacobian in forward, as Pixyz's flows do)")
    return z, _as_logdet(ld, x, self._dgm_domain_event_dim)


def _pixyz_inverse_logdet(self: "Flow", z: Tensor, context: Tensor | None) -> tuple[Tensor, None]:
    """The inverse hook of a subclass written for Pixyz: its ``inverse``, which gives no log-det (None: its
    ``forward`` runs for it only when it is asked for, so a draw runs ``inverse`` alone, as in Pixyz)."""
    return _pixyz_call(type(self).inverse, self, z, context, False), None


def positive_int(owner: str, arg: str, value: Any) -> int:
    """``value`` as a positive int: a Python or NumPy integer (``np.prod`` of a shape), a one-element integer
    tensor or array (``x.shape[1]`` of a traced size, ``torch.tensor(2)``, ``np.array(2)``) or a shape of one dim
    (``x.shape[1:]``, ``[4]``), as Pixyz takes them; else a ``ValueError`` naming ``owner`` and ``arg``."""
    if isinstance(value, (list, tuple)) and len(value) == 1:  # (torch.Size too)
        value = value[0]
    if type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1 and value.dtype.kind in "iu":
        value = int(value.reshape(()))
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise SizeArgumentError(f"{owner}: {arg} must be a positive int, got {value!r}")
    return int(value)


class Flow(TransformModule, ConditionalTransform):
    r"""Base class of every flow: an invertible map :math:`z = f(x)` with its exact log-determinant.

    The base class itself is the identity (as in Pixyz).

    Parameters
    ----------
    in_features : int, optional
        The size of the first event dim of the input (the features of a vector, the channels of an image); inputs of
        another size raise ``ValueError``. ``None`` accepts any size.
    event_dim : int or None, default 1
        How many rightmost dims form one sample: 1 for vectors ``(..., D)``, 3 for images ``(..., C, H, W)``.
        ``None`` decides it from each input, as Pixyz does: an image when the input has 4 or more dims, else a vector
        (see :meth:`_dgm_auto_event_dim`; ``Preprocess`` and ``Flatten`` read every dim but the batch dim 0);
        pyro_dgm's flow distributions set it from the prior's event shape, which holds while they run the flow. Give it
        explicitly for a flow put directly into Pyro's ``TransformedDistribution``, which reads it when built.
    codomain_event_dim : int, optional
        The event dims of the output, when they differ (``Flatten``).
    cache_size : {1, 0}
        Remember the last ``(x, z, logdet)`` (1, Pyro's default for flows) or not (0).

    Notes
    -----
    Differences from Pixyz: ``logdet_jacobian`` is also returned (``forward_with_logdet``), so no state is needed;
    ``forward``/``inverse`` accept any number of leading batch dims.

    A subclass written for Pixyz, which overrides ``forward(x, y=None, compute_jacobian=True)`` (storing
    ``self._logdet_jacobian``) and ``inverse(z, y=None)`` instead of the two methods above, works too: its methods are
    wrapped, it decides its event dims from each input (``event_dim=None``) and it skips the size check.

    Examples
    --------
    >>> f = Flow(3)
    >>> z = f.forward(torch.ones(2, 3))
    >>> z.tolist(), f.logdet_jacobian.tolist()
    ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [0.0, 0.0])
    >>> f.forward(torch.ones(2, 4))
    Traceback (most recent call last):
     ...
    pyro_dgm.utils.checks.ShapeError: Flow(in_features=3): expected 3 features at dim -1 ... got shape (2, 4)
    """

    bijective = True
    _dgm_feature_name = "features"
    __repr__ = nn.Module.__repr__
    _dgm_pixyz_forward = False  # a subclass written for Pixyz: it overrides forward (and inverse) instead
    _dgm_pixyz_inverse = False
    _dgm_runs_inverse = False  # its inverse (or a layer's) is written for Pixyz: run it even for a remembered value
    _dgm_constant_logdet = False  # the log-det is one number for the whole batch (Pixyz stores it unexpanded)
    _dgm_volume_preserving = False  # the log-det is 0 (Pixyz's logdet_jacobian is 0 before any call)
    _dgm_pixyz_inverse_missing = False  # Pixyz's layer has no inverse (its distributions score only their last draw)
    _dgm_hook_names: tuple[str, ...] = ()  # Pixyz's private methods that the layer calls where overridden (see _state)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        type.__setattr__(cls, "_dgm_flow_set_up", True)  # (see set_up_subclasses)
        for old, hook, public in (("_forward_logdet", "_dgm_forward_logdet", "forward"),
                                  ("_inverse_logdet", "_dgm_inverse_logdet", "inverse")):
            # a flow written against the hooks' names before their _dgm_ prefix (a Pixyz-style flow overrides the
            # public method instead: a method of the old name there is its own helper)
            if old in cls.__dict__ and hook not in cls.__dict__ and public not in cls.__dict__:
                setattr(cls, hook, cls.__dict__[old])
        mro = cls.__mro__

        def definer(name: str, wrapper: Any = None) -> int:  # (a hook that is a Pixyz wrapper is no definition)
            return next(i for i, k in enumerate(mro) if name in k.__dict__ and k.__dict__[name] is not wrapper)

        for public, hook, wrapper in (("forward", "_dgm_forward_logdet", _pixyz_forward_logdet),
                                      ("inverse", "_dgm_inverse_logdet", _pixyz_inverse_logdet)):
            owner = definer(hook, wrapper)
            pixyz = definer(public) < owner
            setattr(cls, f"_dgm_pixyz_{public}", pixyz)
            if public == "inverse":
                cls._dgm_runs_inverse = pixyz
            if pixyz:  # a subclass written for Pixyz: the hook runs its method; super() reaches the parent's map
                setattr(cls, f"_dgm_super_{public}", None if mro[owner] is Flow else mro[owner].__dict__[hook])
                setattr(cls, hook, wrapper)

    def __init__(self, in_features: int | None = None, event_dim: int | None = 1,
                 codomain_event_dim: int | None = None, cache_size: int = 1) -> None:
        set_up_subclasses(self, Flow, "_dgm_flow_set_up")
        super().__init__(cache_size=0)  # Pyro's (x, y) memory is replaced by ours, which also keeps the log-det
        if getattr(type(self), "_inv", None) is not None:  # a method of the subclass's own (p480: Pixyz's flows have
            self.__dict__.pop("_inv", None)  # no _inv; torch's None in the instance hid it): inv keeps torch's inverse
        if cache_size not in (0, 1):
            raise ValueError(f"{type(self).__name__}: cache_size must be 0 or 1, got {cache_size!r}")
        if in_features is not None:
            in_features = positive_int(type(self).__name__, "in_features", in_features)
        self._in_features = in_features
        self._dgm_auto = event_dim is None or self._dgm_pixyz_forward
        if self._dgm_auto:
            event_dim = codomain_event_dim = None
        self._dgm_domain_event_dim = int(event_dim or 1)
        self._dgm_codomain_event_dim = int(codomain_event_dim or self._dgm_domain_event_dim)
        self._dgm_keep = bool(cache_size)
        self._dgm_memory: _Memory | None = None  # the last computation in any thread (stored_x)
        self._dgm_threads = threading.local()  # each thread's last computation (what a score recalls)
        self._logdet_jacobian: Tensor | int | None = 0 if self._dgm_volume_preserving else None

    def __setstate__(self, state: dict[str, Any]) -> None:
        set_up_subclasses(self, Flow, "_dgm_flow_set_up")  # (unpickled in a new process: no __init__ ran)
        super().__setstate__(state)

    def __getstate__(self) -> dict[str, Any]:
        """The module's state without its memory of the last draw, and with the stored log-determinant detached:
        both may be intermediate results of a graph, which ``copy.deepcopy`` refuses (a copy of a model kept as
        the best so far, after a training step). The copy scores values by running its flow."""
        state = super().__getstate__()
        state.pop("_dgm_inv", None)  # (made again by the copy's inv)
        if getattr(type(self), "_inv", None) is not None:  # (torch's __getstate__ puts its None there)
            state.pop("_inv", None)
        m = state.get("_dgm_memory")
        state["_dgm_memory"] = None
        state.pop("_dgm_threads", None)  # (made again at the copy's first run)
        if m is not None and isinstance(m.z, Tensor):  # the last draw's value, for a check (flow_distribution.py)
            state["_dgm_copied_z"] = m.z.detach()
        ld = state.get("_logdet_jacobian")
        if isinstance(ld, Tensor) and not ld.is_leaf:
            state["_logdet_jacobian"] = ld.detach()
        return state

    # ------------------------------------------------------------------ description
    @property
    def in_features(self) -> int | None:
        """The size of the first event dim of the input (``None``: any)."""
        return self._in_features

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return _real(self._dgm_domain_event_dim)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return _real(self._dgm_codomain_event_dim)

    @property
    def logdet_jacobian(self) -> Tensor | None:
        """The log-determinant stored by the last ``forward(..., compute_jacobian=True)`` (Pixyz's interface)."""
        return self._logdet_jacobian

    def extra_repr(self) -> str:
        return ""  # as Pixyz prints flows; error messages use _dgm_details()

    def _dgm_details(self) -> str:
        return f"in_features={self._in_features}" if self._in_features is not None else ""

    def _dgm_describe(self) -> str:
        return f"{type(self).__name__}({self._dgm_details()})"

    def _dgm_expected_size(self, inverse: bool) -> int | None:
        """The size expected at dim ``-event_dim`` of the input (of the output when ``inverse``)."""
        return None if self._dgm_pixyz_forward else self._in_features

    def _dgm_auto_event_dim(self, shape: torch.Size) -> int:
        """The event dims of an input of this shape when ``event_dim=None``: Pixyz's rule, 3 (an image
        ``(N, C, H, W)``) for 4 or more dims, else 1 (a vector ``(N, D)``; ``(L, N, D)`` is a batch of vectors)."""
        return 3 if len(shape) >= 4 else 1

    def _dgm_adapt(self, shape: torch.Size, inverse: bool) -> None:
        """Set the event dims for an input of ``shape`` (the output side when ``inverse``); ``event_dim=None`` only.
        Plain attributes, written to the instance's dict when they change (every call runs this:
        ``nn.Module.__setattr__`` would look through its parameters, buffers and modules each time)."""
        ev = self._dgm_auto_event_dim(shape)
        d = self.__dict__
        if d.get("_dgm_domain_event_dim") != ev or d.get("_dgm_codomain_event_dim") != ev:
            d["_dgm_domain_event_dim"] = d["_dgm_codomain_event_dim"] = ev

    def _dgm_follow(self, shape: torch.Size, inverse: bool) -> None:
        """Set the event dims for an input of ``shape`` (``event_dim=None`` only), unless a flow distribution's site
        is running the flow (:func:`event_dims_fixed`): the ones it set from its prior hold."""
        if self._dgm_auto and _follows_input(self):
            self._dgm_adapt(shape, inverse)

    def _dgm_check(self, x: Tensor, inverse: bool) -> None:
        if self._dgm_auto and isinstance(x, Tensor) and _follows_input(self):  # (_dgm_follow inline: every call)
            self._dgm_adapt(x.shape, inverse)
        ev = self._dgm_codomain_event_dim if inverse else self._dgm_domain_event_dim
        n = self._dgm_expected_size(inverse)
        hint = _SHAPE_HINTS.get(ev, "(..., {n}, ...)").format(n=n if n is not None else "N")
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._dgm_describe()}: expected a tensor of shape {hint}, got {type(x).__name__}")
        if x.dim() < ev:
            raise ShapeError(f"{self._dgm_describe()}: expected an input with at least {ev} dims, i.e. shape {hint}, "
                             f"got shape {tuple(x.shape)}")
        if ev > 0 and n is not None and x.shape[-ev] != n:
            raise ShapeError(f"{self._dgm_describe()}: expected {n} {self._dgm_feature_name} at dim {-ev} of the input, "
                             f"i.e. shape {hint}, got shape {tuple(x.shape)}")

    # ------------------------------------------------------------------ the two methods a subclass implements
    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x, zero_logdet(x, self._dgm_domain_event_dim)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return z, zero_logdet(z, self._dgm_codomain_event_dim)

    def _dgm_store_logdet(self, ld: Tensor) -> None:
        """Store a computed log-det as :attr:`logdet_jacobian` (a subclass written for Pixyz stores its own; a
        volume-preserving flow keeps Pixyz's 0)."""
        if not (self._dgm_pixyz_forward or self._dgm_volume_preserving):
            self.__dict__["_logdet_jacobian"] = _first(ld) if self._dgm_constant_logdet else ld  # (no Module setattr)

    def _dgm_run(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor | None, tuple | None]:
        """The checked map (or its inverse) of ``v``: ``(output, forward log-det or None, the layers' log-dets)``. The
        inverse of a flow written for Pixyz gives no log-det (its built-in parent's would not be its own)."""
        self._dgm_check(v, inverse=inverse)
        own = _own_method(self, inverse)
        if own is not None:
            return _run_own(self, own, v, context, inverse)
        if inverse:
            x, ld = self._dgm_inverse_logdet(v, context)
            return x, None if self._dgm_pixyz_forward else ld, None
        z, ld = self._dgm_forward_logdet(v, context)
        return z, ld, None

    # ------------------------------------------------------------------ public interface
    def forward_with_logdet(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Return :math:`z = f(x)` and :math:`\log|\det \partial z/\partial x|` (batch-shaped), given context ``y``."""
        z, ld, _ = self._dgm_run(x, y, False)
        return z, ld

    def inverse_with_logdet(self, z: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f^{-1}(z)` and the *forward* log-determinant :math:`\log|\det \partial z/\partial x|`
        at that ``x``, so that :math:`\log p_X(x) = \log p_Z(z) + \text{logdet}`."""
        x, ld, _ = self._dgm_run(z, y, True)
        return x, ld if ld is not None else _quiet_logdet(self, x, y)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """``flow(x, y)`` runs :meth:`forward` (through ``nn.Module.__call__``, so hooks run), as in Pixyz; torch's
        transforms call it with ``x`` alone, and a subclass's ``forward`` may take other arguments.

        The ``forward`` of a subclass written for Pixyz runs as it is; its result and the log-det it stored are then
        remembered, so the log-det is not asked of it again for the same values (an InverseTransformedDistribution's
        ``get_log_prob`` runs it once, as Pixyz's does)."""
        out = nn.Module.__call__(self, *args, **kwargs)
        if type(self)._dgm_pixyz_forward and self._dgm_keep and isinstance(out, Tensor):
            _note_pixyz_call(self, args, kwargs, out)
        return out

    def forward(self, x: Tensor, y: Tensor | None = None, compute_jacobian: bool = True) -> Tensor:
        """Return :math:`z = f(x)` given context ``y``; store the log-determinant in :attr:`logdet_jacobian`
        (one number for the batch when it does not depend on ``x``, as Pixyz stores it)."""
        cls = type(self)
        if cls._dgm_pixyz_forward:  # super().forward from a subclass written for Pixyz: its parent's map
            parent = cls._dgm_super_forward
            if parent is None:
                return x  # Pixyz's Flow.forward: the identity, nothing stored
            self._dgm_check(x, inverse=False)  # (the event dims of this input: an image's or a vector's)
            if parent is FlowList._dgm_forward_logdet:  # a FlowList's: its layers store theirs too
                z, ld, parts = self._dgm_compose(x, y, False)  # type: ignore[attr-defined]
            else:
                (z, ld), parts = parent(self, x, y), None
            if compute_jacobian:  # as the parent's forward stores it
                for part, part_ld in parts or ():
                    part._dgm_store_logdet(part_ld)
                self._logdet_jacobian = _first(ld) if self._dgm_constant_logdet else ld
            return z
        if compute_jacobian or is_compiling():
            return _apply(self, y, x, False, compute_jacobian)
        _NO_JACOBIAN.depth += 1
        try:
            return _apply(self, y, x, False)
        finally:
            _NO_JACOBIAN.depth -= 1

    def _dgm_draw(self, x: Tensor) -> Tensor:
        """:math:`z = f(x)` for a draw, as Pixyz's ``TransformedDistribution.sample`` runs the flow (storing
        :attr:`logdet_jacobian`), remembering ``(x, z, logdet)``: the draw is then scored without inverting the flow
        or running it again (a flow without an inverse, or whose forward draws noise, runs once)."""
        return _apply(self, None, x, False, True)

    def inverse(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        r"""Return :math:`x = f^{-1}(z)` given context ``y``."""
        cls = type(self)
        if cls._dgm_pixyz_inverse:  # super().inverse from a subclass written for Pixyz: its parent's inverse
            parent = cls._dgm_super_inverse
            if parent is None:
                return z
            self._dgm_check(z, inverse=True)
            return parent(self, z, y)[0]
        return _apply(self, y, z, True)

    def condition(self, context: Tensor) -> "ConditionedFlow":
        """This flow with its context fixed: a ``torch.distributions.Transform`` (Pyro's conditional interface)."""
        return ConditionedFlow(self, context)

    # A Pixyz flow's own submodule named ``condition`` (a conditioning network, or None): nn.Module keeps it in
    # _modules, behind the method above, and refuses to register one over the method. It is mirrored in the
    # instance's __dict__, where the user's code reads it first (Pixyz has no such method); pyro_dgm's distributions
    # call Flow.condition itself. A parameter or buffer of that name is refused, naming it: a tensor mirrored so
    # would go stale when .to() or torch.func.functional_call put another tensor in its place.
    def _dgm_mirror_own(self, name: str = "condition") -> None:
        d = self.__dict__
        own = d.get("_modules")
        if own is not None and name in own:  # (a module is changed in place by .to(), so the mirror holds)
            d[name] = own[name]

    def __setattr__(self, name: str, value: Any) -> None:
        buffers = self.__dict__.get("_buffers")
        if (type(value) is Tensor and buffers is not None and name in buffers and name not in _TRANSFORM_NAMES
                and name not in _USERS_TO_TAKE and type(self).register_buffer is Flow.register_buffer
                and _only_our_buffer_hooks()):
            # a registered buffer given a new tensor (a batch norm's statistics, four per forward): what
            # nn.Module.register_buffer does; nn.Module.__setattr__ would first inspect this class's register_buffer
            # signature (it overrides it), about 10 us per assignment. (Not a registration: pyro_dgm's hooks watch
            # for layers and buffers added; a user's global buffer hook, or a subclass's own register_buffer, still
            # sees it, through torch's path)
            buffers[name] = value
            return
        if name in _TRANSFORM_NAMES and not _own_transform_name(type(self), name):  # (a submodule would be kept
            kind = ("submodule" if isinstance(value, nn.Module) else  # where the class's attribute hides it from the
                    "parameter" if isinstance(value, nn.Parameter) else "attribute")  # flow's own code; a plain
            _no_torch_transform_name(self, kind, name, AttributeError)  # value would replace what torch calls)
        super().__setattr__(name, value)
        if name in _USERS_TO_TAKE:
            self._dgm_mirror_own(name)

    def __delattr__(self, name: str) -> None:
        if name in _USERS_TO_TAKE:
            d = self.__dict__
            d.pop(name, None)
            if not any(name in d.get(kind, ()) for kind in ("_modules", "_parameters", "_buffers")):
                return  # (the user's plain value, kept in __dict__: gone)
        super().__delattr__(name)

    def register_parameter(self, name: str, param: Any) -> None:
        """``nn.Module``'s; a parameter named ``condition`` is refused, naming it (see the class's ``condition``), as
        is one named as an attribute of torch's ``Transform`` (``sign``, ``bijective``, ...)."""
        if name in _USERS_TO_TAKE:
            _no_tensor_named_own(self, "parameter", name)
        if name in _TRANSFORM_NAMES:
            _no_torch_transform_name(self, "parameter", name)
        super().register_parameter(name, param)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """``nn.Module``'s; a buffer named ``condition`` is refused, naming it (see the class's ``condition``), as
        is one named as an attribute of torch's ``Transform`` (``sign``, ``bijective``, ...)."""
        if name in _USERS_TO_TAKE:
            _no_tensor_named_own(self, "buffer", name)
        if name in _TRANSFORM_NAMES:
            _no_torch_transform_name(self, "buffer", name)
        super().register_buffer(name, tensor, persistent)

    def add_module(self, name: str, module: Any) -> None:
        """``nn.Module``'s; a submodule named ``condition`` (a Pixyz flow's conditioning network), or
        ``forward_with_logdet`` / ``inverse_with_logdet``, is the flow's own, which its code reads as
        ``self.condition``; one named as an attribute of torch's ``Transform`` (``sign``, ``bijective``, ...) is
        refused, naming it."""
        if name in _TRANSFORM_NAMES:
            _no_torch_transform_name(self, "submodule", name)
        if name in _USERS_TO_TAKE and name not in self._modules and not any(
                name in self.__dict__.get(k, ()) for k in ("_parameters", "_buffers")):
            self._modules[name] = None  # (torch refuses a name the class has: the method, here)
        super().add_module(name, module)
        if name in _USERS_TO_TAKE:
            self._dgm_mirror_own(name)

    @property
    def inv(self) -> Transform:
        """The inverse transform (torch's ``Transform.inv``; kept under a name of pyro_dgm's, as a subclass written for
        Pixyz may have a method named ``_inv``, where torch keeps it)."""
        d = self.__dict__
        inv = d.get("_dgm_inv")
        if inv is None:
            inv = d["_dgm_inv"] = _FlowInverse(self)
        return inv

    # ------------------------------------------------------------------ torch.distributions.Transform hooks
    def _call(self, x: Tensor) -> Tensor:
        return _apply(self, None, x, False)

    def _inverse(self, z: Tensor) -> Tensor:
        return _apply(self, None, z, True)

    def _inv_call(self, z: Tensor) -> Tensor:
        # (torch's reads _cache_size, Pyro's memory, which the flow's own replaces: a subclass written for Pixyz may
        # keep a value of its own under that name, p486)
        return _apply(self, None, z, True)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return _dgm_logdet(self, None, x, y)

    def with_cache(self, cache_size: int = 1) -> "Flow":
        """This flow (its memory is already the cache ``torch.distributions.ComposeTransform`` asks for)."""
        if cache_size not in (0, 1):
            raise ValueError(f"{self._dgm_describe()}: cache_size must be 0 or 1, got {cache_size!r}")
        return self


class _FlowInverse(_InverseTransform):
    """torch's inverse of a transform, made without reading the flow's ``_cache_size`` (a flow's memory is its own,
    and a subclass written for Pixyz may keep a value of its own under that name: p483, torch refused 7)."""

    def __init__(self, flow: Flow) -> None:
        Transform.__init__(self, cache_size=0)
        self._inv = flow


#: The public names of torch's and Pyro's ``Transform`` that Pixyz's flows lack (torch and Pyro read them from a
#: transform, so a flow's own value cannot take their place). A Pixyz flow subclass's parameter, buffer or submodule
#: of such a name is refused, naming it. (pyro_dgm's own names, ``forward_with_logdet`` and the rest, are the user's
#: to take; so is ``condition``, see ``Flow.condition``.)
_TRANSFORM_NAMES = frozenset(n for c in (Transform, TransformModule) for n in dir(c) if not n.startswith("_")) - (
    frozenset(dir(nn.Module)) | {"condition"}) | {"domain", "codomain"}


class ChannelOrFeatureFlow(Flow):
    """A flow over the ``in_features`` channels of an image ``(N, C, H, W)`` or the features of a vector ``(N, D)``
    (coupling layers, permutations): with ``event_dim=None`` the input's shape tells which, as in Pixyz."""

    def _dgm_auto_event_dim(self, shape: torch.Size) -> int:
        # Pixyz: an image (N, C, H, W), whatever in_features (its mask comes from the input's channels), or a vector
        # (N, D); with more batch dims, the size at dim -3 or -1 decides
        if len(shape) == 4:
            return 3
        n = self.in_features
        return 3 if len(shape) > 4 and (shape[-3] == n or shape[-1] != n) else 1

    def _dgm_adapt(self, shape: torch.Size, inverse: bool) -> None:
        super()._dgm_adapt(shape, inverse)
        self.__dict__["_dgm_feature_name"] = "channels" if self._dgm_domain_event_dim == 3 else "features"


class ConditionedFlow(Transform):
    """A flow with its context fixed (returned by :meth:`Flow.condition`); a plain ``Transform``.

    Examples
    --------
    >>> from pyro_dgm.flows import AffineCoupling
    >>> net = lambda x, y: (torch.zeros_like(x), y.expand_as(x))  # translate the unmasked half by y
    >>> f = AffineCoupling(2, scale_translate_net=net)
    >>> f.condition(torch.tensor([[1.0, 2.0]]))(torch.zeros(1, 2)).tolist()
    [[0.0, 2.0]]
    """

    bijective = True

    def __init__(self, flow: Flow, context: Tensor) -> None:
        super().__init__(cache_size=0)
        self.flow = flow
        self.context = context

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.flow.domain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.flow.codomain

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        return self.flow.forward_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        return self.flow.inverse_shape(shape)

    def _call(self, x: Tensor) -> Tensor:
        """:math:`z = f(x, y)`, storing the flow's ``logdet_jacobian`` as ``flow(x, y)`` does (so a conditional
        InverseTransformedDistribution's ``get_log_prob`` leaves it as Pixyz's does)."""
        return _apply(self.flow, self.context, x, False, True)

    def _dgm_map(self, x: Tensor, since: int | None = None) -> Tensor:
        """:math:`z = f(x, y)`, leaving ``logdet_jacobian`` as it is (the prior's value of a draw: from the flow's
        memory when it drew ``x``, even where a batch norm in training mode would map it elsewhere now; ``since``:
        the :func:`memory_mark` the draw took)."""
        return _apply(self.flow, self.context, x, False, rerun=False, since=since)

    def _inverse(self, z: Tensor) -> Tensor:
        return _apply(self.flow, self.context, z, True)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return _dgm_logdet(self.flow, self.context, x, y)

    def __repr__(self) -> str:
        return f"ConditionedFlow({self.flow._dgm_describe()})"


def _event_dims(t: Any) -> tuple[int, int]:
    if isinstance(t, Flow):
        return t._dgm_domain_event_dim, t._dgm_codomain_event_dim
    dom, cod = getattr(t, "domain", constraints.real_vector), getattr(t, "codomain", constraints.real_vector)
    return dom.event_dim, cod.event_dim


def _resolve(part: Any, context: Tensor | None) -> Transform:
    """A Pyro/torch part of a FlowList as a plain transform (conditioned on ``context`` when it is conditional)."""
    if isinstance(part, ConditionalTransform) and context is not None:
        return part.condition(context)
    if isinstance(part, Transform):
        return part
    raise ValueError(f"FlowList: {type(part).__name__} is a conditional transform; pass its context "
                     "(flow.forward(x, y=...), or cond_var=[...] in InverseTransformedDistribution)")


def _compose_dims(parts: Sequence[Any]) -> tuple[int, int]:
    """The event dims of a composition, as torch's ComposeTransform computes them."""
    dom = _event_dims(parts[-1])[1]
    for p in reversed(parts):
        d, c = _event_dims(p)
        dom = max(dom + d - c, d)
    cod = _event_dims(parts[0])[0]
    for p in parts:
        d, c = _event_dims(p)
        cod = max(cod + c - d, c)
    return dom, cod


def _as_logdet(ld: Any, x: Tensor, event_dim: int) -> Tensor:
    """A log-det as a tensor of ``x``'s batch shape (a number or a scalar tensor is expanded)."""
    batch = x.shape[:x.dim() - event_dim]
    if isinstance(ld, Tensor):
        return ld.expand(batch) if ld.dim() == 0 else ld
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return torch.full(batch, float(ld), dtype=dtype, device=x.device)


def _scalar(ld: Any) -> bool:
    return isinstance(ld, numbers.Number) or (isinstance(ld, Tensor) and ld.dim() == 0)


def _first(ld: Tensor) -> Tensor:
    """A batch-constant log-det as one number (how Pixyz stores it)."""
    return ld.reshape(-1)[0] if ld.dim() > 0 and ld.numel() > 0 else ld


class FlowList(Flow):
    r"""A sequence of flows applied in order, itself a flow: :math:`f = f_K \circ \dots \circ f_1`.

    Parts may be pyro_dgm flows, Pyro/torch transforms (``pyro.distributions.transforms.Planar``...) or Pyro
    conditional transforms (given the context ``y``). Log-determinants of parts with fewer event dims are summed over
    the extra dims, as ``torch.distributions.ComposeTransform`` does.

    Parameters
    ----------
    flow_list : sequence of flows or transforms
    cache_size : {1, 0}

    Raises
    ------
    ValueError
        If the list is empty.

    Examples
    --------
    >>> import pyro.distributions.transforms as T
    >>> from pyro_dgm.flows import PlanarFlow, Reverse
    >>> f = FlowList([PlanarFlow(3), T.Planar(3), Reverse(3), T.ExpTransform()])
    >>> x = torch.randn(5, 3)
    >>> z, logdet = f.forward_with_logdet(x)
    >>> tuple(z.shape), tuple(logdet.shape), len(f)
    ((5, 3), (5,), 4)
    """

    def __init__(self, flow_list: Sequence[Any], cache_size: int = 1) -> None:
        try:
            parts = list(flow_list) if not isinstance(flow_list, (Transform, ConditionalTransform)) else [flow_list]
        except TypeError:
            raise TypeError(f"FlowList: flow_list must be a list of flows, got {type(flow_list).__name__} "
                            f"{flow_list!r:.60}") from None
        if not parts:
            raise EmptyListError("FlowList: expected at least one flow, got an empty list")
        for i, p in enumerate(parts):
            if not isinstance(p, (Transform, ConditionalTransform)):
                raise TypeError(f"FlowList: part {i} must be a flow or a torch/Pyro transform, got "
                                f"{type(p).__name__}")
        dom, cod = _compose_dims(parts)
        super().__init__(in_features=getattr(parts[0], "in_features", None), event_dim=dom,
                         codomain_event_dim=cod, cache_size=cache_size)
        self.flow_list = nn.ModuleList([p for p in parts if isinstance(p, nn.Module)])
        self._dgm_set_parts(parts)

    def _dgm_set_parts(self, parts: list[Any]) -> None:
        d = self.__dict__  # (plain values: no Module setattr)
        d["_dgm_parts_list"] = parts
        d["_dgm_module_parts"] = tuple(self.flow_list._modules.values())
        d["_dgm_constant_logdet"] = all(getattr(p, "_dgm_constant_logdet", False) for p in parts)
        d["_dgm_runs_inverse"] = any(getattr(p, "_dgm_runs_inverse", False) for p in parts)
        # parts that decide their event dims from the input make the list do so too (once per input shape)
        d["_dgm_auto"] = any(getattr(p, "_dgm_auto", False) for p in parts)
        d["_dgm_adapted_for"] = None
        self._dgm_domain_event_dim, self._dgm_codomain_event_dim = _compose_dims(parts)

    @property
    def _dgm_parts(self) -> list[Any]:
        """The layers, in order: ``flow_list``'s as it is now (Pixyz's FlowList runs ``self.flow_list``, so a layer
        appended to it, or put in place of another, after construction runs too), with the Pyro/torch transforms
        that are not modules where they were given."""
        d = self.__dict__
        known = d.get("_dgm_module_parts")
        if known is None:  # (a FlowList pickled by an earlier version: its parts under the attribute's name, and
            old = d.pop("_dgm_parts")  # the modules of those parts, which flow_list may have more of since)
            self._dgm_set_parts(old)
            known = d["_dgm_module_parts"] = tuple(p for p in old if isinstance(p, nn.Module))
        if tuple(self._modules["flow_list"]._modules.values()) != known:  # (compared by identity, in C)
            self._dgm_rebuild_parts()
        return d["_dgm_parts_list"]

    def _dgm_rebuild_parts(self) -> None:
        """The parts again from ``flow_list``: its modules in order, each Pyro/torch transform that is not a module
        before the module that followed it (or last, when none of those is left)."""
        old = self.__dict__["_dgm_parts_list"]
        fresh: list[Any] = [m for m in self._modules["flow_list"]._modules.values() if m is not None]
        for i, p in enumerate(fresh):
            if not isinstance(p, (Transform, ConditionalTransform)):
                raise TypeError(f"FlowList: flow_list[{i}] must be a flow or a torch/Pyro transform, got "
                                f"{type(p).__name__}")
        for i, p in enumerate(old):
            if not isinstance(p, nn.Module):
                after = next((q for q in old[i + 1:] if isinstance(q, nn.Module) and any(q is f for f in fresh)),
                             None)
                fresh.insert(next(j for j, f in enumerate(fresh) if f is after) if after is not None else len(fresh),
                             p)
        if not fresh:
            raise EmptyListError("FlowList: expected at least one flow, but flow_list is empty now")
        self._dgm_set_parts(fresh)
        _EPOCH[0] += 1  # (the flows' event dims are decided again)

    def __len__(self) -> int:
        return len(self._dgm_parts)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._dgm_parts)

    def __getitem__(self, i: int) -> Any:
        return self._dgm_parts[i]

    def __repr__(self) -> str:
        # as Pixyz prints it: every "ModuleList" in the text, the networks' own too, reads "FlowList"
        if len(self.flow_list) == len(self._dgm_parts):
            return repr(self.flow_list).replace("ModuleList", "FlowList")
        return "FlowList(\n" + "\n".join(f"  ({i}): {p!r}" for i, p in enumerate(self._dgm_parts)) + "\n)"

    def _dgm_expected_size(self, inverse: bool) -> int | None:
        return None  # the parts check their own inputs

    def _dgm_store_logdet(self, ld: Tensor) -> None:
        # Pixyz's FlowList stores the sum of its layers' stored log-dets: a scalar when each is one (a batch of one
        # through planar flows, whose log-det Pixyz squeezes to a scalar; a user's layer that stores one number for
        # the batch, p484: the sum is then the same at every row)
        if ld.dim() > 0 and all(isinstance(p, Flow) and _scalar(p.logdet_jacobian) for p in self._dgm_parts):
            ld = _first(ld)
        super()._dgm_store_logdet(ld)

    def _dgm_adapt(self, shape: torch.Size, inverse: bool) -> None:
        # (not remembered while torch.compile traces: comparing the memo's sizes with the traced input's would make
        # Dynamo guard on the batch size, a graph per batch size; the adaptation itself costs nothing in the graph)
        key = None if is_compiling() else (tuple(shape), inverse, _EPOCH[0])
        if key is not None and key == self._dgm_adapted_for:
            return
        parts = list(reversed(self._dgm_parts)) if inverse else self._dgm_parts
        for p in parts:
            if getattr(p, "_dgm_auto", False):
                p._dgm_adapt(shape, inverse)
            step = getattr(p, "inverse_shape" if inverse else "forward_shape", None)
            shape = step(shape) if step is not None else shape
        self._dgm_domain_event_dim, self._dgm_codomain_event_dim = _compose_dims(self._dgm_parts)
        if key is not None:
            self.__dict__["_dgm_adapted_for"] = key  # (a plain value: no Module setattr per call)

    def _dgm_sizes_from(self, shape: Sequence[int]) -> None:
        steps = []  # (layer, the shape it is given): all of them first, and only then learned, so that a shape some
        for p in self._dgm_parts:  # layer cannot take (a Squeeze given (N, D) or an odd height) leaves every layer
            steps.append((p, shape))  # as it was (a Flatten's in_size from the last valid value); the flow
            try:  # distribution's check then names the variable and the shape it takes
                shape = p.forward_shape(shape) if hasattr(p, "forward_shape") else shape
            except (ValueError, IndexError):
                return
        for p, shape in steps:
            learn = getattr(p, "_dgm_sizes_from", None)
            if learn is not None:
                learn(shape)

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        for p in self._dgm_parts:
            shape = p.forward_shape(shape) if hasattr(p, "forward_shape") else shape
        return torch.Size(shape)

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        for p in reversed(self._dgm_parts):
            shape = p.inverse_shape(shape) if hasattr(p, "inverse_shape") else shape
        return torch.Size(shape)

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z, ld, _ = self._dgm_compose(x, context, False)
        return z, ld  # type: ignore[return-value]

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ld, parts = self._dgm_compose(z, context, True)
        if ld is None:  # a layer written for Pixyz gave none: the list's forward gives it
            ld = _quiet_logdet(self, x, context)
        return x, ld

    def _dgm_run(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor | None, tuple | None]:
        self._dgm_check(v, inverse=inverse)
        own = _own_method(self, inverse)
        if own is not None:
            return _run_own(self, own, v, context, inverse)
        return self._dgm_compose(v, context, inverse)

    def _dgm_compose(self, v: Tensor, context: Tensor | None, inverse: bool
                     ) -> tuple[Tensor, Tensor | None, tuple | None]:
        """The layers applied in turn (in reverse for the inverse): ``(output, total forward log-det, the layers'
        log-dets)``, the log-dets None when a layer's inverse gave none (one written for Pixyz)."""
        parts: list = []
        total: Tensor | None = None
        missing = False
        if inverse:
            ev = self._dgm_codomain_event_dim
            for part in reversed(self._dgm_parts):
                if isinstance(part, Flow):
                    x, ld, sub = part._dgm_run(v, context, True)
                    d, c = part._dgm_domain_event_dim, part._dgm_codomain_event_dim
                    if ld is None:
                        missing = True
                    elif not missing:
                        if sub:
                            parts.extend(sub)
                        parts.append((part, ld))
                else:
                    t = _resolve(part, context)
                    try:
                        x = t.inv(v)
                    except (NotImplementedError, KeyError) as e:  # Pyro's Planar/Radial raise KeyError
                        raise NotImplementedError(f"FlowList: {type(part).__name__} has no inverse, so only a value "
                                                  "this flow has just computed can be mapped back") from e
                    d, c = t.domain.event_dim, t.codomain.event_dim
                    ld = _as_logdet(t.log_abs_det_jacobian(x, v), x, d)
                if not missing:
                    ld = sum_rightmost(ld, ev - c)
                    total = ld if total is None else total + ld
                ev += d - c
                v = x
        else:
            ev = self._dgm_domain_event_dim
            for part in self._dgm_parts:
                if isinstance(part, Flow):
                    y, ld, sub = part._dgm_run(v, context, False)
                    d, c = part._dgm_domain_event_dim, part._dgm_codomain_event_dim
                    if ld is None:  # (a layer written for Pixyz, called with compute_jacobian=False: see _NoJacobian)
                        missing = True
                        ev += c - d
                        v = y
                        continue
                    if sub:
                        parts.extend(sub)
                    parts.append((part, ld))  # stored in each layer as its forward stores it under Pixyz's FlowList
                else:
                    t = _resolve(part, context)
                    if getattr(t, "_cache_size", 0) == 1:  # never answer an input from Pyro's memory (it may be stale)
                        t._cached_x_y = None, None
                    y = t(v)
                    d, c = t.domain.event_dim, t.codomain.event_dim
                    ld = _as_logdet(t.log_abs_det_jacobian(v, y), v, d)
                ld = sum_rightmost(ld, ev - d)
                total = ld if total is None else total + ld
                ev += c - d
                v = y
        if missing:
            return v, None, None
        assert total is not None
        return v, total, tuple(parts)
