"""A subclass's own ``sample``, ``get_log_prob``, ``get_params``, ``set_dist`` and ``get_sample``, called where
Pixyz calls them.

Pixyz's joint distribution calls each factor's public ``sample`` and ``get_log_prob``, so a Pixyz program may write a
distribution by overriding them (a custom sampler, a clamped draw, an unnormalized density), and use it in a product
``p * q``, a ``replace_var`` or a loss. Our graph draws and scores through the per-factor hooks ``_dgm_draw_with`` and
``_dgm_score_with``; for a class whose ``sample`` or ``get_log_prob`` is the user's (defined outside ``pyro_dgm``),
:func:`install` replaces the hook with one that calls the public method with the factor's inputs under its own
names, as Pixyz does. A family whose ``set_dist`` or ``get_sample`` is the user's draws (and, for ``set_dist``,
scores) the way Pixyz's atomic distribution does: ``set_dist(inputs, batch_n)``, then ``get_sample(...)`` or
``dist.log_prob``. A family whose ``get_params`` is the user's (to change the parameters, or to memoize them with
:func:`~pyro_dgm.utils.lru_cache_for_sample_dict`) takes its parameters from it wherever it samples or scores, the
closed forms included, as Pixyz's ``set_dist`` calls it.

The user's method usually ends in ``super().sample(...)``; that call draws with the original hook (kept as
``_dgm_inner_draw_with``): :func:`install` wraps the user's method so that, while it runs, the distribution is marked
as inside it (:func:`entered`, per thread), and its hooks are the original ones.

Outside a Pyro model or guide run, a value drawn by the user's own code (or by ``get_sample``) is not a
``pyro.sample`` site unless that code draws through ``super().sample`` (then the site has the distribution's own
variable name). In ``model``/``guide`` runs (so under ``SVI``), the Pyro side follows the same methods
(:func:`_draw_in_pyro`): the factor's site is the one its class's draw makes (a family's, under the product's or
renaming's names), whose distribution is a :class:`UserScored` over the family's. Where the class has its own
``get_log_prob``, the site's ``log_prob`` calls it on the value and the factor's inputs under the distribution's own
names, summing the feature dims, so ``Trace_ELBO`` and ``trace.log_prob_sum()`` see the density that
``get_log_prob`` and ``LogProb`` compute (a ``poutine.scale`` or ``pyro.factor`` in a plain-Pyro twin). Where it has
its own ``sample``, a variable that is not given is drawn by it when Pyro samples the site (not when a handler gives
the value: ``replay`` from a guide, ``condition``, enumeration), with the sites of its ``super().sample`` hidden; the
leading batch dims that plates add (vectorized particles) are its ``sample_shape``. Batch dims that Pixyz's one
batch dim cannot line up (an enumerated parent's value, a global latent's under vectorized particles and the data
plate) are broadcast and flattened into one before the user's method reads them, its answer reshaped back; a flow's
or mixture's ``get_log_prob`` gets ``feature_dims=None`` (its features are scored together). A ``poutine.reparam``
of such a site is refused: a reparameterizer rebuilds the site from the family's parameters, without the class's
own density or draw. A distribution without a draw of
its own (a ``Distribution`` subclass with ``sample`` and ``get_log_prob`` only) gets a site of its own: observed when
given, else holding what its ``sample`` drew (called before the site, to know the value's shape, so also when a
handler then gives the value); one that cannot be scored, or not drawn, raises a ``NotImplementedError`` saying what
to do. Factors of classes without these overrides keep their sites as they were. A family whose ``set_dist`` or
``get_sample`` is the user's draws with the family's own hook in model and guide runs.

>>> import torch
>>> from pyro_dgm.distributions import Normal
>>> class Clamped(Normal):
...     def sample(self, x_dict={}, *args, **kwargs):
...         out = super().sample(x_dict, *args, **kwargs)
...         out["x"] = out["x"].clamp(-0.1, 0.1)
...         return out
>>> p = Clamped(var=["x"], cond_var=["z"], loc="z", scale=1.)
>>> prior = Normal(var=["z"], loc=0., scale=1., features_shape=[2])
>>> bool((p * prior).sample(batch_n=100)["x"].abs().max() <= 0.1)
True
>>> from pyro import poutine
>>> tr = poutine.trace((p * prior).model).get_trace(z=torch.randn(100, 2))
>>> bool(tr.nodes["x"]["value"].abs().max() <= 0.1), type(tr.nodes["x"]["fn"]).__name__
(True, 'UserScored')
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import operator
import os
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.reparam_messenger import ReparamMessenger
from torch import Tensor
from torch.distributions import Independent, constraints

from pyro_dgm.distributions.effects import PYRO_STACK, given_event_dim, sites_hidden
from pyro_dgm.distributions.pixyz_protocol import as_pyro
from pyro_dgm.utils.attributes import users_own
from pyro_dgm.utils.checks import ArgumentError, NotATensorError, ShapeError, describe
from pyro_dgm.utils.compat import is_compiling
from pyro_dgm.utils.dicts import sum_samples

if TYPE_CHECKING:
    from pyro_dgm.distributions.base import Distribution
    from pyro_dgm.distributions.bindings import Binding, CallState

__all__ = ["install", "entered", "UserScored"]

_LOCAL = threading.local()


def _inside() -> set[int]:
    ids = getattr(_LOCAL, "ids", None)
    if ids is None:
        ids = _LOCAL.ids = set()
    return ids


@contextlib.contextmanager
def entered(dist: Any) -> Iterator[None]:
    """Within the block, ``dist``'s hooks are its class's own (its public method is running)."""
    ids = _inside()
    key = id(dist)
    if key in ids:
        yield
        return
    ids.add(key)
    try:
        yield
    finally:
        ids.discard(key)


_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the pyro_dgm package


def _user_defined(cls: type, name: str) -> bool:
    """Whether ``cls.<name>`` is the user's: a function whose code is not in pyro_dgm's source files."""
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            if isinstance(raw, property):
                raw = raw.fget
            while isinstance(raw, (functools.partial, functools.partialmethod)):  # (a callable attribute, called
                raw = raw.func  # without self; or a partialmethod, with it)
            seen = 0
            while raw is not None and seen < 100:  # the user's if any layer is: a decorator of the user's around
                seen += 1  # the library's method (functools.wraps: __wrapped__), or a decorator written as a class
                code = getattr(raw, "__code__", None)
                if code is None and not isinstance(raw, type):  # (an object: its class's __get__ or __call__)
                    code = next((c for c in (getattr(getattr(type(raw), a, None), "__code__", None)
                                             for a in ("__get__", "__call__")) if c is not None), None)
                if code is not None and not os.path.abspath(code.co_filename).startswith(_LIBRARY + os.sep):
                    return True
                raw = getattr(raw, "__wrapped__", getattr(raw, "__func__", None))
            return False
    return False


def _entering(fn: Any) -> Any:
    """The user's public method, run with its distribution marked as inside it (:func:`entered`)."""
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        with entered(self):
            return fn(self, *args, **kwargs)

    method._enters = True  # type: ignore[attr-defined]
    return method


