"""How one call of a distribution runs: its options and state (:class:`CallState`), the variable names it reads and
writes (:class:`Binding`, which ``replace_var`` renames), and how ``forward``'s arguments are bound to them.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from pyro_dgm.utils.checks import ArgumentError, describe
from pyro_dgm.utils.compat import is_compiling

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["CallState", "Binding", "SAMPLING_OPTIONS", "forward_extras", "forward_binding", "expand_batch_n",
           "draw_factors"]


_NO_SHAPE = torch.Size()
#: The keywords of a sampling call (``Distribution.sample``'s options): a loss's ``eval`` passes them on to the terms
#: that draw, and they are never a network's argument (one definition for the distributions and the losses).
SAMPLING_OPTIONS = frozenset({"batch_n", "sample_shape", "reparam", "sample_mean", "return_all"})
_FORWARD_KEYWORDS: "weakref.WeakKeyDictionary[Any, tuple[str, ...]]" = weakref.WeakKeyDictionary()
_FORWARD_KEYWORDS_TRACED: dict[Any, tuple[str, ...]] = {}  # (the forwards a compiled evaluation traced: few)


class BoundForward:
    """The ``forward`` a distribution's arguments were bound to when it was built (see
    :func:`~pyro_dgm.distributions.effects.forward_replaced`). A copy shares it; a pickle holds an empty one (a
    function pickles by its name, which a lambda, a local decorator's wrapper or a replaced method does not resolve
    to), so a loaded distribution passes its inputs by name, which is right for any ``forward``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[Any, ...]:
        return (BoundForward, (None,))

    def __deepcopy__(self, memo: dict[int, Any]) -> "BoundForward":
        return self


