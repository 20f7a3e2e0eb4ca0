"""Where a distribution's networks and draws meet Pyro's effect handlers.

Networks run through :func:`run_network`, the effect ``"dgm_params"`` that the memoizing handler answers; draws are
``pyro.sample`` sites. Both take a direct path when no handler that looks at them is active (:func:`ignores_sites`).
:func:`given_event_dim` reads the active trace and plates for the event dims of a value given from outside;
:func:`plate_trace` finds the trace that records a call's data plate (through the ``poutine.block`` handlers).
"""
from __future__ import annotations

import contextlib
import copy
import weakref
from typing import Any, Iterable, Mapping

import pyro
import torch
from pyro.poutine.block_messenger import BlockMessenger
from pyro.poutine.condition_messenger import ConditionMessenger
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.runtime import _DIM_ALLOCATOR, _PYRO_STACK, Message, effectful
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.trace_messenger import TraceMessenger
from pyro.poutine.trace_struct import Trace
from torch import nn
from torch.nn.modules import module as _nn_module

from pyro_dgm.distributions.bindings import CallState
from pyro_dgm.poutine.memoize_messenger import MEMO_SCOPES
from pyro_dgm.utils.compat import is_compiling

__all__ = ["data_plate", "run_network", "run_bound_network", "has_forward_hooks", "has_call_hooks", "ignores_sites",
           "given_event_dim", "site_event_dim", "site_data_size", "data_batch_ndim", "conditioned_value", "plate_trace",
           "outer_plates_ndim", "copies_ndim", "mark_own_observed", "copy_plates", "PYRO_STACK"]

#: Pyro's handler stack (one list for the process; Pyro keeps it private, this is the same object).
PYRO_STACK = _PYRO_STACK

#: The distribution objects of the ``obs=`` sites that pyro_dgm's own calls make, as the traces hold them (built for
#: the call, or by a plate's broadcast; nothing else holds them): their event dims are the value's (:func:`_site_of`).
_OWN_OBSERVED: weakref.WeakSet[Any] = weakref.WeakSet()


def data_plate(name: str, size: int) -> Any:
    """``pyro.plate(name, size, dim=-1)``, the plate over the data that ``model``/``guide`` open, marked as such: a
    network runs outside it (:func:`_call_network`)."""
    plate = pyro.plate(name, size, dim=-1)
    plate._dgm_data_plate = True
    return plate


def _call_network(module: nn.Module, /, *args: Any, **kwargs: Any) -> Any:
    """The network call itself, through this thread's innermost memoizing scope if one is open (the function of
    the ``"dgm_params"`` effect: what runs when no handler on Pyro's stack gives the value). A dict of parameters
    (also an ``OrderedDict`` or another dict subclass) is handed on as a shallow copy: a handler may replace its
    entries in place, which must not reach the cached one (a handler that changes a parameter tensor itself in place,
    ``mul_``, changes the cached tensor).

    The data plates that ``model``/``guide`` open (:func:`data_plate`) are taken off Pyro's stack while it runs: a
    site that the network makes (a Bayesian network's ``PyroSample`` weights, a ``pyro.sample`` in ``forward``) is
    global, as in a plain-Pyro model that calls the network outside its ``pyro.plate("data", N)``; a network's
    arithmetic does not see plates."""
    stack = PYRO_STACK
    at = [i for i, m in enumerate(stack) if getattr(m, "_dgm_data_plate", False)]
    if not at:
        return _memo_call(module, args, kwargs)
    plates = [stack[i] for i in at]
    for i in reversed(at):
        del stack[i]
    dims = [(m.name, m.dim) for m in plates if m._vectorized is True and m.dim is not None]
    for name, dim in dims:  # (its dim too: a plate the forward opens takes dim -1 as in the plain-Pyro model)
        _DIM_ALLOCATOR.free(name, dim)
    try:
        return _memo_call(module, args, kwargs)
    finally:
        for name, dim in dims:
            _DIM_ALLOCATOR.allocate(name, dim)
        for i, m in zip(at, plates):
            stack.insert(i, m)


def _memo_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    scopes = MEMO_SCOPES.stack
    if scopes:
        value = scopes[-1].call(module, args, kwargs)
        if isinstance(value, dict):
            return dict(value) if type(value) is dict else copy.copy(value)
        return value
    return module(*args, **kwargs)


