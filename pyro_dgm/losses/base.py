r"""The :class:`Loss` base class: a formula over distributions, evaluated lazily with :meth:`Loss.eval`.

A loss is a tree: leaves are terms built from distributions (:class:`~pyro_dgm.losses.pdf.LogProb`,
:class:`~pyro_dgm.losses.divergences.KullbackLeibler`, ...) and inner nodes are operators (:mod:`.operators`).
Each node knows its ``input_var``, its LaTeX text (:attr:`~Loss.latex`, built by hand, in the order the user wrote it,
with parentheses by precedence; ``str(loss)`` is Pixyz's text, ``sympy.latex`` of the formula as a sympy expression)
and how to compute its value from a dict of values (``forward``).

:class:`Loss` is a :class:`torch.nn.Module` (as in Pixyz: ``loss.to(device)``, ``loss.parameters()``,
``loss.state_dict()`` cover the distributions it holds) and also a :class:`pyro.infer.ELBO`, so
``SVI(model, guide, optim, loss=our_loss)`` optimizes it: the data passed to ``svi.step`` become ``x_dict``, and every
distribution in the loss registers its networks with ``pyro.module`` so SVI's parameter capture finds them.

Sub-modules (the distributions and terms a loss holds) are registered by ``nn.Module`` *and* kept as plain instance
attributes, so reading ``self.p`` on the training path never goes through ``nn.Module.__getattr__``.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import numbers
import types
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from pyro import poutine
from pyro.infer import ELBO as _PyroELBO
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.mask_messenger import MaskMessenger
from pyro.poutine.condition_messenger import ConditionMessenger
from pyro.poutine.messenger import _context_wrap
from pyro.poutine.substitute_messenger import SubstituteMessenger
from pyro.poutine.trace_messenger import TraceHandler
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.seed_messenger import SeedMessenger
from pyro.util import get_rng_state, set_rng_seed, set_rng_state
from pyro.util import warn_if_nan
from torch import Tensor, nn

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.effects import has_call_hooks
from pyro_dgm.losses.compiled import CompiledOuter, compile_options
from pyro_dgm.losses.context import _CURRENT, TERM_OPTIONS, EvalContext, current_context
from pyro_dgm.losses.steps import clear_grads
from pyro_dgm.poutine.memoize_messenger import MEMO_SCOPES, MissLog, MissLogs, active_memo
from pyro_dgm.utils.attributes import Yielding, YieldingModule, set_up_subclasses, users_class
from pyro_dgm.utils.checks import (ArgumentError, as_var_list, check_present, describe, keyed_values, numpy_tensor,
                                   ordered_union)
from pyro_dgm.utils.latex import NAMES_VERSION
from pyro_dgm.utils.latex import print_latex as _print_latex
from pyro_dgm.utils.compat import is_compiling

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.losses.expectation import Expectation
    from pyro_dgm.losses.operators import BatchMean, BatchSum

__all__ = ["Loss", "ordered_union", "with_input_var", "PREC_ADD", "PREC_NEG", "PREC_MUL", "PREC_FUNC", "PREC_ATOM"]

# Precedence of a term's LaTeX text, used to decide where operators put parentheses.
PREC_ADD = 10   # a + b, a - b
PREC_NEG = 15   # - a
PREC_MUL = 20   # a b
PREC_FUNC = 25  # \log p(x): an operator name without brackets
PREC_ATOM = 100  # bracketed or single symbols: mean \left(...\right), D_{KL} \left[...\right], x, 2

#: torch's global forward hooks and pre-hooks (``nn.modules.module.register_module_forward_hook``): while any is
#: registered, each term runs through ``nn.Module.__call__`` (as Pixyz's ``eval`` calls it), so that hooks run

#: Keyword options of ``eval`` that belong to loss terms (``IterativeLoss``'s ``mask``), not to networks (the name
#: kept for code that imports it; :data:`pyro_dgm.losses.context.TERM_OPTIONS`).
LOSS_OPTIONS = TERM_OPTIONS


#: Options of Pyro's ELBO constructors, which a pyro_dgm loss's constructor does not take.
_PYRO_ELBO_OPTIONS = frozenset({"num_particles", "max_plate_nesting", "max_iarange_nesting", "vectorize_particles",
                                "strict_enumeration_warning", "ignore_jit_warnings", "jit_options", "retain_graph",
                                "tail_adaptive_beta"})
_IGNORED_PARTICLES = {"num_particles": 1, "vectorize_particles": False}  # Pyro's particle options, and their values


def _warn_particles(loss: "Loss", name: str, value: Any) -> None:
    """Warns that ``loss.num_particles = K`` (or ``vectorize_particles``), set after construction, changes nothing
    (a Pyro user's habit; a plain attribute under Pixyz, so not refused): for this library's classes only (a
    user's subclass may read the attribute itself)."""
    if not type(loss).__module__.startswith("pyro_dgm."):
        return
    try:
        if value is _IGNORED_PARTICLES[name] or bool(value == _IGNORED_PARTICLES[name]):
            return  # (Pyro's default: nothing to say)
    except Exception:  # noqa: BLE001 (a value that does not compare: warned about)
        pass
    warnings.warn(f"{type(loss).__name__}.{name} = {value!r} has no effect: a pyro_dgm loss is Pixyz's formula, "
                  "evaluated once per call. For several draws, average the term over samples "
                  "(Expectation(..., sample_shape=[K]) or IWELBO), or wrap a Pyro ELBO in a term: "
                  f"PyroELBO(model, guide, elbo=Trace_ELBO({name}=...))", UserWarning, stacklevel=3)


_NO_MODULE = object()  # (a name that _modules does not hold)


def _users_node(term: Any) -> bool:
    """Whether the loss node ``term`` runs the user's code: a ``Loss`` subclass defined outside pyro_dgm, or a term
    whose ``forward`` the user replaced on the instance (``term.forward = fn``, which Pixyz calls; p449)."""
    return users_class(type(term)) or "forward" in term.__dict__


def _formula_changed() -> None:
    """A loss's operand or distribution was replaced, set to None or deleted after the loss was made (Pixyz's
    losses read their attributes at each evaluation): the formulas' cached terms, variables and distributions
    (:meth:`Loss._dgm_leaves`, the SVI path's registered distributions) are out of date, as after a renaming."""
    NAMES_VERSION[0] += 1


#: Pyro's handlers that change what an ELBO of the model or guide they wrap is (not merely how it is estimated)
_CHANGES_TARGET = (poutine.block_messenger.BlockMessenger, ConditionMessenger,
                   poutine.do_messenger.DoMessenger, poutine.uncondition_messenger.UnconditionMessenger,
                   SubstituteMessenger, poutine.replay_messenger.ReplayMessenger,
                   poutine.lift_messenger.LiftMessenger, IndepMessenger)


def _handlers_around(fn: Any) -> Iterator[Any]:
    """The Pyro handlers wrapped around the callable ``fn`` (``poutine.scale(model, 0.1)`` is a partial of the handler
    and the model), also through ``poutine.trace``, ``functools.partial`` and ``functools.wraps`` wrappers."""
    for _ in range(64):
        if isinstance(fn, functools.partial):  # (Pyro's bound partial is one too)
            if fn.func is _context_wrap and len(fn.args) >= 2:
                yield fn.args[0]
                fn = fn.args[1]
            else:
                fn = fn.func
        elif isinstance(fn, TraceHandler):
            yield fn.msngr
            fn = fn.fn
        else:
            inner = getattr(fn, "__wrapped__", None)
            if inner is None or not callable(inner):
                return
            fn = inner


def _all_equal(value: Any, target: Any) -> bool:
    """Whether a handler's scale or mask (a number, a bool or a tensor) is ``target`` everywhere."""
    if isinstance(value, Tensor):
        return bool((value == target).all())
    return isinstance(value, (numbers.Number, bool)) and value == target and (target is not True or value is True)


#: the attributes of nn.Module itself (its dicts of modules, parameters, buffers and hooks): not a loss's own values
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


#: Types of values that are no module and hold none (a loss's names, options and caches): not looked into.
_NO_MODULES = frozenset({str, int, float, bool, complex, bytes, type(None), Tensor, torch.Size, torch.dtype,
                         torch.device, frozenset, set})


#: A plain list, tuple or dict longer than this is looked into, at an assignment, at its first and last half of this
#: many items and at the terms among the others (:func:`_ends`).
_LOOKED_INTO = 128


def _ends(items: Sequence[Any]) -> Sequence[Any]:
    """The items of a plain container that an assignment's check looks into: all of them, or, of a long one, the
    first and last ``_LOOKED_INTO / 2`` and every term among the others (found by their types, which ``map`` reads at
    C speed: records a loss appends at each step would make a walk of the whole cost more at each step; containers
    of terms nested among thousands of records are not looked into)."""
    if len(items) <= _LOOKED_INTO:
        return items
    half = _LOOKED_INTO // 2
    middle = items[half:-half]
    kinds = set(map(type, middle))
    terms = [v for v in middle if isinstance(v, (Loss, Distribution))] if any(
        issubclass(k, (Loss, Distribution)) for k in kinds) else []
    return [*items[:half], *terms, *items[-half:]]


def _held(value: Any, depth: int, ends: bool = False) -> Iterator[Any]:
    """``value`` itself, or what a container holds (lists, tuples, dicts, ``nn.ModuleList``, ``nn.ModuleDict``),
    nested up to a few levels (``{"all": [q, p]}``, ``[(q, p)]``); values of :data:`_NO_MODULES`'s types left out
    (every reader looks for modules: losses, distributions, networks). With ``ends``, only the ends of a long plain
    container (:func:`_ends`)."""
    if depth < 4 and isinstance(value, (list, tuple, nn.ModuleList)):
        for v in (_ends(value) if ends and not isinstance(value, nn.ModuleList) else value):
            if type(v) not in _NO_MODULES:
                yield from _held(v, depth + 1, ends)
    elif depth < 4 and isinstance(value, (dict, nn.ModuleDict)):
        for v in (_ends(list(value.values())) if ends and not isinstance(value, nn.ModuleDict)
                  and len(value) > _LOOKED_INTO else value.values()):
            if type(v) not in _NO_MODULES:
                yield from _held(v, depth + 1, ends)
    else:
        yield value


def _has_terms(value: Any, depth: int = 0, ends: bool = False) -> bool:
    """Whether ``value`` is or holds (nested, as :func:`_held` reads containers from ``depth``) a loss or a
    distribution."""
    return any(isinstance(v, (Loss, Distribution)) for v in _held(value, depth, ends))


def _holds_terms(value: Any) -> bool:
    """Whether ``value`` is a list, tuple or dict (or a subclass: an ``OrderedDict``) holding a loss or a
    distribution (:func:`_has_terms`), looked into at the ends of a long one only (:func:`_ends`: an attribute
    assigned at each step, a loss's growing list of records, is not walked whole at each step; the walks that
    register and train the terms read every item)."""
    return isinstance(value, (list, tuple, dict)) and _has_terms(value, ends=True)


def _containers(loss: "Loss") -> tuple[tuple[Any, tuple[Any, ...]], ...]:
    """``(container, its items)`` of each list, dict, ``nn.ModuleList`` and ``nn.ModuleDict`` among the attributes of
    the formula's nodes that holds a loss or a distribution, nested too, as :func:`_held` reads them: what a change
    in place (``loss.ps[0] = p2``) would change without any ``setattr`` of the loss."""
    out: list[tuple[Any, tuple[Any, ...]]] = []

    def watch(value: Any, depth: int) -> None:
        if depth >= 4 or not isinstance(value, (list, tuple, dict, nn.ModuleList, nn.ModuleDict)):
            return
        items = tuple(value.values() if isinstance(value, (dict, nn.ModuleDict)) else value)
        if not _has_terms(value, depth):
            return  # (records, numbers, names: no term to follow)
        if not isinstance(value, tuple):
            out.append((value, items))
        for v in items:
            watch(v, depth + 1)

    for node in loss._dgm_walk()[0]:
        for name, value in _attributes(node):
            if type(value) not in _NO_MODULES and name not in _MODULE_INTERNALS:
                watch(value, 0)
    return tuple(out)


def _attributes(loss: "Loss") -> Iterable[tuple[str, Any]]:
    """The loss's attributes: its ``__dict__``'s, and the modules of the registry it shares with a shallow copy
    (:meth:`Loss.__copy__`), which are not copied into its ``__dict__``."""
    d = loss.__dict__
    if "_dgm_shared_modules" not in d:
        return d.items()
    return [*d.items(), *((k, v) for k, v in d["_modules"].items() if k not in d)]


def _same_items(container: Any, items: tuple[Any, ...]) -> bool:
    now = tuple(container.values() if isinstance(container, (dict, nn.ModuleDict)) else container)
    return len(now) == len(items) and all(a is b for a, b in zip(now, items))


def _assigned_first(fget: Callable[[Any], str]) -> Callable[[Any], str]:
    """A loss class's ``latex`` getter, giving first the text assigned to the instance's ``latex``."""

    def latex(self: Any) -> str:
        own = self.__dict__.get("_dgm_latex")
        return own if own is not None else fget(self)

    latex._dgm_assigned_first = True  # type: ignore[attr-defined]
    return latex


class _TextAndMethod(str):
    """The formula's text (what the library reads as ``loss.latex``) that is also the user's method of that name
    (``loss.latex()`` calls it): a Pixyz subclass's own helper ``latex`` (Pixyz's terms print from ``_symbol``)."""

    def __new__(cls, text: str, method: Callable[..., Any]) -> "_TextAndMethod":
        out = super().__new__(cls, text)
        out._dgm_method = method  # type: ignore[attr-defined]
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._dgm_method(*args, **kwargs)  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, ...]:  # (copied and pickled with its method, as a bound method is)
        return _TextAndMethod, (str(self), self._dgm_method)  # type: ignore[attr-defined]


class _LatexMethod:
    """A subclass's own method (or other non-property attribute) named ``latex``: read on an instance, the formula's
    text of the class above (its ``latex`` property), callable as the user's method."""

    def __init__(self, cls: type, own: Any) -> None:
        self.cls, self.own = cls, own

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        method = self.own.__get__(obj, owner) if hasattr(self.own, "__get__") else self.own
        if obj is None:
            return method
        text = next(vars(k)["latex"] for k in self.cls.__mro__[1:] if isinstance(vars(k).get("latex"), property))
        return _TextAndMethod(text.__get__(obj, owner), method)


def _latex_text(loss: Any, value: Any) -> str:
    """The formula text assigned to a loss's ``latex``: a string, or a sympy expression's LaTeX."""
    if isinstance(value, str):
        return value
    if type(value).__module__.startswith("sympy"):
        import sympy

        return sympy.latex(value)
    raise TypeError(f"{type(loss).__name__}: latex is the formula's LaTeX text here (pyro_dgm prints the loss with "
                    f"it), got {type(value).__name__}; give a string, or keep the value under another name")


class Loss(YieldingModule, _PyroELBO):
    r"""Base class of every loss term: its input variables, its formula, arithmetic, :meth:`eval`, and Pyro's ELBO API.

    Subclasses implement :meth:`forward` (the value given the values of :attr:`input_var`; it may also return the
    samples it drew, as ``(value, samples)``) and :attr:`latex`; a subclass written for Pixyz that defines the
    formula as a sympy expression ``_symbol`` instead prints ``sympy.latex(self._symbol)``, as Pixyz does.

    Parameters
    ----------
    input_var : list of str, optional
        The variables :meth:`eval` needs.

    Notes
    -----
    A loss is a :class:`torch.nn.Module`, as in Pixyz, whose ``eval(x_dict)`` evaluates the loss (it shadows
    ``nn.Module.eval``; use ``loss.train(False)`` for evaluation mode); ``loss(x_dict)`` calls :meth:`forward`
    through ``nn.Module.__call__`` and ``loss(model, guide)`` is Pyro's ``ELBO.__call__``. As a
    :class:`pyro.infer.ELBO` a loss ignores ``num_particles`` and the model/guide that SVI passes: it evaluates its
    own formula on the data (see :meth:`differentiable_loss`).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> loss = (-p.log_prob()).mean() * 2
    >>> print(loss)  # as Pixyz prints it (sympy's order); loss.latex keeps the order written
    2 mean \left(- \log p(x) \right)
    >>> loss.input_var
    ['x']
    >>> round(float(loss.eval({"x": torch.zeros(3, 1)})), 4)  # 2 * 0.5 log(2 pi)
    1.8379
    """

    _dgm_prec: int = PREC_ATOM

    def __new__(cls, *args: Any, **kwargs: Any) -> "Loss":
        pyro_options = _PYRO_ELBO_OPTIONS.intersection(kwargs)
        if pyro_options:
            accepted = inspect.signature(cls.__init__).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
                bad = sorted(pyro_options.difference(accepted))
                if bad:
                    raise TypeError(
                        f"{cls.__name__}() got {', '.join(map(repr, bad))}, an option of Pyro's ELBOs: a pyro_dgm "
                        f"loss is Pixyz's formula, evaluated once per call. For several draws, average the term "
                        "over samples (Expectation(..., sample_shape=[K]) or IWELBO); to use Pyro's options, "
                        "wrap a Pyro ELBO in a term: PyroELBO(model, guide, elbo=Trace_ELBO(num_particles=K))")
        return super().__new__(cls)

    def __setstate__(self, state: dict[str, Any]) -> None:
        set_up_subclasses(self, Loss, "_dgm_loss_set_up")  # (unpickled in a new process: no __init__ ran)
        super().__setstate__(state)

    def __init__(self, input_var: Sequence[str] | None = None) -> None:
        set_up_subclasses(self, Loss, "_dgm_loss_set_up")
        d = self.__dict__
        if "_modules" not in d:  # a subclass may have set attributes first (see __setattr__)
            nn.Module.__init__(self)
        kept = {k: d[k] for k in _PYRO_ELBO_OPTIONS if k in d}  # (a subclass's own num_particles, set first: its)
        _PyroELBO.__init__(self, num_particles=1)
        d.update(kept)
        for k in _PYRO_ELBO_OPTIONS.difference(kept):  # (one its class defines: the class's, as under Pixyz)
            if hasattr(type(self), k):
                d.pop(k, None)
        self._input_var = list(input_var) if input_var is not None else []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        type.__setattr__(cls, "_dgm_loss_set_up", True)  # (see set_up_subclasses)
        own = cls.__dict__.get("latex")
        if isinstance(own, property) and own.fget is not None and not hasattr(own.fget, "_dgm_assigned_first"):
            cls.latex = property(_assigned_first(own.fget), own.fset, doc=own.__doc__)  # (an assigned text first)
        elif callable(own) or isinstance(own, (staticmethod, classmethod)):  # a helper method of a Pixyz subclass
            cls.latex = _LatexMethod(cls, own)  # (Pixyz prints from _symbol): the text above, and callable

    # ------------------------------------------------------------------ nn.Module plumbing
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if name in _IGNORED_PARTICLES and "_input_var" in d:
            _warn_particles(self, name, value)
        if name == "latex":  # a subclass's own formula text (a plain attribute under Pixyz), read by the formulas
            own = getattr(type(self), "latex", None)
            if isinstance(own, property) and own.fset is not None:  # (a subclass's own setter)
                own.fset(self, value)
            else:
                d["_dgm_latex"] = _latex_text(self, value)
            return
        if "_modules" not in d:  # an attribute set before Loss.__init__: nn.Module must exist first
            nn.Module.__init__(self)
        mods = d["_modules"]
        old = mods.get(name, _NO_MODULE)
        plain = d.get(name, _NO_MODULE) if old is _NO_MODULE else _NO_MODULE
        nn.Module.__setattr__(self, name, value)
        if isinstance(value, nn.Module) and ("_dgm_shared_modules" not in d or name.startswith("_dgm_")) and (
                not hasattr(type(self), name)):  # (a class attribute of the name is what nn.Module's lookup finds)
            d[name] = value  # registered in _modules and readable without nn.Module.__getattr__ (hot path)
        elif value is None and name in mods:  # (a module's place set to None, which nn.Module keeps there)
            d.pop(name, None)
        if old is not _NO_MODULE and mods.get(name, _NO_MODULE) is not old:
            _formula_changed()
        elif plain is not value and (_holds_terms(plain) or _holds_terms(value)):
            _formula_changed()  # (a list, tuple or dict of terms, as a Pixyz subclass keeps them: self.ps = [p2])
        elif name in ("forward", "__class__"):  # (a term's forward replaced on the instance, or its class: the
            _formula_changed()  # user's code, see _users_node; p460)

    def __delattr__(self, name: str) -> None:
        had = (name in self.__dict__.get("_modules", ()) or _holds_terms(self.__dict__.get(name))
               or name == "forward")
        nn.Module.__delattr__(self, name)
        self.__dict__.pop(name, None)
        if had:
            _formula_changed()

    def add_module(self, name: str, module: nn.Module | None) -> None:
        """``nn.Module.add_module``, keeping the attribute that :meth:`__setattr__` sets beside ``_modules`` (so
        ``loss.add_module("p", q)`` then ``loss.p`` gives ``q``, as under Pixyz)."""
        old = self.__dict__["_modules"].get(name, _NO_MODULE)
        nn.Module.add_module(self, name, module)
        if isinstance(module, nn.Module) and ("_dgm_shared_modules" not in self.__dict__ or name.startswith("_dgm_")) \
                and not hasattr(type(self), name):
            self.__dict__[name] = module
        else:
            self.__dict__.pop(name, None)
        if old is not _NO_MODULE and old is not module:
            _formula_changed()

    register_module = add_module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``loss(x_dict, **kwargs)`` (or ``loss(x_dict=...)``; ``loss()``: no values) runs :meth:`forward` through
        ``nn.Module.__call__`` and returns Pixyz's ``(value, samples)``; ``loss(model, guide)`` is
        :meth:`pyro.infer.ELBO.__call__` (an ``nn.Module`` computing the loss)."""
        if len(args) == 2 and not kwargs and callable(args[0]) and callable(args[1]):
            return _PyroELBO.__call__(self, *args)
        name = None
        if not args:  # values by keyword go by keyword, as Pixyz passes them (a pre-hook sees them there)
            name = _values_parameter(type(self))  # forward's name for them (x_dict; LogProb's x; a subclass's own)
            if name is not None and name not in kwargs:  # given as x_dict= to a forward that names them otherwise
                args = (kwargs.pop("x_dict", {}),)  # (then by position), or not given: Pixyz's operators' default,
                # no values (loss())
        given = args[0] if args else kwargs.get(name or "x_dict")
        try:
            out = nn.Module.__call__(self, *args, **kwargs)
        except KeyError as e:  # an input variable missing from the values: named, as eval names it
            v = e.args[0] if len(e.args) == 1 else None
            if isinstance(given, Mapping) and isinstance(v, str) and v in self._input_var and v not in given:
                _raise_missing(self, dict(given), [v])
            raise
        value, samples = out if type(out) is tuple else (out, {})
        return value, samples  # (a number stays one: Parameter("beta")({"beta": 3.0}) is 3.0, as Pixyz's)

    # ------------------------------------------------------------------ names and text
    @property
    def input_var(self) -> list[str]:
        """The variables :meth:`eval` needs, in order."""
        return self._input_var

    @property
    def latex(self) -> str:
        """The formula as LaTeX text, in the order it was written (subclasses define it, or Pixyz's sympy
        ``_symbol``); a text assigned to it (``self.latex = ...`` in a subclass's ``__init__``) is the formula."""
        own = self.__dict__.get("_dgm_latex")
        if own is not None:
            return own
        if type(self)._symbol is not Loss._symbol:  # a Pixyz-style subclass: its formula is a sympy expression
            import sympy

            return sympy.latex(self._symbol)
        raise NotImplementedError(f"{type(self).__name__} does not define its LaTeX text (the latex property)")

    @property
    def _symbol(self) -> Any:
        """The formula as a sympy expression, as Pixyz builds it: a term is one symbol named by its text,
        operators combine their operands' expressions (so sympy orders sums and products, as Pixyz prints them)."""
        import sympy

        d = self.__dict__
        if d.get("_in_symbol"):  # latex asked for _symbol and _symbol for latex: the class defines neither
            raise NotImplementedError(f"{type(self).__name__} defines neither its LaTeX text (latex) nor Pixyz's "
                                      "sympy expression (_symbol)")
        d["_in_symbol"] = True
        try:
            return sympy.Symbol(self.latex)
        finally:
            del d["_in_symbol"]

    @property
    def loss_text(self) -> str:
        """The formula as LaTeX text, exactly as Pixyz prints it (``sympy.latex`` of :attr:`_symbol`: sympy orders
        the terms of sums and products); :attr:`latex` keeps the order in which the formula was written."""
        import sympy

        return sympy.latex(self._symbol)

    def __str__(self) -> str:
        return self.loss_text  # (as Pixyz's: a formula that does not print raises, where the user prints it)

    def __repr__(self) -> str:
        return _printed(self)

    def __format__(self, spec: str) -> str:  # (the f-strings of error messages: see _printed)
        return format(_printed(self), spec)

    def _dgm_latex_text(self) -> str:
        return self.loss_text

    def _repr_latex_(self) -> str:
        return f"$${self.loss_text}$$"

    def print_latex(self) -> Any:
        """Show the formula as LaTeX (rendered in a notebook, printed elsewhere)."""
        return _print_latex(self)

    def __copy__(self) -> "Loss":
        """The shallow copy that ``copy.copy`` makes of any ``nn.Module`` (of Pixyz's losses too): the same
        attributes, and the same registries of modules, parameters and buffers, so that an operand replaced in the
        copy or in the original is the other's too. Both then read their operands from the shared registry (not from
        the copy of each kept beside it for speed); the formula's caches are each one's own."""
        d = self.__dict__
        for name in d.get("_modules", ()):
            if not name.startswith("_dgm_"):  # (the library's own modules, an estimate: read from __dict__)
                d.pop(name, None)
        d["_dgm_shared_modules"] = True
        out = type(self).__new__(type(self))
        out.__dict__.update(d)
        out.__dict__.pop("_dgm_caches", None)
        mc = d.get("_dgm_mc")
        if isinstance(mc, Loss):  # (a Monte Carlo term's estimate, Pixyz's object: a copy of it too, whose plain
            out.__dict__["_dgm_mc"] = copy.copy(mc)  # attributes, sample_shape, are the copy's own)
        return out

    def named(self, name: str) -> "Loss":
        r"""A copy of this term that ``eval(..., return_terms=True)`` reports under ``name`` instead of its formula.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> nll = -Normal(loc=0., scale=1., var=["x"]).log_prob()
        >>> print(nll.named("nll").term_name, "|", nll.term_name)
        nll | - \log p(x)
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{type(self).__name__}.named: name must be a non-empty string, got {name!r}")
        out = copy.copy(self)
        out.__dict__.pop("_dgm_leaf_names", None)
        out.__dict__.pop("_dgm_caches", None)
        out.__dict__.pop("_dgm_compiled_outer", None)  # compiled for the original node
        out._dgm_given_name = name
        return out

    @property
    def _dgm_term_names(self) -> list[str]:
        """The keys of ``eval(..., return_terms=True)``: the names of the terms of the top-level arithmetic, in
        order (computed once; :class:`~pyro_dgm.losses.compiled.CompiledEval` reads them before tracing).

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=0., scale=1., var=["x"])
        >>> (-p.log_prob().mean() + p.log_prob().sum().named("total")).term_names
        ['\\\\log p(x)', 'total']
        """
        return list(self._dgm_leaves().names)

    @property
    def _dgm_term_name(self) -> str:
        """The key of this term in ``eval(..., return_terms=True)``: its :meth:`named` name, else its formula, else
        (a user's ``_symbol`` that does not print, which Pixyz trains with: p489) its class's name."""
        given = getattr(self, "_dgm_given_name", None)
        if given:
            return given
        try:
            return self.loss_text
        except Exception:  # noqa: BLE001 (a user's _symbol: anything it raises)
            return type(self).__name__

    # ------------------------------------------------------------------ the tree
    def _dgm_children(self) -> Iterator[Any]:
        """The losses and distributions this node holds (found among its attributes, and in the lists, tuples,
        dicts, ``nn.ModuleList``s and ``nn.ModuleDict``s among them, nested too, as a Pixyz subclass may keep
        them)."""
        for name, value in _attributes(self):
            if type(value) not in _NO_MODULES and name not in _MODULE_INTERNALS:  # (nn.Module's own dicts:
                yield from _held(value, 0)  # _modules, _parameters, the hooks...)

    def _dgm_walk(self) -> tuple[list["Loss"], list["Distribution"]]:
        """The loss nodes of this formula (itself first, parents before children) and the distributions they hold,
        each once in the order met: one walk of the tree (:attr:`_dgm_distributions`, :meth:`loss_terms`)."""
        nodes: list[Loss] = []
        out: list[Distribution] = []
        seen: set[int] = set()
        stack: list[Any] = [self]
        visited: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in visited:
                continue
            visited.add(id(node))
            nodes.append(node)
            found: list[Any] = []
            for child in node._dgm_children():
                if isinstance(child, Distribution) and id(child) not in seen:
                    seen.add(id(child))
                    out.append(child)
                elif isinstance(child, Loss):
                    found.append(child)
            stack.extend(reversed(found))
        return nodes, out

    @property
    def _dgm_distributions(self) -> list["Distribution"]:
        """Every distribution in this loss (each once, in the order met), e.g. for an optimizer or ``pyro.module``.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p, q = Normal(loc=0., scale=1., var=["x"]), Normal(loc=1., scale=1., var=["x"], name="q")
        >>> [d.prob_text for d in (p.log_prob() - q.log_prob() + p.log_prob()).distributions]
        ['p(x)', 'q(x)']
        """
        return self._dgm_walk()[1]

    # pyro_dgm's public names that Pixyz's Loss lacks: a Pixyz subclass may assign them for its own use
    term_names = Yielding("_dgm_term_names")
    term_name = Yielding("_dgm_term_name")
    distributions = Yielding("_dgm_distributions")

    @property
    def _dgm_optional_var(self) -> frozenset[str]:
        """Input variables that may be missing: those of distributions that do without them (the experts of a
        product of experts)."""
        return self._dgm_formula_cached("_dgm_optional_cache", lambda: frozenset().union(
            *(set(d.input_var) - set(d._dgm_required_input_var) for d in self._dgm_distributions)))

    def _dgm_has_user_terms(self) -> bool:
        """Whether a node of this formula is a user's term (a ``Loss`` subclass defined outside pyro_dgm, or a term
        whose ``forward`` the user replaced on the instance): its evaluation then shares no pass of an opted-in
        ``Deterministic`` (see :meth:`~pyro_dgm.poutine.memoize_messenger.MemoizeMessenger.user_term`)."""
        return bool(self._dgm_user_nodes())

    def _dgm_forwards(self) -> tuple[Any, ...]:
        """The user's terms (:meth:`_dgm_user_nodes`) and the ``forward``, ``eval`` and ``__call__`` of each node's
        class: what a compiled step compares at each call with its first call's, so that a term's ``forward``
        replaced on the instance or its class after compiling (a later notebook cell, p457, p459), or its class's
        ``eval`` (p460), is watched and traced again."""
        return (self._dgm_user_nodes(), *(m for t in map(type, self._dgm_nodes()) for m in (t.forward, t.eval,
                                                                                            t.__call__)))

    def _dgm_nodes(self) -> tuple["Loss", ...]:
        """The loss nodes of this formula (:meth:`_dgm_walk`'s), cached while the formula is unchanged."""
        return self._dgm_formula_cached("_dgm_nodes", lambda: tuple(self._dgm_walk()[0]))

    def _dgm_user_nodes(self) -> tuple[tuple[int, Any], ...]:
        """``(id, forward replaced on the instance or None)`` of each user's term of this formula (cached while the
        formula is unchanged): a compiled step whose user's terms changed since its first call watches that call
        again (:class:`~pyro_dgm.losses.compiled.CompiledEval`)."""
        return self._dgm_formula_cached("_dgm_user_terms", lambda: tuple(
            (id(n), n.__dict__.get("forward")) for n in self._dgm_nodes() if _users_node(n)))

    def _dgm_formula_cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, kept under ``key`` while the formula is as it was: a distribution renamed, or an operand or
        distribution replaced, set to ``None`` or deleted anywhere (:func:`_formula_changed`), or a list of terms
        changed in place (:meth:`_dgm_formula_version`), makes it again."""
        version = self._dgm_formula_version()
        kept = self.__dict__["_dgm_caches"].kept
        found = kept.get(key)
        if found is None or found[0] != version:
            found = kept[key] = (version, make())
        return found[1]

    def _dgm_formula_version(self) -> int:
        """``NAMES_VERSION``, counted up first if a list or dict of terms among the formula's attributes (a Pixyz
        subclass's ``self.ps``) was changed in place since the formula's caches were made (:func:`_containers`)."""
        caches = self.__dict__.get("_dgm_caches")
        if type(caches) is not _FormulaCaches or caches.owner != id(self):  # (a loss pickled by an older version;
            caches = self.__dict__["_dgm_caches"] = _FormulaCaches(id(self))  # a copy.copy sharing its __dict__'s)
        watch = caches.watch
        if watch is not None and watch[0] == NAMES_VERSION[0]:
            if all(_same_items(c, items) for c, items in watch[1]):
                return NAMES_VERSION[0]
            _formula_changed()
        caches.watch = (NAMES_VERSION[0], _containers(self))
        return NAMES_VERSION[0]

    def frozen_parameters(self) -> list[Tensor]:
        """Parameters this term reads without training them through its value (an adversarial term's discriminator,
        which its own step trains); empty for most terms. A compiled evaluation excludes them from autograd, as the
        term's eager evaluation does."""
        return []

    def _dgm_method(self, name: str) -> Any:
        """This term's method ``name`` (one of pyro_dgm's that a subclass may override: ``frozen_parameters``,
        ``term_state_dict``...), not an attribute of that name set on the instance, or on a class, for other uses
        (Pixyz's ``Loss`` lacks the name, and a subclass written for Pixyz may have it: p473). An override is a
        function, static or class method of a class; any other class attribute (a type, a ``functools.partial``, a
        module: p475) is the class's own, and ``Loss``'s method is used."""
        f = inspect.getattr_static(type(self), name, None)
        if not isinstance(f, (types.FunctionType, staticmethod, classmethod)):
            f = inspect.getattr_static(Loss, name)
        return f.__get__(self, type(self))

    def loss_terms(self) -> list["Loss"]:
        """Every loss node of this formula (itself included), each once, parents before children."""
        return self._dgm_walk()[0]

    def term_state_dict(self) -> dict[str, Any]:
        """State this term owns beyond its distributions' networks (e.g. an adversarial term's discriminator
        optimizer), for :meth:`Model.save <pyro_dgm.models.Model.save>`; empty for most terms. (``state_dict()`` is
        ``nn.Module``'s: the tensors of every distribution the loss holds, as in Pixyz.)"""
        return {}

    def load_term_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`term_state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} {self.loss_text}: holds no state, got keys {sorted(state)}")

    # ------------------------------------------------------------------ arithmetic (new objects)
    def __add__(self, other: Any) -> "Loss":
        return _operators.AddLoss(self, other)

    def __radd__(self, other: Any) -> "Loss":
        return _operators.AddLoss(other, self)

    def __sub__(self, other: Any) -> "Loss":
        return _operators.SubLoss(self, other)

    def __rsub__(self, other: Any) -> "Loss":
        return _operators.SubLoss(other, self)

    def __mul__(self, other: Any) -> "Loss":
        return _operators.MulLoss(self, other)

    def __rmul__(self, other: Any) -> "Loss":
        return _operators.MulLoss(other, self)

    def __truediv__(self, other: Any) -> "Loss":
        return _operators.DivLoss(self, other)

    def __rtruediv__(self, other: Any) -> "Loss":
        return _operators.DivLoss(other, self)

    def __pow__(self, other: Any) -> "Loss":
        return _operators.PowLoss(self, other)

    def __rpow__(self, other: Any) -> "Loss":
        return _operators.PowLoss(other, self)

    def __neg__(self) -> "Loss":
        return _operators.NegLoss(self)

    def __abs__(self) -> "Loss":
        return self.abs()

    def abs(self) -> "Loss":
        """The absolute value :math:`|\\mathcal{L}|` (also ``abs(loss)``)."""
        return _operators.AbsLoss(self)

    def mean(self) -> "BatchMean":
        """The mean over the batch, :math:`mean(\\mathcal{L})`."""
        return _operators.BatchMean(self)

    def sum(self) -> "BatchSum":
        """The sum over the batch, :math:`sum(\\mathcal{L})`."""
        return _operators.BatchSum(self)

    def detach(self) -> "Loss":
        """The same value without gradient (``detach`` in the formula)."""
        return _operators.Detach(self)

    def expectation(self, p: "Distribution", sample_shape: Sequence[int] = torch.Size()) -> "Expectation":
        r"""The expectation :math:`\mathbb{E}_{p}[\mathcal{L}]` of this loss over samples of ``p``."""
        return _expectation.Expectation(p, self, sample_shape=sample_shape)

    def constant_var(self, constant_dict: Mapping[str, Any]) -> "Loss":
        """This loss with some input variables fixed to constants (:class:`ConstantVar`)."""
        return _special.ConstantVar(self, constant_dict)

    # ------------------------------------------------------------------ evaluation
    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """The value of this term given ``x_dict`` (which holds :attr:`input_var`); subclasses define it.

        A subclass returns the value, or ``(value, samples)`` with the samples it drew, by variable name. The
        built-in terms return ``(value, samples)``, as Pixyz's ``forward`` does (they compute the value in
        ``_dgm_value``).
        """
        value = getattr(type(self), "_dgm_value", None)
        if value is None:
            raise NotImplementedError(f"{type(self).__name__} does not define forward()")
        return value(self, x_dict, **kwargs), {}

    def eval(self, x_dict: Mapping[str, Any] | None = None, return_dict: bool = False, return_all: bool = True,
             return_terms: bool = False, **kwargs: Any) -> Any:
        r"""The value of the loss given the values of :attr:`input_var` (Pixyz's ``eval``, not ``nn.Module.eval``).

        Parameters
        ----------
        x_dict : dict, optional
            Values by variable name; keys beyond :attr:`input_var` are ignored by the computation.
        return_dict : bool, default False
            Also return a dict of values: ``x_dict`` with the samples drawn while evaluating (Pixyz semantics).
        return_all : bool, default True
            With ``return_dict``: include the given values (else only the samples drawn).
        return_terms : bool, default False
            Also return ``{name: value}`` for each term of the top-level arithmetic (the leaves of ``+ - * / ...``
            that are not constants), detached, as computed in this evaluation: for logging the parts of an
            objective. A term's name is its formula, or the name given with :meth:`named`; repeated names get
            ``" (2)"``, ``" (3)"``... Each is the value the term has in the formula: the same term object
            evaluated again inside another term (``nll.mean() + nll.expectation(q).mean()``) or listed at two
            places (a stochastic term twice) keeps, at each place, the value the arithmetic combined there.
        **kwargs
            Passed on to the distributions' networks (Pixyz semantics) and to special terms (``mask=`` for
            :class:`~pyro_dgm.losses.iteration.IterativeLoss`).

        Returns
        -------
        Tensor, or a tuple
            ``loss``; ``(loss, x_dict)`` with ``return_dict``; ``(loss, terms)`` with ``return_terms``;
            ``(loss, x_dict, terms)`` with both.

        Raises
        ------
        ValueError
            If a variable of :attr:`input_var` is missing from ``x_dict`` (the error names it), or if a variable has
            zero rows (an empty batch) and the value is not finite on it (a mean over no rows; Pixyz returns NaN).
            A finite value on an empty batch (a sum over no rows is 0) is returned, as in Pixyz.

        Notes
        -----
        The outermost call builds the evaluation's :class:`~pyro_dgm.losses.context.EvalContext` (memoizing scope,
        term recorder, options split by consumer); an ``eval`` called from a term's ``forward`` while it runs (as
        Pixyz's operators and user losses do) belongs to that evaluation
        (:func:`~pyro_dgm.losses.context.current_context`). The context is per thread: separate losses may be
        evaluated in several threads at once.

        Its draws are ``pyro.sample`` sites, as every draw is: under ``poutine.trace`` they are recorded, and inside
        a Pyro model (``pyro.factor("elbo", loss.eval(...))``) they are that model's latent sites, which Pyro's
        ELBOs score and ``poutine.condition`` sets. To use a loss that draws (an ELBO, an ``Expectation``, a Monte
        Carlo KL) as a factor alone, evaluate it under ``pyro.poutine.block()``.

        Examples
        --------
        >>> import torch
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=0., scale=1., var=["x"])
        >>> loss = (-p.log_prob()).mean().named("nll") + 0.5
        >>> value, terms = loss.eval({"x": torch.zeros(2, 1)}, return_terms=True)
        >>> sorted(terms), round(float(value - terms["nll"]), 4)
        (['nll'], 0.5)
        >>> loss.eval({"y": torch.zeros(2, 1)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
         ...
        pyro_dgm.utils.checks.MissingVariableError: AddLoss ...: missing input variable 'x'; ...
        """
        ctx = current_context()
        if ctx is not None and return_dict and not return_all and not return_terms and type(x_dict) is dict:
            # a term evaluated by its parent's forward, inside one evaluation of this thread: skip the checks; as
            # Pixyz's, the term gets a dict of its own inputs only (a user's forward may update it in place, and a
            # term such as IterativeLoss hands back what it got), and its parent gets a new dict of the samples, as
            # Pixyz's eval returns one: the parent may update it (s1.update(s2)) while the term keeps what its
            # forward returned (self.last)
            names = self._input_var if type(self).input_var is _INPUT_VAR else self.input_var
            loss, samples = self._dgm_evaluate({k: x_dict[k] for k in names if k in x_dict}, ctx, kwargs)
            return loss, dict(samples)
        if x_dict is None:
            given: dict[str, Any] = {}
        elif type(x_dict) is dict or isinstance(x_dict, Mapping):
            given = dict(x_dict)
        elif (keyed := keyed_values(x_dict)) is not None:  # a dict-like object that is no Mapping (Pixyz reads its
            given = keyed  # keys)
        else:
            raise ArgumentError(f"{type(self).__name__}.eval: x_dict must be a dict of values by variable name, "
                                f"got {type(x_dict).__name__}")
        names = self._input_var if type(self).input_var is _INPUT_VAR else self.input_var  # (a subclass's own)
        # as Pixyz's eval: the variables of _input_var are required, then the values are filtered by input_var (a
        # subclass's property may list optional ones that its forward reads with x_dict.get)
        missing = [v for v in self._input_var if v not in given and v not in self._dgm_optional_var]
        if missing:
            _raise_missing(self, given, missing)
        inputs = {k: given[k] for k in names if k in given}
        if ctx is None:  # the entry: one context for the whole evaluation (memoizing scope, recorder, options)
            for k, v in inputs.items():
                if type(v) is not Tensor and isinstance(v, np.ndarray):
                    inputs = _from_numpy(self, inputs)  # the networks get tensors (as a distribution's call does)
                    break
            compiled = self.__dict__.get("_dgm_compiled_outer")
            scopes = MEMO_SCOPES.stack
            depth = len(scopes)
            try:
                if compiled is not None and not is_compiling() and not kwargs.get("discriminator"):  # (an
                    # adversarial term's discriminator step trains the parameters that the compiled evaluation
                    # freezes: eager, as under Model(compile=...); p473)
                    loss, samples, recorder = compiled(inputs, kwargs, return_terms)
                else:
                    loss, samples, recorder = self._dgm_outer_evaluation(inputs, kwargs, return_terms)
            finally:  # the thread's state as before the evaluation, also when a Ctrl-C came as its context exited
                # (where the context's own exit did not run): no call comes before these two lines, so no signal
                # handler runs in between, and the next evaluation cannot take this one's memoized outputs
                _CURRENT.ctx = None
                del scopes[depth:]
        elif return_terms:  # a nested evaluation asked for its own terms: same scope and options, its own recorder
            inner = ctx.with_recorder()
            inner.recorder = self._dgm_new_recorder()
            with inner:
                loss, samples = self._dgm_evaluate(inputs, inner, kwargs)
            recorder = inner.recorder
            if ctx.recorder is not None and id(self) in ctx.recorder:  # a term of the formula being recorded
                _record(ctx.recorder, id(self), loss)
        else:  # nested, with Pixyz's other return forms: the same evaluation
            loss, samples = self._dgm_evaluate(inputs, ctx, kwargs)
            recorder = None
        result: list[Any] = [loss]
        if return_dict:
            output = dict(given) if return_all else {}
            output.update(samples)
            result.append(output)
        if return_terms:
            result.append(self._dgm_terms(recorder))
        return result[0] if len(result) == 1 else tuple(result)

    def estimate(self, x: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """The early API reference's name of :meth:`eval`: ``loss.estimate(x, **kwargs)`` is ``loss.eval(x,
        **kwargs)`` (the options, ``return_dict=`` included, are :meth:`eval`'s).

        Examples
        --------
        >>> import torch
        >>> from pyro_dgm.distributions import Normal
        >>> nll = -Normal(loc=0., scale=1., var=["x"]).log_prob()
        >>> bool(torch.equal(nll.estimate({"x": torch.zeros(2, 1)}), nll.eval({"x": torch.zeros(2, 1)})))
        True
        """
        return self.eval(x, **kwargs)

    def _dgm_outer_evaluation(self, inputs: dict[str, Any], kwargs: Mapping[str, Any], return_terms: bool
                              ) -> tuple[Any, Any, dict[int, Any] | None]:
        """The outermost evaluation: its context, then ``(value, samples, recorder)`` (what :meth:`compile`
        compiles)."""
        ctx = EvalContext.build(kwargs, return_terms, None if is_compiling() else self._dgm_miss_log(inputs))
        recorder = None
        if return_terms:
            recorder = ctx.recorder = self._dgm_new_recorder()
        loss, samples = self._dgm_evaluate_outer(inputs, ctx, kwargs)
        return loss, samples, recorder

    def _dgm_miss_log(self, inputs: Mapping[str, Any]) -> MissLog:
        """The :class:`~pyro_dgm.poutine.memoize_messenger.MissLog` of this loss's evaluations given inputs of these
        names (which networks run, and with what, follows from the formula and the names given)."""
        logs = self.__dict__.get("_dgm_miss_logs")
        if logs is None:
            logs = self.__dict__["_dgm_miss_logs"] = MissLogs()
        names = frozenset(inputs)
        log = logs.get(names)
        if log is None:
            if len(logs) > 16:
                logs.clear()
            log = logs[names] = MissLog()
        return log

    def compile(self, *args: Any, **options: Any) -> None:
        """Evaluate this loss compiled by ``torch.compile`` from now on (``options`` are ``torch.compile``'s:
        ``mode=``, ``backend=``, ``dynamic=``...): every outermost :meth:`eval`, and so every ``SVI`` step whose
        ``loss=`` is this loss, runs the compiled evaluation (``nn.Module.compile``'s meaning, for a loss).

        The first evaluation compiles; new batches of the same shapes reuse the code. The compiled evaluation runs
        without torch's argument validation (see :class:`~pyro_dgm.losses.compiled.CompiledEval`): a batch that
        the eager evaluation refuses by it (a NaN value) gives a non-finite value here, with no error (checking
        the value would synchronize a GPU at each evaluation; ``Model(..., compile=...)`` checks it, and raises
        the eager evaluation's error).

        Examples
        --------
        >>> import torch
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
        >>> loss = (-p.log_prob()).mean()
        >>> eager = loss.eval({"x": torch.ones(3, 2)})
        >>> loss.compile(backend="eager")
        >>> bool(loss.eval({"x": torch.ones(3, 2)}) == eager)
        True
        """
        if args:
            raise TypeError(f"{type(self).__name__}.compile takes torch.compile's options by keyword "
                            f"(mode=..., backend=...), got {len(args)} positional argument(s)")
        options = compile_options(type(self).__name__, options or True) or {}
        self.__dict__["_dgm_compiled_outer"] = CompiledOuter(self, self._dgm_outer_evaluation, options)

    def _dgm_evaluate(self, values: dict[str, Any], ctx: EvalContext, kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(value, samples)`` of this node inside the evaluation ``ctx``: checks the inputs, runs :meth:`forward`
        and, when it is a term of the formula being recorded, records the value. ``values`` are not copied."""
        for v in self._input_var:
            if v not in values and v not in self._dgm_optional_var:
                _raise_missing(self, values, [v])
        if not is_compiling() and _users_node(self):  # (traced code reuses no eager entry: no guard on
            memo = active_memo()  # the classes seen)
            if memo is not None:
                with memo.user_term():
                    return self._dgm_evaluate_node(values, ctx, kwargs)
        return self._dgm_evaluate_node(values, ctx, kwargs)

    def _dgm_evaluate_node(self, values: dict[str, Any], ctx: EvalContext, kwargs: Mapping[str, Any]
                           ) -> tuple[Any, Any]:
        recorder = ctx.recorder
        if recorder is not None and id(self) in recorder:
            return self._dgm_evaluate_term(values, ctx, kwargs)
        if type(self).__call__ is not _LOSS_CALL:  # a __call__ of the user's (also one a later cell set): Pixyz's
            out = self(values, **kwargs)  # eval calls it
        elif has_call_hooks(self):
            out = nn.Module.__call__(self, values, **kwargs)  # as Pixyz's eval calls each term: hooks run
        else:
            out = self.forward(values, **kwargs)
        return _result(self, out)

    def _dgm_evaluate_term(self, values: dict[str, Any], ctx: EvalContext, kwargs: Mapping[str, Any]
                           ) -> tuple[Any, Any]:
        """:meth:`_dgm_evaluate` of a term of the formula being recorded, evaluated by its arithmetic: its value is
        recorded, and what the term evaluates inside (the same term object in an ``Expectation``, a ``ConstantVar``,
        an ``IterativeLoss``...) is not: ``return_terms`` reports each term's value in the formula."""
        recorder = ctx.recorder
        ctx.recorder = None
        try:
            if type(self).__call__ is not _LOSS_CALL:  # (a __call__ of the user's, also one a later cell set)
                out = self(values, **kwargs)
            elif has_call_hooks(self):
                out = nn.Module.__call__(self, values, **kwargs)
            else:
                out = self.forward(values, **kwargs)
        finally:
            ctx.recorder = recorder
        loss, samples = _result(self, out)
        if type(self).eval is _LOSS_EVAL:  # (a class with its own eval, or Loss.eval replaced by a wrapper: its
            _record(recorder, id(self), loss)  # parent records what that eval returns, see record_own_eval; p474:
            # with Loss.eval itself wrapped, both recorded, and a term listed twice reported its first value twice)
        return loss, samples

    def _dgm_evaluate_outer(self, inputs: dict[str, Any], ctx: EvalContext,
                            kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
        """The outermost evaluation: under ``ctx`` (its memoizing scope open, this thread's current context), with
        the checks made once per evaluation (an empty batch, a number where a tensor is due)."""
        empty = _empty_inputs(inputs)
        recorder = ctx.recorder
        term = recorder is not None and id(self) in recorder
        if term:  # the formula is one term (a formula whose top node is ``.named(...)``, or no arithmetic):
            ctx.recorder = None  # nothing it evaluates inside is recorded
        try:
            with ctx:
                memo = active_memo() if not is_compiling() and self._dgm_has_user_terms() else None
                with memo.user_term() if memo is not None else contextlib.nullcontext():
                    if type(self).__call__ is not _LOSS_CALL:  # (a __call__ of the user's, also one a later cell
                        out = self(inputs, **kwargs)  # set)
                    elif has_call_hooks(self):
                        out = nn.Module.__call__(self, inputs, **kwargs)
                    else:
                        out = self.forward(inputs, **kwargs)
        except Exception as error:
            if empty:
                _raise_empty(self, inputs, empty, f"evaluating it raised {type(error).__name__}: {error}", error)
            raise
        loss, samples = _result(self, out)
        if not isinstance(loss, Tensor) and not self._dgm_of_parameters_only():
            try:
                loss = torch.as_tensor(loss, dtype=torch.get_default_dtype())
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"{describe(self)}: forward() returned a loss value of type {type(loss).__name__}; "
                                "a loss is a tensor (or a number), returned as (loss, x_dict)") from e
        if empty:
            _check_empty_result(self, loss, inputs, empty)
        if term:
            _record(recorder, id(self), loss)
        return loss, samples

    def _dgm_of_parameters_only(self) -> bool:
        """Whether every leaf of the formula is a :class:`~pyro_dgm.losses.special.Parameter`: then, as in Pixyz,
        ``eval`` returns the value as computed from the given values (``Parameter("x").eval({"x": 2})`` is ``2``);
        any other formula gives a tensor."""
        return self._dgm_formula_cached("_dgm_params_only", lambda: all(
            isinstance(n, _special.Parameter) for n in self._dgm_walk()[0]
            if not any(isinstance(c, Loss) for c in n._dgm_children())))

    def _dgm_leaves(self) -> "_Terms":
        """The terms of the top-level arithmetic, with their names (unique: ``" (2)"``...)."""
        cached = self.__dict__.get("_dgm_leaf_names")
        if cached is not None and cached.version == self._dgm_formula_version():
            return cached

        leaves: list[Loss] = []

        def walk(node: Loss) -> None:
            if getattr(node, "_dgm_given_name", None) is None and isinstance(
                    node, (_operators.LossOperator, _operators.LossSelfOperator)):
                for child in node.operands:
                    walk(child)
            elif not isinstance(node, _special.ValueLoss):
                leaves.append(node)

        walk(self)  # (NAMES_VERSION counts the distributions' renamings and the formulas' replaced operands)
        names: list[str] = []
        for leaf in leaves:
            name, n = leaf._dgm_term_name, 1
            while name in names:
                n += 1
                name = f"{leaf._dgm_term_name} ({n})"
            names.append(name)
        self._dgm_leaf_names = cached = _Terms(NAMES_VERSION[0], leaves, names)
        return cached

    def _dgm_new_recorder(self) -> dict[Any, Any]:
        """The recorder of one evaluation of this formula: ``id(term) -> None`` for each term of its top-level
        arithmetic, which :meth:`_dgm_evaluate` fills with the term's value (see :func:`_record`)."""
        return dict.fromkeys(map(id, self._dgm_leaves().terms))

    def _dgm_terms(self, recorder: Mapping[Any, Any]) -> dict[str, Tensor]:
        """``{name: value}`` of the terms, from what the recorder holds: a term object listed at several places of
        the formula (``pa + pa``) has its values in the order evaluated."""
        terms: dict[str, Tensor] = {}
        for term, name, place in self._dgm_leaves().places:
            key = id(term)
            value = recorder.get(key) if not place else recorder.get((key, place), recorder.get(key))
            if value is not None:
                terms[name] = value.detach() if isinstance(value, Tensor) else value
        return terms

    # ------------------------------------------------------------------ pyro.infer.ELBO interface
    def _dgm_data(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The data and the evaluation options of ``svi.step(...)``: keyword arguments named after a variable of the
        loss are data, the others options of :meth:`eval` (``mask=`` of an :class:`IterativeLoss`, a network's
        keyword), as ``Model.train(data, **options)`` takes them."""
        if args and not (len(args) == 1 and isinstance(args[0], Mapping)):
            needed = [v for v in self.input_var if v not in kwargs]
            if len(args) != 1 or len(needed) != 1:  # one input left to give: svi.step(x) is clear
                raise TypeError(f"{type(self).__name__} {self.loss_text}: pass the data by name (svi.step("
                                f"{', '.join(f'{v}=...' for v in self.input_var)})) or as one dict, got {len(args)} "
                                f"positional argument(s) of type {', '.join(type(a).__name__ for a in args)} (a "
                                "loss takes one positional value only when it has one input variable)")
            args = ({needed[0]: args[0]},)
        data = dict(args[0]) if args else {}
        if not kwargs:
            return data, {}
        names = self._dgm_formula_cached("_dgm_variable_names", lambda: frozenset(self.input_var).union(
            *(v for d in self._dgm_distributions for v in (d.var, d.cond_var))))
        options = {}
        for k, v in kwargs.items():
            (data if k in names else options)[k] = v
        return data, options

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Tensor:
        """The value of this loss on the data given as ``kwargs`` (``svi.step(x=x)``), one dict (``step({"x": x})``)
        or, for a loss with one input variable, one positional value (``svi.step(x)``, as Pyro scripts pass it).
        Keyword arguments that name no variable of the loss are options of :meth:`eval` (``svi.step(x=x,
        mask=m)`` is ``loss.eval({"x": x}, mask=m)``, as ``Model.train({"x": x}, mask=m)``).

        Every distribution in the loss registers its networks with ``pyro.module`` first, so ``SVI`` updates them.
        ``model`` and ``guide`` are not run: the loss is its own formula. So Pyro's handlers that weight or batch
        sites (``pyro.plate``, ``poutine.scale``, ``poutine.mask``) cannot reach it from around the step: inside one,
        it raises (a ``ValueError`` naming the handler) instead of ignoring it; a scale of 1 and a mask of ``True``
        pass, as around ``Model.train``. It raises too for a ``model`` or ``guide`` wrapped in a handler that
        changes what their ELBO is (``poutine.scale(model, 0.1)``, ``poutine.condition``, ``poutine.block``...).

        Raises
        ------
        ValueError
            If the value is not a scalar (SVI minimizes a number; take ``.mean()`` or ``.sum()``).
        """
        data, options = self._dgm_data(args, kwargs)
        seed = self._dgm_refuse_wrapped(model, guide) if model is not None or guide is not None else None
        for m in _PYRO_STACK:  # (a plate would batch a Pyro ELBO's sites, of any size; a scale of 1 and a mask of
            # True weigh nothing, as Model.train lets them through)
            if (isinstance(m, IndepMessenger) or (isinstance(m, ScaleMessenger) and not _all_equal(m.scale, 1))
                    or (isinstance(m, MaskMessenger) and not _all_equal(m.mask, True))):
                self._dgm_refuse_weighting(m)
        for d in self._dgm_formula_cached("_dgm_registered", lambda: self._dgm_distributions):
            d._dgm_register_params()
        if seed is None:
            value = self.eval(data, **options)
        else:  # a guide in poutine.seed draws from the seeded generators, which are put back after it, as there
            # (the whole evaluation runs seeded: a draw the model side makes, a decoder's dropout, is not the twin's)
            old = get_rng_state()
            set_rng_seed(seed)
            try:
                value = self.eval(data, **options)
            finally:
                set_rng_state(old)
        if not isinstance(value, Tensor):
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        if value.numel() != 1:
            raise ValueError(f"{type(self).__name__} {self.loss_text}: the loss has shape {tuple(value.shape)}, but "
                             "SVI minimizes a scalar; use loss.mean() or loss.sum()")
        return value.reshape(())

    def _dgm_refuse_wrapped(self, model: Any, guide: Any) -> int | None:
        """Refuse a model or guide given to SVI wrapped in a Pyro handler that changes what an ELBO of them is
        (``SVI(poutine.scale(model, 0.1), guide, ...)``, ``poutine.condition``, ``poutine.block``...): the loss does
        not run them, so the handler would be silently ignored; a scale of 1, a mask of ``True`` and handlers that
        change no value (``config_enumerate``, ``poutine.reparam``...) pass. Returns the seed of the innermost
        ``poutine.seed`` around the guide (it seeds last, as in Pyro), which seeds the loss's draws
        (:meth:`differentiable_loss`), or ``None``."""
        seed = None
        for role, fn in (("model", model), ("guide", guide)):
            for m in _handlers_around(fn):
                if role == "guide" and isinstance(m, SeedMessenger):
                    seed = m.rng_seed
                elif (isinstance(m, _CHANGES_TARGET) or (isinstance(m, ScaleMessenger) and not _all_equal(m.scale, 1))
                        or (isinstance(m, MaskMessenger) and not _all_equal(m.mask, True))):
                    if isinstance(m, (ConditionMessenger, SubstituteMessenger)) and not m.data:
                        continue  # (no values given: it changes nothing)
                    what = f"poutine.{type(m).__name__.replace('Messenger', '').lower()}"
                    raise ValueError(f"{type(self).__name__} {self.loss_text}: the {role} given to it is wrapped in "
                                     f"{what}, which a pyro_dgm loss would ignore: the loss is its own formula and "
                                     f"does not run the {role}; weight or condition the loss itself (e.g. 0.5 * "
                                     "loss, or the data given to the step), or put the handler inside a PyroELBO "
                                     "term's model and guide")
        return seed

    def _dgm_refuse_weighting(self, handler: Any, how: str = "evaluated as a Pyro ELBO") -> None:
        what = (f"pyro.plate({handler.name!r})" if isinstance(handler, IndepMessenger) else
                f"poutine.{type(handler).__name__.replace('Messenger', '').lower()}")
        if isinstance(handler, IndepMessenger) and getattr(handler, "subsample_size", handler.size) != handler.size:
            what += f" (a subsample of {handler.subsample_size} of {handler.size}, which scales the sites)"
        raise ValueError(f"{type(self).__name__} {self.loss_text}: {how} inside {what}: a pyro_dgm "
                         "loss is its own formula, which Pyro's plates, scales and masks around the step do not "
                         "reach (they would be ignored, or add dims to its draws); weight the loss itself (e.g. "
                         "0.5 * loss, or IterativeLoss's mask=), pass the subsample as the data, or put the "
                         "handler inside a PyroELBO term's model and guide")

    def _dgm_refuse_weighting_around(self, how: str) -> None:
        """Refuse the Pyro handlers around ``how`` (``Model.train``) that would weight the loss's sites: a
        ``poutine.scale`` of a scale other than 1, a ``poutine.mask`` other than ``True`` and a plate that subsamples
        (``Loss.eval`` itself takes them: inside a Pyro model, they weight the site its value goes to, e.g. a
        ``pyro.factor``)."""
        for m in _PYRO_STACK:
            if isinstance(m, ScaleMessenger):
                if not _all_equal(m.scale, 1):
                    self._dgm_refuse_weighting(m, how)
            elif isinstance(m, MaskMessenger):
                if not _all_equal(m.mask, True):
                    self._dgm_refuse_weighting(m, how)
            elif isinstance(m, IndepMessenger) and getattr(m, "subsample_size", m.size) != m.size:
                self._dgm_refuse_weighting(m, how)

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The value of :meth:`differentiable_loss` as a float (``SVI.evaluate_loss`` calls it); a NaN warns, as
        Pyro's ELBOs warn."""
        with torch.no_grad():
            loss = float(self.differentiable_loss(model, guide, *args, **kwargs))
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """Backpropagate :meth:`differentiable_loss` and return its value (``SVI.step`` calls it); a NaN warns, as
        Pyro's ELBOs warn.

        A ``backward`` that raises half-way (an error in a network's backward) leaves no gradient of SVI's behind:
        the gradients of the param store's parameters the loss reaches are set to None before the error goes on,
        since ``SVI.step`` zeroes them only after a step that succeeded (with Pyro's ``Trace_ELBO`` the part that ran
        adds into the next step's gradients); other tensors' gradients (a user's own network) are left alone.
        """
        value = self.differentiable_loss(model, guide, *args, **kwargs)
        if value.requires_grad:
            try:
                value.backward(retain_graph=self.retain_graph)
            except BaseException:
                clear_grads(value)
                raise
        loss = float(value.detach())
        warn_if_nan(loss, "loss")
        return loss

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}: a pyro_dgm loss evaluates its own formula and does not "
                                  "trace model/guide; use differentiable_loss or eval")


_INPUT_VAR = Loss.__dict__["input_var"]  # (a subclass that overrides the property: see Loss.eval)


_LOSS_CALL = Loss.__call__  # (a subclass whose __call__ is another is evaluated by calling it, as Pixyz's eval does)
_LOSS_EVAL = Loss.eval  # (pyro_dgm's own: Loss.eval replaced later, by a user's wrapper, is a class's own eval)


class _FormulaCaches:
    """What a formula keeps while it is as it was (:meth:`Loss._dgm_formula_cached`): ``kept``, key to ``(version,
    value)``, and ``watch``, the version and the lists of terms it was made with (:func:`_containers`). One object
    that is no list, tuple or dict, so that the walks over a loss's attributes (:meth:`Loss._dgm_children`) do not
    take the distributions it keeps for terms of the formula."""

    __slots__ = ("owner", "kept", "watch")

    def __init__(self, owner: int) -> None:
        self.owner = owner  # (the id of the loss they belong to: a copy.copy of the loss makes its own)
        self.kept: dict[str, tuple[int, Any]] = {}
        self.watch: tuple[int, tuple[tuple[Any, tuple[Any, ...]], ...]] | None = None


class _Terms:
    """The terms of a formula's top-level arithmetic (cached on the formula): the term objects themselves, not their
    ids, so that a copy of the loss (``copy.deepcopy``, pickling) holds its own; their names; and ``places``,
    ``(term, name, place)`` where ``place`` counts the earlier places of the same object in the formula."""

    __slots__ = ("version", "terms", "names", "places")

    def __init__(self, version: int, terms: Sequence[Loss], names: Sequence[str]) -> None:
        self.version = version
        self.terms = tuple(terms)
        self.names = tuple(names)
        seen: dict[int, int] = {}
        places = []
        for term, name in zip(terms, names):
            place = seen.get(id(term), 0)
            seen[id(term)] = place + 1
            places.append((term, name, place))
        self.places = tuple(places)


def record_own_eval(term: Loss, value: Any) -> None:
    """Record ``value``, what the ``eval`` of its own of a term's class returned to the arithmetic holding it (a
    Pixyz-style override that changes its value: ``super().eval(...).clamp(...)``), if the evaluation records its
    terms and ``term`` is one of them: ``return_terms`` reports the value the term has in the formula."""
    ctx = _CURRENT.ctx
    recorder = None if ctx is None else ctx.recorder
    if recorder is not None and id(term) in recorder:
        _record(recorder, id(term), value)


def _record(recorder: dict[Any, Any], key: int, value: Any) -> None:
    """Record the value of the term ``key`` (its ``id``) in one evaluation: the first under ``key``, the next ones of
    the same term object (listed at several places of the formula) under ``(key, 1)``, ``(key, 2)``... (see
    :func:`_record_again`)."""
    if recorder[key] is None:
        recorder[key] = value
    else:
        _record_again(recorder, key, value)


def _record_again(recorder: dict[Any, Any], key: int, value: Any) -> None:
    """Record another value of the term ``key`` in the same evaluation (a term object listed at several places)."""
    place = 1
    while (key, place) in recorder:
        place += 1
    recorder[key, place] = value


def _empty_inputs(inputs: Mapping[str, Any]) -> list[str] | None:
    """The input variables given with zero rows (an empty batch), or None (the common case: one cheap loop)."""
    for v in inputs.values():
        if isinstance(v, Tensor) and v.dim() and not v.is_nested and not v.shape[0]:  # (a nested tensor has no
            return [k for k, w in inputs.items()  # shape; a network may pad it)
                    if isinstance(w, Tensor) and w.dim() and not w.is_nested and not w.shape[0]]
    return None


def _raise_empty(loss: Loss, inputs: Mapping[str, Any], empty: Sequence[str], what: str,
                 cause: BaseException | None = None) -> None:
    shapes = ", ".join(f"{k!r} has shape {tuple(inputs[k].shape)}" for k in empty)
    raise ValueError(f"{type(loss).__name__} {loss.loss_text}: an empty batch: the input variable(s) "
                     f"{', '.join(repr(k) for k in empty)} have 0 rows ({shapes}), and {what}; pass at least one "
                     "row") from cause


def _check_empty_result(loss: Loss, value: Any, inputs: Mapping[str, Any], empty: Sequence[str]) -> None:
    """On an empty batch (rare: checked only then), a value that is not finite (a mean over no rows is NaN) is an
    error naming the empty variables; a finite one (a sum over no rows is 0, as in Pixyz) is returned."""
    if isinstance(value, Tensor) and value.numel() and not bool(torch.isfinite(value.detach()).all()):
        text = str(value.detach().flatten()[0].item()) if value.numel() == 1 else "not finite"
        _raise_empty(loss, inputs, empty, f"the loss is {text} on it")


def _from_numpy(loss: Loss, inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with each numpy array as a tensor (``torch.as_tensor``: its dtype kept) on the device of the given
    tensors, else of the loss's distributions' parameters (docs/design.md, "dtypes and containers")."""
    device = next((v.device for v in inputs.values() if isinstance(v, Tensor)), None)
    if device is None:
        device = next((t.device for d in loss._dgm_distributions for t in (*d.parameters(), *d.buffers())), None)
    return {k: numpy_tensor(loss, k, v, device) if type(v) is not Tensor and isinstance(v, np.ndarray) else v
            for k, v in inputs.items()}  # (a numpy scalar is handed on as given, as a Python number: Pixyz's)


def with_input_var(loss: Loss, input_var: Sequence[str] | None, owner: str) -> Loss:
    r"""Set the variables :meth:`Loss.eval` asks of a loss just built, and return it: the early API reference's
    ``input_var=`` of its loss constructors (``CrossEntropy(p1, p2, input_var=None)``...).

    ``None`` keeps the loss's own :attr:`Loss.input_var`. The list may add variables (``eval`` then requires them
    too) but not leave out one the loss needs: that raises a ``ValueError`` naming it, here rather than at ``eval``.

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    >>> with_input_var(-p.log_prob(), ["z", "x", "y"], "NLL").input_var
    ['z', 'x', 'y']
    >>> with_input_var(-p.log_prob(), ["z"], "NLL")
    Traceback (most recent call last):
     ...
    ValueError: NLL: input_var=['z'] leaves out 'x', which - \log p(x|z) needs (its input_var is ['x', 'z'])
    """
    if input_var is None:
        return loss
    names = as_var_list(input_var, owner, "input_var")
    missing = [v for v in loss.input_var if v not in names and v not in loss._dgm_optional_var]
    if missing:
        raise ValueError(f"{owner}: input_var={names} leaves out {missing[0]!r}, which {loss.loss_text} needs (its "
                         f"input_var is {list(loss.input_var)})")
    loss._input_var = list(dict.fromkeys(names))
    return loss


def _printed(loss: Loss) -> str:
    """``loss.loss_text``, or, where a user's term's formula does not print in it (a ``_symbol`` that is a plain
    string, which a sum of sympy expressions cannot take, or one that raises: Pixyz's ``str`` raises there), the
    class's name and the complaint: what ``repr`` and the error messages' f-strings show, which must not raise
    instead of the error being raised (p487, p489). ``str(loss)`` and ``loss.loss_text`` raise, as Pixyz's."""
    try:
        return loss.loss_text
    except Exception as e:  # noqa: BLE001 (a user's _symbol: anything it raises)
        return f"{type(loss).__name__} (its formula does not print: {type(e).__name__}: {e})"


_VALUES_PARAMETER: "weakref.WeakKeyDictionary[type, str | None]" = weakref.WeakKeyDictionary()  # (weakly: a class
# defined again and again is freed)


def _values_parameter(cls: type) -> str | None:
    """The name of the first parameter of ``cls.forward`` after ``self`` (the values); ``None`` when it has none
    that can be given by name (``forward(self, *args)``, ``forward(self, **kwargs)``: Pixyz's keywords reach it as
    they are)."""
    if cls not in _VALUES_PARAMETER:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]
        first = params[0] if params else None
        _VALUES_PARAMETER[cls] = first.name if first is not None and first.kind is first.POSITIONAL_OR_KEYWORD \
            else None
    return _VALUES_PARAMETER[cls]


def _result(loss: Loss, out: Any) -> tuple[Any, Any]:
    """``(value, samples)`` of what ``loss.forward`` returned: Pixyz's ``(loss, x_dict)`` (any pair, as Pixyz
    unpacks it: a list, a named tuple such as torch's ``x.max(0)``), or the value alone. A second value that is no
    dict (``(loss, [])``, the indices of ``x.max(0)``) adds no samples (Pixyz's ``eval`` hands it back, and its
    operators fail on it)."""
    if isinstance(out, (tuple, list)):
        if len(out) == 2:
            return out[0], out[1] if type(out[1]) is dict or isinstance(out[1], Mapping) else {}
        raise ValueError(f"{describe(loss)}: forward() must return (loss, x_dict), got a {type(out).__name__} of "
                         f"{len(out)} values")
    return out, {}


def _raise_missing(loss: Loss, given: Mapping[str, Any], missing: Sequence[str]) -> None:
    # raises, naming them: the variables of _input_var (those eval requires, as Pixyz's; a subclass's input_var
    # property may list more, optional ones)
    check_present(loss, given, [v for v in loss._input_var if v not in loss._dgm_optional_var])


def is_operand(x: Any) -> bool:
    """Whether ``x`` can take part in loss arithmetic: a loss, a number or a tensor."""
    return isinstance(x, (Loss, numbers.Number, Tensor))


# The losses that Loss's arithmetic builds: their modules import this one, so they come after Loss is defined (one
# import here instead of one in each operator method).
from pyro_dgm.losses import expectation as _expectation  # noqa: E402
from pyro_dgm.losses import operators as _operators  # noqa: E402
from pyro_dgm.losses import special as _special  # noqa: E402


# inspect.signature(Loss) reads __new__ when a class defines it: show the constructor's own parameters
Loss.__new__.__signature__ = inspect.signature(Loss.__init__)  # type: ignore[attr-defined]