def forward_extras(module: nn.Module, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The keywords of a call that ``module.forward`` names as its parameters besides the variables (``forward(self,
    y, factor=1.0)`` takes ``model.test(data, factor=0.0)``'s ``factor``). Other options (``sample(unknown_opt=None)``,
    a loss's options, a graph's options) are dropped, as Pixyz never passes them to a network; a ``forward(**inputs)``
    gets only the inputs, as under Pixyz. The ``forward`` is the one of the moment (a notebook cell may replace the
    class's method, or set one on the instance); its signature is read once per function."""
    if not kwargs:
        return kwargs
    f = module.forward  # as the call finds it: a bound method (self or cls bound), or a plain callable
    fn = getattr(f, "__func__", f)
    try:  # (while torch.compile traces: the plain dict of the functions seen, as Dynamo cannot trace the weak one's
        names = _FORWARD_KEYWORDS_TRACED.get(fn) if is_compiling() else _FORWARD_KEYWORDS.get(fn)  # references)
    except TypeError:  # (a callable that takes no weak reference)
        names = None
    if names is None:
        try:
            prms = [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]
        except (TypeError, ValueError):
            prms = []
        names = tuple(n if k in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY) else ""
                      for n, k in prms)
        with contextlib.suppress(TypeError):
            if is_compiling():
                _FORWARD_KEYWORDS_TRACED[fn] = names
            else:
                _FORWARD_KEYWORDS[fn] = names
    if fn is not f and getattr(f, "__self__", None) is not None:  # a method: its first parameter is bound
        names = names[1:]
    return {k: v for k, v in kwargs.items() if k and k in names}


class CallState:
    """The state of one ancestral pass: the options of the call and the event dims of what it drew so far."""

    __slots__ = ("batch_n", "sample_shape", "reparam", "sample_mean", "obs", "event_dims", "kwargs", "given_dims",
                 "own_shape", "extra_params", "rows_from", "rows_kind", "spare")

    def __init__(self, batch_n: int | None = None, sample_shape: Iterable[int] = _NO_SHAPE, reparam: bool = False,
                 sample_mean: bool = False, obs: Mapping[str, Any] | None = None,
                 kwargs: Mapping[str, Any] | None = None) -> None:
        self.batch_n = batch_n
        self.sample_shape = sample_shape if type(sample_shape) is torch.Size else torch.Size(sample_shape)
        self.reparam = reparam
        self.sample_mean = sample_mean
        self.obs = obs  # None: not a Pyro model/guide run; else the observed values by name
        self.event_dims: dict[str, int] = {}
        self.kwargs = kwargs or {}
        self.given_dims: dict[int, int | None] | None = None  # given_event_dim's answers in this pass
        self.own_shape = False  # sample_shape is the drawing factor's own option (graph.set_option), not the call's
        self.extra_params = False  # keys a network returns beyond its family's parameters are kept, not refused
        # (get_params and a product of experts, which read the parameters they know, as Pixyz's do)
        self.rows_from: tuple[str, ...] = ()  # a model/guide run: the given variables whose dim 0 sized its data
        # plate, none of the inputs' (see Distribution._dgm_given_rows), and what their sites found them to be
        self.rows_kind: dict[str, tuple[Any, ...]] | None = None
        self.spare: tuple[Any, Any, dict[str, Any]] | None = None  # (factor, binding, parameters) that the closed
        # forms computed and declined: the general path that follows takes them instead of running the network again

    def override(self, option: Mapping[str, Any]) -> tuple[Any, ...]:
        """Apply one factor's options (``graph.set_option``) for its draw; returns what :meth:`restore` needs."""
        saved = (self.batch_n, self.sample_shape, self.reparam, self.sample_mean, self.kwargs, self.own_shape)
        if "batch_n" in option:
            self.batch_n = option["batch_n"] or None  # (Pixyz's `if batch_n:`: 0 draws the inputs' size)
        if "sample_shape" in option:
            shape = option["sample_shape"]
            self.sample_shape = shape if type(shape) is torch.Size else torch.Size(shape)
            self.own_shape = True  # a factor asked for it: its draws are made even if its inputs were drawn
        if "reparam" in option:
            self.reparam = bool(option["reparam"])
        if "sample_mean" in option:
            self.sample_mean = bool(option["sample_mean"])
        extra = {k: v for k, v in option.items() if k not in SAMPLING_OPTIONS}
        if extra:
            self.kwargs = {**self.kwargs, **extra}
        return saved

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Undo :meth:`override`."""
        self.batch_n, self.sample_shape, self.reparam, self.sample_mean, self.kwargs, self.own_shape = saved


def draw_factors(factors: Iterable[Any], values: dict[str, Any], ctx: CallState,
                 options: Mapping[int, Mapping[str, Any]] | None = None) -> None:
    """Draw ``factors`` in order into ``values``; a factor with options (``graph.set_option(opts, var)``, by
    ``id(factor)``) draws under them instead of the call's, as Pixyz's ``Factor.option`` does."""
    if not options:
        for f in factors:
            f._dgm_draw_factor(values, ctx)
        return
    for f in factors:
        o = options.get(id(f))
        if o is None:
            f._dgm_draw_factor(values, ctx)
            continue
        saved = ctx.override(o)
        try:
            f._dgm_draw_factor(values, ctx)
        finally:
            ctx.restore(saved)


class Binding:
    """Which variable names an atomic distribution reads and writes.

    ``replace_var`` makes a renamed binding over the same modules, so a renamed distribution runs the same code
    with other names instead of translating dicts on every call.
    """

    __slots__ = ("var", "cond_var", "input_var", "fwd_pos", "fwd_kw", "param_vars")

    def __init__(self, var: Sequence[str], cond_var: Sequence[str], input_var: Sequence[str],
                 fwd_pos: Sequence[str] = (), fwd_kw: Sequence[tuple[str, str]] = (),
                 param_vars: Sequence[tuple[str, str]] = ()) -> None:
        self.var = tuple(var)
        self.cond_var = tuple(cond_var)
        self.input_var = tuple(input_var)
        self.fwd_pos = tuple(fwd_pos)        # variables passed positionally to forward(), in its order
        self.fwd_kw = tuple(fwd_kw)          # (forward's keyword, variable) for forward(**kwargs)
        self.param_vars = tuple(param_vars)  # (parameter name, variable) for parameters given as a name

    def renamed(self, m: Mapping[str, str]) -> "Binding":
        def r(names: Sequence[str]) -> tuple[str, ...]:
            return tuple(m.get(v, v) for v in names)

        return Binding(r(self.var), r(self.cond_var), r(self.input_var), r(self.fwd_pos),
                        tuple((k, m.get(v, v)) for k, v in self.fwd_kw),
                        tuple((p, m.get(v, v)) for p, v in self.param_vars))


def expand_batch_n(owner: Any, d: Any, batch_n: int) -> Any:
    """``d`` with its leading batch dim (of size 1) expanded to ``batch_n``; raises naming ``owner`` if it differs."""
    batch = d.batch_shape
    if torch.jit.is_tracing():  # sizes are tensors there: no Python-side comparison (expand checks them)
        return d.expand(torch.Size([batch_n]) + batch[1:])
    lead = batch[0] if batch else 1
    if lead == batch_n:
        return d
    if lead != 1:
        raise ValueError(f"{describe(owner)}: batch_n={batch_n} does not match the batch size {lead} of its "
                         "parameters")
    return d.expand(torch.Size([batch_n]) + batch[1:])


def _parameters(fn: Any) -> list[inspect.Parameter]:
    """``inspect.signature(fn)``'s parameters, of ``fn`` itself (a ``functools.wraps`` decorator's wrapper, not the
    function it wraps: a ``wrapper(self, *args, **kwargs)`` then takes the inputs by name, as Pixyz's
    ``forward(**inputs)`` passes them, where the wrapped function's order would pass them into ``*args``); of a
    callable object whose ``__call__`` is a staticmethod or a classmethod, the function's as the call binds it
    (Python 3.11's ``signature`` drops one parameter too many)."""
    if not isinstance(fn, type) and not inspect.isroutine(fn):
        call = inspect.getattr_static(type(fn), "__call__", None)
        if isinstance(call, staticmethod):
            fn = call.__func__
        elif isinstance(call, classmethod):
            fn = call.__get__(fn, type(fn))  # (bound to the class, as the object's call binds it)
    return list(inspect.signature(fn, follow_wrapped=False).parameters.values())


def forward_binding(dist: "Distribution", used_by_params: Iterable[str],
                    example_param: str = "loc") -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Bind ``forward``'s arguments (the instance's, where one is set on it) to ``cond_var``; raise naming the
    distribution if they differ.

    Returns the variables passed positionally (in forward's order) and ``(keyword, variable)`` pairs for a
    ``forward(**kwargs)``. Every ``cond_var`` must reach forward or a parameter given by name.
    """
    from pyro_dgm.distributions.base import has_network

    used = set(used_by_params)
    cond = dist.cond_var
    if not has_network(dist):
        unused = [v for v in cond if v not in used]
        if unused:
            raise ValueError(f"{describe(dist)}: cond_var {unused[0]!r} is used by no parameter; name it as a "
                             f"parameter (e.g. {example_param}={unused[0]!r}) or subclass {type(dist).__name__} with "
                             f"forward({', '.join(cond)}) returning the parameters")
        return (), ()
    # a forward set on the instance (p.forward = ...) of a family without a network: its own binding. One set on an
    # instance of a class with a network keeps the class's (the same inputs, called by name: effects.forward_replaced),
    # which a renaming made before (replace_var: it keeps the binding of then) shares
    on_instance = not has_network(type(dist))
    fn = dist.__dict__["forward"] if on_instance else type(dist).forward
    dist.__dict__["_dgm_forward_fn"] = BoundForward(fn)  # the forward these arguments are bound to
    if on_instance:  # a lambda, a partial, another object's method: no self to skip
        try:
            params = _parameters(fn)
        except (TypeError, ValueError):  # (no signature: a builtin, not a callable) Pixyz's call passes names
            return (), tuple((v, v) for v in cond if v not in used)
    else:
        raw = inspect.getattr_static(type(dist), "forward", None)
        binds = inspect.isfunction(raw) or isinstance(raw, (functools.partialmethod, functools.singledispatchmethod))
        if binds or not hasattr(raw, "__get__") or isinstance(raw, (staticmethod, classmethod, functools.partial)):
            params = _parameters(fn)
            if binds:
                params = params[1:]  # skip self (a classmethod's cls is bound already; a staticmethod, a partial or
                # a callable object, which Python does not bind, have neither)
        elif isinstance(raw, property):  # (it may give another callable at each call, whose arguments may come in
            return (), tuple((v, v) for v in cond if v not in used)  # another order: Pixyz's call passes names)
        else:  # a decorator of the user's written as a descriptor: what it gives the instance, as Python calls it
            try:
                params = list(inspect.signature(raw.__get__(dist, type(dist)), follow_wrapped=False)
                              .parameters.values())  # (what it gives: __wrapped__ would be the unbound function)
            except Exception:  # noqa: BLE001  (no signature, or a descriptor that reads what __init__ has not
                return (), tuple((v, v) for v in cond if v not in used)  # set yet: Pixyz's call passes names)
    # Pixyz calls forward(**inputs): positional passing is only a shortcut for the leading arguments, so an
    # argument after one that is skipped (it has a default and is not in cond_var), or a keyword-only one, goes
    # by name
    pos: list[str] = []
    kw: list[tuple[str, str]] = []
    var_kw, in_order = False, True
    var_pos: str | None = None
    for prm in params:
        if prm.kind is prm.VAR_KEYWORD:
            var_kw = True
        elif prm.kind is prm.VAR_POSITIONAL:  # (a wrapper's *args, **kwargs: Pixyz passes the inputs by name; a
            # forward(x, *args) whose cond_var are all named takes them so, its *args empty)
            var_pos = prm.name
            in_order = False
        elif prm.name in cond:
            if in_order and prm.kind is not prm.KEYWORD_ONLY:
                pos.append(prm.name)
            else:
                kw.append((prm.name, prm.name))
        elif prm.default is prm.empty:
            # (an ArgumentError: also the TypeError Pixyz's call of forward raises there)
            raise ArgumentError(f"{describe(dist)}: forward() takes {prm.name!r}, which is not in cond_var {cond}; "
                                "name forward's arguments after cond_var")
        else:
            in_order = False
    if var_kw:
        kw += [(v, v) for v in cond if v not in pos and v not in used and (v, v) not in kw]
    unused = [v for v in cond if v not in pos and v not in used and (v, v) not in kw]
    if unused and var_pos is not None:
        raise ArgumentError(f"{describe(dist)}: forward(*{var_pos}) cannot be bound to cond_var {unused} (Pixyz "
                            "passes the inputs by name); name forward's arguments after cond_var")
    if unused:
        raise ArgumentError(f"{describe(dist)}: cond_var {unused[0]!r} is not an argument of forward("
                            f"{', '.join(p.name for p in params)}) nor a parameter given by name; "
                            "name forward's arguments after cond_var")
    if on_instance:  # (called by name, as Pixyz calls it: see effects.forward_replaced)
        return (), tuple((v, v) for v in pos) + tuple(kw)
    return tuple(pos), tuple(kw)