_INSTALLS = itertools.count()

#: The public methods whose user versions :func:`install` routes the hooks through.
_PUBLIC = ("get_params", "sample", "get_log_prob", "set_dist", "get_sample", "dist")

#: What :func:`current` compares: those, and the torch class (a later cell's ``B.distribution_torch_class = ...``).
_WATCHED = _PUBLIC + ("distribution_torch_class",)


_READ = operator.attrgetter(*_WATCHED)


def _methods(cls: Any) -> tuple[Any, ...]:
    try:
        return _READ(cls)  # type: ignore[no-any-return]  # (one C call: current() runs at every public call)
    except AttributeError:  # (a class without some of them: a product's)
        return tuple([getattr(cls, n, None) for n in _WATCHED])


def _static_methods(cls: Any) -> tuple[Any, ...]:
    """The objects in the classes' dicts behind :func:`_methods` (for a class where ``getattr`` makes a new object at
    each read: a ``functools.partialmethod``)."""
    return tuple([next((vars(k)[n] for k in cls.__mro__ if n in vars(k)), None) for n in _WATCHED])


def current(cls: Any) -> bool:
    """Install ``cls``'s methods again if one was set on the class (or a base) after it was made, or deleted, or set
    back (a later notebook cell's ``Q.get_params = ...``): Pixyz calls the method of the moment. Checked when a
    distribution is built, at its public ``sample``, ``get_log_prob``, moments and entropy, and for a composite's
    parts (a mixture's components, a flow's prior: :func:`~pyro_dgm.distributions.composite.own_site`), about
    0.5 us each. Whether it did (never while torch.compile traces)."""
    return False if is_compiling() else _current(cls)


def _current(cls: Any) -> bool:
    d = cls.__dict__
    if d.get("_dgm_methods_static") is not None:  # (a method read anew at each getattr: compared in the dicts)
        if d["_dgm_methods_static"] == _static_methods(cls):
            return False
    elif d.get("_dgm_methods") == _methods(cls):
        return False
    install(cls)
    return True


def current_of(dist: Any) -> bool:
    """:func:`current` for the class of each factor of ``dist`` (itself, if atomic); not while torch.compile
    traces (the compiled code would guard on the classes' methods). Whether ``dist``'s own class was installed
    again: then the public method running now was called from the user's new method (its ``super()`` call, which
    ran before the method was marked, :func:`_entering`), or is the library's own one called directly: either way
    its hooks are the class's own for the rest of the call (:func:`entered`)."""
    if is_compiling():
        return False
    mine = False
    for core in dist._dgm_order:
        inner = _wrapped(core)
        while isinstance(inner, torch.nn.Module) and hasattr(inner, "_dgm_order"):  # (a renaming's distribution)
            core, inner = inner, _wrapped(inner)
        order = core._dgm_order
        if core is not dist and (len(order) != 1 or order[0] is not core):  # a product a marginal or a renaming
            current_of(core)  # wraps: its factors' classes (p476: a marginal drew with the sample of the class
            continue  # before a later cell's patch)
        cls = type(core)
        if _current(cls) and core is dist:
            mine = True
        if core.__dict__.get("_dgm_installed_at") != cls.__dict__.get("_dgm_installed"):
            core._dgm_class_changed()  # (its class changed since it was built: see there)
    return mine


def _wrapped(dist: Any) -> Any:
    """The distribution a renaming or a marginal wraps (its module ``p``, or its attribute ``p`` where the module
    holds another: a marginal of a marginal, or of a product with a marginal, p477), or None."""
    inner = dist.__dict__["_modules"].get("p")
    return dist.__dict__.get("p") if inner is None else inner


def install(cls: Any) -> None:
    """Route ``cls``'s hooks through its public methods where the user wrote them: ``set_dist`` or ``get_sample``
    (Pixyz's atomic ``sample`` and ``get_log_prob`` go through them), ``get_params`` (a family's parameters: what
    Pixyz's ``set_dist`` calls), then ``sample`` and ``get_log_prob``. A class with its own ``get_log_prob`` draws
    through :func:`_draw_via_sample` too, so that its sites in Pyro model and guide runs are scored by it."""
    if hasattr(cls, "set_dist") and hasattr(cls, "get_sample"):
        own_dist = _user_defined(cls, "dist")  # a dist property of the user's: Pixyz reads it after set_dist
        if own_dist:
            cls._dgm_user_dist = True
        if (_user_defined(cls, "set_dist") or _user_defined(cls, "get_sample") or own_dist) \
                and not cls._dgm_user_set_dist:
            if cls._dgm_draw_with is _draw_via_sample:  # (routed for a sample or get_log_prob of the user's at an
                # earlier install: the set_dist draw goes beneath that route, as a first install puts it)
                cls._dgm_inner_set_dist_draw = cls._dgm_inner_draw_with
                cls._dgm_inner_draw_with = _draw_via_set_dist
            else:
                cls._dgm_inner_set_dist_draw = cls._dgm_draw_with  # for Pyro model runs with data (observed sites)
                cls._dgm_draw_with = _draw_via_set_dist
            cls._dgm_user_set_dist = True
        if (_user_defined(cls, "set_dist") or own_dist) and cls._dgm_fn is not fn_via_set_dist:
            # scoring, moments, entropy and KL see what it sets (also a set_dist a later cell adds to a class
            # that drew by its own get_sample already); under a get_log_prob of the user's, as what that wraps
            if cls._dgm_score_with is _score_via_get_log_prob:
                cls._dgm_inner_score_with = _score_via_set_dist
            else:
                cls._dgm_score_with = _score_via_set_dist
            cls._dgm_fn = fn_via_set_dist
    for public, hook, inner, flag, via in (
            ("get_params", "_dgm_params", "_dgm_inner_params", "_dgm_user_get_params", _params_via_get_params),
            ("sample", "_dgm_draw_with", "_dgm_inner_draw_with", "_dgm_user_sample", _draw_via_sample),
            ("get_log_prob", "_dgm_score_with", "_dgm_inner_score_with", "_dgm_user_log_prob",
             _score_via_get_log_prob)):
        if not hasattr(cls, hook):
            continue
        if not _user_defined(cls, public):  # (none, or one deleted or set back since: the class's own hooks again)
            if cls.__dict__.get(flag):
                setattr(cls, flag, False)
                if public != "sample" or not cls._dgm_user_log_prob:
                    _unroute(cls, hook, inner, via)
            continue
        owner = next(k for k in cls.__mro__ if public in vars(k))  # (a base's, set there later: marked there)
        fn = vars(owner)[public]
        if hook != "_dgm_params" and inspect.isfunction(fn) and not getattr(fn, "_enters", False):  # (a method:
            setattr(owner, public, _entering(fn))  # not get_params, whose super() call reads _dgm_inner_params; nor a
            # staticmethod or a partial, which take no self and have no super() call)
        _route(cls, hook, inner, via)
        setattr(cls, flag, True)
    if hasattr(cls, "_dgm_draw_with"):
        if cls._dgm_user_log_prob:
            _route(cls, "_dgm_draw_with", "_dgm_inner_draw_with", _draw_via_sample)
        elif not cls._dgm_user_sample:
            _unroute(cls, "_dgm_draw_with", "_dgm_inner_draw_with", _draw_via_sample)
    now = _methods(cls)
    type.__setattr__(cls, "_dgm_methods", now)  # (what current() compares)
    type.__setattr__(cls, "_dgm_installed", next(_INSTALLS))  # (what its instances compare: current_of)
    type.__setattr__(cls, "_dgm_methods_static", _static_methods(cls) if now != _methods(cls) else None)