_effectful_network = effectful(_call_network, type="dgm_params")


def _call_network_packed(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """:func:`_call_network` with the inputs in one tuple and one dict: the effect's form for inputs named
    ``name``, ``infer`` or ``obs``, which Pyro's ``effectful`` takes as its own keywords."""
    return _call_network(module, *args, **kwargs)


_effectful_packed = effectful(_call_network_packed, type="dgm_params")
_PYRO_KEYWORDS = frozenset({"name", "infer", "obs"})


_NO_HANDLER = contextlib.nullcontext()


def sites_hidden() -> Any:
    """``poutine.block()`` where a Pyro handler is listening (the sites a user's own method makes inside a draw are
    not the draw's); nothing otherwise, where it would change nothing (and torch.compile cannot trace a handler:
    the draw would split the graph)."""
    return BlockMessenger() if PYRO_STACK else _NO_HANDLER


def ignores_sites(stack: list[Any]) -> bool:
    """Whether no active handler looks at sample sites or network calls: each says so by its class attribute
    ``observes_sites = False`` (the memoizer), or is the param-only trace with which ``SVI.step`` collects the
    parameters (Pyro's class; it records ``pyro.param`` sites and nothing else). Any other handler observes them."""
    for m in stack:
        if getattr(m, "observes_sites", True) and not (type(m) is TraceMessenger and m.param_only):
            return False
    return True


def run_network(module: nn.Module, /, *args: Any, **kwargs: Any) -> Any:
    """Run a distribution's network: the effect ``"dgm_params"`` that a memoizing handler answers.

    With no Pyro handler active, or only handlers that ignore it (see :func:`ignores_sites`), it asks this thread's
    innermost memoizing scope directly (or calls ``module(*args, **kwargs)`` when none is open), without building a
    Pyro message; otherwise it goes through Pyro's handler stack, whose default answer is the same. The memoizing
    scopes are per thread (:func:`pyro_dgm.poutine.memoize_messenger.active_memo`): another thread's never answers.
    """
    scopes = MEMO_SCOPES
    if not scopes.stack or is_compiling():  # (no memoizing scope: nothing to count)
        return _run_network(module, args, kwargs)
    scopes.depth += 1  # (a network called inside another's forward: see MemoizeMessenger.lookup)
    try:
        return _run_network(module, args, kwargs)
    finally:
        scopes.depth -= 1


def _run_network(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    stack = PYRO_STACK
    if not stack or ignores_sites(stack):
        scopes = MEMO_SCOPES.stack
        if scopes:
            return scopes[-1].call(module, args, kwargs)
        return module(*args, **kwargs)
    if kwargs and not _PYRO_KEYWORDS.isdisjoint(kwargs):  # (inputs that Pyro's effectful would take as its own)
        return _effectful_packed(module, args, kwargs)
    return _effectful_network(module, *args, **kwargs)


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward pre-hook or forward hook (the module's own, or a global one) will see ``module``'s call."""
    return bool(module._forward_pre_hooks or module._forward_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_forward_hooks)


def has_call_hooks(module: nn.Module) -> bool:
    """Whether a hook that ``nn.Module.__call__`` runs or attaches will see ``module``'s call: a forward pre-hook or
    hook (:func:`has_forward_hooks`), or a full backward hook or pre-hook, the module's own or a global one (a loss
    term with one runs through ``__call__``, as Pixyz's ``eval`` calls each term, so that its gradient goes through
    them)."""
    return bool(module._forward_pre_hooks or module._forward_hooks or module._backward_hooks
                or module._backward_pre_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_forward_hooks or _nn_module._global_backward_hooks
                or _nn_module._global_backward_pre_hooks)


def forward_replaced(module: nn.Module) -> bool:
    """Whether ``module``'s ``forward`` is no longer the one its arguments were bound to when it was built (see
    :func:`~pyro_dgm.distributions.bindings.forward_binding`): a notebook cell replaced the class's method, or set
    one on the instance (``q.forward = ...``). Pixyz calls the ``forward`` of the moment by name."""
    d = module.__dict__
    bound = d.get("_dgm_forward_fn")  # (a BoundForward; None for a distribution loaded from a pickle made before)
    return "forward" in d or bound is None or type(module).forward is not bound.fn


def run_bound_network(module: nn.Module, names: tuple[str, ...], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """:func:`run_network` with ``args``, the values of ``forward``'s leading arguments ``names``, passed by position;
    or by name when a forward hook sees the inputs (a pre-hook, a forward hook: the module's own or global ones),
    since Pixyz calls ``forward(**inputs)``: such a hook gets the inputs as keywords and may edit them there. Also by
    name when ``forward`` was replaced since the arguments were bound (:func:`forward_replaced`): the new one may
    order them otherwise."""
    if has_forward_hooks(module) or forward_replaced(module):
        if names:
            kwargs = {**dict(zip(names, args)), **kwargs}
        return run_network(module, **kwargs)
    return run_network(module, *args, **kwargs)


def _plate_sizes(data: bool, own: bool = True) -> dict[int, Any]:
    """The active plates' sizes by dim (a subsampled plate's subsample size); for the ``data`` of a model or guide
    call, without the plates over copies of the model (:data:`_COPY_PLATES`); with ``own=False``, without the data
    plate that a model or guide opened (:func:`data_plate`)."""
    sizes = {}
    for m in PYRO_STACK:
        if isinstance(m, IndepMessenger) and m.dim is not None and not (data and m.name in _COPY_PLATES) and (
                own or not getattr(m, "_dgm_data_plate", False)):
            sub = getattr(m, "subsample_size", None)
            sizes[m.dim] = m.size if sub is None else sub
    return sizes


def _outer_lead(shape: torch.Size, sizes: Mapping[int, Any], features_ndim: int = 1) -> int:
    """How many leading dims of data of ``shape`` the plates ``sizes`` cover, none of them at dim -1: as many as
    reach the outermost plate, where each has its plate's size and a row dim and ``features_ndim`` feature dims stay
    beside them (x of (5, 4) in an outer plate of 5 at dim -2 is 5 rows, drawn once per copy, not 5 copies of 4
    rows; a variable of scalar constants takes its features from the data, and its (5, 4) is 5 copies of 4 rows);
    else 0."""
    if not sizes or -1 in sizes:
        return 0
    lead = -min(sizes) - 1
    return lead if _fits(shape, sizes, lead, 1 + features_ndim) else 0


def _fits(shape: torch.Size, sizes: Mapping[int, Any], lead: int, after: int) -> bool:
    """Whether ``shape``'s first ``lead`` dims have the sizes of the plates left of the one at ``-lead - 1``... -2
    (``sizes`` by dim), with at least ``after`` dims after them."""
    return len(shape) >= lead + after and all(sizes.get(i - lead - 1, shape[i]) == shape[i] for i in range(lead))


def outer_plates_ndim(value: torch.Tensor, features_ndim: int = 1) -> int:
    """How many leading dims of the data ``value`` the caller's plates (not those over copies of the model, nor a
    model's own data plate) cover when none of them is at dim -1: 0 when one is, when there is none, or when
    ``value``'s leading dims do not have their sizes (plates over copies the user opened, e.g. particles at dim -2:
    the data has no dims for them); see :func:`_outer_lead`."""
    return _outer_lead(value.shape, _plate_sizes(True, own=False), features_ndim)


def copies_ndim(values: Iterable[Any]) -> int:
    """How many leading dims of scored ``values`` the active plates left of dim -1 cover (copies of the model:
    ``pyro.plate("outer", K, dim=-2)``, vectorized particles) with a row dim after them: of the data plate's size
    when one is at dim -1 (``z`` of ``(K, N, Z)``, or a scalar variable's ``(K, N)``, drawn there), else followed by a
    feature dim (``(K, N, Z)``); the most of any value. Those dims and the rows' are batch dims of the log-density,
    not features to sum. 0 when there are no such plates, or when no value's leading dims have their sizes (``z`` of
    ``(K, Z)`` given in a plate of K alone is K rows; a scalar variable's ``(K, N)`` there too, without a data plate
    that says which dim holds the rows)."""
    sizes = _plate_sizes(False)
    if not sizes or min(sizes) == -1:
        return 0
    lead = -min(sizes) - 1
    rows = sizes.get(-1)
    for v in values:
        if isinstance(v, torch.Tensor) and _fits(v.shape, sizes, lead, 2 if rows is None else 1) and (
                rows is None or v.shape[lead] == rows):
            return lead
    return 0


def data_batch_ndim(value: Any, features_ndim: int = 1) -> int:
    """How many leading dims of a model's or guide's data the caller's plates cover (1 when they cover at most
    one: Pixyz's one batch dim); ``features_ndim``: at least so many of its trailing dims are features."""
    if not isinstance(value, torch.Tensor) or value.dim() <= 1:
        return 1
    e = _event_dim_by_plates(value, data=True, features_ndim=features_ndim)
    return 1 if e is None else value.dim() - e


