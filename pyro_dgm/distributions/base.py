"""The :class:`Distribution` base class.

A distribution names its variables (``var``) and conditioning variables (``cond_var``), prints itself as the paper
writes it, multiplies with others into a joint, and runs one generic ancestral loop over its *factors* for sampling
(:meth:`Distribution.sample`), scoring (:meth:`Distribution.get_log_prob`) and Pyro (:meth:`Distribution.model`).
An atomic distribution is its own single factor; a joint (:mod:`.joint`) holds several in a topological order fixed at
construction, so no call searches the graph.

Every factor draws through ``pyro.sample(<variable name>, <pyro distribution>)``: with no Pyro handler active that is
a plain call, and under ``poutine.trace``/``condition``/``replay``/``plate``... the draw is an ordinary Pyro site.
"""
from __future__ import annotations

import textwrap
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, NoReturn, Sequence

import networkx as nx
import numpy as np
import pyro
import torch
from torch import Tensor
from torch.distributions import constraints

from pyro_dgm.distributions.bindings import SAMPLING_OPTIONS, Binding, BoundForward, CallState, draw_factors
from pyro_dgm.distributions.early_options import check_early_shape, early_sampling_options
from pyro_dgm.distributions.unreparameterized import plain_sample, unreparameterized
from pyro_dgm.distributions import overrides
from pyro_dgm.distributions.effects import (PYRO_STACK, conditioned_value, copies_ndim, data_batch_ndim, data_plate,
                                           given_event_dim, ignores_sites, mark_own_observed, outer_plates_ndim,
                                           plate_trace, site_data_size)
from pyro_dgm.utils.attributes import (MISSING, Yielding, YieldingModule, set_up_subclasses, users_own,
                                       users_value)
from pyro_dgm.utils.checks import (ArgumentError, DTypeError, DeviceError, DimensionError, DuplicateSiteError,
                                   EmptyBatchError, LayoutError, MissingVariableError, NotATensorError, OutOfRangeError,
                                   STRICT_SHAPES, ShapeError, add_note, as_var_list, check_present, describe,
                                   error_text, keyed_values, numpy_tensor, raised_by_statement, sample_batch_n,
                                   sample_shape_of, unusual_tensor, users_own_error)
from pyro_dgm.utils.latex import NAMES_VERSION
from pyro_dgm.utils.latex import latex_name as _latex_name
from pyro_dgm.utils.latex import math_escape as _math_escape
from pyro_dgm.utils.latex import prob_text as _prob_text
from pyro_dgm.utils.latex import print_latex as _print_latex
from pyro_dgm.utils.random import STATE as _RNG
from pyro_dgm.utils.random import seeded_draws

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.losses.pdf import LogProb, Prob

__all__ = ["Distribution", "sum_samples"]

ValuesLike = Mapping[str, Any] | Tensor | Sequence[Tensor] | None

#: ``sample()``'s option that ``model()``/``guide()`` (data only) would silently take as an unknown keyword (not the
#: generic names, ``sample_shape``, ``reparam``...: SVI gives a guide the keywords of a user's plain-Pyro model too)
_SAMPLE_OPTIONS = frozenset({"batch_n"})


class _EntryPoint(property):
    """A method that yields to a value of the same name that a user's subclass assigns (a submodule, parameter,
    buffer or plain value).

    ``model`` and ``guide`` are common attribute names in user networks (``self.model = nn.Linear(...)`` as in
    Pixyz's own examples); ``nn.Module`` keeps those out of ``__dict__``, so a plain method would shadow them. A
    property (not a descriptor of its own class), so that ``torch.compile`` traces ``p.model(...)`` as it traces
    any property: Dynamo recursed without end into a Python ``__get__``.
    """

    yields = True  # a parameter or buffer may take the name too (YieldingModule)

    def __init__(self, fn: Any, name: str) -> None:
        fn.__name__ = name

        def get(obj: Any) -> Any:
            value = obj.__dict__.get(name, MISSING)
            if value is MISSING:
                value = users_value(obj, name)
            return fn.__get__(obj, type(obj)) if value is MISSING else value

        def put(obj: Any, value: Any) -> None:  # (nn.Module keeps modules, parameters and buffers itself)
            obj.__dict__[name] = value

        def delete(obj: Any) -> None:
            if obj.__dict__.pop(name, MISSING) is MISSING:
                raise AttributeError(f"{type(obj).__name__} has no attribute {name!r} of its own to delete")

        super().__init__(get, put, delete, fn.__doc__)
        self.fn = self.__wrapped__ = fn  # (inspect.signature of the class's attribute: the method's)
        self.__doc__ = fn.__doc__  # (a property subclass's own docstring would hide it)

    def __set_name__(self, owner: type, name: str) -> None:
        self.fn.__qualname__ = f"{owner.__qualname__}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Read from the class (``Normal.model(self, x=x)`` in a subclass's override): the method itself."""
        return self.fn(*args, **kwargs)


#: id of a tensor that a distribution put in Pyro's param store -> (the tensor, the distribution), both weakly held
_REGISTERED: dict[int, tuple["weakref.ref[Tensor]", "weakref.ref[Distribution]"]] = {}


def _forget(key: int) -> Any:
    return lambda _: _REGISTERED.pop(key, None)


_OWN_SUMS_HINT = ("graph.set_option(..., var) gave some factors their own sum_features or feature_dims, which they "
                  "are summed by (as in Pixyz); give every factor the same options")