def _unroute(cls: Any, hook: str, inner: str, via: Any) -> None:
    """Undo :func:`_route` on ``cls`` (its user method is gone): the hook it replaced is its hook again."""
    if vars(cls).get(hook) is via and inner in vars(cls):
        setattr(cls, hook, vars(cls)[inner])


def _route(cls: Any, hook: str, inner: str, via: Any) -> None:
    """Make ``via`` the hook ``cls.<hook>``, keeping the hook it replaces as ``cls.<inner>``: the class's own, else
    the inherited one (the parent's inner one where the parent routes it already)."""
    own = vars(cls).get(hook)
    if own is via:
        return
    if own is None:
        own = getattr(cls, hook)
        if own is via:
            own = getattr(cls, inner)
    setattr(cls, inner, own)
    setattr(cls, hook, via)


# ---------------------------------------------------------------------- methods set on one instance
#: The public methods that a later notebook cell may set on one distribution (``q.get_log_prob = fn``): Pixyz calls
#: ``q.get_log_prob(...)``, which finds the instance's before the class's, and so for the others.
INSTANCE_METHODS = frozenset({"get_params", "sample", "get_log_prob", "set_dist", "get_sample"})

#: The hooks that :func:`install` and :func:`instance_method_set` route, each route with the slot of what it wraps.
_WRAPS = {"_draw_via_sample": "_dgm_inner_draw_with", "_draw_via_set_dist": "_dgm_inner_set_dist_draw",
          "_params_via_get_params": "_dgm_inner_params", "_score_via_get_log_prob": "_dgm_inner_score_with"}

#: What :func:`instance_method_set` writes in an instance's ``__dict__`` (besides the hooks it saves first).
_INSTANCE_SLOTS = ("_dgm_inner_draw_with", "_dgm_inner_set_dist_draw", "_dgm_inner_params", "_dgm_inner_score_with",
                   "_dgm_user_get_params", "_dgm_user_sample", "_dgm_user_log_prob", "_dgm_user_set_dist")

#: The slots of an instance's ``__dict__`` that its routes write (the hooks, what they wrap, flags, the record).
_MANAGED = _INSTANCE_SLOTS + ("_dgm_draw_with", "_dgm_score_with", "_dgm_params", "_dgm_fn", "_dgm_instance_saved")

_ABSENT = "(absent)"  # (a slot the instance did not have, in the record of what the routes replaced: pickled as is)

#: The flag saying that a public method is the user's (the class's, or one set on the instance).
_FLAG = {"sample": "_dgm_user_sample", "get_log_prob": "_dgm_user_log_prob"}


def _own(dist: Any, d: Mapping[str, Any], name: str) -> bool:
    """Whether ``dist`` has its own ``name``: set on the instance (``d`` its state; a value that is no function
    too, which Pixyz's call then fails on), or the user's on its class (:func:`install`)."""
    return name in d or _user_defined(type(dist), name)


def instance_method_set(dist: Any, name: str) -> None:
    """``dist.<name>`` was set (or deleted): route ``dist``'s hooks through its public methods, as :func:`install`
    routes a class's, with the methods on the instance and the user's on the class together (Pixyz's calls find the
    instance's first: one set on the instance calls the class's as a subclass calls ``super()``, and that call runs
    with the class's hooks, :func:`own_method_running`). The hooks sit in the instance's ``__dict__`` over the class's
    own (:class:`_ClassHook`), so other instances pay nothing; the user's function keeps its place there
    (``q.get_log_prob`` is it). Routed anew when the class's methods change (:func:`current_of`) and in a copy
    (``Distribution.__setstate__``). Not for a product, renaming or marginal (``_atomic`` false): Pixyz's products
    are made of their factors, whose own methods they call. The new routes replace the old ones in one update of
    the instance's ``__dict__`` (another thread reads the old or the new ones)."""
    if name not in INSTANCE_METHODS or not type(dist)._atomic:
        return
    real, cls = dist.__dict__, type(dist)
    d = dict(real)  # (the new state is made here, then written at once)
    saved = d.pop("_dgm_instance_saved", None)
    if saved is not None:  # the last routing taken down: the instance's own slots as they were
        for slot in _INSTANCE_SLOTS:
            d.pop(slot, None)
        for slot, value in saved.items():
            d.pop(slot, None)
            if not (isinstance(value, str) and value == _ABSENT):
                d[slot] = value
    if any(n in d for n in INSTANCE_METHODS) and hasattr(cls, "_dgm_draw_with"):
        _routes(dist, d)
    sets = {k: d[k] for k in _MANAGED if k in d and real.get(k, _ABSENT) is not d[k]}
    gone = [k for k in _MANAGED if k in real and k not in d]
    real.update(sets)  # (only the slots the routes use: a draw in another thread writes its own records)
    for k in gone:
        real.pop(k, None)
    if hasattr(cls, "_dgm_closed_forms") and "_dgm_b" in real:
        dist._dgm_closed_forms()  # (none where the user's set_dist makes the distribution)