def given_event_dim(value: Any, ctx: CallState) -> int | None:
    """The event dims of a value given from outside a call inside Pyro: those of the site whose value it is in an
    active trace (an enumerated, vectorized or posterior-predictive draw has batch dims on the left of the plates'
    dims, which only its site knows); else, in a ``dist()``/``sample()`` call, as many batch dims as its leading
    dims fit the active plates; else ``None`` (Pixyz's one batch dim applies).

    Looked up once per value and pass, most recent sites first.
    """
    found = ctx.given_dims
    if found is None:
        found = ctx.given_dims = {}
    key = id(value)
    if key in found:
        return found[key]
    e = None
    if isinstance(value, torch.Tensor):
        e = site_event_dim(value)
        if e is None:
            e = _event_dim_by_plates(value, data=ctx.obs is not None)
    found[key] = e
    return e


def _site_of(value: torch.Tensor) -> dict[str, Any] | None:
    """The sample site of an active trace whose value is ``value`` (most recent sites first), or ``None``.

    A draw counts, whatever its name (an earlier call's ``z_0`` given as the next call's input, with the particle
    or enumeration dims only its site knows), and so does an observed site whose value a ``poutine.condition`` on
    the stack gave it (a latent's value: ``Predictive``'s posterior draws), or that a pyro_dgm call observed (its
    site marked by :func:`mark_own_observed`: ``x_0`` observed by ``(px0 * pz).model(x_0=x0)``, then given to
    ``px1.model(x_0=x0, x_1=x1)``). A foreign ``obs=`` value does not: it is the program's data, which the program may
    score under other sites of other shapes too (an auxiliary likelihood ``pyro.sample("aux", d.to_event(2), obs=x)``
    before ``joint.model(x=x)``), so its site says nothing of the dims the value has in this call; the value's dims
    are then read as those of any value from outside.
    """
    for m in reversed(PYRO_STACK):
        if isinstance(m, TraceMessenger) and not m.param_only:
            for site in reversed(m.trace.nodes.values()):
                if site.get("value") is value and site["type"] == "sample" and (
                        not site.get("is_observed") or site["fn"] in _OWN_OBSERVED
                        or conditioned_value(site["name"]) is value):
                    return site
    return None