def _size_is_one(n: Any) -> bool:
    """Whether the data size ``n`` is 1. Under ``torch.jit.trace`` (Pyro's JIT ELBOs, ``NUTS(jit_compile=True)``)
    a size is a traced tensor: its value at tracing decides, and the trace keeps that decision, as it keeps a Pyro
    program's ``pyro.plate("data", len(x))``, whose ``len`` is an int there (a one-row global draw fed to the next
    level opens no plate). A symbolic size of ``torch.compile`` is not 1 (Dynamo specializes sizes 0 and 1)."""
    if type(n) is int:
        return n == 1
    if isinstance(n, Tensor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(n) == 1
    return False


def _broadcasts(a: Tensor, b: Tensor) -> bool:
    """Whether two shapes broadcast (torch's rule), without building the result."""
    return all(m == n or m == 1 or n == 1 for m, n in zip(reversed(a.shape), reversed(b.shape)))


def _absorbed_batch(lp: Tensor, other: Tensor, factors: Sequence["Distribution"],
                    values: Mapping[str, Any], feature_dims: Sequence[int] | None = None,
                    event_dims: Mapping[str, int] | None = None) -> str | None:
    """If ``lp``, of leading size 1 beside ``other``'s larger one, is the log-density of a value of ``factors``
    whose first dim is larger than 1 (that dim was summed as a feature dim, where ``other`` has it as the batch),
    what to say. So too for an ``lp`` of fewer dims than ``other`` when ``feature_dims`` summed batch dims of the
    value it scores (a Categorical's, Dirichlet's or Multinomial's log-density has no feature dim:
    ``feature_dims=[-1]`` is its batch), which ``event_dims`` (the scoring pass's) tells: broadcast from the right,
    what is left would be added to the wrong elements of ``other``, as when the ``sample_shape`` equals the batch."""
    summed = feature_dims is not None and lp.dim() < other.dim()
    whole = not lp.dim() and other.dim() > 0 and other.shape[0] > 1  # (one number: a user's get_log_prob that summed
    if not summed and not whole and (not lp.dim() or lp.shape[0] != 1 or not other.dim() or other.shape[0] == 1):
        return None  # its batch away, beside a batch of rows)
    for g in factors:
        for v in g.var:
            x = values.get(v)
            if not isinstance(x, Tensor) or not x.dim():
                continue
            if summed and lp.dim():
                e = event_dims.get(v) if event_dims else None
                if e is None or x.dim() - e <= lp.dim():
                    continue  # no batch dim summed (the value's batch dims are lp's)
            elif x.shape[0] <= 1:
                continue
            if summed:
                return (f"feature_dims={list(feature_dims)} summed the log-density of {g.prob_text} over its "
                        f"batch ({v!r} of shape {tuple(x.shape)}: its element-wise log-density has no feature "
                        f"dim), so it would be added, summed over the batch, to every element of the other's; "
                        f"score the factors one by one, or leave feature_dims out")
            why = ("a get_log_prob of its own must return one value per row, not their sum" if whole else
                   "parameters with an extra leading dim, or constants of shape (batch, features) where "
                   "features_shape says the features")
            return (f"{g.prob_text} scored {v!r} of shape {tuple(x.shape)} as one example, summing over its "
                    f"first dim, which the other factors take as the batch ({why})")
    return None


def _hidden_names(d: "Distribution") -> list[str]:
    """The hidden variables that a factor's draw may write besides its own: a flow's prior variable, a mixture's
    component."""
    own = d.__dict__
    while "_dgm_hidden" not in own and "_hidden_var" not in own and isinstance(own.get("_modules", {}).get("p"),
                                                                                Distribution):
        own = own["_modules"]["p"].__dict__  # (a renaming: its distribution's draw writes the hidden name)
    flow_side = own.get("_dgm_hidden")
    return [flow_side] if flow_side is not None else list(own.get("_hidden_var", ()))


def site_builder(d: Any) -> Any:
    """``d``'s builder ``dist(x_dict, batch_n=None, **kwargs)`` of the site distribution: ``d.dist``, or the family's
    own builder where ``d``'s class has a ``dist`` property of its own (Pixyz's kind, an object read after
    ``set_dist``, which the family's builder reads in turn).

    Where ``d.dist`` is pyro_dgm's own property of a family or a renaming (``_dgm_own_dist``), whose object, when
    called, calls the builder: the builder itself, without building that object from Pixyz's record of the last
    call (which makes a class: torch.compile cannot trace that, p461); a renaming's builder calls the wrapped
    distribution's, and so the user's ``set_dist`` of the moment, as Pixyz's KL does (p462)."""
    cls = type(d)
    if getattr(cls, "_dgm_user_dist", False):
        return d._dgm_site_dist
    own = getattr(cls, "_dgm_own_dist", None)
    if own is not None and getattr(cls, "dist", None) is own:
        return d._dgm_site_dist
    return d.dist


def _store_name(d: "Distribution") -> str:
    """The name of ``d``'s networks in Pyro's param store: its ``pyro_name`` (a subclass's own, a class attribute or
    property, too), checked as the setter checks it."""
    default = d._dgm_pyro_name or d.prob_text  # (the setter's, or the formula: as ever)
    if type(d).pyro_name is _PYRO_NAME:  # (no subclass's own: the formula is built once per registration)
        return default
    name = d.pyro_name
    if isinstance(name, str) and name == default:  # (the formula may hold '$$$': a variable's name)
        return name
    if not isinstance(name, str) or not name or "$$$" in name:  # (a subclass's own, which the setter did not check)
        raise TypeError(f"{describe(d)}: pyro_name must be a non-empty string without '$$$' (Pyro's separator of "
                        f"module and parameter names), got {name!r}")
    return name


#: Words of torch's errors where an operation has no kernel for a tensor's layout or kind.
_LAYOUT_WORDS = ("could not run", "multiple dispatch", "layout", "doesn't support", "does not support",
                 "not implemented for")


def _input_text(value: Any) -> str:
    """A network input's shape for an error message (a nested tensor has none: its kind), or its type."""
    if isinstance(value, Tensor):
        return "a nested tensor" if value.is_nested else str(tuple(value.shape))
    return str(type(value))


def has_network(owner: Any) -> bool:
    """Whether a distribution class's ``forward`` is its own network (the base classes' ``forward`` is none: it
    raises, or, for a family, hands back its keyword arguments as Pixyz's does). Given a distribution, the
    ``forward`` its call finds: one set on the instance (``p.forward = ...``) before the class's."""
    try:
        forward = owner.forward
    except Exception:  # noqa: BLE001  (a forward property that reads what __init__ has not set yet: the user's own)
        return True
    return not getattr(forward, "_dgm_no_network", False)


def _get_binding(self: "Distribution") -> Binding:
    """``_dgm_b`` of an instance of a user's class: its binding, made anew first when the class's ``forward`` is
    not the one it was made with (``P.forward = ...`` in a later notebook cell, which Pixyz's call finds). One
    identity check per read; a classmethod's ``forward`` (a new bound method at each lookup) takes the slow path.

    It reads the binding from ``__dict__`` under a key that no property shadows (``_dgm_watched_b``, kept equal to
    ``_dgm_b`` by :func:`_set_binding`): torch 2.11's Dynamo reads ``self.__dict__[name]`` of a module through
    ``getattr(self, name)``, so a property that read its own name there would recurse while tracing."""
    d = self.__dict__
    try:
        b = d["_dgm_watched_b"]
    except KeyError:
        if "_dgm_b" not in d:
            raise AttributeError("_dgm_b") from None
        b = d["_dgm_watched_b"] = d["_dgm_b"]  # (an instance pickled before the second key existed)
    seen = d.get("_dgm_class_forward")
    if seen is None or seen.fn is not type(self).forward:
        b = _class_forward_moved(self, seen)
    return b


def _set_binding(self: "Distribution", b: Binding) -> None:
    """Store a binding with the class's ``forward`` it was made with; the first one of an instance that had a
    ``forward`` set on it before ``super().__init__()`` is made anew for that ``forward``."""
    d = self.__dict__
    first = "_dgm_b" not in d
    d["_dgm_b"] = d["_dgm_watched_b"] = b
    d["_dgm_class_forward"] = BoundForward(type(self).forward)
    if first and "forward" in d:
        self._dgm_forward_set()


def _class_forward_moved(self: "Distribution", seen: BoundForward | None) -> Binding:
    """The binding after the class's ``forward`` was replaced (or, after unpickling, is unknown). A binding to a
    network that works stays: the new network gets the inputs by name (``effects.forward_replaced``); one without
    a network, or one that failed, is made anew (``P.forward = ...`` on a class built without one)."""
    d = self.__dict__
    now = type(self).forward
    before = None if seen is None else seen.fn
    if before is None or getattr(now, "__func__", now) is not getattr(before, "__func__", before):
        d["_dgm_class_forward"] = BoundForward(now)
        works = (d.get("_dgm_has_network", True) and not _unusable(d)
                 and "_dgm_draw_with" not in d)  # (a Deterministic's failed binding shadows its draw)
        # (one set on the instance is found first: the class's is not called)
        if "forward" not in d and not (works and has_network(type(self))):
            self._dgm_forward_set()
    return d["_dgm_watched_b"]


#: ``_dgm_b`` of a user's class (see :meth:`Distribution.__init_subclass__`): pyro_dgm's own classes keep it as a
#: plain attribute, their ``forward`` being nobody's to replace.
_WATCHED_BINDING = property(_get_binding, _set_binding)

_INSTANCE_METHODS = overrides.INSTANCE_METHODS  # (set on one distribution, they route its hooks)


def _unusable(d: Mapping[str, Any]) -> bool:
    """Whether a family's binding failed (its error shadows the parameters: see ``family._dgm_set_unusable``)."""
    return any(getattr(d.get(slot), "_dgm_unusable", False) for slot in ("_dgm_params", "_dgm_inner_params"))


def sum_samples(x: Tensor, dims: Sequence[int] | None = None) -> Tensor:
    """Sum ``x`` over ``dims`` (Pixyz's default: every dim but the first, the batch dim).

    Examples
    --------
    >>> sum_samples(torch.ones(2, 3, 4)).tolist()
    [12.0, 12.0]
    """
    if dims is None:
        dims = list(range(1, x.dim()))
    return x.sum(dim=list(dims)) if len(dims) else x


class _LastPositional(threading.local):
    """The values of this thread's last model/guide call with several positional values, and their names."""

    call: "tuple[str, list[tuple[Any, str]]] | None" = None


_LAST_POSITIONAL = _LastPositional()


def _check_positional_order(owner: Any, role: str, data: Mapping[str, Any]) -> None:
    """Refuse positional values that a model and its guide (``SVI`` passes them the same ``*args``) would read under
    each other's names: a joint's model takes them in the order of its ``pyro_arg_names``, a guide in the order of
    its inputs, and the two need not agree. The last such call's values are kept (alive, so that ``is`` compares
    them) until the next one; calls over other variables never conflict."""
    last = _LAST_POSITIONAL.call
    mine = [(v, k) for k, v in data.items()]
    _LAST_POSITIONAL.call = (f"{describe(owner)}'s {role}", mine)
    if last is None:
        return
    names = {k for _, k in mine}
    for value, name in mine:
        for other, other_name in last[1]:  # a swap: the value under another of this call's names
            if other is value and other_name != name and other_name in names and sum(v is value for v, _ in mine) == 1:
                _LAST_POSITIONAL.call = None
                raise ValueError(f"{describe(owner)}: {role}() reads a positional value as {name!r} that {last[0]} "
                                 f"read as {other_name!r} (positional values follow each one's own order: "
                                 f"{[k for _, k in mine]} here, {[k for _, k in last[1]]} there); pass the data by "
                                 f"name, e.g. svi.step({', '.join(f'{k}={k}' for _, k in mine)})")


def _only_in_last_error(ref: Any) -> bool:
    """Whether the object of the weak reference ``ref`` is kept alive only by the frames of the last uncaught
    error's traceback (``sys.last_traceback``, ``sys.last_exc``), which the Python prompt and IPython keep for the
    debugger: a notebook cell that raised and is run again rebuilds its distributions while the old ones live on
    there. A search up the referrers (``gc.get_referrers``, on this rare path only), in which every reference must
    be accounted for: one that no tracked object holds (a running frame's local, an extension's), a module, a
    running frame, or a search too long, and the object counts as live."""
    import gc
    import sys
    import types

    errors, frames, tbs = [], set(), []
    exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    while isinstance(exc, BaseException) and not any(exc is e for e in errors):
        errors.append(exc)
        tbs.append(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    tbs.append(getattr(sys, "last_traceback", None))
    for tb in tbs:
        while tb is not None:
            f = tb.tb_frame
            while f is not None and id(f) not in frames:
                frames.add(id(f))
                f = f.f_back
            tb = tb.tb_next
    f = sys._getframe()
    while f is not None:  # a frame of the failed call that still runs (the caller of a try) is live
        frames.discard(id(f))
        f = f.f_back
    del f, tbs, errors, exc
    pending = [ref()]
    if not frames or pending[0] is None:
        return False
    seen = {id(pending[0])}
    while pending:
        o = pending.pop()
        held = 0
        for r in gc.get_referrers(o):
            if r is pending:
                continue
            held += _references(r, o)
            if id(r) in seen:
                continue
            if isinstance(r, types.FrameType):
                if id(r) in frames:
                    continue  # held by the failed call's frames
                return False
            if isinstance(r, types.ModuleType) or len(seen) > 5000:
                return False
            seen.add(id(r))
            pending.append(r)
        r = None
        if sys.getrefcount(o) - 2 > held:  # (o here, and getrefcount's argument)
            return False
        del o
    return True


class _VarList(list):
    """A distribution's ``_var`` or ``_cond_var``: a list that tells its distributions when a subclass changes it in
    place (``self._cond_var.append("y")``; Pixyz reads the list at every call), as an assignment does
    (:meth:`Distribution._dgm_set_vars`). A deep copy or a pickle of it is a plain list; a shallow copy of the
    distribution shares it, as Pixyz's does, and both are told (:meth:`Distribution.__setstate__`)."""

    __slots__ = ("_owners", "_attr")

    def __init__(self, names: Iterable[str], owner: Any, attr: str) -> None:
        super().__init__(names)
        self._owners, self._attr = [weakref.ref(owner)], attr

    def _owned_by(self, obj: Any) -> bool:
        return any(ref() is obj for ref in self._owners)

    def _share(self, owner: Any) -> None:
        self._owners = [ref for ref in self._owners if ref() is not None] + [weakref.ref(owner)]

    def _changed(self) -> None:
        for ref in list(self._owners):
            owner = ref()
            if owner is not None and owner.__dict__.get(self._attr) is self:
                owner._dgm_set_vars(self._attr, list(self), self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return list, (list(self),)

    def __iadd__(self, other: Any) -> "_VarList":
        super().__iadd__(other)
        self._changed()
        return self


class _FactorKeyed(list):
    """The graph's options of a copied or pickled distribution: ``(factor, options)`` pairs (see
    ``Distribution.__getstate__``)."""


def _mutator(name: str) -> Any:
    base = getattr(list, name)

    def method(self: _VarList, *args: Any) -> Any:
        out = base(self, *args)
        self._changed()
        return out

    method.__name__ = name
    return method


for _name in ("append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse", "__setitem__",
              "__delitem__"):
    setattr(_VarList, _name, _mutator(_name))


def _references(container: Any, obj: Any) -> int:
    """How many references ``container`` holds to ``obj`` (a frame's locals, a dict's values...). A function of its
    own: a generator expression over ``obj`` in the caller would hold the caller's ``obj`` in a cell."""
    import gc

    n = 0
    for x in gc.get_referents(container):
        if x is obj:
            n += 1
    return n


class _SelfOrder:
    """An atomic distribution's order of factors, ``(self,)``, made when read: kept in the instance it would be a
    reference cycle, and a distribution would outlive its last reference until the garbage collector's next full
    pass (a sweep building models anew in one process would pay a full ``gc.collect()`` per model in
    ``pyro.module``'s renaming, see ``_dgm_take_name``). A product's own order, set on the instance, comes first."""

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        return self if obj is None else (obj,)


def _binary_integers(fn: Any) -> bool:
    """Whether a site's distribution refuses integer values other than 0 and 1 (a Bernoulli scored by
    cross-entropy: :func:`~pyro_dgm.distributions.closed_forms.check_binary`)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return getattr(fn, "_dgm_binary_integers", False)


def _one_hot_support(fn: Any) -> bool:
    """Whether a site's distribution scores one-hot vectors or points of the simplex (a one-hot or relaxed
    categorical), whose integer values may be class indices."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    try:
        return fn.support in (constraints.one_hot, constraints.simplex)
    except NotImplementedError:  # (a user's Pyro distribution that defines no support: torch's default raises)
        return False


class Distribution(YieldingModule):
    r"""Base class of every pyro_dgm distribution: named variables, a formula, products, and Pyro model/guide.

    Parameters
    ----------
    var : list of str
        The variables this distribution generates, e.g. ``["z"]``.
    cond_var : list of str, optional
        The variables it is conditioned on, e.g. ``["x"]`` for :math:`q(z|x)`.
    name : str, default ``"p"``
        The name printed in formulas (LaTeX allowed: ``"p_{prior}"``).
    features_shape : tuple of int, optional
        The shape of one sample without batch dims.
    atomic : bool, default True
        Pixyz's marker: ``True`` for a distribution that is one factor (every family, and a user's subclass that
        draws and scores by itself), ``False`` for one made of others. Accepted for Pixyz's code; what a distribution
        is follows from its class here (:attr:`factors`).

    Notes
    -----
    Subclasses are either *atomic* (they implement ``_dgm_draw_with``/``_dgm_score_with`` over a :class:`Binding`) or
    combinations of other distributions (joint, marginal). Shapes follow Pixyz: the first dim of a value given from
    outside is its batch dim, the feature dims (those of the parameters after their batch dim) are summed by
    :meth:`get_log_prob`, and extra leading dims (a ``sample_shape``) stay batch dims. A factor without inputs whose
    constants are scalars takes every dim of a scored value after the first as a feature dim.

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"], name="p")
    >>> print(p.prob_text, p.distribution_name)
    p(x) Normal
    """

    #: Whether a memoizing scope may reuse this distribution's network outputs; set it to ``False`` on a
    #: distribution whose ``forward`` is random (dropout), so that each use runs it.
    memoizable: bool = True
    #: Whether a memoizing scope reuses the outputs only when ``forward`` drew no random numbers (a
    #: :class:`~pyro_dgm.distributions.Deterministic`'s default: Pixyz runs its forward on every use).
    memoize_unless_random: bool = False
    _dgm_pyro_name: str | None = None  # see pyro_name
    _dgm_pyro_infer: dict[str, Any] | None = None  # see pyro_infer
    _dgm_order = _SelfOrder()  # the factors in the order they are drawn (a product's is its own)
    #: Buffers that ``print`` does not list (those Pixyz keeps as plain attributes, e.g. a PoE's weights).
    _dgm_repr_hidden_buffers: tuple[str, ...] = ()
    #: whether the class's ``sample`` / ``get_log_prob`` / ``set_dist`` / ``get_params`` are the user's, which
    #: products, losses and the family's own draws then call (:mod:`.overrides`)
    _dgm_user_sample: bool = False
    _dgm_user_log_prob: bool = False
    _dgm_user_set_dist: bool = False
    _dgm_user_get_params: bool = False
    #: whether the class's ``dist`` property is the user's (Pixyz's draws, scores and moments read ``self.dist``)
    _dgm_user_dist: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        type.__setattr__(cls, "_dgm_dist_set_up", True)  # (see set_up_subclasses)
        overrides.install(cls)
        if not cls.__module__.startswith("pyro_dgm."):  # a user's class, whose forward a later cell may replace
            cls._dgm_b = _WATCHED_BINDING

    def __init__(self, var: Sequence[str], cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), atomic: bool = True) -> None:
        set_up_subclasses(self, Distribution, "_dgm_dist_set_up")
        super().__init__()
        if not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a string, got {name!r}")
        overrides.current(type(self))  # (a method a later cell set on the class: a new instance uses it)
        self._dgm_installed_at = type(self).__dict__.get("_dgm_installed")  # (later changes: _dgm_class_changed)
        owner = f"{type(self).__name__} {name}"
        self._var = _VarList(as_var_list(var, owner, "var"), self, "_var")
        if not self._var:
            raise ArgumentError(f"{owner}: var must name at least one variable, e.g. var=['x']")
        self._cond_var = _VarList(as_var_list(cond_var, owner, "cond_var"), self, "_cond_var")
        both = [v for v in self._var if v in self._cond_var]
        if both:
            raise ValueError(f"{owner}: {both[0]!r} is both in var {self._var} and in cond_var {self._cond_var}; "
                             "a distribution cannot be conditioned on the variable it generates")
        self._name = _latex_name(name)  # Pixyz typesets the name once, at construction (p1 -> p_{1})
        self._dgm_input_var = list(self._cond_var)
        self._dgm_cond_seen = tuple(self._cond_var)  # (what input_var followed: see _dgm_set_vars)
        try:
            self._features_shape = torch.Size(features_shape)
        except TypeError:
            raise TypeError(f"{owner}: features_shape must be a list or tuple of ints (e.g. [2]), got "
                            f"{features_shape!r}") from None
        if self._features_shape and min(self._features_shape) < 0:
            raise OutOfRangeError(f"{owner}: features_shape must hold non-negative sizes (the shape of one draw's "
                                  f"features, e.g. [2]), got {list(self._features_shape)}")
        self._dgm_pyro_name: str | None = None
        self._dgm_pyro_infer: dict[str, Any] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_var", "_cond_var") and "_dgm_cond_seen" in self.__dict__:  # (a built distribution's: its own
            # list again, after += changed it in place, is kept, so that a shallow copy still shares it; another
            # distribution's list is shared, as the one list object two Pixyz distributions then hold; one set
            # before the base __init__ is set again there, as Pixyz's __init__ does)
            shared = isinstance(value, _VarList) and value._attr == name
            if shared and not value._owned_by(self):
                value._share(self)
            self._dgm_set_vars(name, value, value if shared else None)
        elif name == "forward":
            super().__setattr__(name, value)
            self._dgm_forward_set()
        elif name == "distribution_torch_class":
            super().__setattr__(name, value)
            self._dgm_torch_class_set()
        elif name in _INSTANCE_METHODS:  # (q.get_log_prob = fn: Pixyz calls the instance's; see overrides)
            super().__setattr__(name, value)
            overrides.instance_method_set(self, name)
        else:
            super().__setattr__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        """nn.Module's state, with the options set on the graph keyed by the factors themselves (they are kept by
        the factors' ids, which a copy or a pickle does not keep: :meth:`__setstate__` keys them by the copies')."""
        state = super().__getstate__()
        opts = state.get("_dgm_dg_options")
        if opts:
            factors = (*self._dgm_sampling_order, *getattr(self, "_dgm_option_factors", ()))
            by_id = {id(f): f for f in factors}
            by_id[id(self)] = "self"  # (a renamed single distribution's own: the copy's is the copy)
            state = dict(state)
            state["_dgm_dg_options"] = _FactorKeyed([(by_id[k], v) for k, v in opts.items() if k in by_id])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        set_up_subclasses(self, Distribution, "_dgm_dist_set_up")  # (unpickled in a new process: no __init__ ran)
        opts = state.get("_dgm_dg_options")
        if isinstance(opts, _FactorKeyed):
            state = dict(state)
            state["_dgm_dg_options"] = {id(self if isinstance(f, str) else f): v for f, v in opts} or None
        super().__setstate__(state)
        overrides.copied(self)  # (methods set on the instance: their routes are the copy's own)
        d = self.__dict__
        for name in ("_var", "_cond_var"):  # lists that tell the copy of a change in place: a pickle's or a deep
            names = d.get(name)  # copy's are plain lists, made its own; a shallow copy shares the original's (a
            if isinstance(names, _VarList):  # change through either is both's, as under Pixyz)
                if not names._owned_by(self):
                    names._share(self)
            elif isinstance(names, list):
                d[name] = _VarList(names, self, name)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name == "forward":  # (del p.forward: the class's forward again, as in Pixyz)
            self._dgm_forward_set()
        elif name in _INSTANCE_METHODS:
            overrides.instance_method_set(self, name)
        elif name == "distribution_torch_class":  # (the class's again)
            self._dgm_class_changed()

    def _dgm_torch_class_set(self) -> None:
        """``distribution_torch_class`` assigned to the instance: a family reads it from now on (``family.py``)."""

    def _dgm_class_changed(self) -> None:
        """The methods (or ``distribution_torch_class``) of this distribution's class changed since it was built,
        or since the last call (``overrides.current_of``): the routes of methods set on the instance anew."""
        self._dgm_installed_at = type(self).__dict__.get("_dgm_installed")
        if "_dgm_instance_saved" in self.__dict__:
            overrides.instance_method_set(self, "sample")

    def _dgm_forward_set(self) -> None:
        """A ``forward`` set on this instance (``p.forward = ...``, in a later notebook cell) or deleted from it:
        Pixyz's call finds the instance's before the class's, so its arguments are bound to it (a family without
        a network gets one: its parameters come from that ``forward``, then from the ``cond_var`` named and the
        constants, as in Pixyz). So too for a user's class whose ``forward`` a later cell replaced (``P.forward =
        ...``: see :func:`_get_binding`). Once per assignment, never per call."""
        d = self.__dict__
        if "_dgm_b" not in d:  # (set in a subclass's __init__ before the binding is made: that binds it)
            return
        family = "_dgm_has_network" in d
        net = False
        if family:
            net = d["_dgm_has_network"] = has_network(self)
            if net and d["_dgm_const_only"]:  # (constants only: their cached distribution skips forward)
                d["_dgm_const_only"], d["_dgm_const_only_was"] = False, self._dgm_const_names
        self._dgm_rebind()
        was = d.pop("_dgm_const_only_was", None) if family and not net else None
        if was is not None and was == self._dgm_const_names and not _unusable(d):
            d["_dgm_const_only"] = True  # (the forward deleted again: the constants' cached distribution)

    def _dgm_set_vars(self, name: str, value: Any, same: "_VarList | None" = None) -> None:
        """A subclass that sets ``self._cond_var`` (or ``self._var``) after ``__init__``, as Pixyz programs do to
        add a conditioning variable: ``input_var`` follows ``cond_var`` (Pixyz's reads it) where it did before, and
        ``forward``'s arguments are bound again (:meth:`_dgm_rebind`). ``same``: the list changed in place, kept
        (a shallow copy may share it)."""
        names = as_var_list(value, describe(self), name[1:])
        new = same if same is not None else _VarList(names, self, name)
        d = self.__dict__
        # (the list itself may be changed already: self._cond_var += [...] extends it, then sets it)
        tracks = name == "_cond_var" and tuple(d["_dgm_input_var"]) == d.get("_dgm_cond_seen", ())
        d[name] = new
        if name == "_cond_var":
            d["_dgm_cond_seen"] = tuple(new)
        if tracks:
            d["_dgm_input_var"] = list(new)
        NAMES_VERSION[0] += 1  # formulas printed before are out of date
        self._dgm_rebind()

    def _dgm_rebind(self) -> None:
        """Bind ``forward``'s arguments again after the variables changed (the families and ``Deterministic``
        hold a binding made at construction)."""

    # ------------------------------------------------------------------ names and text
    @property
    def var(self) -> list[str]:
        """The variables this distribution generates: an atomic distribution's own list (``_var``, as Pixyz's),
        a new list for a product, renaming or marginal (Pixyz's are built from its graph at each read)."""
        return self._var if self._atomic else list(self._var)

    @property
    def cond_var(self) -> list[str]:
        """The variables this distribution is conditioned on (as :attr:`var`: a new list where not atomic)."""
        return self._cond_var if self._atomic else list(self._cond_var)

    @property
    def input_var(self) -> list[str]:
        """The variables a call needs as input (normally ``cond_var``; as :attr:`var`: a new list where not
        atomic)."""
        return self._dgm_input_var if self._atomic else list(self._dgm_input_var)

    @property
    def _dgm_required_input_var(self) -> list[str]:
        """The input variables a call cannot do without (all of ``input_var`` but for distributions such as a
        product of experts, whose experts may be missing)."""
        return self._dgm_input_var

    @property
    def name(self) -> str:
        """The name printed in formulas; settable."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._dgm_rename_text(name)

    def _dgm_rename_text(self, name: str) -> None:
        """Set the name printed in formulas (``name``'s setter; ``graph.name``'s for a product or marginal)."""
        if not isinstance(name, str):
            raise ArgumentError(f"{describe(self)}: name must be a string, got {name!r}")
        self._name = name  # (as given: Pixyz typesets a name at construction only)
        self.__dict__.pop("_dgm_graph_name", None)  # Pixyz's setter renames a single distribution's graph too
        NAMES_VERSION[0] += 1  # formulas printed before (cached term names of losses) are out of date

    @property
    def pyro_name(self) -> str:
        """The name under which Pyro's param store holds this distribution's networks (``pyro.module``'s name:
        parameters are ``<pyro_name>$$$<parameter>``); settable.

        By default it is the formula, e.g. ``p(x|z)``: the same in every process and after rebuilding a model, so a
        param store saved in one process loads into a fresh one by name. A renaming (``replace_var``) shares the
        networks of the distribution it renames, and so its ``pyro_name``; a marginal's networks are its joint's
        factors', each under its own name (setting a product's raises, naming its factors). Two live distributions
        whose networks are in the param store under the same name are refused at registration (give one its own
        name); a name held by a distribution that no longer exists passes to the new one.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
        >>> q.pyro_name
        'q(z|x)'
        >>> q.pyro_name = "encoder"
        >>> q.pyro_name
        'encoder'
        """
        return self._dgm_pyro_name or self.prob_text

    @pyro_name.setter
    def pyro_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or "$$$" in name:
            raise TypeError(f"{describe(self)}: pyro_name must be a non-empty string without '$$$' (Pyro's "
                            f"separator of module and parameter names), got {name!r}")
        if self._dgm_factors != (self,):
            raise TypeError(f"{describe(self)}: a product's networks are in Pyro's param store under its factors' "
                            f"names; set pyro_name on the factor whose networks to name (of "
                            f"{', '.join(f.prob_text for f in self._dgm_factors)})")
        self._dgm_pyro_name = name

    @property
    def pyro_infer(self) -> dict[str, Any]:
        """Pyro's ``infer`` options of this distribution's sites (e.g. ``{"enumerate": "parallel"}`` to enumerate a
        discrete variable under ``TraceEnum_ELBO``); settable, ``{}`` by default. A family takes them as the
        ``infer=`` keyword too.

        Examples
        --------
        >>> from pyro_dgm.distributions import Categorical
        >>> y = Categorical(probs=torch.ones(3) / 3, var=["y"], infer={"enumerate": "parallel"})
        >>> y.pyro_infer
        {'enumerate': 'parallel'}
        """
        return dict(self._dgm_pyro_infer or {})

    @pyro_infer.setter
    def pyro_infer(self, infer: Mapping[str, Any] | None) -> None:
        if infer is not None and not isinstance(infer, Mapping):
            raise TypeError(f"{describe(self)}: pyro_infer must be a dict of Pyro's infer options, e.g. "
                            f"{{'enumerate': 'parallel'}}, got {type(infer).__name__}")
        self._dgm_pyro_infer = dict(infer) if infer else None

    @property
    def features_shape(self) -> torch.Size:
        """The shape of one sample without batch dims (``torch.Size([])`` when a network decides it)."""
        return self._features_shape

    @property
    def distribution_name(self) -> str:
        """The family's name, e.g. ``"Normal"`` (Pixyz's default: ``""``, which subclasses override)."""
        return ""

    @property
    def has_reparam(self) -> bool:
        """Whether samples can be reparameterized (gradients flow through them)."""
        factors = self._dgm_factors
        return factors != (self,) and all(f.has_reparam for f in factors)

    @property
    def _dgm_factors(self) -> tuple["Distribution", ...]:
        """The atomic factors of this distribution, in the order they were multiplied."""
        return (self,)

    @property
    def _dgm_pixyz_atoms(self) -> tuple["Distribution", ...]:
        """The distributions Pixyz's graph of this one holds as modules (the un-renamed atomic distributions): a
        product, renaming or marginal registers them as ``_graph.<i>``, so its state dict has Pixyz's keys."""
        graph = self._modules.get("_graph")
        return tuple(graph) if graph is not None else (self,)

    @property
    def _dgm_sampling_order(self) -> tuple["Distribution", ...]:
        """The atomic factors in the order they are drawn and scored (a topological order of the product's graph,
        Pixyz's: see ``docs/design.md``)."""
        return self._dgm_order

    @property
    def factor_options(self) -> dict[int, dict[str, Any]]:
        """The options set on this distribution's graph for its factors (``dist.graph.set_option(opts, var)``,
        Pixyz's): ``id(factor) -> options`` (a copy; assign to set them). The ancestral loop reads them at each call."""
        return dict(self.__dict__.get("_dgm_dg_options") or {})

    @factor_options.setter
    def factor_options(self, options: Mapping[int, Mapping[str, Any]] | None) -> None:
        self.__dict__["_dgm_dg_options"] = {k: dict(v) for k, v in options.items()} if options else None

    def _dgm_live_option(self, key: int, option_dict: dict[str, Any] | None = None) -> dict[str, Any]:
        """The options dict of factor ``key`` itself (``graph.set_option(opts, var)`` stores ``opts``, and a factor's
        ``option`` is that dict): changed in place, it changes the calls that follow, as Pixyz's graph keeps the
        dict it is given. ``option_dict`` replaces it; without one an empty dict is stored if there is none."""
        d = self.__dict__
        opts = d.get("_dgm_dg_options")
        if opts is None:
            opts = d["_dgm_dg_options"] = {}
        if option_dict is not None:
            opts[key] = option_dict
        return opts.setdefault(key, {})

    def _dgm_live_global_option(self, option_dict: dict[str, Any] | None = None) -> dict[str, Any]:
        """The global options dict itself (``graph.global_option``), stored as given (see :meth:`_dgm_live_option`)."""
        d = self.__dict__
        if option_dict is not None or d.get("_dgm_dg_global_option") is None:
            d["_dgm_dg_global_option"] = option_dict if option_dict is not None else {}
        return d["_dgm_dg_global_option"]

    #: Whether this distribution's own calls read its global options, as Pixyz's products, renamings and marginals
    #: do (their calls run through Pixyz's graph); a single distribution's own calls ignore them in Pixyz, and they
    #: reach it only as a factor of a product.
    _dgm_graph_call: bool = False

    @property
    def global_options(self) -> dict[str, Any]:
        """The options every call uses for the keywords it does not give (``dist.graph.set_option(opts)``); a
        product, renaming or marginal keeps its operands' (Pixyz's graphs do)."""
        return dict(self.__dict__.get("_dgm_dg_global_option") or {})

    @global_options.setter
    def global_options(self, options: Mapping[str, Any] | None) -> None:
        self.__dict__["_dgm_dg_global_option"] = dict(options) if options else None

    @property
    def prob_text(self) -> str:
        """The formula's left side, e.g. ``p(x|z)``."""
        return _prob_text(self._name, tuple(self._var), tuple(self._cond_var))

    @property
    def prob_factorized_text(self) -> str:
        """The formula's right side, e.g. ``p(x|z)p_{prior}(z)`` for a joint."""
        if users_own(type(self), "name"):  # (Pixyz's factor reads the name property, its left side the given name)
            return self._dgm_factor_text
        return self.prob_text

    @property
    def _dgm_factor_text(self) -> str:
        """This distribution's formula as a factor of a product (Pixyz's ``Factor.prob_text``: from the name and the
        variables, also where a subclass prints its own ``prob_text`` or ``name``)."""
        if users_own(type(self), "prob_text") or users_own(type(self), "name"):
            return _prob_text(self.name, self._var, self._cond_var)
        return self.prob_text

    @property
    def prob_joint_factorized_and_text(self) -> str:
        """``p(x,z) = p(x|z)p(z)`` for a joint, ``p(x|z)`` for an atomic distribution."""
        if self.prob_factorized_text == self.prob_text:
            return self.prob_text
        return f"{self.prob_text} = {self.prob_factorized_text}"

    @property
    def graph(self) -> nx.DiGraph:
        """The dependency graph (a :class:`~pyro_dgm.distributions.graph.DistGraph`): one node per variable, an
        edge ``c -> v`` labelled with the factor of ``v``, and Pixyz's ``DistGraph`` methods (``name``,
        ``set_option``, ``visible_graph``, ``print``)."""
        from pyro_dgm.distributions.graph import build_graph

        return build_graph(self._dgm_factors, self)

    def extra_repr(self) -> str:
        lines = [f"name={self.name}, distribution_name={self.distribution_name},",
                 f"var={self._var}, cond_var={self._cond_var}, input_var={self._dgm_input_var}, "
                 f"features_shape={self.features_shape}"]
        hidden = self._dgm_repr_hidden_buffers
        lines += [f"({k}): {v.shape}" for k, v in self._buffers.items() if v is not None and k not in hidden]
        return "\n".join(lines)

    def _dgm_network_text(self) -> str:
        return repr(self)

    def __str__(self) -> str:
        return (f"Distribution:\n  {self.prob_joint_factorized_and_text}\nNetwork architecture:\n"
                f"{textwrap.indent(self._dgm_network_text(), '  ')}")

    def _dgm_latex_text(self) -> str:
        return self.prob_joint_factorized_and_text

    def _repr_latex_(self) -> str:
        return f"$${_math_escape(self._dgm_latex_text())}$$"

    def print_latex(self) -> Any:
        """Show the formula as LaTeX (rendered in a notebook); see :func:`pyro_dgm.utils.print_latex`."""
        return _print_latex(self)

    # ------------------------------------------------------------------ Pixyz's protected helpers
    #: Pixyz's flag: one distribution (``False`` for a product, a renaming or a marginal).
    _atomic: bool = True

    def _get_input_dict(self, input: ValuesLike, var: Sequence[str] | None = None) -> dict[str, Any]:
        """Pixyz's protected helper, which subclasses call in their ``sample``: the values of ``var`` (default:
        ``input_var``) as a dict; a tensor stands for the first variable, a list for them in order.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"])
        >>> sorted(q._get_input_dict({"x": torch.zeros(1), "y": torch.ones(1)}))
        ['x']
        """
        var = self.input_var if var is None else list(var)
        if type(input) is dict:
            missing = [v for v in var if v not in input]
            if missing:
                raise ValueError(f"{describe(self)}: the input has no {missing[0]!r}; expected {var}, got "
                                 f"{sorted(input)}")
            return {v: input[v] for v in var}
        if type(input) is list:
            return dict(zip(var, input))
        if isinstance(input, Tensor) and var:
            return {var[0]: input}
        raise ValueError(f"{describe(self)}: inputs for {var} must be a dict, a tensor or a list, got "
                         f"{type(input).__name__}")

    def _check_features_shape(self, features: Tensor) -> Tensor:
        """Pixyz's protected helper: a constant parameter checked against ``features_shape`` (a scalar is expanded
        to it; an unset ``features_shape`` becomes the parameter's shape), with a batch dim of 1 in front."""
        if features.dim() == 0:
            features = features.expand(self.features_shape)
        if not self.features_shape:
            self._features_shape = features.shape
        if features.shape != self.features_shape:
            raise ValueError(f"{describe(self)}: a parameter of shape {tuple(features.shape)} does not match "
                             f"features_shape {tuple(self.features_shape)}")
        return features.unsqueeze(0)

    # ------------------------------------------------------------------ inputs
    def _dgm_input_dict(self, x: ValuesLike, needed: Sequence[str] | None = None) -> dict[str, Any]:
        """A fresh dict of the given values (a tensor or list maps onto ``input_var`` in order); checks ``needed``."""
        needed = self._dgm_required_input_var if needed is None else needed
        if type(x) is dict:
            values = dict(x)
        elif x is None:
            values = {}
        elif isinstance(x, Mapping):
            values = dict(x)
        elif (keyed := keyed_values(x)) is not None:  # a dict-like object that is no Mapping (Pixyz reads its keys)
            values = keyed
        elif isinstance(x, Tensor):
            if len(self._dgm_input_var) != 1:
                takes = f"input_var is {self._dgm_input_var}" if self._dgm_input_var else "it takes no input variables"
                raise ValueError(f"{describe(self)}: a bare tensor can stand only for a single input variable, "
                                 f"but {takes}; pass a dict")
            values = {self._dgm_input_var[0]: x}
        elif isinstance(x, (list, tuple)):
            if len(x) != len(self._dgm_input_var):
                raise ValueError(f"{describe(self)}: got {len(x)} values for input_var {self._dgm_input_var}; "
                                 "pass one per variable, in that order, or a dict")
            values = dict(zip(self._dgm_input_var, x))
        else:
            raise NotATensorError(f"{describe(self)}: inputs must be a dict, a tensor or a list of tensors, "
                                  f"got {type(x).__name__}")  # (also Pixyz's ValueError)
        for k in needed:
            if k not in values:
                check_present(self, values, needed)
        for k, v in values.items():  # (a numpy array of a variable; a numpy scalar, like a Python number, and an
            if not isinstance(v, Tensor) and isinstance(v, np.ndarray) and k in self._dgm_known_names:  # extra
                values[k] = self._dgm_from_numpy(v, k)  # key's value are handed on as given, as Pixyz does)
        return values

    def _dgm_from_numpy(self, v: Any, name: str | None = None) -> Tensor:
        """A numpy array given as the value of ``name``: ``torch.as_tensor`` (its dtype kept, as ``torch.from_numpy``)
        on the device of this distribution's parameters (docs/design.md, "dtypes and containers"); a view torch
        cannot share (negative strides, ``a[::-1]``) is copied; a dtype torch has not (strings, objects) raises a
        :class:`NotATensorError` naming the variable (a TypeError, and Pixyz's ValueError for a numpy value)."""
        dev = next((t.device for t in self.buffers()), None) or next((t.device for t in self.parameters()), None)
        return numpy_tensor(self, name, v, dev)

    def _dgm_numbers_tensor(self, x: Any) -> Tensor | None:
        """A Python number or a (nested) list of numbers as a tensor of this distribution's float dtype and device
        (the default dtype without parameters), or ``None`` for anything else."""
        if not isinstance(x, (int, float, list, tuple)):
            return None
        ref = next((t for t in (*self.buffers(), *self.parameters()) if t.is_floating_point()), None)
        try:
            return torch.as_tensor(x, dtype=torch.get_default_dtype() if ref is None else ref.dtype,
                                   device=None if ref is None else ref.device)
        except (TypeError, ValueError, RuntimeError):  # a list of strings, of tensors of several elements...
            return None

    def _dgm_value_tensor(self, name: str, x: Any) -> Tensor:
        """A scored value that is not a tensor: a numpy array becomes one (``torch.as_tensor``, dtype kept, on the
        device of the parameters); a Python number or a (nested) list of numbers too, in the parameters' float dtype
        (torch's ``Gamma.log_prob`` and Pixyz's Bernoulli take them so); anything else raises
        :class:`NotATensorError` (a ``TypeError``, and the ``ValueError`` torch's validation raises under Pixyz)."""
        if isinstance(x, np.ndarray):
            return self._dgm_from_numpy(x, name)
        if isinstance(x, np.generic):  # a numpy scalar, scored as the Python number it holds (as Pixyz does)
            x = x.item()
        out = self._dgm_numbers_tensor(x)
        if out is not None:
            return out
        raise NotATensorError(f"{describe(self)}: the value of {name!r} must be a tensor (or a numpy array, a "
                              f"number or a list of numbers), got {type(x).__name__}")

    # ------------------------------------------------------------------ the generic ancestral loop
    def sample(self, x_dict: ValuesLike = None, batch_n: int | None = None,
               sample_shape: Iterable[int] = torch.Size(), return_all: bool = True, reparam: bool = False,
               sample_mean: bool = False, **kwargs: Any) -> dict[str, Tensor]:
        """Draw the variables of this distribution given its inputs.

        Parameters
        ----------
        x_dict : dict, tensor or list of tensors, optional
            Values of ``input_var``; extra keys pass through to the output.
        batch_n : int, optional
            Batch size for factors without inputs (their parameters have batch size 1).
        sample_shape : tuple of int, optional
            Extra leading dims drawn by the factors whose inputs are all given.
        return_all : bool, default True
            Return the given values too (else only ``var``; for a product, what its pass drew: a flow's or
            mixture's hidden variable too when ``return_hidden`` has its factor return it, as Pixyz's).
        reparam : bool, default False
            Keep the reparameterized samples in the autograd graph (else samples carry no gradient).
        sample_mean : bool, default False
            Take each factor's mean instead of a random draw.
        **kwargs
            Passed on to the networks' ``forward``. The early API reference's ``batch_size`` and ``shape`` (the
            samples' shape, batch dims then features) stand for ``batch_n``/``sample_shape`` where no network takes
            them (see :mod:`pyro_dgm.distributions.early_options`).

        Returns
        -------
        dict
            Values by variable name.

        Raises
        ------
        ValueError
            If an input variable is missing.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2])
        >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
        >>> {k: tuple(v.shape) for k, v in (p * prior).sample(batch_n=3).items()}
        {'z': (3, 2), 'x': (3, 2)}
        """
        if overrides.current_of(self) or overrides.own_method_running(self, "sample"):  # a method a later cell set
            with overrides.entered(self):  # on this class or instance: this is its super() call (see there)
                return Distribution.sample(self, x_dict, batch_n, sample_shape, return_all, reparam, sample_mean,
                                           **kwargs)
        expected = None
        if kwargs and ("batch_size" in kwargs or "shape" in kwargs):  # the early API reference's names (see there)
            batch_n, sample_shape, kwargs, expected = early_sampling_options(self, batch_n, sample_shape, kwargs)
        if batch_n is not None and (type(batch_n) is not int or batch_n < 1):
            batch_n = sample_batch_n(self, batch_n)  # numpy/torch integers, and Pixyz's 0, False, -1, True
        if type(sample_shape) is not torch.Size or (sample_shape and min(sample_shape) < 0):  # (torch.Size() and
            sample_shape = sample_shape_of(self, sample_shape)  # a valid torch.Size pass as they are)
        values = self._dgm_input_dict(x_dict)
        d = self.__dict__
        g_opt, f_opts = d.get("_dgm_dg_global_option"), d.get("_dgm_dg_options")
        if g_opt and self._dgm_graph_call:  # Pixyz: global options reach the factors as keywords the call lacks
            kwargs = {**{k: v for k, v in g_opt.items() if k not in SAMPLING_OPTIONS}, **kwargs}
        ctx = CallState(batch_n, sample_shape, reparam, sample_mean, None, kwargs)
        if f_opts and id(self) in f_opts and not self._dgm_graph_call:  # (Pixyz: options hold in products and
            # renamings, whose calls run through the graph; an atomic one's own calls ignore them)
            f_opts = {k: v for k, v in f_opts.items() if k != id(self)}
        drawn_var = d.get("_dgm_drawn_var")
        if drawn_var is None:  # var and input_var are fixed at construction
            drawn_var = d["_dgm_drawn_var"] = self._dgm_drawn_names()
        drawn, redrawn, dropped = drawn_var
        given = hidden = None
        if redrawn is not None and not redrawn.isdisjoint(values):  # (rare: values given for the product's own
            given = list(values)  # variables; Pixyz's pass starts from the inputs only, and draws those anew)
            for k in given:
                if k in drawn:
                    del values[k]
                elif k in redrawn:  # a flow's or mixture's hidden variable (or a marginalized one): drawn anew
                    hidden = hidden or {}  # where the pass writes it; else the given value is handed back
                    hidden[k] = values.pop(k)
        before = None if return_all or not self._dgm_graph_call else dict(values)
        draw_factors(self._dgm_order, values, ctx, f_opts)  # graph.set_option(..., var) overrides the call's options
        if expected is not None:
            check_early_shape(self, values, expected)
        if return_all:
            if dropped:  # a marginalized variable that is also an input (an EmpiricalDistribution's): Pixyz's graph
                for k in dropped:  # leaves it out, as it leaves out the marginalized variables it draws
                    values.pop(k, None)
            if given is not None:
                if hidden:
                    for k, v in hidden.items():
                        values.setdefault(k, v)
                return self._dgm_given_order(given, values)
            if self._dgm_graph_call and len(values) > len(drawn) + 1:
                return self._dgm_graph_order(values)
            return values
        if before is not None:  # a product: what its pass wrote (a flow's or mixture's hidden variable too, as Pixyz)
            return self._dgm_written(before, values, drawn)
        return {k: v for k, v in values.items() if k in drawn}  # in the order drawn, as Pixyz's; not the inputs

    def _dgm_drawn_names(self) -> tuple[list[str], frozenset[str] | None, list[str]]:
        """The variables :meth:`sample` returns with ``return_all=False``; for a product (renaming, marginal), the
        names its pass writes (those and the marginalized variables), which a given value may hold; and the
        marginalized variables (its own or a factor's) that are inputs, which Pixyz's graph leaves out of what
        ``return_all`` returns. In a product, Pixyz's graph leaves the inputs out, which an EmpiricalDistribution's
        variable is (alone, it returns it)."""
        if not self._dgm_graph_call:
            return self._var, None, []
        inputs = self.input_var
        drawn = [v for v in self._var if v not in inputs]
        hidden = [h for f in self._dgm_order for h in _hidden_names(f) if h not in inputs]
        marginalized = [*self.__dict__.get("_dgm_marginalized", ()),
                        *(m for f in self._dgm_order for m in f.__dict__.get("_dgm_marginalized", ()))]
        return (drawn, frozenset(drawn + [m for m in marginalized if m not in inputs] + hidden),
                [m for m in inputs if m in marginalized])

    def _dgm_written(self, before: Mapping[str, Any], values: Mapping[str, Any], drawn: Sequence[str]
                     ) -> dict[str, Any]:
        """A product's values under ``return_all=False``: those its pass wrote (``before`` holds the values it
        started from), in the order written, less the inputs and the marginalized variables, as Pixyz's graph
        returns them. A flow's or mixture's hidden variable is among them when the factor returns it."""
        left_out = set(self.input_var).union(self.__dict__.get("_dgm_marginalized", ()))
        return {k: v for k, v in values.items()
                if k in drawn or (k not in left_out and (k not in before or before[k] is not v))}

    def _dgm_given_order(self, given: Sequence[str], values: dict[str, Any]) -> dict[str, Any]:
        """Pixyz's order of a product's values (``return_all``) where ``given`` (the keys of the call's values, in
        their order) held some of its variables: the given keys that are not inputs (a variable drawn anew keeps
        its place), the inputs in ``input_var``'s order, then the other draws in the order drawn."""
        inputs = self.input_var
        out = {k: values[k] for k in given if k not in inputs and k in values}
        out.update((k, values[k]) for k in inputs if k in values)
        out.update((k, v) for k, v in values.items() if k not in out)
        return out

    def _dgm_graph_order(self, values: dict[str, Any]) -> dict[str, Any]:
        """Pixyz's order of a product's (renaming's, marginal's) values: the given values that are not inputs, the
        inputs in ``input_var``'s order, then the draws."""
        inputs = self.input_var
        out = {k: v for k, v in values.items() if k not in inputs}
        if len(out) + len(inputs) == len(values) and all(k in values for k in inputs):
            var = self._var
            drawn = {k: out.pop(k) for k in list(out) if k in var}  # (in the order drawn)
            out.update((k, values[k]) for k in inputs)
            out.update(drawn)
            return out
        return values

    def get_log_prob(self, x_dict: ValuesLike, sum_features: bool = True,
                     feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        """The log-density of the values of ``var`` given ``input_var``: the sum over the factors.

        Parameters
        ----------
        x_dict : dict
            Values of ``var`` and ``input_var``.
        sum_features : bool, default True
            Sum over every dim but the first (Pixyz's convention: one value per batch element; a value drawn with
            ``sample_shape`` ``[L, B, ...]`` gives ``[L]``; inside Pyro plates over copies of the model, at dims
            left of -1, their dims and the rows stay: ``[K, B]``); else element-wise.
        feature_dims : list of int, optional
            Sum over these dims of the element-wise log-density instead.
        **kwargs
            Passed on to the networks' ``forward`` (sampling options such as ``batch_n`` are ignored).

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
        >>> round(float(p.get_log_prob({"x": torch.zeros(1, 2)})), 4)
        -1.8379
        """
        if overrides.current_of(self) or overrides.own_method_running(self, "get_log_prob"):  # a method a later
            with overrides.entered(self):  # cell set on this class or instance: this is its super() call (see there)
                return Distribution.get_log_prob(self, x_dict, sum_features, feature_dims, **kwargs)
        total = self._dgm_get_log_prob(x_dict, sum_features, feature_dims, **kwargs)
        if sum_features and feature_dims is None and total.dim() > 1 and not self._dgm_factor_sums(True, None):
            # Pixyz sums every dim but the first: a sample_shape draw [L, B, ...] scores to [L]; inside Pyro plates
            # over copies of the model (a value of [K, B, ...] drawn in a plate of K at dim -2) the copies' dims stay
            keep = 1
            if PYRO_STACK and isinstance(x_dict, Mapping):
                keep += copies_ndim(x_dict.get(v) for v in (*self._var, *self.input_var))
            if total.dim() > keep:
                total = total.sum(tuple(range(keep, total.dim())))
        return total

    def _dgm_factor_sums(self, sum_features: bool, feature_dims: Sequence[int] | None) -> bool:
        """Whether ``graph.set_option(..., var)`` gave a factor a ``sum_features`` or ``feature_dims`` other than
        the call's: each factor's log-density is then summed as its own options say (Pixyz's factor options
        override the call's), the others' over every dim but the first, as Pixyz's factors sum them."""
        f_opts = self.__dict__.get("_dgm_dg_options")
        if not f_opts:
            return False
        fd = None if feature_dims is None else list(feature_dims)
        own = id(self) if not self._dgm_graph_call else None  # (a renamed single's own options count)
        for k, o in f_opts.items():
            if k != own and (bool(o.get("sum_features", sum_features)) != bool(sum_features) or (
                    None if o.get("feature_dims", fd) is None else list(o.get("feature_dims", fd))) != fd):
                return True
        return False

    def _dgm_get_log_prob(self, x_dict: ValuesLike, sum_features: bool = True,
                          feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        """:meth:`get_log_prob` that keeps the batch dims, the sample dims of a ``sample_shape`` draw included
        (``[L, B]`` where Pixyz's ``get_log_prob`` gives ``[L]``), for estimators that need one value per draw."""
        needed = self.__dict__.get("_dgm_scored_var")
        if needed is None:  # var and input_var are fixed at construction
            needed = self._dgm_scored_var = list(self._var) + [v for v in self._dgm_required_input_var
                                                               if v not in self._var]
        values = self._dgm_input_dict(x_dict, needed)
        g_opt = self.__dict__.get("_dgm_dg_global_option")
        if g_opt and self._dgm_graph_call:  # as in sample (the call's sum_features and feature_dims win)
            kwargs = {**{k: v for k, v in g_opt.items() if k not in ("sum_features", "feature_dims")}, **kwargs}
        if kwargs:  # sampling options a loss passes along for its sampling terms are not network arguments
            kwargs = {k: v for k, v in kwargs.items() if k not in SAMPLING_OPTIONS}
        ctx = CallState(kwargs=kwargs)
        total: Tensor | None = None
        f_opts = self.__dict__.get("_dgm_dg_options")
        own = bool(f_opts) and self._dgm_factor_sums(sum_features, feature_dims)
        for i, f in enumerate(self._dgm_order):
            o = f_opts.get(id(f)) if f_opts and (f is not self or self._dgm_graph_call) else None
            if o is None:
                sf, fd = sum_features, feature_dims
            else:  # graph.set_option(..., var): the factor's own sum_features/feature_dims
                sf, fd = o.get("sum_features", sum_features), o.get("feature_dims", feature_dims)
            lp = f._dgm_score_factor(values, ctx, sf, fd)
            if own and sf and fd is None and lp.dim() > 1:  # (Pixyz's factor: every dim but the first summed)
                lp = lp.sum(tuple(range(1, lp.dim())))
            if total is None:
                total = lp
            elif total.shape == lp.shape:
                total = total + lp
            elif sum_features and not own:
                total = self._dgm_add_sized(self._dgm_order[:i], f, total, lp, feature_dims, values, ctx.event_dims)
            elif not sum_features and not own:
                self._dgm_refuse_sizes(self._dgm_order[:i], f, total, lp, sum_features)
            else:  # (factors summed by their own options: different sizes are refused, as Pixyz's)
                self._dgm_refuse_sizes(self._dgm_order[:i], f, total, lp, sum_features, _OWN_SUMS_HINT)
        assert total is not None
        return total

    def _dgm_add_sized(self, before: Sequence["Distribution"], f: "Distribution", total: Tensor, lp: Tensor,
                       feature_dims: Sequence[int] | None, values: Mapping[str, Any],
                       event_dims: Mapping[str, int] | None = None) -> Tensor:
        """The sum of two summed log-densities of different shapes.

        Pixyz sums each factor's log-density over every dim but the first and adds them when those agree: that is
        the number here too (a factor drawn with ``sample_shape`` keeps ``[L, B]`` where a scalar factor's ``[L, B]``
        value scores to ``[L]``; broadcasting ``[L, B]`` with ``[L]`` from the right would add across the batch).
        Where Pixyz would raise (batch sizes that differ), shapes that broadcast still do (a value with batch 1
        scored with a batch of 4), unless the side of size 1 scored a value whose first dim is larger than 1 as one
        example (a ``loc`` of ``(1, B, D)`` for a value of ``(B, D)``, constants of shape ``(B, D)``, a value of
        shape ``(D,)`` that another factor reads as ``D`` scalars): its log-density is the sum over that dim, and
        adding it to every row would be wrong.
        """
        if feature_dims is None:
            a, b = sum_samples(total), sum_samples(lp)
            if a.shape == b.shape:
                return a + b
        absorbed = (_absorbed_batch(total, lp, before, values, feature_dims, event_dims)
                    or _absorbed_batch(lp, total, (f,), values, feature_dims, event_dims))
        if absorbed is None and _broadcasts(total, lp) and not STRICT_SHAPES[0]:  # (strict_shapes(): Pixyz's error)
            return total + lp
        self._dgm_refuse_sizes(before, f, total, lp, True, absorbed)

    def _dgm_refuse_sizes(self, before: Sequence["Distribution"], f: "Distribution", total: Tensor, lp: Tensor,
                          sum_features: bool, hint: str | None = None) -> NoReturn:
        """Pixyz's error for factors whose log-densities differ in size (Pixyz raises it at any difference), naming
        the factors and the shapes: per feature (``sum_features=False``) the factors must have the same features."""
        so_far = " ".join(d.prob_text for d in before)
        hint = hint or ("with sum_features=False the factors' log-densities are added feature by feature, so they need "
                        "the same feature shape; score them one by one, or sum the features" if not sum_features else
                        "the factors' batch shapes differ; give every variable the same batch size")
        raise ValueError(f"{describe(self)}: two PDFs, {so_far} and {f.prob_text}, have different sizes: the "
                         f"log-density of {so_far} has shape {tuple(total.shape)}, that of {f.prob_text} (variable "
                         f"{', '.join(f.var)}) shape {tuple(lp.shape)}; {hint}")

    def log_likelihood(self, x_dict: ValuesLike, **kwargs: Any) -> Tensor:
        """Seed-era name of :meth:`get_log_prob`."""
        return self.get_log_prob(x_dict, **kwargs)

    # ------------------------------------------------------------------ Pyro model / guide
    def _dgm_run_pyro(self, data: Mapping[str, Any] | None, kwargs: Mapping[str, Any],
                      guide: bool = False) -> dict[str, Tensor]:
        overrides.current_of(self)  # (a method or torch class a later cell set on a factor's class)
        values = dict(data) if data is not None else {}
        values.update(kwargs)
        if any(v is None for v in values.values()):  # Pyro's idiom: None is "not given" (a model samples it)
            values = {k: v for k, v in values.items() if v is not None}
        for k, v in values.items():
            if not isinstance(v, Tensor) and isinstance(v, np.ndarray) and k in self._dgm_known_names:
                values[k] = self._dgm_from_numpy(v, k)  # (as sample() and get_log_prob() take numpy arrays)
        unknown = [k for k in values if k not in self._dgm_known_names]
        if unknown:
            self._dgm_warn_unknown(unknown, values, guide)
        required = self._dgm_required_input_var
        if any(v not in values for v in required):
            check_present(self, values, required)
        for f in self._dgm_order:
            f._dgm_register_params()
        batch_n = self._dgm_data_batch_n(values)
        ctx = CallState(batch_n=batch_n, reparam=True, obs=dict(values))
        order = self._dgm_order
        if guide:  # in a guide a given variable is an input, not a site (Pyro's semi-supervised guides)
            order = tuple(f for f in order if not all(v in values for v in f.var))
        inner = next((m for m in reversed(PYRO_STACK) if getattr(m, "dim", None) == -1), None)
        if inner is not None:  # the caller's plate covers the batch dim
            if batch_n is not None and self._dgm_data_batch_ndim(values) > 1:
                ctx.batch_n = None  # nested plates cover several dims of the data: they size the draws of factors
            elif batch_n is not None and type(batch_n) is int and batch_n != 1:
                self._dgm_check_plate_size(inner, batch_n, values)
            for f in order:  # without inputs (Pyro broadcasts their batch dim of 1)
                f._dgm_draw_factor(values, ctx)
            return values
        if batch_n is None and not guide and PYRO_STACK:  # pyro.condition(joint.model, data={"x": x}): its rows
            batch_n = ctx.batch_n = self._dgm_conditioned_batch_n()  # size the data plate, as x=x would
        if batch_n is None or (type(batch_n) is int and batch_n == 1):  # no data, or one row (a global draw fed
            for f in order:  # to the next level of a hierarchical model: p_w.model(tau=tau)): global sites in no
                f._dgm_draw_factor(values, ctx)  # plate, as in a Pyro model (the size-1 dim broadcasts with any
            return values  # plate)
        if type(batch_n) is int and batch_n == 0:
            self._dgm_empty_batch(values)
        ctx.rows_from = rows = self._dgm_given_rows(values, batch_n)
        if rows:
            ctx.rows_kind = {}
        with self._dgm_data_plate(batch_n):
            for f in order:
                f._dgm_draw_factor(values, ctx)
        return values

    def _dgm_empty_batch(self, values: Mapping[str, Any]) -> NoReturn:
        """Refuse data of 0 rows before the data plate opens (``pyro.plate`` would raise a bare ZeroDivisionError,
        "size cannot be zero", naming nothing), naming the variables."""
        values = {**{v: x for v in self._var if isinstance(x := conditioned_value(v), Tensor)}, **values}
        given = [v for v in (*self._var, *self._dgm_input_var) if isinstance(values.get(v), Tensor)]
        empty = [v for v in given if 0 in values[v].shape] or given  # (pyro.condition's data too)
        shapes = ", ".join(f"{v!r} has shape {tuple(values[v].shape)}" for v in empty)
        raise EmptyBatchError(f"{describe(self)}: an empty batch: the variable(s) {', '.join(map(repr, empty))} have 0 "
                              f"rows ({shapes}), and the data plate of the Pyro model/guide cannot have size 0 (Pyro: "
                              "size cannot be zero); pass at least one row (e.g. DataLoader(..., drop_last=True) "
                              "drops a last batch that could be empty)")

    def _dgm_given_rows(self, values: Mapping[str, Any], batch_n: Any) -> tuple[str, ...]:
        """The given variables (as data or by ``poutine.condition``) whose dim 0 has the data plate's ``batch_n``
        rows, when no input of the call and no site of the trace has them (then the plate is theirs): ``()`` else.
        Their sites record whether each is one example of its event shape (:meth:`_dgm_note_rows`); if all of them
        are, nothing gave the rows (:meth:`_dgm_one_example_rows`)."""
        if type(batch_n) is not int:
            return ()
        rows = []
        in_pyro = None
        for v in (*self._var, *self._dgm_input_var):
            x = values[v] if v in values else conditioned_value(v) if v in self._var else None
            if not isinstance(x, Tensor) or x.dim() < 1:
                continue
            if in_pyro is None:
                in_pyro = bool(PYRO_STACK) and not ignores_sites(PYRO_STACK)
            is_site, n = site_data_size(x) if in_pyro else (False, None)
            if is_site and n is None:  # (a global site's value, without a batch dim: it gives no rows)
                continue
            if (x.shape[0] if n is None else n) == batch_n:
                if v not in self._var or is_site:  # (an input, or a site's value, gives the rows: the plate is theirs)
                    return ()
                rows.append(v)
        return tuple(rows)

    def _dgm_note_rows(self, name: str, value: Any, event_shape: Sequence[int], ctx: CallState, conditioned: bool,
                       one_hot: bool = False) -> None:
        """Record, at the site of ``name`` (one of ``ctx.rows_from``), whether its value is one example: its shape
        is the event shape, so its dim 0 is a feature dim, not rows; once every listed variable is recorded, check
        them (before a later factor reads a misread value). Integer values of a one-hot family (``one_hot``) are not
        recorded: they may be class indices, which that family's own check names."""
        kinds = ctx.rows_kind
        if not isinstance(value, Tensor) or kinds is None or (one_hot and not value.is_floating_point()):
            return
        kinds[name] = (value.shape == tuple(event_shape), tuple(value.shape), tuple(event_shape), conditioned, self)
        if len(kinds) == len(ctx.rows_from) and all(k[0] for k in kinds.values()):
            self._dgm_one_example_rows(ctx.rows_from, kinds)

    @staticmethod
    def _dgm_one_example_rows(names: Sequence[str], kinds: Mapping[str, tuple[Any, ...]]) -> NoReturn:
        """Refuse a data plate that only values of one example sized: every site of the call would score its value
        once per row (silently, ``N`` times the log-density of one example). (A value whose site did not say, a
        guide's input or class indices, may give the rows: then no call comes here.)"""
        name = names[0]
        _, shape, event, conditioned, factor = kinds[name]
        n = shape[0]
        others = [v for v in names if v != name]
        also = (f" (and so is {', '.join(f'{v!r} of shape {kinds[v][1]}' for v in others)})" if others else "")
        raise ShapeError(
            f"{describe(factor)}: the observed {name!r} has shape {shape}{also}, whose dim 0 the Pyro model read as "
            f"{n} data rows (dim 0 is the batch dim, as in Pixyz: a value with one dim is a batch of scalars; no "
            f"other value gives the rows) for a data plate of {n}, but its distribution gives {name!r} the feature "
            f"shape {event} (its parameters have no batch dim): it is one example, which every row of the plate would "
            f"score again. Give it a batch dim for one example "
            f"({name}[None], shape {(1, *shape)}), or N rows of shape (N, {', '.join(map(str, shape))})"
            + (f"; posterior samples of {name!r} for Predictive: shape (S, 1, {', '.join(map(str, shape))})"
               if conditioned else ""))

    def _dgm_conditioned_batch_n(self) -> int | None:
        """The batch size of the values that the ``poutine.condition`` handlers around a model call without data give
        its variables (``pyro.condition(joint.model, data={"x": x})``, Pyro's idiom for observed data), or ``None``."""
        given = {v: x for v in self._var if isinstance(x := conditioned_value(v), Tensor)}
        for v, x in list(given.items()):  # a variable whose factor has no inputs has known event dims: its rows
            n = self._dgm_root_rows(v, x)  # are the dim left of them (Predictive(parallel=True) conditions a global
            if n is None:  # latent on draws of [S, 1, D]: one row, in no plate, not S rows)
                continue
            if n != 1:
                return n
            del given[v]
        return self._dgm_data_batch_n(given) if given else None

    def _dgm_root_event_ndim(self, v: str) -> tuple[Any, int] | None:
        """``(factor, its event dims)`` of the factor that draws ``v`` alone and has no inputs, else ``None`` (also
        when it has no distribution object to ask)."""
        f = next((f for f in self._dgm_order if v in f.var), None)
        if f is None or f.input_var or len(f.var) != 1:
            return None
        try:
            return f, len(site_builder(f)().event_shape)
        except Exception:  # noqa: BLE001 (no distribution object to ask: the data's dim 0, as before)
            return None

    def _dgm_scalar_root(self, v: str) -> bool:
        """Whether the factor that draws ``v`` has no inputs and scalar parameters (its feature dims are the data's
        trailing dims, whatever their number: none, inside plates that cover the others)."""
        root = self._dgm_root_event_ndim(v)
        return root is not None and not root[1] and not getattr(root[0], "_features_shape", None)

    def _dgm_root_rows(self, v: str, x: Tensor) -> int | None:
        """The rows of a value ``x`` of ``v`` if the factor that draws ``v`` has no inputs and feature dims (the dim
        left of them; 1 if ``x`` has none), else ``None``."""
        root = self._dgm_root_event_ndim(v)
        if root is None or not root[1]:  # scalar parameters: the data's trailing dims are features (Pixyz's one batch
            return None  # dim), as with x=x
        e = root[1]
        return int(x.shape[x.dim() - e - 1]) if x.dim() > e else 1

    def _dgm_check_plate_size(self, plate: Any, batch_n: int, values: Mapping[str, Any]) -> None:
        """Refuse data whose rows are not the caller's plate's at dim -1 (its subsample size when it subsamples:
        the full data given where ``x[idx]`` was meant), naming the variable (Pyro would name the first site drawn
        from it)."""
        size = getattr(plate, "subsample_size", None) or getattr(plate, "size", None)
        if not isinstance(size, int) or size == batch_n or size == 1:
            return
        v = next(v for v in (*self._var, *self._dgm_input_var) if isinstance(values.get(v), Tensor)
                 and values[v].dim() >= 1)
        sub = getattr(plate, "subsample_size", None)
        hint = (f"it subsamples {sub} of {plate.size}: give the rows of its indices, e.g. `with pyro.plate(...) as "
                f"idx: ...model({v}={v}[idx])`" if sub is not None and sub != plate.size else
                "give the data of the plate's size, or call model() outside that plate")
        raise ValueError(f"{describe(self)}: {v!r} has {batch_n} rows, but the plate {plate.name!r} at dim -1 around "
                         f"this call has size {size}; {hint}")

    def _dgm_data_plate(self, batch_n: int) -> Any:
        """The plate at dim -1 that ``model``/``guide`` open for data of ``batch_n`` rows: ``pyro.plate("data", N)``
        (a call without data, or with data of one row, opens none: its draws are global sites, as in a Pyro model,
        and a hierarchical model's global draws feed later calls: ``w = p_w.model(tau=tau)["w"]``).

        Several calls in one Pyro model share the plate: within one trace, a call whose plate is already there with
        its size (two calls on data of one size, one per time step of a Markov model) enters the same plate object
        again, as a Pyro model reuses a plate, so the model and its guide have the same frames whatever the number
        of calls. A variable named ``data`` gives the plate the name ``data_plate`` in the model and in the guide
        alike. A site of that name that is not this plate (the user's own ``pyro.plate("data")``, an
        ``AutoGuideList``'s, another size) raises a ``ValueError`` saying how to open the call inside a plate of
        one's own (Pyro refuses two sites of one name). A call inside a ``poutine.block`` that hides the plate's
        site (``block()``) opens a plate of its own, which no trace sees; one that lets it through (``hide=["z"]``,
        ``Importance``'s ``hide_types=["observe"]``) shares the trace's, as the plain-Pyro model's one plate is
        seen (:func:`~pyro_dgm.distributions.effects.plate_trace`)."""
        size = batch_n
        name = "data"
        if name in self._dgm_known_names:
            name += "_plate"
        tr = plate_trace(name, size)
        if tr is None:  # no trace: nothing records the plate's site, nor checks its name
            return data_plate(name, size)
        plates = tr.__dict__.setdefault("_dgm_plates", {})  # this trace's plates opened here, by name
        plate = plates.get(name)
        if plate is not None and plate.size == size:
            return plate
        if plate is not None or name in tr.nodes:
            what = (f"the plate {name!r} of size {plate.size} opened by an earlier call" if plate is not None else
                    f"a site named {name!r} (a plate of your own?)")
            raise ValueError(f"{describe(self)}: the Pyro model's trace holds {what} already, and this call's "
                             f"data has {size} rows; open the call inside a plate of your own at dim -1, e.g. "
                             f"`with pyro.plate(\"data_{'_'.join(self._var)}\", {size}): ...model(...)` (the same "
                             "in the guide), and model() opens none; in a part of an AutoGuideList, open the list's: "
                             "`with guides.plates[\"data\"]: ...`")
        plate = plates[name] = data_plate(name, size)
        return plate

    @property
    def _dgm_known_names(self) -> frozenset[str]:
        """The names ``model``/``guide`` read: the variables and inputs of every factor (computed once)."""
        names = self.__dict__.get("_dgm_known_cache")
        if names is None:
            found = set(self._var) | set(self._dgm_input_var)
            for f in self._dgm_order:
                found.update(f.var)
                found.update(f.input_var)
            names = self.__dict__["_dgm_known_cache"] = frozenset(found)
        return names

    def _dgm_warn_unknown(self, unknown: Sequence[str], values: Mapping[str, Any], guide: bool = False) -> None:
        """Warn of a keyword that names no variable but nearly names one that is not given (``model(X=x)`` or
        Pyro's plural ``ys=`` for ``y``): that variable would be drawn instead of observed; of a model's keyword
        that holds a tensor while none of the variables that no factor takes as input (the data a model observes)
        is given (``model(data=x)``, ``model(obs=x)``, which Pyro's own models refuse); and of ``sample()``'s
        ``batch_n`` (``model(batch_n=5)`` draws one row). Other keywords pass silently (SVI gives the model the guide's inputs
        too: a guide's extra input, beside the model's data)."""
        import difflib

        free = [v for v in self._dgm_known_names if v not in values]
        inputs = {v for f in self._dgm_order for v in f.input_var}
        leaves = [] if guide else [v for v in self._var if v not in inputs]
        if any(v in values for v in leaves):  # (some data given: a missing modality is a latent, and the keyword
            leaves = []  # a guide's input)
        for k in unknown:
            if k in _SAMPLE_OPTIONS:  # (Pixyz's sample() option: a model or guide takes data only)
                warnings.warn(f"{describe(self)}: {k}= is an option of sample(), not data; model() and guide() ignore "
                              "it (to draw N rows, call them inside pyro.plate('data', N), or use "
                              "sample(batch_n=N))", UserWarning, stacklevel=4)
                continue
            close = ([v for v in free if v.lower() == k.lower() or k.lower() == v.lower() + "s"]  # X, xs (Pyro's)
                     or difflib.get_close_matches(k, free, n=1, cutoff=0.8))
            if close:
                warnings.warn(f"{describe(self)}: the keyword {k!r} names no variable; {close[0]!r} is not given, so "
                              f"it is drawn, not observed (did you mean {close[0]}=...?)", UserWarning, stacklevel=4)
            elif leaves and isinstance(values[k], Tensor):
                warnings.warn(f"{describe(self)}: the keyword {k!r} names no variable of this model (its variables: "
                              f"{sorted(self._dgm_known_names)}); {leaves} not given, so drawn, not observed (give "
                              f"the data by its variable's name: {leaves[0]}=...)", UserWarning, stacklevel=4)
                leaves = []  # (once per call)

    def _dgm_positional_data(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], role: str) -> dict[str, Any]:
        """The data of ``model(*args, **kwargs)``: a dict (or ``None``) as the only positional argument, or tensors
        in the order of :attr:`pyro_arg_names` (a guide's: its input variables) not given by name. Several positional
        values that the last such call in this thread (the guide, under ``SVI``) read under other names raise a
        ``ValueError``: the model and the guide take them each in its own order."""
        if len(args) == 1 and (args[0] is None or isinstance(args[0], Mapping)):
            return dict(args[0] or {})
        order = self._dgm_pyro_arg_names if role == "model" else list(self._dgm_input_var)
        names = [v for v in order if v not in kwargs]
        if len(args) > len(names) or any(isinstance(a, Mapping) for a in args):
            raise TypeError(f"{describe(self)}: {role}() takes its data by name, e.g. {role}("
                            f"{', '.join(f'{v}=...' for v in (order or self._var))}), or as "
                            f"{len(names)} positional value(s) in the order {names}; got {len(args)} positional "
                            "argument(s)")
        data = dict(zip(names, args))
        if len(args) > 1:
            _check_positional_order(self, role, data)
        return data

    @property
    def _dgm_pyro_arg_names(self) -> list[str]:
        """The variables that ``model`` (and ``SVI.step``) takes positionally, in order: the input variables, then
        the variables no factor is conditioned on (the observed data of a joint, e.g. ``x`` of :math:`p(x|z)p(z)`).
        A ``guide`` takes only its input variables positionally (``q.guide(x)``); pass the others by name.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> joint = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * Normal(loc=0., scale=1., var=["z"])
        >>> joint.pyro_arg_names, Normal(loc="x", scale=1., var=["z"], cond_var=["x"]).pyro_arg_names
        (['x'], ['x', 'z'])
        """
        used = {v for f in self._dgm_order for v in f.input_var}
        return list(self._dgm_input_var) + [v for v in self._var if v not in used and v not in self._dgm_input_var]

    def _dgm_data_batch_n(self, values: Mapping[str, Any]) -> int | None:
        """The batch size of the data (dim 0 of the first given variable; the dim after those of the caller's
        plates when they sit left of dim -1 only: ``groups`` at dim -2, data ``[G, N, X]``): factors without
        inputs draw that many. Inside Pyro, a value that is a site of the active trace has its site's batch dims,
        the data's the last of them (a draw of an earlier call under vectorized particles, ``[P, N, Z]``), or none
        (a global latent of Pyro's without a batch dim; an enumeration dim at -1). A size of 1 (a global draw of
        pyro_dgm's, an enumerated value left of the data plate) gives way to another value's N: the first size
        other than 1 is the data's, whatever the order of the variables."""
        in_pyro = None
        found = None
        unbatched = None  # the dim 0 of a root factor's value that has no batch dim (see below)
        for v in (*self._var, *self._dgm_input_var):
            x = values.get(v)
            if isinstance(x, Tensor) and x.dim() >= 1:
                if in_pyro is None:
                    in_pyro = bool(PYRO_STACK) and not ignores_sites(PYRO_STACK)
                n = None
                if in_pyro:
                    is_site, n = site_data_size(x)
                    if is_site and n is None:
                        continue
                if n is None:
                    if x.dim() <= 2 and v in self._var and self._dgm_root_rows(v, x) == 1:
                        # a root factor's value without a batch dim (all feature dims): alone, one example in no
                        # plate, as get_log_prob scores it (a plate of its dim 0 scored it that many times); beside
                        # data of N rows, the sizes that get_log_prob refuses, as before
                        if unbatched is None:
                            unbatched = x.shape[0]
                        continue
                    lead = outer_plates_ndim(x, 0)
                    if lead and x.dim() == lead + 1 and not (v in self._var and self._dgm_scalar_root(v)):
                        lead = 0  # (no dim left for features: only a variable of scalar constants has none)
                    n = x.shape[lead]
                if not _size_is_one(n):
                    return n if unbatched is None else unbatched
                found = 1
        return found

    def _dgm_data_batch_ndim(self, values: Mapping[str, Any]) -> int:
        """How many leading dims of the data (the first given variable) the caller's plates cover."""
        for v in (*self._var, *self._dgm_input_var):
            x = values.get(v)
            if isinstance(x, Tensor) and x.dim() >= 1:
                return data_batch_ndim(x)
        return 1

    def _model(self, *args: Any, **data_kwargs: Any) -> dict[str, Tensor]:
        """This distribution as a Pyro model: ``pyro.sample`` per variable, observed where ``data`` gives it.

        The networks are registered with ``pyro.module``, so ``pyro.infer.SVI`` optimizes them. Variables in the
        data are observed (``obs=``; a ``Deterministic``'s variable holds the given value, as under
        ``poutine.condition``), the others are sampled ancestrally; ``input_var`` must be given. Factors
        without inputs draw one value per data point (dim 0 of the data), as Pixyz's losses broadcast them, and
        the batch dim is a ``pyro.plate("data", N, dim=-1)`` (unless the caller already opened a plate at dim -1),
        as in a hand-written Pyro VAE, so ``SVI(joint.model, q.guide, ...)`` works as it is; several calls in one
        Pyro model share that plate, and a call without data opens none (see ``_dgm_data_plate``). ``None`` for a
        variable means "not given", as in Pyro models. Pass the data as arguments: by name (``joint.model(x=x)``), as
        a dict, or positionally in the order of :attr:`pyro_arg_names` (``joint.model(x)``, ``svi.step(x)``); or
        condition the model on it (``pyro.condition(joint.model, data={"x": x})``: a model called without data
        takes ``N`` from the values a ``poutine.condition`` around it gives its variables). Returns all values by
        name.

        Examples
        --------
        >>> import pyro.poutine as poutine
        >>> from pyro_dgm.distributions import Normal
        >>> joint = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * Normal(loc=0., scale=1., var=["z"])
        >>> tr = poutine.trace(joint.model).get_trace(x=torch.zeros(1))
        >>> [(n, tr.nodes[n]["is_observed"]) for n in ("z", "x")]
        [('z', False), ('x', True)]
        """
        return self._dgm_run_pyro(self._dgm_positional_data(args, data_kwargs, "model") if args else None, data_kwargs)

    def _guide(self, *args: Any, **data_kwargs: Any) -> dict[str, Tensor]:
        """This distribution as a Pyro guide: :meth:`model`, except that a variable given in the data is an input,
        not a site (as in Pyro's semi-supervised guides: ``q(z,y|x)`` called with ``y`` draws only ``z``, from
        ``q(z|x,y)``), so an ELBO scores only what the guide draws. Positionally it takes its input variables only.
        As a model, it sizes its data plate from the values it reads: a guide that reads none of the given values
        (a global latent's ``q(w)``, given the model's data by ``SVI``) draws global sites; called inside the
        caller's ``pyro.plate("data", N)``, it draws one value per row.

        Examples
        --------
        >>> import pyro.poutine as poutine
        >>> from pyro_dgm.distributions import Categorical, Normal
        >>> q = Normal(loc="y", scale=1., var=["z"], cond_var=["y"]) * Categorical(
        ...     probs=torch.ones(3) / 3, var=["y"])
        >>> tr = poutine.trace(q.guide).get_trace(y=torch.eye(3))
        >>> [n for n in tr.nodes if n in ("y", "z")]
        ['z']
        """
        return self._dgm_run_pyro(self._dgm_positional_data(args, data_kwargs, "guide") if args else None, data_kwargs,
                                  guide=True)

    model = _EntryPoint(_model, "model")
    guide = _EntryPoint(_guide, "guide")
    del _model, _guide  # no private names but _dgm_ ones (a subclass may use any other)

    # pyro_dgm's public attributes that Pixyz lacks: a subclass may assign them for its own use (see Yielding)
    factors = Yielding("_dgm_factors")
    pixyz_atoms = Yielding("_dgm_pixyz_atoms")
    sampling_order = Yielding("_dgm_sampling_order")
    required_input_var = Yielding("_dgm_required_input_var")
    pyro_arg_names = Yielding("_dgm_pyro_arg_names")
    binding = Yielding("_dgm_binding")
    draw_factor = Yielding("_dgm_draw_factor")
    register_params = Yielding("_dgm_register_params")
    network_text = Yielding("_dgm_network_text")
    score_factor = Yielding("_dgm_score_factor")

    def _dgm_registering(self) -> Iterator["Distribution"]:
        """The distributions whose networks Pyro's param store holds under their own names when this one registers
        its parameters: itself (a composite's factors, for a product, a marginal or a renaming)."""
        yield self

    def _dgm_register_params(self) -> None:
        """Register this factor's networks in Pyro's param store (once per model/guide call), as
        ``pyro.module(self.pyro_name, self)`` does, under deterministic names (see :attr:`pyro_name`).

        Where the store already holds a name with another tensor: a live distribution's is refused, a dead one's
        is replaced by ours, and one that no distribution registered (``param_store.load(...)``) is loaded into our
        parameter (shapes checked), which then takes its place, so the module and the store share one tensor.
        """
        name = None  # (read at the first parameter to register: a distribution without any needs no name)
        store = None
        judged: dict[int, bool] = {}  # owners already judged dead in this pass (one collection for all parameters)
        for pname, prm in self.named_parameters():
            if not prm.requires_grad:
                continue  # as pyro.module: frozen parameters are not Pyro's to optimize
            if name is None:
                name = _store_name(self)
            full = f"{name}$$${pname}"
            if store is None:
                store = pyro.get_param_store()
            cur = store._params.get(full)
            if cur is not None and cur is not prm:
                self._dgm_take_name(store, full, prm, cur, judged)
            pyro.param(full, prm)
            entry = _REGISTERED.get(id(prm))
            if entry is None or entry[1]() is None:  # (a network a dead distribution registered is this one's now)
                _REGISTERED[id(prm)] = (weakref.ref(prm, _forget(id(prm))), weakref.ref(self))

    def _dgm_take_name(self, store: Any, full: str, prm: Tensor, cur: Tensor, judged: dict[int, bool]) -> None:
        entry = _REGISTERED.get(id(cur))
        if entry is not None and entry[0]() is cur:  # a distribution of this process put it there
            owner = entry[1]()
            if owner is not None and not full.startswith(_store_name(owner) + "$$$"):
                owner = None  # a live one holds the tensor under another name (it reuses a dead one's network)
            if owner is not None and judged.get(id(owner)):
                owner = None  # (judged dead for an earlier parameter of this pass)
            if owner is not None and owner is not self:
                # an unreachable one may still live in a reference cycle (the traceback of a call that raised, in
                # a notebook): collect those before calling it live
                del owner
                import gc
                gc.collect()
                owner = entry[1]()
                if owner is not None and owner is not self:
                    key = id(owner)
                    del owner  # (a reference here would keep it alive)
                    dead = judged[key] = _only_in_last_error(entry[1])
                    owner = None if dead else entry[1]()
            if owner is not None and owner is not self:
                raise ValueError(f"{describe(self)}: Pyro's param store already holds {full!r} for another live "
                                 f"distribution, {describe(owner)}, with the same pyro_name "
                                 f"{_store_name(self)!r}; give one of them its own name (dist.pyro_name = "
                                 "'decoder', or pyro_name='decoder' when building a family), or call "
                                 "pyro.clear_param_store() if the other one is no longer used")
        else:  # loaded from a file (or set by pyro.param): its value is this parameter's
            if cur.shape != prm.shape:
                raise ValueError(f"{describe(self)}: Pyro's param store holds {full!r} with shape "
                                 f"{tuple(cur.shape)}, but this distribution's parameter has shape "
                                 f"{tuple(prm.shape)}; the stored parameters belong to another network")
            value = store[full].detach().to(prm)  # (a pyro.param's constrained value: a network's weight is real)
            if not torch.allclose(prm.detach(), value, rtol=0, atol=0, equal_nan=True):
                with torch.no_grad():  # (not when it holds the value already: a network shared by two distributions
                    prm.copy_(value)  # took it at the first name, and a second copy would change its version after
                # a forward pass used it, which backward refuses)
            store._constraints[full] = constraints.real
        # The store's own bookkeeping, as its setitem does for a real parameter, but without keeping the replaced
        # tensor in its map of tensors to names (and so alive with its gradient) unless another name holds it (one
        # network shared by two distributions, or also registered by pyro.module)
        params, names = store._params, store._param_to_name
        params[full] = prm
        if names.get(cur) == full:
            other = next((k for k, v in params.items() if v is cur), None)
            if other is None:
                del names[cur]
            else:
                names[cur] = other
        names[prm] = full

    # ------------------------------------------------------------------ per-factor hooks (atomic subclasses)
    @property
    def _dgm_binding(self) -> Binding:
        return Binding(self._var, self._cond_var, self._dgm_input_var)

    def _dgm_draw_factor(self, values: dict[str, Any], ctx: CallState) -> None:
        self._dgm_draw_with(self._dgm_binding, values, ctx)

    def _dgm_score_factor(self, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                          feature_dims: Sequence[int] | None) -> Tensor:
        return self._dgm_score_with(self._dgm_binding, values, ctx, sum_features, feature_dims)

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        raise NotImplementedError(f"{describe(self)} cannot be sampled: {type(self).__name__} is no family and "
                                  "defines no sample(); define sample(self, x_dict={}, batch_n=None, "
                                  "sample_shape=torch.Size(), return_all=True, reparam=False) returning a dict "
                                  f"with {list(b.var)}, and get_log_prob(self, x_dict, sum_features=True, "
                                  "feature_dims=None) to score them")

    _dgm_draw_with._dgm_no_draw = True  # type: ignore[attr-defined]  # (overrides: no draw of the class's own)

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        raise NotImplementedError(f"{describe(self)} has no log-density: {type(self).__name__} is no family and "
                                  "defines no get_log_prob(); define get_log_prob(self, x_dict, sum_features=True, "
                                  f"feature_dims=None) scoring {list(b.var)}")

    _dgm_score_with._dgm_no_density = True  # type: ignore[attr-defined]

    @staticmethod
    def _dgm_batch_ndim(b: Binding, values: Mapping[str, Any], ctx: CallState) -> int:
        """How many leading dims of this factor's parameters are batch dims.

        A value drawn in this pass knows its event dims; a value given from outside has one batch dim (Pixyz),
        except inside Pyro, where :func:`~pyro_dgm.distributions.effects.given_event_dim` may know better (the site
        of an active trace that holds it, or the plates): inputs that are all event dims, one of them a site's value
        (a global latent drawn outside the data plate), give none, as in Pyro. A factor without inputs has the batch
        dim of its constant parameters (size 1); ``sample_shape`` comes on top of that, after the event dims are
        set.
        """
        if not b.input_var:
            return 1  # sample_shape is added after the feature dims are reinterpreted as event dims
        n = 0
        known = True  # every input's event dims are known: inside Pyro, values without batch dims (a global
        ev = ctx.event_dims  # latent, or a value that condition/do gave a site) give none
        in_pyro = None
        for v in b.input_var:
            e = ev.get(v)
            if e is None:
                if in_pyro is None:
                    in_pyro = bool(PYRO_STACK) and not ignores_sites(PYRO_STACK)
                if in_pyro:  # inside Pyro: a value that an active trace holds as a site has that site's event dims
                    e = given_event_dim(values[v], ctx)
            if e is None:
                known = False
            else:
                d = values[v].dim() - e
                if d > n:
                    n = d
        if n or not known:
            return n or 1
        if in_pyro is None:
            in_pyro = bool(PYRO_STACK) and not ignores_sites(PYRO_STACK)
        return 0 if in_pyro else 1

    def _dgm_site(self, name: str, fn: Any, ctx: CallState) -> Tensor:
        """One ``pyro.sample`` site; observed in a model/guide run when the data holds ``name``.

        Under :func:`pyro_dgm.utils.random.generator` the site's sampler runs under ``seeded_draws`` (its random
        operations take the generator), unless ``fn`` has ``seeds_its_draws = True`` (it does that itself, e.g. a
        flow for its base draw only); the site and its distribution object are the same as without one.
        """
        if _RNG.generator is not None and not getattr(fn, "seeds_its_draws", False):
            with seeded_draws(self):  # current_generator() is None inside: this call runs the plain path below
                return self._dgm_site(name, fn, ctx)
        obs = ctx.obs
        infer = self._dgm_pyro_infer
        if obs is not None:
            if name in obs:
                value = obs[name]
                ev = fn.event_shape
                if name in ctx.rows_from:
                    self._dgm_note_rows(name, value, fn.event_shape, ctx, False, _one_hot_support(fn))
                if (ev and isinstance(value, Tensor) and value.dim() <= len(ev)
                        and value.shape != ev[len(ev) - value.dim():] and not self._dgm_user_log_prob):
                    self._dgm_event_swallows_batch(name, value, fn)  # (a class's own get_log_prob takes its own)
                value = self._dgm_pyro_sample(name, fn, obs=value)
                if PYRO_STACK:  # its site speaks for value's dims in later calls (effects._site_of)
                    mark_own_observed(name, value)
                return value
            if name in ctx.rows_from:  # (given by poutine.condition)
                self._dgm_note_rows(name, conditioned_value(name), fn.event_shape, ctx, True, _one_hot_support(fn))
            return self._dgm_pyro_sample(name, fn, infer=dict(infer)) if infer else self._dgm_pyro_sample(name, fn)
        stack = PYRO_STACK
        if stack and not ignores_sites(stack):
            opts = {"infer": dict(infer)} if infer else {}
            if ctx.reparam or not getattr(fn, "has_rsample", False):
                return self._dgm_pyro_sample(name, fn, **opts)
            # a draw without a gradient (Pixyz's default reparam=False) in a Pyro model or guide: a site that says
            # so, scored by its score function (the site's distribution keeps its graph to the networks)
            return self._dgm_pyro_sample(name, unreparameterized(fn), **opts)
        # what pyro.sample does when no handler is active (or only ones that ignore sample sites, see ignores_sites)
        if ctx.reparam:
            return fn.rsample() if fn.has_rsample else fn.sample()
        return plain_sample(fn)

    def _dgm_pyro_sample(self, name: str, fn: Any, **kwargs: Any) -> Tensor:
        """``pyro.sample(name, fn, **kwargs)``; Pyro's bare error for a second site of one name names this
        distribution and says why a Pixyz-style program meets it."""
        try:
            value = pyro.sample(name, fn, **kwargs)
        except RuntimeError as e:
            self._dgm_duplicate_site(name, e)
            raise
        except ValueError as e:
            self._dgm_plate_mismatch(name, kwargs.get("obs"), e, fn)
            raise
        if not isinstance(value, Tensor):
            self._dgm_site_not_a_tensor(name, value)
        return value

    def _dgm_duplicate_site(self, name: str, e: RuntimeError) -> None:
        """Raise a :class:`DuplicateSiteError` naming this distribution for Pyro's bare error of a second site
        named ``name`` in one trace, saying why a Pixyz-style program meets it; else nothing."""
        if str(e) != f"Multiple sample sites named '{name}'":
            return
        raise DuplicateSiteError(
            f"{describe(self)}: the Pyro trace already holds a sample site named {name!r}, and this call draws "
            f"{name!r} again inside the same trace. Pyro names each site once per trace, while sample(), "
            "get_log_prob(), the losses and Model.train draw a variable at each use (two expectations over one "
            "distribution, two calls or two training steps draw it twice). Trace one call at a time (one "
            "poutine.trace() per evaluation or step), or give the draws different names (replace_var)") from e

    def _dgm_plate_mismatch(self, name: str, value: Any, e: ValueError, fn: Any = None, computed: bool = False
                            ) -> None:
        """Raise a :class:`ShapeError` naming this distribution and the variable for Pyro's bare "Shape mismatch
        inside plate" at its site (a value whose dims do not fit the plates around the call); else nothing.
        ``value``: the observed one, if any; ``computed``: it is a ``Deterministic``'s output, not a given value."""
        text = str(e)
        if not text.startswith("Shape mismatch inside plate(") or isinstance(e, ShapeError):
            return
        rows = "its dim 0 is the batch dim, one row per data point, as in Pixyz"
        if value is None:  # (a draw, or a value that poutine.condition gives the site)
            value = conditioned_value(name)
        if computed and isinstance(value, Tensor):
            why = (f"its value, which forward() computed, has shape {tuple(value.shape)}, whose batch dims do not "
                   f"fit the plates ({rows}): keep the batch dim in forward()")
        elif isinstance(value, Tensor):
            why = (f"its value has shape {tuple(value.shape)}, whose batch dims do not fit the plates ({rows}): give "
                   f"it the data's rows, or one row ({name}[None]) to share one value across them")
        else:
            batch = f" (batch shape {tuple(fn.batch_shape)})" if fn is not None else ""
            why = (f"its distribution's batch dims{batch} do not fit the plates: the data's rows size the plate ("
                   f"{rows}); check the shapes of the values given to the call")
        raise ShapeError(f"{describe(self)}: the variable {name!r} does not fit the plates around its Pyro site: "
                         f"{why} (Pyro: {text})") from e

    def _dgm_site_not_a_tensor(self, name: str, value: Any) -> NoReturn:
        """Refuse a site value that is not a tensor (a number or a list that ``poutine.condition`` gives the site):
        the factors that read it need a tensor (Pyro's own distributions refuse a number there too)."""
        raise NotATensorError(f"{describe(self)}: the value of {name!r} at its Pyro site must be a tensor (the value "
                              f"that the data or a handler such as poutine.condition gives the site), got "
                              f"{type(value).__name__}; give torch.as_tensor(...) of its shape")

    def _dgm_event_swallows_batch(self, name: str, value: Tensor, fn: Any) -> NoReturn:
        """Refuse an observed value that the event shape would broadcast over, leaving it no batch dim: each data
        point would be scored against every other (silently, when the sizes happen to agree)."""
        raise ShapeError(
            f"{describe(self)}: the observed {name!r} has shape {tuple(value.shape)}, and the event shape "
            f"{tuple(fn.event_shape)} that the parameters give covers all of its dims: its batch dim would be "
            "broadcast as an event dim. A parameter has a dim too many: an input that is not the value of a "
            "pyro.sample site in the trace is read with one batch dim, so its other dims left of the plates "
            "(a particle or enumeration dim of a value computed from a site) become event dims. Pass such an input "
            "as a site's value, or compute it inside the distribution's network.")

    def _dgm_weights_dtype(self) -> torch.dtype | None:
        """The dtype of this distribution's first floating-point parameter (its networks' weights), or ``None``."""
        return next((t.dtype for t in self.parameters() if t.is_floating_point()), None)

    def _dgm_note_inputs(self, e: BaseException, b: Binding, values: Mapping[str, Any]) -> None:
        """Say which distribution's network failed, and on which inputs (the error keeps its type); a dtype error
        of torch's caused by an input whose dtype is not the weights' becomes a :class:`DTypeError` naming it."""
        names = (*b.fwd_pos, *(v for _, v in b.fwd_kw))
        missing = [v for v in names if v not in values]
        if missing:  # (a cond_var added in place after a product of this distribution was built: the product's
            # inputs are those of then, Pixyz's "lack of some variables")
            raise MissingVariableError(f"{describe(self)}: no value for its input {missing[0]!r} (its cond_var "
                                       f"{list(self.cond_var)}); give it, or build the product again after "
                                       f"changing cond_var") from e
        shapes = ", ".join(f"{v!r}: {_input_text(values[v])}" for v in names)
        note = f"while {describe(self)} ran forward() on {shapes}"
        if raised_by_statement(e):  # the network's own raise (whatever its text says): as it is, noted (Pixyz's)
            add_note(e, note, ("forward", id(self)))
            return
        text = error_text(e)  # ("" for a user's exception whose text fails: raised as it is, noted)
        own = self._dgm_weights_dtype()
        other = [v for v in names if isinstance(values[v], Tensor) and own is not None and values[v].dtype != own
                 and not values[v].is_complex()]
        if other and isinstance(e, IndexError) and "index out of range" in text:  # integers used as indices (an
            # nn.Embedding's rows): their dtype is right, their range is not
            try:
                ranges = [f"{v!r} holds integers from {int(values[v].min())} to {int(values[v].max())}"
                          for v in other if not values[v].is_floating_point() and values[v].numel()]
            except (RuntimeError, ValueError, NotImplementedError):  # (a value whose range cannot be read)
                ranges = []
            if ranges:
                note += f"; {', '.join(ranges)}: an index out of the range of a lookup in the network (an " \
                        "nn.Embedding's num_embeddings?)"
                other = []
        unusual = [v for v in names if isinstance(values[v], Tensor) and unusual_tensor(values[v])]
        if (unusual and isinstance(e, (TypeError, NotImplementedError, RuntimeError)) and not users_own_error(e)
                and any(w in text.lower() for w in _LAYOUT_WORDS)):  # (torch's dispatch refused it; a user's own
            # error, or one of shapes in a network that pads a nested input itself, stays as it is)
            v = unusual[0]
            raise LayoutError(f"{describe(self)}: forward() cannot take {v!r}, {unusual_tensor(values[v], v)}: its "
                              f"network takes dense tensors (torch: {e})") from e
        complex_ = [v for v in names if isinstance(values[v], Tensor) and values[v].is_complex() and own is not None
                    and not own.is_complex]
        if (complex_ and isinstance(e, RuntimeError) and not isinstance(e, ValueError)
                and "type" in text.lower()):  # (no conversion to advise: it would drop the imaginary parts)
            raise DTypeError(f"{describe(self)}: forward() cannot take {complex_[0]!r} of dtype "
                             f"{values[complex_[0]].dtype}: the network's parameters are {own}, real numbers; give "
                             f"it real values (its .real, .abs()...) (torch: {e})") from e
        if other:  # values keep their dtype (docs/design.md): a float64 or int64 input meets float32 weights
            said = ", ".join(f"{v!r} of dtype {values[v].dtype}" for v in other)
            if isinstance(e, RuntimeError) and not isinstance(e, ValueError) and "type" in text.lower():
                raise DTypeError(f"{describe(self)}: forward() cannot take {said}: the network's parameters are "
                                 f"{own}; convert the value with {other[0]}.to({own}) (torch: {e})") from e
            note += f"; {said} while the network's parameters are {own} (convert with {other[0]}.to({own}))"
        if type(e) is ValueError and "Expected more than 1 value per channel when training" in text:
            raise ShapeError(f"{describe(self)}: forward() failed on the inputs {shapes}: a batch norm in training "
                             "mode needs more than one row (under torch.distributed, fit gives each process its "
                             "slice of a batch: a last batch of N + 1 rows on N processes leaves one row on one of "
                             f"them; pick a batch_size and data size whose slices have 2 rows or more) ({text})") from e
        if type(e) is RuntimeError:
            self._dgm_scalar_or_device(e, text, names, values, shapes)
        if type(e) is RuntimeError and ("shape" in text or "size" in text or "dimension" in text):
            # torch refused a shape (a layer's, or torch.cat's "Tensors must have same number of dimensions")
            raise ShapeError(f"{describe(self)}: forward() failed on the inputs {shapes} (the first dim of each is "
                             f"the batch): {text}") from e
        if type(e) is IndexError and ("Dimension out of range" in text or "too many indices" in text):
            # (torch.cat(..., 1), o[:, :k] on a value without its batch dim)
            flat = [v for v in names if isinstance(values[v], Tensor) and values[v].dim() <= 1]
            hint = (f"; {', '.join(repr(v) for v in flat)} {'has' if len(flat) == 1 else 'have'} no batch dim: give "
                    f"{flat[0]}.unsqueeze(0) for one example" if flat else "")
            raise DimensionError(f"{describe(self)}: forward() failed on the inputs {shapes} (the first dim of each "
                                 f"is the batch){hint}: {text}") from e
        if type(e) is TypeError and "expected np.ndarray (got Tensor)" in text:  # torch.from_numpy(x) in forward()
            raise TypeError(f"{describe(self)}: forward() failed on the inputs {shapes}: torch.from_numpy was given "
                            "a tensor; pyro_dgm converts numpy inputs to tensors before a network runs (Pixyz hands "
                            "a Deterministic's on as they are): use torch.as_tensor(x), which takes both "
                            f"({text})") from e
        if (type(e) is TypeError and "multiple values for argument" in text and "_call_impl()" in text):
            arg = text.rsplit("argument", 1)[-1].strip(" '\"")  # a variable named as an argument of the network's
            if arg in names:  # call itself (``self``)
                raise ArgumentError(f"{describe(self)}: its network cannot take the variable {arg!r} by that name, "
                                    f"which is also an argument of the call; name the variable otherwise "
                                    f"(replace_var, or var/cond_var) ({text})") from e
        loose = [v for v in names if not isinstance(values[v], Tensor) and (
            f"not {type(values[v]).__name__}" in text or (f"but got {type(values[v]).__name__}" in text and
                                                          not isinstance(values[v], (int, float, complex))))]
        if loose and type(e) is TypeError:  # a list where the network takes a tensor ("must be Tensor, not list";
            # torch.cat's "expected Tensor as element 0 in argument 0, but got str", not for a number, which a
            # network may well multiply by while its own constant is what torch.cat refused)
            v = loose[0]
            give = (f"give torch.as_tensor({v})" if isinstance(values[v], (list, tuple, int, float)) else
                    f"give a tensor for {v!r}")
            raise NotATensorError(f"{describe(self)}: forward() cannot take {v!r} of type "
                                  f"{type(values[v]).__name__}: its network takes tensors; {give} (torch: {text})"
                                  ) from e
        add_note(e, note, ("forward", id(self)))  # (an exception instance raised again: noted once, as now)

    def _dgm_scalar_or_device(self, e: RuntimeError, text: str, names: Sequence[str], values: Mapping[str, Any],
                              shapes: str) -> None:
        """Raise a :class:`ShapeError` naming a 0-d input that torch refused (``nn.Linear`` of ``torch.tensor(1.)``:
        "both arguments to linear need to be at least 1D"), or a :class:`DeviceError` naming an input on another
        device than the network's parameters (torch: "Expected all tensors to be on the same device"); else
        nothing (the error keeps its type)."""
        scalars = [v for v in names if isinstance(values[v], Tensor) and values[v].dim() == 0]
        if scalars and ("at least 1D" in text or "0D" in text or "0-d" in text
                        or "ArrayRef: invalid index" in text):  # (torch 2.1's words) (not any rank error: a valid
            # scalar input is not to blame for another input's "Tensors must have same number of dimensions")
            v = scalars[0]
            raise ShapeError(f"{describe(self)}: forward() failed on the inputs {shapes} (the first dim of each is "
                             f"the batch): {v!r} is 0-d (a scalar), which its network cannot take; give it its batch "
                             f"dim and feature dims ({v}.reshape(1, 1) for one example of one feature): {text}") from e
        if "device" not in text:
            return
        own = next((t.device for t in self.parameters()), None)
        if own is None:
            own = next((t.device for t in self.buffers()), None)
        moved = [v for v in names if isinstance(values[v], Tensor) and own is not None and values[v].device != own]
        if moved:
            said = ", ".join(f"{v!r} on device {values[v].device}" for v in moved)
            raise DeviceError(f"{describe(self)}: forward() cannot take {said}: the network's parameters are on "
                              f"device {own}; move the value with {moved[0]}.to({str(own)!r}) (or the distribution "
                              f"with .to({str(values[moved[0]].device)!r})) (torch: {text})") from e

    def _dgm_record(self, name: str, value: Tensor, event_dim: int, given: bool = False) -> Tensor:
        """Record a deterministic value as a Pyro site when a handler is listening; returns the site's value.
        ``given``: the value was given to the call (else computed: a network's output, a mean)."""
        if PYRO_STACK and not ignores_sites(PYRO_STACK):
            try:
                out = pyro.deterministic(name, value, event_dim=event_dim)
            except ValueError as e:
                self._dgm_plate_mismatch(name, value, e, computed=not given)
                raise
            except RuntimeError as e:  # (a deterministic site is a sample site: one per name in a trace)
                self._dgm_duplicate_site(name, e)
                raise
            if not isinstance(out, Tensor) and isinstance(value, Tensor):
                self._dgm_site_not_a_tensor(name, out)
            return out
        return value

    # ------------------------------------------------------------------ queries that atomic families answer
    def _dgm_only_atomic(self, what: str) -> None:
        n = len(self._dgm_factors)
        if n == 1:  # an atomic distribution without the query: a deterministic map, a user's distribution...
            raise NotImplementedError(f"{describe(self)}: {what} is not defined for {type(self).__name__} (the "
                                      "families define it: Normal, Bernoulli, ...)")
        raise NotImplementedError(f"{describe(self)}: {what} is defined for a single distribution, not for a "
                                  f"product of {n} factors; call it on a factor")

    def get_params(self, params_dict: ValuesLike = None, **kwargs: Any) -> dict[str, Tensor]:
        """The parameters of this distribution given its inputs (constants and network outputs)."""
        self._dgm_only_atomic("get_params")
        raise AssertionError  # pragma: no cover

    def dist(self, x_dict: ValuesLike = None, batch_n: int | None = None, **kwargs: Any) -> Any:
        """The ``pyro.distributions`` object given the inputs, with the feature dims as event dims."""
        self._dgm_only_atomic("dist")

    def get_entropy(self, x_dict: ValuesLike = None, sum_features: bool = True,
                    feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        """The analytic entropy given the inputs."""
        self._dgm_only_atomic("get_entropy")
        raise AssertionError  # pragma: no cover

    def sample_mean(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        """The mean of ``var`` given the inputs."""
        self._dgm_only_atomic("sample_mean")
        raise AssertionError  # pragma: no cover

    def sample_variance(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        """The variance of ``var`` given the inputs."""
        self._dgm_only_atomic("sample_variance")
        raise AssertionError  # pragma: no cover

    # ------------------------------------------------------------------ graph operations (new objects)
    def __mul__(self, other: Any) -> "Distribution":
        from pyro_dgm.distributions.joint import MultiplyDistribution, distinct_modules

        if not isinstance(other, Distribution):
            raise ArgumentError(f"{describe(self)} * {type(other).__name__}: a distribution multiplies only with "
                                "another distribution (a product p(x|z)p(z) is a joint distribution)")
        from pyro_dgm.distributions.ops import MarginalizeVarDistribution

        marginals = [d for d in (self, other) if isinstance(d, MarginalizeVarDistribution)]
        if marginals:
            # as Pixyz's graphs unite: one product of every factor, with the marginalized variables integrated out of
            # the whole (the draws take Pixyz's order; the formula shows \int ... dz over all the factors)
            a, b = (d.p if isinstance(d, MarginalizeVarDistribution) else d for d in (self, other))
            joint = MarginalizeVarDistribution(MultiplyDistribution(a, b), [v for m in marginals
                                                                           for v in m.marginalize_list])
            # Pixyz's product is one graph of every atom: no module "p" in its state dict, only "_graph.<i>"
            inner = joint._modules.pop("p")
            joint.__dict__["p"] = inner
            # its atoms are each operand's (a module in both operands twice, as in Pixyz's union of the graphs)
            joint._graph = torch.nn.ModuleList(distinct_modules(self._dgm_pixyz_atoms)
                                               + distinct_modules(other._dgm_pixyz_atoms))
            opts = {k: v for m in marginals for k, v in m.factor_options.items()}  # set on a marginal's graph
            if opts:
                joint.factor_options = opts
            g_opt = {**self.global_options, **other.global_options}
            if g_opt:
                joint.global_options = g_opt
            integrals: set[str] = set()  # (the order of the integrals, as Pixyz's united graph has it)
            for d in (self, other):
                integrals.update(getattr(d, "_dgm_integrals", ()))
            joint._dgm_integrals = integrals
            return joint
        return MultiplyDistribution(self, other)

    def replace_var(self, **replace_dict: str) -> "Distribution":
        """A distribution over renamed variables that shares this one's networks, e.g. ``p.replace_var(z="w")``.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> Normal(loc=0., scale=1., var=["z"], name="p_{prior}").replace_var(z="w").prob_text
        'p_{prior}(w)'
        """
        from pyro_dgm.distributions.ops import replace_var

        return replace_var(self, replace_dict)

    def marginalize_var(self, marginalize_list: str | Sequence[str]) -> "Distribution":
        r"""The marginal :math:`\int p(x,z)dz` of a joint: sampling drops the variables, scoring is intractable."""
        from pyro_dgm.distributions.ops import MarginalizeVarDistribution

        return MarginalizeVarDistribution(self, marginalize_list)

    # ------------------------------------------------------------------ loss terms
    def log_prob(self, sum_features: bool = True, feature_dims: Sequence[int] | None = None) -> "LogProb":
        r"""The loss term :math:`\log p(x|z)`, evaluated lazily with ``.eval(x_dict)``."""
        from pyro_dgm.losses.pdf import LogProb

        return LogProb(self, sum_features=sum_features, feature_dims=feature_dims)

    def prob(self, sum_features: bool = True, feature_dims: Sequence[int] | None = None) -> "Prob":
        r"""The loss term :math:`p(x|z)`, evaluated lazily with ``.eval(x_dict)``."""
        from pyro_dgm.losses.pdf import Prob

        return Prob(self, sum_features=sum_features, feature_dims=feature_dims)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Subclasses that hold a network override this: it maps ``cond_var`` values to parameters."""
        raise NotImplementedError(f"{describe(self)} has no network: forward() is not defined (calling a distribution "
                                  "runs its network, as in Pixyz; its Pyro model and guide are .model and .guide, "
                                  "e.g. Trace_ELBO()(joint.model, q.guide) or SVI(joint.model, q.guide, ...))")

    forward._dgm_no_network = True  # type: ignore[attr-defined]


_PYRO_NAME = Distribution.__dict__["pyro_name"]  # (the property a subclass may replace: see _store_name)