def _routes(dist: Any, d: dict[str, Any]) -> None:
    """Write into ``d`` (``dist``'s state to be) the routes of :func:`instance_method_set`."""
    cls = type(dist)
    saved: dict[str, Any] = {}

    def route(hook: str, via: Any, inner: str | None) -> None:
        first = hook not in saved
        for slot in (hook, inner):
            if slot is not None and slot not in saved:
                saved[slot] = d.get(slot, _ABSENT)
        if inner is not None:
            below = d.get(hook)
            if below is None and first and inner in d:
                below = d[inner]  # (the instance's own, under its class's route: late params_keys, an error)
            d[inner] = below if below is not None else _ClassHook(dist, hook)
        d[hook] = functools.partial(via, dist)

    if hasattr(cls, "get_sample") and hasattr(cls, "set_dist") and (
            _own(dist, d, "set_dist") or _own(dist, d, "get_sample") or cls._dgm_user_dist):
        route("_dgm_draw_with", _draw_via_set_dist, "_dgm_inner_set_dist_draw")
        d["_dgm_user_set_dist"] = True
        if _own(dist, d, "set_dist") or cls._dgm_user_dist:
            route("_dgm_score_with", _score_via_set_dist, None)
            route("_dgm_fn", fn_via_set_dist, None)
    if _own(dist, d, "get_params") and hasattr(cls, "_dgm_params"):
        route("_dgm_params", _params_via_get_params, "_dgm_inner_params")
        d["_dgm_user_get_params"] = True
    if _own(dist, d, "sample") or _own(dist, d, "get_log_prob"):
        route("_dgm_draw_with", _draw_via_sample, "_dgm_inner_draw_with")
        d["_dgm_user_sample"] = _own(dist, d, "sample")
    if _own(dist, d, "get_log_prob"):
        route("_dgm_score_with", _score_via_get_log_prob, "_dgm_inner_score_with")
        d["_dgm_user_log_prob"] = True
    d["_dgm_instance_saved"] = saved


def copied(dist: Any) -> None:
    """``dist`` was made from a state (``copy.copy``, ``copy.deepcopy``, a pickle): routes of methods set on the
    instance that the state holds are made anew for it (a shallow copy's are the original's, bound to it)."""
    saved = dist.__dict__.get("_dgm_instance_saved")
    if saved is not None:
        dist.__dict__["_dgm_instance_saved"] = dict(saved)  # (not the original's record)
        instance_method_set(dist, "sample")


def own_method_running(dist: Any, name: str) -> bool:
    """Whether the library's public ``name`` runs on ``dist`` whose ``name`` is the user's (set on the instance, or
    on its class: its flag) while that method is not marked as running: the hooks call the user's method, never
    this one, so this is that method's ``super()`` call (one set on the instance; one set on the class by a later
    cell that ran before the class was installed again), or an explicit call of a parent's method, as Pixyz's runs
    its own; it runs with the class's hooks (:func:`entered`), else the hooks would call the user's method again.
    Also where a program took the method out of ``__dict__`` itself (the flag stays: the routes reach the class's)."""
    return getattr(dist, _FLAG[name]) and id(dist) not in _inside()  # type: ignore[no-any-return]


def unshadow(dist: Any, slot: str) -> None:
    """Take the instance's ``slot`` (``_dgm_params`` or ``_dgm_inner_params``: a binding's error, late
    ``params_keys``) off, where it shadowed the parameters' hook: the class's again, or, where it was what an
    instance's ``get_params`` route wraps, the class's under that route."""
    d = dist.__dict__
    was = d.pop(slot, None)
    saved = d.get("_dgm_instance_saved")
    if saved is not None:
        for key in ("_dgm_params", "_dgm_inner_params"):  # (not put back when the routes are taken down)
            if was is not None and saved.get(key) is was:
                saved[key] = _ABSENT
        if slot == "_dgm_inner_params" and isinstance(d.get("_dgm_params"), functools.partial):
            d[slot] = _ClassHook(dist, "_dgm_params")


def sets_dist(dist: Any) -> bool:
    """Whether ``dist``'s distribution object is made by the user's ``set_dist`` (or read from its ``dist``
    property): Pixyz's record of it is the user's, not made anew."""
    fn = dist.__dict__.get("_dgm_fn")
    return (type(dist)._dgm_fn if fn is None else getattr(fn, "func", None)) is fn_via_set_dist


class _ClassHook:
    """The family's own hook ``hook`` of ``dist``'s class, under the routes :func:`install` made there (the
    instance's routes stand for them), looked up at each call (a class patched later)."""

    __slots__ = ("dist", "hook")

    def __init__(self, dist: Any, hook: str) -> None:
        self.dist, self.hook = dist, hook

    def _target(self) -> Any:
        cls = type(self.dist)
        fn = getattr(cls, self.hook)
        while getattr(fn, "__name__", None) in _WRAPS and getattr(fn, "__module__", None) == __name__:
            fn = getattr(cls, _WRAPS[fn.__name__])
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(self.dist, *args, **kwargs)

    @property
    def _dgm_no_draw(self) -> bool:
        return bool(getattr(self._target(), "_dgm_no_draw", False))