def mark_own_observed(name: str, value: Any) -> None:
    """Mark the site ``name`` that a pyro_dgm call has just observed with ``value`` in each active trace, so that
    :func:`_site_of` reads ``value``'s event dims from it in later calls (a foreign ``obs=`` site is not marked)."""
    for m in PYRO_STACK:
        if isinstance(m, TraceMessenger) and not m.param_only:
            site = m.trace.nodes.get(name)
            if site is not None and site.get("value") is value:
                _OWN_OBSERVED.add(site["fn"])


def conditioned_value(name: str) -> Any:
    """The value that the ``poutine.condition`` handlers on Pyro's stack give the site ``name`` (the outermost
    one's, which Pyro keeps), or ``None``."""
    for m in PYRO_STACK:
        if isinstance(m, ConditionMessenger):
            data = m.data
            if isinstance(data, Trace):
                node = data.nodes.get(name)
                if node is not None and node.get("type") == "sample":
                    return node["value"]
            elif isinstance(data, Mapping) and name in data:
                return data[name]
    return None


def plate_trace(name: str, size: int) -> Trace | None:
    """The trace that records the site of ``pyro.plate(name, size)`` opened now: the innermost active trace (not
    the param-only one that ``SVI.step`` runs), unless a ``poutine.block`` between it and the caller hides that site
    (its ``hide_fn`` asked about the message the plate makes: ``hide=["z"]`` or ``hide_types=["observe"]`` let it
    through, ``block()`` hides it); ``None`` when no trace records it."""
    msg = None
    for m in reversed(PYRO_STACK):
        if isinstance(m, BlockMessenger):
            if msg is None:  # (as SubsampleMessenger._subsample builds it)
                msg = Message(type="sample", name=name, fn=_Subsample(size, None), is_observed=False, args=(),
                              kwargs={}, value=None, infer={}, scale=1.0, mask=None, cond_indep_stack=(),
                              done=False, stop=False, continuation=None)
            if m.hide_fn(msg):
                return None
        elif isinstance(m, TraceMessenger) and not m.param_only:
            return m.trace
    return None


def site_event_dim(value: torch.Tensor) -> int | None:
    """The event dims of the sample site of an active trace whose value is ``value``, or ``None`` when no trace
    holds it."""
    site = _site_of(value)
    return None if site is None else len(site["fn"].event_shape)


def site_data_size(value: torch.Tensor) -> tuple[bool, int | None]:
    """Whether an active trace holds ``value`` as a sample site, and then the size of its batch dim at -1 (the data
    plate's), or ``None`` when it has no batch dim there: no batch dims (a Pyro global latent of shape ``(Z,)``),
    or an enumeration dim at -1 (Pyro enumerates at -1 when no plate is nested: ``[K, K]`` for a one-hot value)."""
    site = _site_of(value)
    if site is None:
        return False, None
    e = len(site["fn"].event_shape)
    if value.dim() <= e:
        return True, None
    infer = site.get("infer") or {}
    if infer.get("_enumerate_dim") == -1 or -1 in (infer.get("_dim_to_id") or {}):
        return True, None
    return True, value.shape[value.dim() - e - 1]


#: Plates that Pyro opens over copies of a model (vectorized particles, parallel predictive draws): the data given
#: to a model or guide has no dims for them.
_COPY_PLATES = frozenset({"num_particles_vectorized", "_num_predictive_samples"})


def copy_plates() -> list[Any]:
    """The active plates over copies of a model (:data:`_COPY_PLATES`: vectorized particles, parallel predictive
    draws), outermost first."""
    return [m for m in PYRO_STACK if isinstance(m, IndepMessenger) and m.name in _COPY_PLATES and m.dim is not None]


def _event_dim_by_plates(value: torch.Tensor, data: bool = False, features_ndim: int = 1) -> int | None:
    """The event dims of a value that no trace holds, from the plates: its leading dims are batch dims as far as
    they have the sizes of the plates at their positions (a subsampled plate's subsample size; a dim of size 1
    broadcasts, as in Pyro, if another matches its plate exactly); ``None`` when that is one dim (Pixyz's rule).
    Inside a plate, a value with no dim, or with one dim that cannot be the batch dim of the plate at dim -1 (its
    size is neither the plate's nor 1), has no batch dim: a global value (``tanh(w)`` of a global latent ``w``)
    that Pyro broadcasts. For the ``data`` of a model or guide call, the plates over copies of the model
    (:data:`_COPY_PLATES`) do not count."""
    sizes = _plate_sizes(data)
    if not sizes:
        return None
    shape = value.shape
    if len(shape) <= 1:
        if not shape:
            return 0
        inner = sizes.get(-1)
        return 1 if inner is not None and shape[0] not in (inner, 1) else None
    if data:
        outer = _plate_sizes(True, own=False)
        if -1 not in outer:  # (data inside plates outside its rows, whose dim 0 sized a model's own data plate
            lead = _outer_lead(shape, outer, features_ndim)  # at dim -1: those plates' dims, the rows, as when the
            return None if lead == 0 else len(shape) - lead - 1  # plate was sized; the rest are features)
    for n in range(min(-min(sizes), len(shape)), 1, -1):  # n batch dims: shape[:n] sits at dims -n..-1
        exact = False
        for i in range(n):
            size = sizes.get(i - n)
            if size is None or shape[i] == size:
                exact = exact or size is not None
            elif shape[i] != 1:
                break
        else:
            if exact:
                return len(shape) - n
    return None