def _local_inputs(self: Any, b: Binding, values: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of ``b`` (this factor under a product's or ``replace_var``'s names) under its own names."""
    return {o: values[g] for o, g in zip(self._dgm_binding.input_var, b.input_var) if g in values}


def _dgm_record(values: dict[str, Any], ctx: CallState, name: str, value: Any) -> None:
    """Keep a value drawn by the user's code, with one batch dim after the sample dims (Pixyz's convention)."""
    values[name] = value
    if isinstance(value, Tensor):
        ev = value.dim() - 1 - len(ctx.sample_shape)
        if ev >= 0:
            ctx.event_dims[name] = ev


def _params_via_get_params(self: Any, b: Binding, values: Mapping[str, Any], ctx: CallState) -> dict[str, Any]:
    """A family's parameters from the user's ``get_params``, called as Pixyz's ``set_dist`` calls it: with the
    inputs under the distribution's own names, and none of the call's keyword arguments (an override that names one,
    ``get_params(self, params_dict={}, beta=1.0)``, keeps its default, as under Pixyz); its ``super().get_params()``
    computes them with the original hook (``_dgm_inner_params``)."""
    params = self.get_params(_local_inputs(self, b, values))
    if not isinstance(params, Mapping):
        raise ArgumentError(f"{describe(self)}: get_params() must return a dict of parameters, got "
                            f"{type(params).__name__}")
    groups = getattr(self, "param_groups", None) or ()
    if users_own(type(self), "params_keys"):  # (read now, as Pixyz's set_dist reads it: a later cell may change it;
        keys = list(self.params_keys)  # its errors are the user's, raised as there)
        extra = [k for k in params if k not in keys]
        if extra:  # (Pixyz's set_dist: the keys must be params_keys)
            raise ValueError(f"{describe(self)}: get_params() returned {sorted(params)}, with {extra[0]!r}, which "
                             f"its params_keys {keys} does not name")
        groups = tuple((k,) for k in keys)
    missing = [g for g in groups if not any(n in params for n in g)] if type(groups) is tuple else []  # (not
    # LateKeys: params_keys is read at the first call of the family's own get_params)
    if missing:  # (Pixyz's set_dist: "... class requires following parameters")
        raise ValueError(f"{describe(self)}: get_params() returned {sorted(params)}, without "
                         f"{' and '.join(' or '.join(map(repr, g)) for g in missing)}; {type(self).__name__} needs "
                         f"the parameters {[n for g in groups for n in g[:1]]}")
    return dict(params)


def _draw_via_sample(self: Distribution, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
    """The draw of a factor whose class has its own ``sample`` (called as Pixyz's graph calls it) or its own
    ``get_log_prob`` (the class's draw; in a Pyro model or guide run, :func:`_draw_in_pyro`)."""
    if id(self) in _inside():
        return self._dgm_inner_draw_with(b, values, ctx)  # type: ignore[attr-defined,no-any-return]
    if ctx.obs is not None:
        return _draw_in_pyro(self, b, values, ctx)
    if not self._dgm_user_sample:  # (routed here for its get_log_prob only)
        return self._dgm_inner_draw_with(b, values, ctx)  # type: ignore[attr-defined,no-any-return]
    own = self._dgm_binding
    out = self.sample(_local_inputs(self, b, values), batch_n=ctx.batch_n, sample_shape=ctx.sample_shape,
                      return_all=False, reparam=ctx.reparam, sample_mean=ctx.sample_mean, **ctx.kwargs)
    if not isinstance(out, Mapping):
        raise TypeError(f"{describe(self)}: sample() must return a dict of values, got {type(out).__name__}")
    for o, g in zip(own.var, b.var):
        if o not in out:
            raise ValueError(f"{describe(self)}: sample() returned {sorted(out)}, without {o!r}; it draws "
                             f"{list(own.var)}")
        _dgm_record(values, ctx, g, out[o])
    return None


def _score_via_get_log_prob(self: Distribution, b: Binding, values: Mapping[str, Any], ctx: CallState,
                            sum_features: bool, feature_dims: Sequence[int] | None) -> Tensor:
    if id(self) in _inside():
        return self._dgm_inner_score_with(b, values, ctx, sum_features, feature_dims)  # type: ignore[attr-defined]
    own = self._dgm_binding
    pairs = list(zip(own.var, b.var)) + list(zip(own.cond_var, b.cond_var))
    local = {o: values[g] for o, g in pairs if g in values}
    lp = self.get_log_prob(local, sum_features=sum_features, feature_dims=feature_dims, **ctx.kwargs)
    if isinstance(lp, Tensor):
        return lp
    if type(lp).__module__ == "numpy" and hasattr(lp, "__array__"):  # (a numpy array: Pixyz adds it as one)
        return torch.as_tensor(lp)
    raise TypeError(f"{describe(self)}: get_log_prob() must return a tensor of one log-density per row of "
                    f"{list(own.var)}, got {type(lp).__name__}")


# ---------------------------------------------------------------------- Pyro model and guide runs
class UserScored(TorchDistribution):
    """The distribution of a Pyro site of a factor whose class has its own ``sample`` or ``get_log_prob``.

    ``base`` is the site distribution the class's own draw built (a family's): its shapes, support, enumeration and
    ``expand`` are the site's. ``log_prob(value)`` is the class's own ``get_log_prob`` of the value and of the
    factor's inputs at the draw (under the distribution's own names), summed over the site's event dims, so that
    ``Trace_ELBO`` and ``trace.log_prob_sum()`` see the density that ``get_log_prob`` and ``LogProb`` compute; a
    class without one scores by ``base`` (the family's density, as before). ``sampler(sample_shape, reparam)``,
    where given, draws the value as the class's own ``sample`` does (run only when Pyro samples the site, not when
    a handler gives its value); else ``base`` draws it.

    Without ``base`` (a distribution without a draw of its own: a value its ``sample`` drew, or an observed one),
    the site holds ``drawn``, of the given shapes: sampling returns it, once (a plate that would repeat it raises,
    naming the distribution), reparameterized if the distribution's ``has_reparam`` says so.
    """

    arg_constraints: dict[str, Any] = {}

    def __init__(self, owner: Distribution, var: str, inputs: Mapping[str, Any], base: Any = None,
                 sampler: Any = None, drawn: Tensor | None = None, batch_shape: Any = (), event_shape: Any = (),
                 unexpanded: torch.Size | None = None, input_dims: Mapping[str, int] | None = None) -> None:
        self.owner, self.var, self.inputs = owner, var, inputs
        self.input_dims = input_dims or {}  # the event dims of the tensor inputs (the rest are batch dims)
        self.base, self.sampler, self.drawn = base, sampler, drawn
        if base is not None:
            batch_shape, event_shape = base.batch_shape, base.event_shape
        batch_shape, event_shape = torch.Size(batch_shape), torch.Size(event_shape)
        self.unexpanded = batch_shape if unexpanded is None else unexpanded  # the shape get_log_prob answers for
        super().__init__(batch_shape, event_shape, validate_args=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({describe(self.owner)}, {self.var!r})"

    def __getattr__(self, name: str) -> Any:
        """An attribute the site distribution lacks is the family's (``base``, or the distribution it wraps with
        ``to_event``: its parameters, ``loc``, ``probs``...), as for a plain-Pyro subclass of the family."""
        d = self.__dict__.get("base")
        while d is not None and not name.startswith("__"):
            try:
                return getattr(d, name)
            except AttributeError:
                d = d.base_dist if isinstance(d, Independent) else None
        raise AttributeError(f"{type(self).__name__!r} object ({describe(self.__dict__.get('owner'))}, the site "
                             f"{self.__dict__.get('var')!r}) has no attribute {name!r}")

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        if self.base is not None:
            return bool(self.base.has_rsample)
        try:
            return bool(self.owner.has_reparam)
        except NotImplementedError:  # (Pixyz's Distribution.has_reparam raises)
            return False

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.base is not None and bool(self.base.has_enumerate_support)

    @property
    def support(self) -> Any:  # type: ignore[override]
        if self.base is not None:
            return self.base.support
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def mean(self) -> Tensor:
        return self.base.mean if self.base is not None else super().mean

    @property
    def variance(self) -> Tensor:
        return self.base.variance if self.base is not None else super().variance

    def enumerate_support(self, expand: bool = True) -> Tensor:
        if self.base is None:
            return super().enumerate_support(expand)
        return self.base.enumerate_support(expand)  # type: ignore[no-any-return]

    def expand(self, batch_shape: Any, _instance: Any = None) -> "UserScored":
        base = self.base.expand(batch_shape) if self.base is not None else None
        return UserScored(self.owner, self.var, self.inputs, base, self.sampler, self.drawn, batch_shape,
                          self.event_shape, self.unexpanded, self.input_dims)

    def rsample(self, sample_shape: Any = torch.Size()) -> Tensor:
        if self.sampler is not None:
            return self._dgm_user_draw(sample_shape, True)
        if self.base is not None:
            return self.base.rsample(sample_shape)  # type: ignore[no-any-return]
        return self._dgm_check_drawn(self.drawn, sample_shape)

    def sample(self, sample_shape: Any = torch.Size()) -> Tensor:
        if self.sampler is not None:
            with torch.no_grad():
                return self._dgm_user_draw(sample_shape, False)
        if self.base is not None:
            return self.base.sample(sample_shape)  # type: ignore[no-any-return]
        return self._dgm_check_drawn(self.drawn, sample_shape).detach()

    def _dgm_user_draw(self, sample_shape: Any, reparam: bool) -> Tensor:
        """A draw by the class's own ``sample``; leading batch dims that plates added to the site (vectorized
        particles) are its ``sample_shape``, as in Pixyz. Plates that broadcast the inputs (a global latent's value
        under the data plate and vectorized particles) are drawn as Pixyz's one batch dim: the inputs broadcast to
        the site's batch shape and flattened, the draw reshaped back."""
        shape, lead = torch.Size(sample_shape), len(self.batch_shape) - len(self.unexpanded)
        if lead >= 0 and self.batch_shape[lead:] == self.unexpanded:
            if lead > 0:
                shape += self.batch_shape[:lead]
            return self._dgm_check_drawn(self.sampler(shape, reparam), sample_shape)
        flat = _flatten_batch(dict(self.inputs), self.input_dims, self.batch_shape) if self.input_dims else None
        if flat is None:  # (no inputs, or not broadcasting to the site: the check below says what is wrong)
            return self._dgm_check_drawn(self.sampler(shape, reparam), sample_shape)
        value = self.sampler(shape, reparam, flat)
        n = self.batch_shape.numel()
        if isinstance(value, Tensor) and value.shape[:len(shape) + 1] == shape + (n,):
            value = value.reshape(shape + self.batch_shape + value.shape[len(shape) + 1:])
        return self._dgm_check_drawn(value, sample_shape)

    def _dgm_check_drawn(self, value: Any, sample_shape: Any) -> Tensor:
        """``value``, drawn by the class's own ``sample``, if it has the site's shape."""
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        if isinstance(value, Tensor) and value.shape == shape:
            return value
        got = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise ShapeError(f"{describe(self.owner)}: the Pyro site {self.var!r} needs a value of shape {tuple(shape)} "
                         f"(batch shape {tuple(self.batch_shape)}: the plates around it), but the distribution's "
                         f"own sample() drew {got}: a value drawn by the distribution's own code cannot be "
                         "repeated over a plate (the data plate, or vectorized particles); draw one value per "
                         "element of the plates in sample() (honour batch_n, or call super().sample()), or use "
                         "num_particles without vectorize_particles")

    def log_prob(self, value: Tensor) -> Tensor:
        owner = self.owner
        if self.base is not None and not owner._dgm_user_log_prob:
            return self.base.log_prob(value)  # type: ignore[no-any-return]  # (the family's density)
        ev = len(self.event_shape)
        batch = value.shape[:value.dim() - ev]
        whole = self._dgm_features_whole()
        dims = None if whole else list(range(-self._dgm_feature_ndim(), 0))
        x_dict = {self.var: value, **self.inputs}
        flat = self._dgm_flat_batch(batch, whole)
        if flat is not None:  # Pixyz's one batch dim
            x_dict = _flatten_batch(x_dict, {**self.input_dims, self.var: ev}, flat)  # type: ignore[assignment]
        lp = owner.get_log_prob(x_dict, sum_features=True, feature_dims=dims)
        if flat is not None and isinstance(lp, Tensor) and lp.shape == (flat.numel(),):
            lp = lp.reshape(flat)
        try:
            expected = torch.broadcast_shapes(batch, self.batch_shape)
            answered = torch.broadcast_shapes(batch, self.unexpanded)
        except RuntimeError:
            expected = answered = None
        if isinstance(lp, Tensor) and expected is not None:
            if lp.shape == expected:
                return lp
            if lp.shape == answered or (lp.dim() == len(expected) and all(
                    m in (n, 1) for m, n in zip(lp.shape, expected))):
                # parameters of batch 1, or a site that the plates (or batch_n) expanded: Pyro broadcasts
                return lp.expand(expected)
        got = f"shape {tuple(lp.shape)}" if isinstance(lp, Tensor) else type(lp).__name__
        raise ShapeError(f"{describe(owner)}: get_log_prob() of {self.var!r} of shape {tuple(value.shape)} (event "
                         f"shape {tuple(self.event_shape)}) returned {got}; a Pyro site needs one log-density per "
                         f"batch element, shape {tuple(expected) if expected is not None else '?'}: sum only the "
                         f"event dims (get_log_prob is called with feature_dims={dims})")

    def _dgm_features_whole(self) -> bool:
        """Whether the site's event dims are the features of a distribution that scores them only together (a
        flow, a mixture: not a family), whose ``get_log_prob`` is called as Pixyz's graph calls it: one batch dim,
        ``feature_dims=None``."""
        from pyro_dgm.distributions.family import DistributionBase  # (family imports this module)

        return self.base is not None and not isinstance(self.owner, DistributionBase)

    def _dgm_flat_batch(self, batch: torch.Size, whole: bool) -> torch.Size | None:
        """The batch shape of the value and the inputs (``batch``: the value's) to flatten into Pixyz's one batch
        dim before ``get_log_prob`` reads them, where their batch dims do not line up as Pixyz's (enumerated or
        vectorized draws, broadcast by the plates; for ``whole``, any batch of other than one dim); else ``None``."""
        shapes = [batch] + [_batch_shape(self.inputs[k], e) for k, e in self.input_dims.items()]
        same = all(s == batch for s in shapes)
        if (same and len(batch) == 1) if whole else (same or all(len(s) <= 1 for s in shapes)):
            return None
        try:
            return torch.broadcast_shapes(*shapes)
        except RuntimeError:
            return None  # (get_log_prob says what is wrong)

    def _dgm_feature_ndim(self) -> int:
        """How many of the site's event dims are the factor's feature dims (Pixyz's, which ``get_log_prob``
        sums): those a family's draw reinterpreted (``to_event``), not the family's own (a one-hot class dim)."""
        if self.base is None:
            return len(self.event_shape)
        n, d = 0, self.base
        while isinstance(d, Independent):
            n, d = n + d.reinterpreted_batch_ndims, d.base_dist
        return n


def _batch_shape(t: Tensor, event_dim: int) -> torch.Size:
    return t.shape[:t.dim() - event_dim]


def _flatten_batch(values: dict[str, Any], event_dims: Mapping[str, int], batch: torch.Size) -> dict[str, Any] | None:
    """``values`` with the tensors of ``event_dims`` broadcast to ``batch`` (on the left of their event dims) and
    their batch dims flattened into one (Pixyz's batch dim); ``None`` if one does not broadcast to ``batch``."""
    n = batch.numel()
    for k, e in event_dims.items():
        t = values.get(k)
        if not isinstance(t, Tensor):
            continue
        event = t.shape[t.dim() - e:]
        try:
            values[k] = t.expand(batch + event).reshape((n,) + event)
        except RuntimeError:
            return None
    return values


def _site_inputs(self: Any, b: Binding, values: Mapping[str, Any],
                 ctx: CallState) -> tuple[dict[str, Any], dict[str, int]]:
    """The values the factor's ``get_log_prob`` reads besides its own variables, under the distribution's names, and
    the event dims of those that are tensors (:func:`_event_dim`)."""
    own = self._dgm_binding
    pairs = list(zip(own.cond_var, b.cond_var))
    pairs += [p for p in zip(own.input_var, b.input_var) if p not in pairs]
    inputs = {o: values[g] for o, g in pairs if g in values}
    dims = {o: _event_dim(values[g], g, ctx) for o, g in pairs if isinstance(values.get(g), Tensor)}
    return inputs, dims


class _OwnSites(Messenger):
    """Around the class's own draw of a factor in a Pyro model or guide run: the site of its variable gets a
    :class:`UserScored` distribution over the one the draw built, drawn by ``sampler`` (the class's own ``sample``)
    where given, and scored by the class's own ``get_log_prob``."""

    def __init__(self, dist: Any, b: Binding, values: Mapping[str, Any], ctx: CallState, sampler: Any = None) -> None:
        super().__init__()
        self.dist, self.sampler = dist, sampler
        self.inputs, self.input_dims = _site_inputs(dist, b, values, ctx)
        self.own = dict(zip(b.var, dist._dgm_binding.var))

    def _pyro_sample(self, msg: Any) -> None:
        o = self.own.get(msg["name"])
        if o is None or isinstance(msg["fn"], UserScored) or (msg.get("infer") or {}).get("_deterministic"):
            return  # (another site; a mean recorded by pyro.deterministic is not a draw)
        _refuse_reparam(self.dist, msg["name"])
        msg["fn"] = UserScored(self.dist, o, self.inputs, base=msg["fn"], sampler=self.sampler,
                               input_dims=self.input_dims)


def _refuse_reparam(self: Any, name: str) -> None:
    """Refuse a reparameterizer that ``poutine.reparam`` would apply to the site ``name`` of a factor drawn or scored
    by its class's own ``sample`` or ``get_log_prob``: it rebuilds the site's distribution from a family's parameters
    (a plain-Pyro subclass keeps its own density there, which ours cannot: its density is a function of the
    inputs, not of parameters)."""
    for m in PYRO_STACK:
        if isinstance(m, ReparamMessenger) and isinstance(m.config, Mapping) and m.config.get(name) is not None:
            own = [k for k, f in (("sample", self._dgm_user_sample), ("get_log_prob", self._dgm_user_log_prob)) if f]
            raise NotImplementedError(
                f"{describe(self)}: poutine.reparam is asked to reparameterize the site {name!r} with "
                f"{type(m.config[name]).__name__}, but {type(self).__name__} draws or scores it by its own "
                f"{' and '.join(f'{k}()' for k in own)}, which a reparameterizer cannot keep (it rebuilds the site's "
                f"distribution from the family's parameters); leave {name!r} out of the reparam config")


def _user_sampler(self: Any, b: Binding, values: Mapping[str, Any], ctx: CallState) -> Any:
    """The draw of the factor's one variable by the class's own ``sample``, as a function of ``(sample_shape,
    reparam)``; Pyro's handlers do not see the sites that it draws through (the site is the variable's)."""
    own = self._dgm_binding
    inputs = {o: values[g] for o, g in zip(own.input_var, b.input_var) if g in values}
    batch_n = None if b.input_var else ctx.batch_n  # (a factor with inputs takes their batch)

    def draw(sample_shape: torch.Size, reparam: bool, flat: Mapping[str, Any] | None = None) -> Any:
        """``flat``: the inputs broadcast to the site's plates and flattened (:meth:`UserScored._dgm_user_draw`)."""
        given = inputs if flat is None else {o: flat[o] for o in inputs}
        with sites_hidden():
            out = self.sample(dict(given), batch_n=batch_n, sample_shape=sample_shape, return_all=False,
                              reparam=reparam, **ctx.kwargs)
        if not isinstance(out, Mapping):
            raise TypeError(f"{describe(self)}: sample() must return a dict of values, got {type(out).__name__}")
        if own.var[0] not in out:
            raise ValueError(f"{describe(self)}: sample() returned {sorted(out)}, without {own.var[0]!r}; it draws "
                             f"{list(own.var)}")
        return out[own.var[0]]

    return draw


def own_methods(d: Any, b: Binding, values: Mapping[str, Any], ctx: CallState, fn: Any) -> Any:
    """``fn``, the site distribution of an inner distribution ``d`` (a mixture's component, bound by ``b``), or, where
    ``d``'s class has its own ``get_log_prob`` or ``sample``, a :class:`UserScored` over it that scores and draws
    with them, as Pixyz's composite calls ``d``'s public methods (a class with its own ``set_dist`` or
    ``get_sample`` is drawn by its ``sample``, which goes through them; ``fn`` is what its ``set_dist`` made)."""
    if not (d._dgm_user_log_prob or d._dgm_user_sample or d._dgm_user_set_dist):
        return fn
    inputs, dims = _site_inputs(d, b, values, ctx)
    sampler = _user_sampler(d, b, values, ctx) if d._dgm_user_sample or d._dgm_user_set_dist else None
    # (without inputs, its own sample draws batch_n rows: dims that an expand adds left of them are its sample_shape)
    rows = torch.Size([ctx.batch_n]) if ctx.batch_n and not b.input_var else None
    return UserScored(d, d._dgm_binding.var[0], inputs, base=fn, sampler=sampler, input_dims=dims, unexpanded=rows)


def _has_density(self: Any) -> bool:
    """Whether the factor scores its values: its class's own ``get_log_prob``, or a family's density."""
    return bool(self._dgm_user_log_prob) or not getattr(type(self)._dgm_score_with, "_dgm_no_density", False)


def _draw_in_pyro(self: Any, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
    """A factor whose class has its own ``sample`` or ``get_log_prob``, in a Pyro model or guide run: its site is
    the one its class's draw makes (a family's), or, for a distribution without one, one of its own
    (:func:`_site_of_own`); a variable that is not given is drawn by the class's ``sample`` (as Pixyz's graph
    draws it), and every site is scored by its ``get_log_prob``."""
    inner = self._dgm_inner_draw_with
    drawn = [g for g in b.var if g not in ctx.obs]  # type: ignore[operator]
    user_draw = bool(drawn) and self._dgm_user_sample
    if user_draw and len(b.var) != 1:
        raise NotImplementedError(f"{describe(self)}: its own sample() draws {list(b.var)} together, and a Pyro "
                                  "site holds one variable; give them as data, or write the distribution as a "
                                  "product of one-variable distributions")
    if not getattr(inner, "_dgm_no_draw", False):  # the class's draw (a family's) makes the site
        if not user_draw and not self._dgm_user_log_prob:
            return inner(b, values, ctx)  # type: ignore[no-any-return]
        with _OwnSites(self, b, values, ctx, _user_sampler(self, b, values, ctx) if user_draw else None):
            return inner(b, values, ctx)  # type: ignore[no-any-return]
    if drawn and not self._dgm_user_sample:
        raise NotImplementedError(f"{describe(self)}: {drawn[0]!r} is not given to this Pyro model, and "
                                  f"{type(self).__name__} has no sample() to draw it; give {drawn[0]!r} as data "
                                  f"(model({drawn[0]}=...)), or define sample()")
    if not _has_density(self) or len(b.var) != 1:
        why = ("defines no get_log_prob() to score it" if not _has_density(self)
               else f"scores {list(b.var)} together, and a Pyro site holds one variable")
        raise NotImplementedError(f"{describe(self)}: {b.var[0]!r} is a site of this Pyro model, which Pyro scores "
                                  f"(an ELBO scores every site), but {type(self).__name__} {why}; define "
                                  "get_log_prob(self, x_dict, sum_features=True, feature_dims=None, **kwargs) for "
                                  "one variable (a deterministic map is a pyro_dgm.distributions.Deterministic)")
    if drawn:
        value = _user_sampler(self, b, values, ctx)(ctx.sample_shape, ctx.reparam)
        _site_of_own(self, b, values, ctx, value, observed=False)
    else:
        _site_of_own(self, b, values, ctx, values[b.var[0]], observed=True)
    return None


def _site_of_own(self: Any, b: Binding, values: dict[str, Any], ctx: CallState, value: Any, observed: bool) -> None:
    """The site of ``b``'s one variable for a distribution without a draw of its own, holding ``value`` (drawn by
    its ``sample``, or observed) and scored by its ``get_log_prob``. Its batch dims are the inputs' (a drawn value),
    or the value's with the inputs' (an observed one; Pixyz's one batch dim where no trace or plate says), the rest
    event dims."""
    g, o = b.var[0], self._dgm_binding.var[0]
    if not isinstance(value, Tensor):
        raise NotATensorError(f"{describe(self)}: the value of {g!r} must be a tensor, got {type(value).__name__}")
    if observed:
        shapes = [value.shape[:value.dim() - _event_dim(value, g, ctx)]]
        shapes += [x.shape[:x.dim() - _event_dim(x, v, ctx)] for v in b.input_var
                   if isinstance(x := values.get(v), Tensor)]
        try:
            batch = torch.broadcast_shapes(*shapes)
        except RuntimeError as err:
            raise ShapeError(f"{describe(self)}: the batch shapes of the observed {g!r} and of its inputs "
                             f"({', '.join(str(tuple(s)) for s in shapes)}) do not broadcast") from err
        e = value.dim() - len(shapes[0])  # (the value's own event dims: the inputs' batch dims may be more)
    else:
        bn = min(self._dgm_batch_ndim(b, values, ctx), value.dim())
        e, batch = value.dim() - bn, value.shape[:bn]
    inputs, dims = _site_inputs(self, b, values, ctx)
    fn = UserScored(self, o, inputs, drawn=value, batch_shape=batch, event_shape=value.shape[value.dim() - e:],
                    input_dims=dims)
    infer = self._dgm_pyro_infer
    _refuse_reparam(self, g)
    if observed:
        values[g] = self._dgm_pyro_sample(g, fn, obs=value)
    else:
        values[g] = self._dgm_pyro_sample(g, fn, **({"infer": dict(infer)} if infer else {}))
    ctx.event_dims[g] = e


def _event_dim(x: Tensor, name: str, ctx: CallState) -> int:
    """The event dims of a value in a Pyro model run: drawn in it, a site's, the plates', else Pixyz's one batch dim."""
    e = ctx.event_dims.get(name)
    if e is None and PYRO_STACK:
        e = given_event_dim(x, ctx)
    return max(x.dim() - 1, 0) if e is None else e


def _draw_via_set_dist(self: Any, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
    """Pixyz's atomic draw: ``set_dist(inputs, batch_n)``, then ``get_sample`` (or the mean of ``dist``)."""
    if ctx.obs is not None:
        return self._dgm_inner_set_dist_draw(b, values, ctx)  # type: ignore[no-any-return]
    self.set_dist(_local_inputs(self, b, values), batch_n=ctx.batch_n)
    name = self._dgm_binding.var[0]
    if ctx.sample_mean:
        value = self.dist.mean
        if ctx.sample_shape:  # Pixyz repeats the mean (a copy, not a view)
            extra = len(ctx.sample_shape)
            value = value.reshape((1,) * extra + value.shape).repeat(*ctx.sample_shape, *(1,) * value.dim())
    else:
        out = self.get_sample(reparam=ctx.reparam, sample_shape=ctx.sample_shape)
        if not isinstance(out, Mapping) or name not in out:
            raise ValueError(f"{describe(self)}: get_sample() must return {{{name!r}: value}}, got "
                             f"{sorted(out) if isinstance(out, Mapping) else type(out).__name__}")
        value = out[name]
    _dgm_record(values, ctx, b.var[0], value)
    return None


def _score_via_set_dist(self: Any, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
    """Pixyz's atomic score: ``set_dist(inputs)``, then ``dist.log_prob`` summed over the feature dims."""
    self.set_dist(_local_inputs(self, b, values))
    lp = self.dist.log_prob(values[b.var[0]])
    return sum_samples(lp, feature_dims) if sum_features else lp  # type: ignore[no-any-return]


def fn_via_set_dist(self: Any, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                    value: Tensor | None = None) -> tuple[Any, Any]:
    """The distribution object that ``set_dist`` sets (every dim a batch dim, as in Pixyz) and the same with every
    dim after the first as an event dim: what moments, the entropy and the KL divergence read."""
    self.set_dist(_local_inputs(self, b, values), batch_n=ctx.batch_n)  # (Pixyz passes no network keywords)
    base = as_pyro(self.dist, copy=True)  # (a plain torch object the user's set_dist made: Pyro's to_event)
    ev = len(base.batch_shape) - 1
    return (base.to_event(ev) if ev > 0 else base), base
