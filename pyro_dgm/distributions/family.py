"""Parametric families backed by ``pyro.distributions``: :class:`DistributionBase`.

A family declares its Pyro class and its parameter names; this module does the plumbing once for all of them:
parameters given as constants (kept as buffers of shape ``[1, *features_shape]``), as the name of a conditioning
variable, or returned by ``forward`` of a subclass that holds a network.
"""
from __future__ import annotations

import copy
import functools
import math
import operator
import warnings
from typing import Any, ClassVar, Iterable, Mapping, NoReturn, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution as _TorchDistribution
from torch.distributions import constraints

from pyro_dgm.distributions import closed_forms
from pyro_dgm.distributions.base import (Distribution, ValuesLike, _binary_integers, _broadcasts, _one_hot_support,
                                         has_network)
from pyro_dgm.utils.attributes import Yielding, users_own
from pyro_dgm.distributions.bindings import Binding, CallState, expand_batch_n, forward_binding, forward_extras
from pyro_dgm.distributions.effects import (PYRO_STACK, copy_plates, data_batch_ndim, given_event_dim,
                                               has_forward_hooks, ignores_sites, run_bound_network, run_network)
from pyro_dgm.distributions.overrides import current_of, sets_dist, unshadow
from pyro_dgm.distributions.pixyz_protocol import LateKeys, LiveTorchClass, adopt, pyro_class, reduce_made
from pyro_dgm.distributions.graph import graph_name
from pyro_dgm.distributions.special import drawn_in_pass
from pyro_dgm.distributions.unreparameterized import plain_sample
from pyro_dgm.utils.checks import (ArgumentError, DTypeError, DeviceError, DimensionError, LayoutError,
                                   NoClosedFormError, NotATensorAttributeError, NotATensorError, NotBinaryError,
                                   NotOneHotError, OutOfRangeError,
                                   STRICT_SHAPES, ShapeError, add_note, clearer, describe, dtype_matter,
                                   param_dtype_error, refuse_param_dtype, unusual_tensor, user_stacklevel,
                                   value_shape_doubt, value_shape_problem)
from pyro_dgm.utils.latex import prob_text as _prob_text
from pyro_dgm.utils.random import STATE as _RNG
from pyro_dgm.utils.random import seeded_call
from pyro_dgm.utils.shapes import broadcast_shape
from pyro_dgm.utils.versions import version
from pyro_dgm.utils.compat import is_compiling, transformed

__all__ = ["DistributionBase"]


def _lacks_features(shape: torch.Size, event_shape: torch.Size) -> bool:
    """Whether a value of ``shape`` lacks features of ``event_shape`` that torch would broadcast it over: a trailing
    dim of size 1 (or none) where the event has more."""
    k = len(event_shape)
    tail = (1,) * max(k - len(shape), 0) + tuple(shape[max(len(shape) - k, 0):])
    return tail != tuple(event_shape) and all(v == 1 or v == e for v, e in zip(tail, event_shape))


def _call_builder(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self._dgm_owner._dgm_site_dist(*args, **kwargs)


def _reduce_callable(self: Any, protocol: int) -> Any:
    # pickle finds the made subclass by neither module nor name: rebuild it from the class it extends (or, where
    # that is a class pyro_class made for a torch class of the user's, from that torch class)
    cls = type(self).__mro__[1]
    if vars(cls).get("__reduce_ex__") is reduce_made:
        return _rebuild_callable, (cls.__mro__[1], dict(self.__dict__), True)
    return _rebuild_callable, (cls, dict(self.__dict__))


def _rebuild_callable(cls: type, state: dict[str, Any], made: bool = False) -> Any:
    if made:
        cls = pyro_class(cls)
    d = cls.__new__(cls)
    d.__dict__.update(state)
    return callable_dist(d, state.get("_dgm_owner"))


def callable_dist(d: Any, owner: "DistributionBase") -> Any:
    """``d`` made callable as our ``dist(x_dict, ...)`` builder (the object :attr:`DistributionBase.dist` returns
    after ``set_dist``, so code that calls ``p.dist(values)`` keeps working); it stays an instance of its class."""
    cls = type(d)
    sub = vars(cls).get("_dgm_callable")  # made once per class and kept on it (a dict of ours would keep a class
    if sub is None:  # made in a function alive: the subclass refers to its base)
        sub = type(cls)(cls.__name__, (cls,), {"__call__": _call_builder, "__reduce_ex__": _reduce_callable,
                                               "__module__": cls.__module__, "__qualname__": cls.__qualname__})
        type.__setattr__(cls, "_dgm_callable", sub)
    d.__class__ = sub
    d._dgm_owner = owner
    return d


def pixyz_dist(d: Any) -> Any:
    """The torch distribution that Pixyz's ``d.dist`` holds now, or ``None`` before any (Pixyz's ``None``).

    Pixyz sets it in ``set_dist``, which its ``sample``, ``get_log_prob``, ``sample_mean``, ``sample_variance``,
    ``get_entropy`` and analytic KL call: the last of those calls, or of explicit ``set_dist`` calls, wins. Explicit
    ``set_dist`` stores its object under ``_dist``; a call only records what it computed under ``_dgm_last`` (the
    parameters, or the distribution object it built anyway, and whether Pixyz's object is the hard one of a relaxed
    family) and deletes ``_dist``, so the two never disagree. The object is built here, once, when first read.
    """
    state = d.__dict__
    rec = state.get("_dgm_last")
    if rec is None:
        return state.get("_dist")
    if rec[1] is not None:  # recorded by a call, not built yet
        rec = state["_dgm_last"] = (callable_dist(d._dgm_pixyz_object(rec[0], rec[1]), d), None)
    return rec[0]


def _shape_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {tuple(v.shape) if isinstance(v, Tensor) else _what(v)}" for k, v in params.items())


def given_value_error(where: str, var: str, param: str, value: Any, attribute: bool = False) -> NotATensorError:
    """The error for a variable's value of the wrong kind (a text, a dict, a number where the family needs a
    tensor) given for the parameter ``param``: it names the variable, which the caller gave. With ``attribute``
    (torch's distribution raised an AttributeError for it, as under Pixyz), also an AttributeError."""
    shape = " of the parameter's shape" if isinstance(value, (int, float)) else ""
    cls = NotATensorAttributeError if attribute else NotATensorError
    return cls(f"{where}: the value of {var!r} (given as parameter {param}) is {_what(value)}; give a tensor{shape}")


#: the most elements of constants whose values :func:`_values_copy` keeps
_VALUES_KEPT = 1 << 16  # (256 KiB of float32: compared in a few microseconds)


def _values_copy(bufs: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """A copy of a distribution's constants on the CPU (65536 elements each at most), to tell a change made
    through ``.data`` (which torch's version counter does not count) from none: the caches of the standard form and
    of the base distribution compare it at each use (:func:`_values_same`; a comparison on a GPU would wait for it);
    ``None`` elsewhere."""
    if all(t.device.type == "cpu" and t.numel() <= _VALUES_KEPT and not t.is_meta for t in bufs.values()):
        return {n: t.detach().clone() for n, t in bufs.items()}
    return None


def _values_same(copy: Mapping[str, Tensor] | None, bufs: Mapping[str, Tensor]) -> bool:
    """Whether the constants ``bufs`` hold the values of ``copy`` (``True`` where none was kept)."""
    if copy is None:
        return True
    try:
        return all(torch.equal(copy[n], t) for n, t in bufs.items())
    except RuntimeError:  # (a tensor that cannot be read now: taken as changed)
        return False


def _what(v: Any) -> str:
    """A parameter that is not a tensor, in a message: a number as it is; an array by its type and shape (not its
    values, which may be many)."""
    if isinstance(v, (int, float, bool)) or v is None:
        return repr(v)
    shape = getattr(v, "shape", None)
    return f"{type(v).__module__}.{type(v).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")


def _constants_lead(params: Mapping[str, Any], consts: Sequence[str], ndim: int) -> int:
    """The leading dims of the parameters' broadcast shape (``ndim`` dims) that only the constants' batch dim of 1
    brings, when no input has a batch dim (a global latent's value): a batch dim, not a feature dim."""
    own = max((t.dim() - 1 for n, t in params.items() if n in consts and isinstance(t, Tensor)), default=0)
    given = max((t.dim() for n, t in params.items() if n not in consts and isinstance(t, Tensor)), default=0)
    return max(ndim - max(own, given), 0)


def _one_event(t: Tensor, v: str, ctx: CallState) -> bool:
    """Whether the one dim of input ``v`` is an event dim inside Pyro: a value whose site in an active trace has it
    as its event (a global latent, drawn outside the data plate), or that cannot be the batch dim of the plates (a
    value computed from one); Pixyz's rule makes it a batch of scalars."""
    e = ctx.event_dims.get(v)
    if e is None and PYRO_STACK and not ignores_sites(PYRO_STACK):
        e = given_event_dim(t, ctx)
    return e == 1


def _rows_differ(t: Tensor) -> bool:
    """Whether the rows (along dim 0) of ``t`` are not all equal (a check of the data: used on an error path)."""
    if t.shape[0] < 2:
        return False
    with torch.no_grad():
        return bool((t != t[:1]).any())


def _empty_batch_like(base: Any) -> Tensor | None:
    """``base``'s mean when its batch is empty (``None`` otherwise): what an empty batch's entropy takes its dtype
    and device from."""
    if math.prod(base.batch_shape):
        return None
    try:
        mean = base.mean
    except (RuntimeError, NotImplementedError):
        return None
    return mean if mean.is_floating_point() else None


class _Unusable:
    """A family's parameter hook that raises the error its binding met (``_dgm_set_unusable``)."""

    _dgm_unusable = True

    def __init__(self, err: BaseException) -> None:
        self.kind, self.args = type(err), err.args

    def __call__(self, *_: Any, **__: Any) -> Any:
        raise self.kind(*self.args)


def _library_distribution(fn: Any) -> bool:
    """Whether a site's distribution ``fn`` (inside ``Independent`` or a mask) is torch's, Pyro's or pyro_dgm's:
    one that draws no bool value and scores deterministically. A user's own class may do either (a mask sampler,
    a Monte Carlo log-density), so its values are left to it."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__module__.partition(".")[0] in ("torch", "pyro", "pyro_dgm")


def observed_refusal(owner: Any, name: str, fn: Any, x: Tensor) -> Exception | None:
    """Score an observed value ``x`` of ``name`` under ``fn``, the site distribution of ``owner``: a
    :class:`NotOneHotError` (class indices given to a one-hot family) is raised naming ``owner`` and ``name``; any
    other error is returned (Pyro's trace raises it when it scores the site), ``None`` when ``x`` scores."""
    try:
        fn.log_prob(x)
    except NotOneHotError as e:
        raise NotOneHotError(f"{describe(owner)}: cannot score {name!r} of shape {tuple(x.shape)}: {e}") from e
    except NotBinaryError as e:
        raise NotBinaryError(f"{describe(owner)}: cannot score {name!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 (a user's Pyro distribution may raise anything: the caller decides)
        return e
    return None


def _scores(fn: Any, x: Tensor) -> bool:
    """Whether ``fn`` scores ``x`` without an error."""
    try:
        fn.log_prob(x)
    except Exception:  # noqa: BLE001
        return False
    return True


class DistributionBase(Distribution):
    r"""A distribution of one variable from a ``pyro.distributions`` family.

    Subclasses set :attr:`pyro_dist` (the Pyro class) and :attr:`param_groups` (each group lists alternative
    parameter names, of which exactly one is needed, e.g. ``("probs", "logits")``).

    Parameters
    ----------
    var : list of str
        One variable, e.g. ``["x"]``.
    cond_var : list of str, optional
        Conditioning variables: the arguments of ``forward``, or the values of parameters given by name.
    name : str, default ``"p"``
    features_shape : tuple of int, optional
        The shape of one sample; constant parameters are broadcast to it (by default it is their broadcast shape).
    **params
        The family's parameters: a number or tensor (a constant, stored as a buffer so ``.to(device)`` and
        ``state_dict`` carry it), the name of a ``cond_var`` (its value is the parameter), or left out and returned
        by ``forward``. Two keywords are Pyro's, not parameters: ``infer`` (the options of this distribution's
        ``pyro.sample`` sites, e.g. ``infer={"enumerate": "parallel"}``, see :attr:`pyro_infer`) and ``pyro_name``
        (the param store's name of its networks, see :attr:`pyro_name`).
    """

    #: The Pyro class (``None``: a bare DistributionBase, which builds and prints as in Pixyz but cannot compute).
    pyro_dist: ClassVar[Any] = None
    param_groups: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: The order in which constant parameters are registered (and printed); empty: the order they were given in.
    buffer_order: ClassVar[tuple[str, ...]] = ()
    #: ``False`` where ``sample(sample_mean=True)`` raises NotImplementedError (Pixyz's relaxed families).
    sample_mean_draws: ClassVar[bool] = True
    #: Whether a constant parameter requires grad (set per instance; the class default serves older pickles).
    _dgm_const_grad: bool = False
    #: The parameters whose last dim is the classes (a Categorical's ``probs``/``logits``), where a family has them.
    _dgm_class_params: ClassVar[tuple[str, ...]] = ()
    #: The one of them given as a scalar (``probs=0.2``: one class), set per instance; ``None`` where none is.
    _dgm_scalar_classes: str | None = None

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), **params: Any) -> None:
        infer, pyro_name = params.pop("infer", None), params.pop("pyro_name", None)
        super().__init__(var=var, cond_var=cond_var, name=name, features_shape=features_shape)
        if infer is not None:  # Pyro's site options, e.g. infer={"enumerate": "parallel"}
            self.pyro_infer = infer
        if pyro_name is not None:  # the param store's name of the networks (default: the formula)
            self.pyro_name = pyro_name
        if len(self._var) != 1:
            raise ValueError(f"{describe(self)}: a {self.distribution_name} distribution generates one variable, "
                             f"got var={self._var}")
        adopted = adopt(self, params)  # a family written the Pixyz way, or a bare DistributionBase
        if adopted is not None:
            self.pyro_dist, self.param_groups = adopted
        accepted = [n for g in self.param_groups for n in g]
        unknown = [k for k in params if k not in accepted]
        order = list(params)
        unread: dict[str, Tensor] = {}
        if unknown and adopted is not None and users_own(type(self), "params_keys") and not any(
                isinstance(params[k], str) for k in unknown):  # a family's own arguments (Normal's loc, scale)
            for k in unknown:  # that a subclass's own params_keys leaves out: Pixyz keeps them as buffers, unread,
                value = params.pop(k)  # stored as the others (with the features' shape and a batch dim, in the
                if value is not None:  # order given); unset ones (None) it drops
                    unread[k] = self._dgm_as_tensor(k, value)
            unknown = []
        if unknown:
            raise TypeError(f"{describe(self)}: unknown parameter {unknown[0]!r}; {self.distribution_name} takes "
                            f"{', '.join(accepted)}")
        self._dgm_accepted = frozenset(accepted)
        var_params: list[tuple[str, str]] = []
        consts: dict[str, Tensor] = {}
        for pname, value in params.items():
            if value is None:
                continue
            if isinstance(value, str):
                if value not in self._cond_var:
                    raise ValueError(f"{describe(self)}: parameter {pname}={value!r} names a variable that is not "
                                     f"in cond_var {self._cond_var}; add it to cond_var")
                var_params.append((pname, value))
            else:
                consts[pname] = self._dgm_as_tensor(pname, value)
        for group in self.param_groups:
            given = [n for n in group if n in consts or n in dict(var_params)]
            if len(given) > 1:
                raise ValueError(f"{describe(self)}: give one of {', '.join(group)}, not {' and '.join(given)}")
        if PYRO_STACK and consts:
            self._dgm_check_no_plate_dims(consts)
        if unread:  # (stored with the others, in the order given)
            merged = {**consts, **unread}
            self._dgm_store_constants({k: merged[k] for k in order if k in merged})
        else:
            self._dgm_store_constants(consts)
        if self._dgm_class_params and not self.features_shape:  # probs=0.2: a distribution of one class
            self._dgm_scalar_classes = next((n for n in self._dgm_class_params if n in consts), None)
        # Pixyz builds a distribution that cannot compute (a parameter missing, a cond_var that reaches nothing,
        # forward's arguments not the cond_var, an invalid constant): it prints, multiplies and has a graph, and
        # fails at its first call. So do we: the error found here is raised by _dgm_params (see the end).
        unusable: BaseException | None = None
        try:
            fwd_pos, fwd_kw = forward_binding(self, [v for _, v in var_params], accepted[-1] if accepted else "loc")
        except (ValueError, TypeError) as e:
            fwd_pos, fwd_kw, unusable = (), (), e
        self._dgm_has_network = has_network(type(self))
        covered = set(consts) | {p for p, _ in var_params}
        self._dgm_missing_groups = tuple(g for g in self.param_groups if not covered.intersection(g))
        if unusable is None:
            unusable = self._dgm_missing_error()
        self._dgm_const_names = tuple(n for n in accepted if n in consts)  # the family's order, as Pixyz lists them
        # parameters that are all constants are checked here, once (torch's validation, if on), not at every call
        # (not a torch class read at each call, LiveTorchClass: its distribution may change, and is built each time)
        self._dgm_const_only = (not self._dgm_has_network and not var_params and unusable is None
                                and not self._dgm_missing_groups and type(self.pyro_dist) is not LiveTorchClass)
        self._dgm_base_cache: tuple[Any, ...] | None = None
        self._dgm_standard_cache: tuple[Any, ...] | None = None
        # a constant that requires grad (Pixyz's buffer is a clone of the tensor given, so gradients reach that
        # tensor): its graph is rebuilt at every call, never cached (a cached distribution's lazily computed
        # attributes would hold a graph that the first backward frees)
        self._dgm_const_grad = any(t.requires_grad for t in consts.values())
        if self._dgm_const_only:
            bufs = self._buffers
            try:
                self._dgm_base({n: bufs[n] for n in self._dgm_const_names}, validate=None)
            except ValueError:  # (an invalid constant, under validation: each call checks it under the validation
                self._dgm_const_only = False  # of its moment, and raises then, as Pixyz's first call does)
        if unusable is not None:
            self._dgm_set_unusable(unusable)
        elif type(self.param_groups) is LateKeys:
            self._dgm_read_late_keys()
        if self._dgm_user_get_params:
            self._dgm_const_only = False  # the subclass's get_params may change the constants
        self._dgm_b = Binding(self._var, self._cond_var, self._dgm_input_var, fwd_pos, fwd_kw, var_params)
        self._dgm_closed_forms()

    def _dgm_closed_forms(self) -> None:
        """The closed forms of this family (``closed_forms.py``), unless a subclass (or a ``set_dist`` set on this
        instance) builds its distribution its own way."""
        cls = type(self)
        self._dgm_plain = (cls._dgm_fn is DistributionBase._dgm_fn and cls._dgm_parts is DistributionBase._dgm_parts
                           and not sets_dist(self))
        self._dgm_closed_lp = closed_forms.LOG_PROB.get(self.pyro_dist) if self._dgm_plain else None
        self._dgm_closed_rs = closed_forms.RSAMPLE.get(self.pyro_dist) if self._dgm_plain else None

    def _dgm_class_changed(self) -> None:
        """Also a ``distribution_torch_class`` a later cell set on the class of a built family's subclass
        (``B.distribution_torch_class = Laplace``): read at each call from now on, as on the instance; and the
        closed forms, which a ``set_dist`` set on the class later turns off."""
        super()._dgm_class_changed()
        d = self.__dict__
        if "_dgm_b" not in d:
            return
        cls = type(self)
        live = type(d.get("pyro_dist")) is LiveTorchClass
        own = users_own(cls, "distribution_torch_class") or "distribution_torch_class" in d
        if own and not live:
            self._dgm_torch_class_set()
        elif live and not own and cls.pyro_dist is not None:  # (taken back, del B.distribution_torch_class: the
            del d["pyro_dist"]  # family's class again; its constants are checked at each call from now on)
            self._dgm_base_cache = self._dgm_standard_cache = None
        self._dgm_closed_forms()  # (none once the class has a set_dist of the user's, Q.set_dist = ...)

    def _dgm_torch_class_set(self) -> None:
        """``distribution_torch_class`` assigned to this instance (a subclass that made it a class attribute, then a
        later cell set another): Pixyz's next ``set_dist`` builds from it, so it is read at each call from now on."""
        d = self.__dict__
        if "_dgm_b" not in d:  # (set in a subclass's __init__ before ours ran: adopt reads it)
            return
        self.pyro_dist = LiveTorchClass(self)
        if d["_dgm_const_only"]:
            d["_dgm_const_only"] = False
        self._dgm_closed_lp = self._dgm_closed_rs = None
        self._dgm_base_cache = self._dgm_standard_cache = None

    def _dgm_read_late_keys(self) -> None:
        """Read ``params_keys`` at the first call: a property that reads an attribute the subclass's ``__init__`` sets
        after ``super().__init__`` could not be read while it ran (Pixyz reads it at each ``set_dist``). The method
        that does it shadows the parameters' method on this instance until then (a bound method: a copy or a pickle
        made before the first call reads its own keys)."""
        self.__dict__["_dgm_inner_params" if self._dgm_user_get_params else "_dgm_params"] = self._dgm_late_keys_params

    def _dgm_late_keys_params(self, *args: Any, **kwargs: Any) -> Any:
        slot = "_dgm_inner_params" if self._dgm_user_get_params else "_dgm_params"
        unshadow(self, slot)
        try:
            keys = self.params_keys
        except AttributeError:
            keys = None  # (still unreadable: the given parameters stay the family's)
        if keys is not None:
            self.param_groups = tuple((k,) for k in keys)
            accepted = [n for g in self.param_groups for n in g]
            self._dgm_accepted = frozenset(accepted)
            covered = set(self._dgm_const_names) | {p for p, _ in self._dgm_b.param_vars}
            self._dgm_missing_groups = tuple(g for g in self.param_groups if not covered.intersection(g))
            self._dgm_const_names = tuple(n for n in accepted if n in self._dgm_const_names)
            self._dgm_rebind()
        return getattr(self, slot)(*args, **kwargs)

    def _dgm_set_unusable(self, err: BaseException) -> None:
        """Make this distribution raise ``err`` at its first call, as Pixyz's fails there (it is built, prints and
        multiplies)."""
        # shadows the method on this instance only (no cost for others); an object, so that it pickles (a
        # distribution whose forward a later cell attaches is saved as Pixyz's is)
        self.__dict__["_dgm_inner_params" if self._dgm_user_get_params else "_dgm_params"] = _Unusable(err)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        super().register_buffer(name, tensor, persistent)
        d = self.__dict__
        if tensor is not None and "_dgm_b" in d and name in d["_dgm_accepted"] and name not in self._dgm_const_names:
            # a subclass that registers a parameter's constant itself after __init__ (Pixyz's get_params takes the
            # buffers named after parameters at every call)
            order = [n for g in self.param_groups for n in g]
            self._dgm_const_names = tuple(n for n in order if n in self._dgm_const_names or n == name)
            self._dgm_missing_groups = tuple(g for g in self._dgm_missing_groups if name not in g)
            self._dgm_const_only = False
            self._dgm_rebind()

    def _dgm_missing_error(self) -> ValueError | None:
        """The error of a parameter that is neither given nor returned by a ``forward``, if one is."""
        if not self._dgm_missing_groups or self._dgm_has_network or self._dgm_user_get_params:
            return None  # (a get_params of the user's may add it after super().get_params: what it returns is checked)
        g = self._dgm_missing_groups[0]
        return ValueError(f"{describe(self)}: parameter {' or '.join(g)} is not given; pass {g[0]}=<number, tensor or "
                          f"cond_var name>, or subclass {type(self).__name__} with a forward() that returns it")

    def _dgm_rebind(self) -> None:
        b = self._dgm_b
        accepted = [n for g in self.param_groups for n in g]
        for slot in ("_dgm_params", "_dgm_inner_params"):  # the error of the old binding, if any, is found anew
            if getattr(self.__dict__.get(slot), "_dgm_unusable", False):
                unshadow(self, slot)
        try:
            fwd_pos, fwd_kw = forward_binding(self, [v for _, v in b.param_vars], accepted[-1] if accepted else "loc")
        except (ValueError, TypeError) as e:
            fwd_pos, fwd_kw = (), ()
            self._dgm_set_unusable(e)
        else:
            missing = self._dgm_missing_error()
            if missing is not None:
                self._dgm_set_unusable(missing)
        self._dgm_b = Binding(self._var, self._cond_var, self._dgm_input_var, fwd_pos, fwd_kw, b.param_vars)
        self._dgm_base_cache = None

    # ------------------------------------------------------------------ construction helpers
    def _dgm_as_tensor(self, pname: str, value: Any) -> Tensor:
        if isinstance(value, Tensor):
            t = value  # kept attached: as in Pixyz, gradients reach a tensor that requires grad (_dgm_store_constants)
        elif isinstance(value, (int, float)) or (isinstance(value, (list, tuple)) and value) or (
                type(value).__module__ == "numpy" and hasattr(value, "__array__")):  # numpy arrays and scalars
            try:
                t = torch.as_tensor(value, dtype=torch.get_default_dtype())
            except (TypeError, ValueError):  # a numpy view of negative strides (a[::-1]), strings...
                import numpy as np

                try:
                    t = torch.as_tensor(np.ascontiguousarray(value), dtype=torch.get_default_dtype())
                except (TypeError, ValueError) as e:
                    raise NotATensorError(f"{describe(self)}: parameter {pname} must be a number, a tensor or the "
                                          f"name of a cond_var, got {type(value).__name__} of dtype "
                                          f"{getattr(value, 'dtype', '?')} ({e})") from e
        else:  # (Pixyz raises a ValueError there: this is both)
            raise NotATensorError(f"{describe(self)}: parameter {pname} must be a number, a tensor or the name of a "
                                  f"cond_var, got {type(value).__name__}")
        if t.is_complex():  # (casting would drop the imaginary part silently; Pixyz computes complex garbage)
            raise DTypeError(f"{describe(self)}: parameter {pname} must be real, got a complex tensor of dtype "
                             f"{t.dtype}")
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        return t

    def _dgm_check_no_plate_dims(self, consts: dict[str, Tensor]) -> None:
        """Refuse a constant built inside a Pyro plate that has the plate's dim (e.g. a latent drawn under
        ``vectorize_particles``): a constant is the distribution's features, so that dim would be summed over."""
        from pyro.poutine.indep_messenger import IndepMessenger

        for m in PYRO_STACK:
            if not isinstance(m, IndepMessenger) or m.dim is None:
                continue
            size = getattr(m, "subsample_size", None) or m.size
            if size < 2:
                continue
            for pname, t in consts.items():
                # the plate's dim counts batch dims: in the tensor it sits left of however many event dims it has
                if any(t.shape[m.dim - k] == size for k in range(t.dim() + m.dim + 1)):
                    raise ValueError(
                        f"{describe(self)}: constant parameter {pname} has shape {tuple(t.shape)}, which has a dim "
                        f"of the Pyro plate {m.name!r} (size {size}, dim {m.dim}) around this construction; a "
                        f"constant is the distribution's features (its shape is features_shape), so that dim would "
                        f"be summed over. Give a value that varies over plates as an input: "
                        f"{self.distribution_name}({pname}='<name>', cond_var=['<name>'], ...) built once, called "
                        f"with <name>=the tensor")

    def _dgm_store_constants(self, consts: dict[str, Tensor]) -> None:
        if self.buffer_order:
            consts = {k: consts[k] for k in sorted(consts, key=lambda k: (
                self.buffer_order.index(k) if k in self.buffer_order else len(self.buffer_order)))}
        shape = self.features_shape  # (a subclass's own features_shape property is Pixyz's shape too)
        # Pixyz infers features_shape from the parameters in order: a number before the first tensor parameter
        # is stored with shape [1] (it broadcasts; only print shows it), later ones with the inferred shape
        scalar_first = not shape and bool(consts) and next(iter(consts.values())).dim() == 0
        if not shape and consts:
            try:
                shape = torch.broadcast_shapes(*(t.shape for t in consts.values()))
            except RuntimeError:
                raise ShapeError(f"{describe(self)}: constant parameters do not broadcast together "
                                 f"({_shape_text(consts)})") from None
            self._features_shape = torch.Size(shape)
        for pname, t in consts.items():
            if scalar_first and t.dim() == 0:
                self.register_buffer(pname, t.clone().reshape(1))
                continue
            scalar_first = False
            try:
                full = t.expand(shape)
            except RuntimeError:
                raise ShapeError(f"{describe(self)}: parameter {pname} has shape {tuple(t.shape)}, which does not "
                                 f"broadcast to features_shape {tuple(shape)}") from None
            self.register_buffer(pname, full.clone().unsqueeze(0))

    @property
    def _dgm_binding(self) -> Binding:
        return self._dgm_b

    @property
    def prob_factorized_text(self) -> str:
        """The formula's right side: as Pixyz's (its graph's), from the name and the variables, also where a
        subclass prints its own ``prob_text`` (the left side); under its graph's name (``graph.name``)."""
        if users_own(type(self), "name"):  # (Pixyz's factor reads a subclass's name property)
            return _prob_text(self.name, self._var, self._cond_var)
        return _prob_text(graph_name(self), self._var, self._cond_var)

    @property
    def replace_params_dict(self) -> dict[str, list[str]]:
        """Pixyz's attribute: each ``cond_var`` that is given as a parameter, with the parameters it gives, e.g.
        ``{"x": ["loc"]}`` for ``Normal(loc="x", scale=1., cond_var=["x"])``."""
        out: dict[str, list[str]] = {}
        for pname, v in self._dgm_b.param_vars:
            out.setdefault(v, []).append(pname)
        return out

    def _dgm_draw_factor(self, values: dict[str, Any], ctx: CallState) -> None:
        self._dgm_draw_with(self._dgm_b, values, ctx)

    def forward(self, **params: Any) -> dict[str, Any]:
        """No network: hands back its keyword arguments (Pixyz's ``DistributionBase.forward``, so ``prior()`` is
        ``{}``); a subclass with a network overrides it to map ``cond_var`` values to parameters."""
        return params

    forward._dgm_no_network = True  # type: ignore[attr-defined]

    def _dgm_score_factor(self, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                          feature_dims: Sequence[int] | None) -> Tensor:
        return self._dgm_score_with(self._dgm_b, values, ctx, sum_features, feature_dims)

    @property
    def has_reparam(self) -> bool:
        return bool(self.pyro_dist.has_rsample)

    # ------------------------------------------------------------------ parameters and the Pyro distribution
    def _dgm_params(self, b: Binding, values: Mapping[str, Any], ctx: CallState) -> dict[str, Tensor]:
        """The parameters given the values of ``b``'s inputs: every path that samples or scores calls this (a class
        whose get_params is the user's routes it through that method: see :mod:`.overrides`)."""
        # Pixyz's order (and precedence): network outputs, then parameters named by a cond_var, then constants
        bufs = self._buffers
        params: dict[str, Tensor] = {}
        if self._dgm_has_network:
            extra = forward_extras(self, ctx.kwargs) if ctx.kwargs else ctx.kwargs
            try:
                if b.fwd_kw:
                    kw = {k: values[v] for k, v in b.fwd_kw}
                    kw.update(extra)
                else:
                    kw = extra
                out = run_bound_network(self, self._dgm_b.fwd_pos, [values[v] for v in b.fwd_pos], kw)
            except Exception as e:  # noqa: BLE001 (named, with its type kept; an input missing: named too)
                self._dgm_note_inputs(e, b, values)
                raise
            if not isinstance(out, dict):
                raise ArgumentError(f"{describe(self)}: forward() must return a dict of parameters, e.g. "
                                    f"{{'{self.param_groups[0][0]}': ...}}, got {type(out).__name__}")
            if not self._dgm_accepted.issuperset(out) and not ctx.extra_params:
                bad = [k for k in out if k not in self._dgm_accepted]
                raise ValueError(f"{describe(self)}: forward() returned unknown parameter {bad[0]!r}; "
                                 f"{self.distribution_name} takes {', '.join(sorted(self._dgm_accepted))}")
            for v in b.input_var:  # an input with one dim is a batch of scalars (Pixyz's convention)
                t = values.get(v)
                if isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] != 1 and not _one_event(t, v, ctx):
                    self._dgm_check_out_batch(b, values, out)
                    break
            params.update(out)
        elif has_forward_hooks(self):  # Pixyz calls forward() of a distribution without a network too: its hooks run
            out = run_network(self)
            if isinstance(out, dict):
                params.update(out)  # (then the constants, as there)
        named = b.param_vars
        if ctx.extra_params and len(named) > 1:  # (the public get_params: Pixyz lists them in the caller's order,
            order = {v: i for i, v in enumerate(values)}  # a network's output of that name keeping its place)
            named = sorted(named, key=lambda pv: order.get(pv[1], len(order)))
        for p, v in named:
            t = params[p] = values[v]
            if isinstance(t, Tensor) and t.is_complex():  # as a complex constant is refused (at construction)
                raise DTypeError(f"{describe(self)}: parameter {p} (the input {v!r}) must be real, got a complex "
                                 f"tensor of dtype {t.dtype}")
        try:
            if PYRO_STACK and self._dgm_const_names and not ignores_sites(PYRO_STACK):
                # a Pyro handler sees the site (an autoguide's init_to_mean keeps its mean as a parameter that the
                # optimizer updates in place): a copy, so the constants stay as they are
                for n in self._dgm_const_names:
                    params[n] = bufs[n].clone()
            else:
                for n in self._dgm_const_names:
                    params[n] = bufs[n]
        except KeyError as e:
            self._dgm_constant_gone(e.args[0], e)
        for g in self._dgm_missing_groups:
            for n in g:
                if n in params:
                    break
            else:
                if self._dgm_user_get_params:  # (super().get_params of the user's get_params, which may add it, as
                    break  # under Pixyz: what that method returns is checked, _params_via_get_params)
                raise ValueError(f"{describe(self)}: forward() did not return {' or '.join(g)}; it returned "
                                 f"{sorted(params)}")
        return params

    def _dgm_constant_gone(self, name: str, e: KeyError) -> NoReturn:
        """Refuse a constant parameter that is no longer a buffer (``p.loc = nn.Parameter(...)`` moves it to the
        parameters, where it would train under a standard-form shortcut that assumed it fixed; Pixyz refuses it
        too, with a ValueError), naming the distribution and the parameter."""
        kind = "an nn.Parameter was assigned to it" if name in self._parameters else "it was deleted"
        raise ValueError(f"{describe(self)}: its constant parameter {name!r} is no longer a buffer ({kind}); "
                         f"constants do not train: give a learnable {name!r} through forward() "
                         f"(return {{{name!r}: self.{name}_param, ...}}), or build the distribution anew with the "
                         f"tensor") from e

    def _dgm_check_out_batch(self, b: Binding, values: Mapping[str, Any], out: Mapping[str, Any]) -> None:
        """Refuse parameters whose batch dim matches no input's, when an input has one dim only: the network took
        that input as one example (its dim as features), while a value with one dim is a batch of scalars, so every
        later shape (and the loss) would be silently wrong (issue 13: ``x`` of shape ``[16]`` into a VAE).

        A parameter of fewer dims that broadcasts against one that the network computed per row (a learned
        per-feature ``scale`` of shape ``[D]`` beside a ``loc`` of ``[B, D]``) is shared by the batch, as in Pixyz.
        A batch dim whose rows are all the same (``torch.ones(x.shape[0], D)``, a learned row repeated or
        expanded) shows nothing of the kind when the inputs' rows differ: beside it, the parameter without the
        batch dim is still refused."""
        given_t = {v: values[v] for v in b.input_var if isinstance(values.get(v), Tensor)}
        sizes = {t.shape[0] for t in given_t.values() if t.dim() >= 1}
        if all(not isinstance(t, Tensor) or t.dim() < 1 or t.shape[0] == 1 or t.shape[0] in sizes
               for t in out.values()):
            return  # (the common case: every parameter has an input's batch dim, or none)
        batched = [t for t in out.values() if isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] in sizes
                   and _rows_differ(t)]
        if not batched and not any(_rows_differ(t) for t in given_t.values() if t.dim() >= 1):
            batched = [t for t in out.values() if isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] in sizes]
            # (inputs whose rows are all the same cannot tell: a network of them gives equal rows too)
        for k, t in out.items():
            if (isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] != 1 and t.shape[0] not in sizes
                    and not any(u.dim() > t.dim() and _broadcasts(u, t) for u in batched)):
                flat = [v for v, u in given_t.items() if u.dim() == 1]
                given = ", ".join(f"{v!r} of shape {tuple(u.shape)}" for v, u in given_t.items())
                raise ValueError(f"{describe(self)}: forward() returned {k} of shape {tuple(t.shape)}, whose "
                                 f"batch dim ({t.shape[0]}) is no input's batch dim (inputs: {given}). The first dim "
                                 f"of a value is its batch dim, so {flat[0]!r} of shape "
                                 f"{tuple(values[flat[0]].shape)} is a batch of {values[flat[0]].shape[0]} scalars, "
                                 f"but the network took it as one example: give {flat[0]!r} a batch dim (shape "
                                 f"{(1, *values[flat[0]].shape)} for one example, {flat[0]}.unsqueeze(0)); if "
                                 f"{flat[0]!r} was drawn by another distribution, that one's forward() returned "
                                 f"parameters without the batch dim of its inputs (e.g. a mean over dim 0: keep it "
                                 f"with keepdim=True)")

    def _dgm_base(self, params: dict[str, Tensor], validate: bool | None = None) -> Any:
        """The Pyro distribution over the full parameter shape (no event dims reinterpreted).

        ``validate=None`` follows torch's default (``Distribution.set_default_validate_args``).
        """
        if self.pyro_dist is None:
            if validate is None and not params:  # the construction-time check of a bare DistributionBase
                return None
            raise NotImplementedError(f"{describe(self)}: a DistributionBase without a family cannot compute; use a "
                                      "family (Normal, ...) or subclass DistributionBase with a pyro_dist")
        try:
            return self.pyro_dist(**params, validate_args=validate)
        except (ValueError, RuntimeError) as e:
            if validate is not False and any(isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] == 0
                                             for t in params.values()):
                try:  # an empty batch: torch's check of the parameters cannot reshape 0 rows (a one-hot
                    return self.pyro_dist(**params, validate_args=False)  # categorical's); nothing to check
                except (ValueError, RuntimeError):
                    pass  # (parameters that do not broadcast: said below)
            meta = [k for k, v in params.items() if isinstance(v, Tensor) and v.is_meta]
            if meta:  # (a network built under torch.device("meta") and never materialized: no values to use)
                k = meta[0]
                b = self.__dict__.get("_dgm_b")  # (None while __init__ checks the constants: probe p261)
                var = dict(b.param_vars).get(k) if b is not None else None
                fix = ("give the constant values" if k in self._dgm_const_names else
                       f"give {var!r} values" if var is not None else
                       "materialize the network (module.to_empty(device=...), then load its weights)")
                raise DeviceError(f"{describe(self)}: parameter {k} is on the 'meta' device (shape "
                                  f"{tuple(params[k].shape)}, no values): {fix} before drawing or scoring") from e
            arrays = [k for k, v in params.items() if type(v).__module__ == "numpy"]
            if arrays:  # (a network's numpy output, or a variable's: torch's distributions take tensors, as Pixyz's)
                k = arrays[0]
                var = dict(self._dgm_b.param_vars).get(k)
                where = (f"the value of {var!r} given as {k} must be a tensor (a distribution that computes {var!r}, "
                         f"a Deterministic's forward(), must return one)") if var is not None else \
                    "the network's forward() must return tensors (torch.as_tensor(...))"
                raise NotATensorError(f"{describe(self)}: parameter {k} is a numpy array ({_what(params[k])}); "
                                      f"{where}") from e
            self._dgm_name_given(params, e)
            raise clearer(e, f"{describe(self)}: invalid parameters ({_shape_text(params)}): {e}") from e
        except (AttributeError, TypeError) as e:  # a network's number or list where the family needs a tensor (.dim())
            unknown = [k for k in params if k not in self._dgm_accepted]
            if unknown:  # from a user's get_params (forward's are checked where it returns): Pixyz's ValueError
                raise ValueError(f"{describe(self)}: get_params() returned unknown parameter {unknown[0]!r}; "
                                 f"{self.distribution_name} takes {', '.join(sorted(self._dgm_accepted))}") from e
            others = [k for k, t in params.items() if not isinstance(t, Tensor)]
            ints = [k for k, t in params.items() if isinstance(t, Tensor) and not t.is_floating_point()
                    and not t.is_complex()]
            if not others and ints and dtype_matter(e):  # (torch.finfo of an integer probs: a relaxed family)
                raise param_dtype_error(self, e, (ints[0], params[ints[0]].dtype), "build its distribution") from e
            if not others:
                raise
            try:
                return self._dgm_base({k: self._dgm_param_tensor(k, t) for k, t in params.items()}, validate)
            except (ValueError, TypeError) as again:  # (a variable's text or number, still refused: named)
                self._dgm_name_given(params, again, numbers=True, attribute=isinstance(e, AttributeError))
                raise

    def _dgm_name_given(self, params: Mapping[str, Any], e: BaseException, numbers: bool = False,
                        attribute: bool = False) -> None:
        """Raise a :class:`NotATensorError` naming the variable whose value, given for a parameter, is of the wrong
        kind (a text, a dict; with ``numbers``, a number too), as the cause of ``e`` (``attribute``: also an
        AttributeError); nothing if there is none."""
        b = self.__dict__.get("_dgm_b")
        named = dict(b.param_vars) if b is not None else {}
        kinds = (Tensor,) if numbers else (Tensor, int, float)
        given = [k for k, v in params.items() if k in named and not isinstance(v, kinds)]
        if given:  # (the caller gave it: name the variable)
            raise given_value_error(describe(self), named[given[0]], given[0], params[given[0]], attribute) from e

    def _dgm_param_tensor(self, name: str, t: Any) -> Tensor:
        """A parameter given as a number or a (nested) list of numbers, as a tensor of the others' float dtype."""
        if isinstance(t, Tensor):
            return t
        out = self._dgm_numbers_tensor(t)
        if out is None:
            raise NotATensorError(f"{describe(self)}: parameter {name!r} must be a tensor (or a number or a list of "
                                  f"numbers), got {type(t).__name__}")
        return out

    def _dgm_closed_params(self, b: Binding, values: Mapping[str, Any], ctx: CallState
                           ) -> closed_forms.ClosedParams | None:
        """The one gate to the closed forms of :mod:`.closed_forms`: the parameters and their largest number of
        dims.

        ``None`` where the general path must run: the closed forms are off, an input is missing (the general path
        names it), a parameter is not a tensor, two parameters of one group are given (a network returning both
        ``probs`` and ``logits``: the general path refuses them, as every path and Pixyz do), or, under torch's
        argument validation, a parameter breaks its constraint (the general path raises torch's error).
        """
        if not closed_forms.ENABLED[0]:
            return None
        for v in b.input_var:
            if v not in values:
                return None
        params = self._dgm_params(b, values, ctx)
        if len(params) > len(self.param_groups):  # two of one group (probs and logits): the general path raises
            return self._dgm_decline(b, params, ctx)
        nd = 0
        for t in params.values():
            if not isinstance(t, Tensor):
                return self._dgm_decline(b, params, ctx)
            if t.dim() > nd:
                nd = t.dim()
        if _TorchDistribution._validate_args:
            # the constants are checked once per set of buffers (built beside a network or a variable, they were not
            # checked when the distribution was built; an in-place change or a new buffer is checked again)
            names = self._dgm_const_names
            checked = self.__dict__.get("_dgm_consts_checked")
            key = self._dgm_const_key() if names else None
            ok = (key is not None and checked is not None and checked[0] == key
                  and _values_same(checked[2], dict(zip(names, checked[1]))))  # (also a change through .data)
            try:
                if not closed_forms.valid_params(self.pyro_dist, params, names if ok else ()):
                    return self._dgm_decline(b, params, ctx)
            except RuntimeError:  # (a value the check cannot read, a meta tensor: the general path names it)
                return self._dgm_decline(b, params, ctx)
            if key is not None and not ok:  # (the buffers kept with their key: a freed one's id is not reused)
                kept = tuple(self._buffers[n] for n in names)
                self.__dict__["_dgm_consts_checked"] = (key, kept, _values_copy(dict(zip(names, kept))))
        return closed_forms.ClosedParams(params, nd)

    def _dgm_decline(self, b: Binding, params: dict[str, Any], ctx: CallState) -> None:
        """The closed forms decline parameters the network gave: the general path takes them (``ctx.spare``), so that
        the network runs once, as in Pixyz (a random network's output, or the random numbers it draws, are those
        the general path scores or refuses)."""
        ctx.spare = (self, b, params)

    def _dgm_closed_form_kl(self, other: Distribution, values: Mapping[str, Any],
                            options: Mapping[str, Any] | None = None) -> Tensor | None:
        """:math:`D_{KL}[self \\| other]` summed over the feature dims by a registered closed form
        (:func:`~pyro_dgm.distributions.closed_forms.register_kl`), or ``None`` where ``kl_divergence`` on the
        distribution objects must answer (no closed form, different feature dims, a parameter torch's validation
        would refuse...). ``options`` are the networks' keyword arguments (as ``eval``'s).

        Examples
        --------
        >>> import torch
        >>> from pyro_dgm.distributions import Normal
        >>> q = Normal(loc="m", scale=1., var=["z"], cond_var=["m"], features_shape=[2])
        >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2])
        >>> q.closed_form_kl(prior, {"m": torch.ones(3, 2)})  # 2 features: 2 * 1 / 2
        tensor([1., 1., 1.])
        """
        fn = closed_forms.KL.get((self.pyro_dist, getattr(other, "pyro_dist", None)))
        if fn is None or not (self._dgm_plain and isinstance(other, DistributionBase) and other._dgm_plain):
            return None
        ctx = CallState(kwargs=options)
        p, q = self._dgm_closed_params(self._dgm_b, values, ctx), other._dgm_closed_params(other._dgm_b, values, ctx)
        if p is None or q is None or p.ndim != q.ndim:
            return None
        try:
            if other._dgm_is_standard():  # the same value with fewer operations; q's parameters only broadcast
                params = p.params
                q_dtypes = {t.dtype for t in q.params.values()}
                if not q_dtypes <= {t.dtype for t in params.values()}:  # e.g. bfloat16 networks under autocast:
                    dtype = functools.reduce(torch.promote_types, q_dtypes, next(iter(params.values())).dtype)
                    params = {k: t.to(torch.promote_types(t.dtype, dtype)) for k, t in params.items()}  # q's dtype
                kl = closed_forms.KL_TO_STANDARD[self.pyro_dist](params)
                shape = kl.shape
                for t in q.params.values():
                    shape = broadcast_shape(shape, t.shape)
                if shape != kl.shape:
                    kl = kl.expand(shape)
            else:
                kl = fn(p.params, q.params)
        except (RuntimeError, ValueError):
            return None
        # Pixyz's analytic KL calls p.set_dist, then q.set_dist: both dists are those of these parameters
        for d, params in ((self, p.params), (other, q.params)):
            d._dgm_set_last(params, True)
        ev = p.ndim - 1  # inputs given from outside have one batch dim (Pixyz); the rest are feature dims
        return kl.sum(tuple(range(-ev, 0))) if ev > 0 else kl

    closed_form_kl = Yielding("_dgm_closed_form_kl")

    def _dgm_const_key(self) -> tuple[tuple[int, int], ...]:
        """Identifies the current constant buffers: a new buffer (``.to(...)``, ``load_state_dict``) or an in-place
        change gives a new key."""
        bufs = self._buffers
        try:
            return tuple((id(t), version(t)) for t in (bufs[n] for n in self._dgm_const_names))
        except KeyError as e:
            self._dgm_constant_gone(e.args[0], e)

    def _dgm_consts_need_grad(self) -> bool:
        """Whether a constant requires grad: given so, or a buffer swapped for such a tensor since
        (``torch.func.functional_call``, ``p.scale = torch.ones(3, requires_grad=True)``); then its graph is built at
        every call, and the standard-form shortcut, which reads no parameter, is not taken. So too under a
        ``torch.func`` transform or forward AD (:func:`~pyro_dgm.utils.compat.transformed`): a buffer may be batched
        by ``vmap`` or carry a tangent, which neither the cache nor the shortcut may keep or drop."""
        if self._dgm_const_grad or transformed():
            return True
        bufs = self._buffers
        for n in self._dgm_const_names:
            t = bufs.get(n)
            if t is not None and t.requires_grad:
                return True
        return False

    def _dgm_is_standard(self) -> bool:
        """Whether this is a constant distribution in its family's standard form (``closed_forms.IS_STANDARD``,
        e.g. N(0, I)); checked once per set of buffers. ``False`` while torch.compile traces: the test reads the
        buffers' values (a graph break), and the general formula gives the same value, fused by the compiler."""
        test = (closed_forms.IS_STANDARD.get(self.pyro_dist)
                if self._dgm_const_only and self._dgm_plain and not self._dgm_user_get_params else None)
        if test is None or self._dgm_consts_need_grad() or is_compiling():  # (the shortcut drops
            return False  # the gradient)
        key = self._dgm_const_key()
        cached = self._dgm_standard_cache
        if cached is None or cached[0] != key or not _values_same(cached[3], cached[2]):
            bufs = {n: self._buffers[n] for n in self._dgm_const_names}  # kept with the answer: the key holds their
            cached = self._dgm_standard_cache = (key, test(bufs), bufs, _values_copy(bufs))  # ids, which a new
            # buffer could reuse
        return cached[1]

    def _dgm_const_base(self) -> Any:
        """The base distribution of constant parameters, built once per set of buffers (a new buffer after
        ``.to(...)``/``load_state_dict`` or an in-place change rebuilds it); validated at construction. While
        torch.compile traces it is built afresh (a cache keyed by the buffers' versions would make the compiled
        code guard on them); it costs nothing at run time there."""
        bufs = self._buffers
        if is_compiling():
            return self._dgm_base({n: bufs[n] for n in self._dgm_const_names}, validate=False)
        if self._dgm_consts_need_grad():  # (built at each call, as Pixyz builds it: checked as torch checks it)
            return self._dgm_base({n: bufs[n] for n in self._dgm_const_names})
        key = self._dgm_const_key()
        cached = self._dgm_base_cache
        if cached is None or cached[0] != key or not _values_same(cached[3], cached[2]):  # a new set of buffers
            # (assigned, loaded, changed in place, also through .data on the CPU) is checked as torch checks it
            kept = {n: bufs[n] for n in self._dgm_const_names}  # kept with the base (the key holds their ids)
            cached = self._dgm_base_cache = (key, self._dgm_base(kept), kept, _values_copy(kept))
        if PYRO_STACK and not ignores_sites(PYRO_STACK):  # a Pyro handler sees the site: copies (see _dgm_params)
            base = self._dgm_base({n: bufs[n].clone() for n in self._dgm_const_names}, validate=False)
        else:
            base = cached[1]
        # a value it scores is checked as torch checks it (a value outside the support raises, as under Pixyz,
        # instead of scoring nan), while torch's validation is on
        base._validate_args = _TorchDistribution._validate_args
        return base

    def _dgm_fn(self, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                value: Tensor | None = None) -> tuple[Any, Any]:
        """The site's distribution (feature dims as event dims, expanded for batch_n/sample_shape) and its base."""
        base, ev, root = self._dgm_parts(b, values, ctx, expand, value)
        fn = base.to_event(ev) if ev > 0 else base
        if (root or ctx.own_shape) and ctx.sample_shape:  # (a child draws one value per parent draw, unless its
            fn = fn.expand(ctx.sample_shape + fn.batch_shape)  # own option asks for more, as in Pixyz)
        return fn, base

    def _dgm_parts(self, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                   value: Tensor | None = None, *, record: bool | None = None) -> tuple[Any, int, bool]:
        """The base distribution (expanded for ``batch_n``), how many of its batch dims are feature dims, and
        whether this factor is a root of the pass (none of its inputs holds a draw of it: a Deterministic's outputs
        of given inputs are given values, see :class:`~pyro_dgm.distributions.special.GivenEventDims`).

        ``value`` is the value to score or observe, if any: a factor without inputs whose constants are scalars
        (empty ``features_shape``) takes its feature dims from it, every dim after the first (Pixyz's convention).
        ``record`` (``hard``, see :meth:`_dgm_set_last`): record the base as Pixyz's ``dist``, before it takes
        the value's dims (Pixyz's object has the parameters' shape).
        """
        if self._dgm_const_only and not self._dgm_user_get_params:  # (a get_params a later cell set: it runs)
            base = self._dgm_const_base()
            bn = self._dgm_batch_ndim(b, values, ctx)
        else:
            spare = ctx.spare
            if spare is not None:  # (the closed forms declined this factor's parameters just now)
                ctx.spare = None
                if spare[0] is not self or spare[1] is not b:
                    spare = None
            params = spare[2] if spare is not None else self._dgm_params(b, values, ctx)
            try:
                base = self._dgm_base(params)
            except ValueError as e:  # parameters torch refuses: a NaN in an input gives NaN parameters
                self._dgm_note_non_finite_inputs(e, b.input_var, values)
                raise
            bn = self._dgm_batch_ndim(b, values, ctx)
            if bn == 0 and self._dgm_const_names:  # inputs without batch dims: a constant's batch dim of 1 stays one
                bn = _constants_lead(params, self._dgm_const_names, len(base.batch_shape))
        if record is not None:
            self._dgm_set_last(base, record)
        batch_shape = base.batch_shape
        if value is not None and not b.input_var and not self._features_shape:
            vb = value.shape[:value.dim() - len(base.event_shape)]
            if len(vb) > len(batch_shape):
                try:
                    base = base.expand(vb)
                except (ValueError, RuntimeError):
                    pass  # scoring raises below, naming the shapes
                batch_shape = base.batch_shape
                if ctx.obs is not None and PYRO_STACK and len(vb) > 1:  # inside nested plates that cover several
                    bn = min(data_batch_ndim(value, 0), len(batch_shape))  # of the data's dims: so many batch dims
                    # (scalar constants: the data may have no feature dim)
        ev = len(batch_shape) - bn
        root = expand and not drawn_in_pass(b.input_var, ctx)  # (a Deterministic's outputs of given inputs: given)
        if expand and ctx.batch_n is not None and bn >= 1:
            if self._dgm_scalar_classes is not None and ctx.obs is None:
                self._dgm_no_class_dim(ctx.batch_n)
            if root and not b.input_var:
                if not (bn > 1 and base.batch_shape[bn - 1:bn] == (ctx.batch_n,)):  # (inside plates of copies: the
                    base = expand_batch_n(self, base, ctx.batch_n)  # rows after the copies' dims are the data's)
            elif ctx.obs is None and base.batch_shape[:1] == (1,) and (root or bn == 1):
                # Pixyz: sample(inputs of batch 1, batch_n=N) draws N values; so does a factor whose parent was
                # drawn with batch 1 (by its own graph.set_option(dict(batch_n=1), ...))
                base = expand_batch_n(self, base, ctx.batch_n)
            elif (root or bn == 1) and ctx.obs is None and base.batch_shape[:1] != (ctx.batch_n,):
                # Pixyz: "Batch shape mismatch"; so for a factor whose parent is not of batch_n though drawn in the
                # pass (a Deterministic's output of given inputs, a parent under its own batch_n option, an
                # EmpiricalDistribution's value); a parent's draws under sample_shape (bn > 1) are left as they are
                self._dgm_batch_n_conflict(b, values, ctx.batch_n)
        return base, ev, root

    def _dgm_not_real(self, name: str, x: Tensor, cause: BaseException | None = None) -> NoReturn:
        """Refuse a scored value ``x`` of ``name`` that is complex, or bool where this family takes no bool."""
        how = "real" if x.is_complex() else "float()"
        said = f" ({cause})" if cause is not None else ""
        raise DTypeError(f"{describe(self)}: cannot score {name!r} of dtype {x.dtype}: {type(self).__name__} scores "
                         f"real numbers (convert with {name}.{how}){said}") from cause

    def _dgm_check_observed(self, name: str, fn: Any, x: Tensor) -> None:
        """Score an integer or bool observed value ``x`` of ``name`` (given as data, or by ``pyro.condition``) now,
        so that a value this family refuses gets the error that scoring it by ``get_log_prob`` gives (class indices
        given to a one-hot family, under validation: :class:`NotOneHotError`; a bool value of a family that takes
        none: :class:`DTypeError`), naming this distribution, where Pyro's trace would score it later and say only
        the site's name. Float values (data, float one-hot labels, every draw) never come here."""
        e = observed_refusal(self, name, fn, x)
        if isinstance(e, (ValueError, RuntimeError)) and x.dtype == torch.bool and _scores(
                fn, x.to(torch.get_default_dtype())):
            self._dgm_not_real(name, x, e)  # (its dtype alone is refused: a bool value of a wrong shape is
            # left to the shape error that Pyro's trace raises when it scores the site, as for a float one)
        # (another refusal: Pyro's trace raises it when it scores the site, as before)

    def _dgm_no_class_dim(self, batch_n: int) -> NoReturn:
        """Refuse ``batch_n`` draws from a family whose class parameter was given as a scalar, as Pixyz refuses them
        (an IndexError); without ``batch_n`` it is a distribution of one class in both."""
        n = self._dgm_scalar_classes
        raise DimensionError(f"{describe(self)}: parameter {n!r} is a scalar ({self._buffers[n].item():g}), but a "
                             f"{self.distribution_name} needs a class dim (its last dim: one entry per class, e.g. "
                             f"{n}=torch.tensor([0.2, 0.8])); as given it has one class, and Pixyz cannot draw "
                             f"batch_n={batch_n} from it (IndexError)")

    def _dgm_batch_n_conflict(self, b: Binding, values: Mapping[str, Any], batch_n: int) -> NoReturn:
        given = ", ".join(f"{v!r}: {tuple(values[v].shape)}" for v in b.input_var
                          if isinstance(values.get(v), Tensor))
        draws = f"{batch_n} draw{'s' if batch_n != 1 else ''}"
        raise ShapeError(f"{describe(self)}: batch_n={batch_n} asks for {draws}, but the inputs have "
                         f"another batch size ({given}); give inputs of batch "
                         f"{batch_n if batch_n == 1 else f'{batch_n} or 1'}, or leave batch_n out "
                         "(Pixyz: 'Batch shape mismatch')")

    def _dgm_site_dist(self, x_dict: ValuesLike = None, batch_n: int | None = None, **kwargs: Any) -> Any:
        """The ``pyro.distributions`` object given the inputs; feature dims are its event dims (``dist(...)``)."""
        values = self._dgm_input_dict(x_dict, self._dgm_b.input_var)
        fn, base = self._dgm_fn(self._dgm_b, values, CallState(batch_n=batch_n, kwargs=kwargs))
        if not sets_dist(self):  # (a set_dist of the user's has set Pixyz's dist itself)
            self._dgm_set_last(base, True)  # as Pixyz's set_dist(x_dict, batch_n) (the analytic KL builds here)
        return fn

    def _dgm_set_last(self, rec: Any, hard: bool) -> None:
        """Record what Pixyz's ``set_dist`` would have set (see :func:`pixyz_dist`): ``rec`` is the parameters or
        the distribution object of the call, ``hard`` whether Pixyz's object is a relaxed family's hard one. Every
        draw and score records (about 0.1 us); the object is built only if read. Not while torch.compile traces: a
        traced tensor kept on the module would be one more output of the graph."""
        state = self.__dict__
        if rec is state.get("_dist") or is_compiling():  # (rec: the object a user's set_dist just
            return  # set, see overrides.fn_via_set_dist)
        state["_dgm_last"] = (rec, hard)
        state.pop("_dist", None)

    def _dgm_pixyz_object(self, rec: Any, hard: bool) -> Any:
        """The torch distribution of a call's record (:meth:`_dgm_set_last`): built from its parameters, or a copy
        of its object (which may be a cached one, see :meth:`_dgm_const_base`); a relaxed family's hard one when
        ``hard`` (Pixyz's ``set_dist(sampling=False)``)."""
        d = self._dgm_base(rec) if isinstance(rec, dict) else copy.copy(rec)
        if hard:
            to_hard = getattr(d, "_hard", None)
            if to_hard is not None:
                d = to_hard()
        return d

    @property
    def dist(self) -> Any:
        """Pixyz's ``dist``: the torch object of the last :meth:`set_dist` or of the last call that Pixyz makes
        through ``set_dist`` (``sample``, ``get_log_prob``, ``sample_mean``, ``sample_variance``, ``get_entropy``,
        an analytic KL; in a product, each factor's), whichever came last (:func:`pixyz_dist`). Before any of
        them (where Pixyz's is ``None``), and always when called, it is our builder ``dist(x_dict=None,
        batch_n=None, **kwargs)``: the ``pyro.distributions`` object given the inputs, with the feature dims as
        its event dims (a call that sets Pixyz's ``dist`` too).

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[3])
        >>> d = p.dist(batch_n=2)
        >>> tuple(d.batch_shape), tuple(d.event_shape)
        ((2,), (3,))
        >>> p.set_dist(batch_n=2)  # Pixyz's torch-object API: no event dims
        >>> tuple(p.dist.batch_shape), tuple(p.dist.event_shape)
        ((2, 3), ())
        >>> _ = p.sample(batch_n=5)  # as in Pixyz, sample sets it too
        >>> tuple(p.dist.batch_shape)
        (5, 3)
        """
        d = pixyz_dist(self)
        return self._dgm_site_dist if d is None else d

    @property
    def _dist(self) -> Any:
        """Pixyz's attribute behind :attr:`dist` (``None`` before any call), for Pixyz code that reads or assigns
        it (a user's ``set_dist`` that sets ``self._dist = ...``): an assignment is an explicit ``set_dist``."""
        return pixyz_dist(self)

    @_dist.setter
    def _dist(self, value: Any) -> None:
        state = self.__dict__
        state["_dist"] = value
        state.pop("_dgm_last", None)

    @_dist.deleter
    def _dist(self) -> None:
        self.__dict__.pop("_dist", None)
        self.__dict__.pop("_dgm_last", None)

    def __getstate__(self) -> dict[str, Any]:
        """nn.Module's state, without the record of the last call (its parameters may be intermediate results of
        a graph, which ``copy.deepcopy`` refuses): the copy's ``dist`` is that of a distribution not yet called,
        or the object an explicit ``set_dist`` set, which is kept."""
        state = super().__getstate__()
        state.pop("_dgm_last", None)
        return state

    # ------------------------------------------------------------------ Pixyz's torch-object API
    @property
    def params_keys(self) -> list[str]:
        """The family's parameter names, in Pixyz's order (e.g. ``["loc", "scale"]``)."""
        return [g[0] for g in self.param_groups]

    @property
    def distribution_torch_class(self) -> type:
        """The class :meth:`set_dist` builds: the family's ``pyro.distributions`` class, a subclass of the torch
        class Pixyz uses (``pyro.distributions.Normal`` is a ``torch.distributions.Normal``), so ``isinstance``
        checks and ``torch.distributions.kl_divergence`` treat it as Pixyz's; it scores as our family does."""
        cls = self.pyro_dist
        if cls is None:
            raise NotImplementedError(f"{describe(self)}: a DistributionBase without a family has no torch class")
        return cls

    def set_dist(self, x_dict: ValuesLike = {}, batch_n: int | None = None,  # noqa: B006 (Pixyz's default)
                 **kwargs: Any) -> None:
        """Set :attr:`dist` to the torch distribution of the parameters given ``x_dict`` (Pixyz's API).

        As in Pixyz the object has every dim of the parameters as a batch dim (``log_prob`` is element-wise), and
        ``batch_n`` expands a batch dim of 1 to ``batch_n``. It is kept until the next ``set_dist`` or call that
        sets it (see :attr:`dist`); our own sampling and scoring never read it.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
        >>> p.set_dist(batch_n=3)
        >>> p.dist.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
        """
        current_of(self)  # (a torch class a later cell set on the class)
        self._dgm_set_torch_dist(x_dict, batch_n, False, kwargs)

    def _dgm_set_torch_dist(self, x_dict: ValuesLike, batch_n: int | None, hard: bool, kwargs: Mapping[str, Any]
                            ) -> None:
        params = self.get_params(x_dict, **kwargs)
        missing = [g for g in self.param_groups if not any(n in params for n in g)]
        if missing:
            raise ValueError(f"{describe(self)}: set_dist needs the parameters {self.params_keys}, got "
                             f"{sorted(params)}")
        try:
            d = self._dgm_base(params)
        except ValueError as e:
            self._dgm_note_non_finite_inputs(e, self.input_var, x_dict)
            raise
        if hard:
            d = d._hard()
        if batch_n:
            shape = d.batch_shape
            if not shape or shape[0] == 1:
                d = d.expand(torch.Size([batch_n]) + shape[1:])
            elif shape[0] != batch_n:
                raise ValueError(f"{describe(self)}: set_dist: batch shape mismatch, the parameters have batch "
                                 f"shape {tuple(shape)}, batch_n={batch_n}")
        state = self.__dict__
        state["_dist"] = callable_dist(d, self)
        state.pop("_dgm_last", None)  # newer than the last call's record

    def get_sample(self, reparam: bool = False, sample_shape: Iterable[int] = torch.Size()) -> dict[str, Tensor]:
        """Draw from :attr:`dist` (set by :meth:`set_dist` or the last call, as in Pixyz): ``{var: sample}`` of
        shape ``sample_shape + dist.batch_shape + dist.event_shape``, reparameterized when ``reparam`` and possible.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
        >>> p.set_dist(batch_n=3)
        >>> p.get_sample(reparam=True, sample_shape=[4])["x"].shape
        torch.Size([4, 3, 2])
        """
        d = self.dist if self._dgm_user_dist else pixyz_dist(self)  # (Pixyz reads self.dist: a subclass's own)
        if d is None:  # (Pixyz: an AttributeError of None)
            raise ValueError(f"{describe(self)}: get_sample draws from the distribution set by set_dist() (or by the "
                             "last sample, get_log_prob, sample_mean, sample_variance or get_entropy); call "
                             "set_dist(x_dict) first")
        shape = torch.Size(sample_shape)
        # seeded_call: from the generator of pyro_dgm.utils.generator(...), if one is set
        s = seeded_call(self, d.rsample if reparam and d.has_rsample else d.sample, shape)
        return {self._var[0]: s}

    def get_params(self, params_dict: ValuesLike = None, **kwargs: Any) -> dict[str, Tensor]:
        """The parameters given the inputs: constants (with their batch dim of 1) and network outputs.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> Normal(loc=0., scale=1., var=["x"]).get_params()
        {'loc': tensor([0.]), 'scale': tensor([1.])}
        """
        values = self._dgm_input_dict(params_dict, self._dgm_b.input_var)
        inner = self._dgm_inner_params if self._dgm_user_get_params else self._dgm_params
        ctx = CallState(kwargs=kwargs)
        ctx.extra_params = True  # Pixyz's get_params hands back what forward() returned, other keys too
        return inner(self._dgm_b, values, ctx)

    # ------------------------------------------------------------------ the factor hooks
    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        name = b.var[0]
        obs = ctx.obs
        if (self._dgm_closed_rs is not None and obs is None and ctx.reparam and not ctx.sample_mean and b.input_var
                and not ctx.sample_shape and ctx.batch_n is None and (not PYRO_STACK or ignores_sites(PYRO_STACK))):
            got = self._dgm_closed_params(b, values, ctx)
            if got is not None:  # a reparameterized draw, as pyro.sample would make with no handler listening
                try:
                    value = self._dgm_closed_rs(got.params, _RNG.generator)
                except (RuntimeError, ValueError):
                    self._dgm_decline(b, got.params, ctx)  # the general path below reports it, naming this
                    # distribution and the shapes
                else:
                    values[name] = value
                    ctx.event_dims[name] = max(got.ndim - self._dgm_batch_ndim(b, values, ctx), 0)
                    self._dgm_set_last(got.params, False)  # Pixyz's sample sets dist (built if read)
                    return
        if ctx.sample_shape and obs is None and not ctx.sample_mean and (not PYRO_STACK or ignores_sites(PYRO_STACK)):
            # draw sample_shape values from the unexpanded distribution, as torch (and Pixyz) do: the same random
            # numbers as Pixyz's for the families whose sampler orders them otherwise (Categorical's multinomial)
            base, ev, root = self._dgm_parts(b, values, ctx)
            if root or ctx.own_shape:
                self._dgm_set_last(base, False)  # Pixyz's dist: expanded for batch_n, not for sample_shape
                fn = base.to_event(ev) if ev > 0 else base
                # seeded_call: from the generator of pyro_dgm.utils.generator(...), if one is set
                try:
                    value = seeded_call(self, fn.rsample if ctx.reparam and fn.has_rsample
                                        else functools.partial(plain_sample, fn),
                                        ctx.sample_shape)
                except (RuntimeError, NotImplementedError, TypeError) as e:  # (torch's sampler refused a parameter:
                # probs of 1.5, unvalidated; an integer one)
                    self._dgm_draw_error(e, base, name)
                values[name] = value
                ctx.event_dims[name] = fn.event_dim
                return
        x = obs.get(name) if obs is not None else None
        fn, base = self._dgm_fn(b, values, ctx, value=x)
        self._dgm_set_last(base, False)  # Pixyz's dist, set before the draw (so also when the draw fails)
        if isinstance(x, Tensor) and not self._dgm_user_log_prob and not torch.jit.is_tracing():
            # an observed value (model/guide data) is checked as a scored one (not for a class with its own
            # get_log_prob, which scores its site and decides what values it takes): pyro.sample must not broadcast its
            # features over the parameters' (when it has no dim beyond the event dims, _dgm_site says why)
            shape = fn.batch_shape + fn.event_shape
            if x.shape != shape and (x.dim() > len(fn.event_shape) or x.dim() == 0):  # (a 0-dim value under
                # features: scored once per feature)
                try:
                    self._dgm_check_value(name, x.shape, shape, len(fn.event_shape))
                except ShapeError as e:
                    given = ", ".join(f"{v!r}: {tuple(values[v].shape)}" for v in b.input_var
                                      if isinstance(values.get(v), Tensor))
                    if not given:
                        raise
                    copies = "".join(
                        f"; the plate {c.name!r} of {c.size} copies of the model at dim {c.dim} (Pyro's vectorized "
                        f"particles or predictive draws) is in the inputs' shapes: draw an input with the features "
                        f"of {name!r} as its event dims (e.g. `dist.Normal(0., 1.).expand([D]).to_event(1)` for "
                        f"D features), so that the copies' dim lies to their left" for c in copy_plates()[:1])
                    raise ShapeError(f"{e} (its inputs have shapes {given}; their shapes broadcast to the "
                                     f"parameters'{copies})") from None
        if ctx.sample_mean:
            if self.sample_mean_draws is False:
                raise NoClosedFormError(f"{describe(self)}: sample(sample_mean=True) is not defined for a "
                                        f"{self.distribution_name} (as in Pixyz, whose relaxed distribution has no "
                                        "mean); sample_mean() gives the mean of the hard distribution")
            value = fn.mean
            value = self._dgm_record(name, value, fn.event_dim)
        else:
            try:
                value = self._dgm_site(name, fn, ctx)
            except (RuntimeError, NotImplementedError, TypeError) as e:  # (torch's sampler refused a parameter:
                # probs of 1.5, unvalidated; an integer one)
                self._dgm_draw_error(e, base, name)
            ev = fn.event_shape
            if (x is None and ev and isinstance(value, Tensor) and not torch.jit.is_tracing()
                    and not self._dgm_user_log_prob and _lacks_features(value.shape, ev)):  # a value that a handler
                # gave the site (poutine.condition, replay) whose features torch's validation would broadcast (size
                # 1, or none): checked as an observed one (other sizes: Pyro's trace refuses them under validation)
                self._dgm_check_value(name, value.shape, fn.batch_shape + ev, len(ev))
            if (isinstance(value, Tensor) and not value.is_floating_point() and not self._dgm_user_log_prob
                    and (value.dtype == torch.bool or (fn._validate_args and _one_hot_support(fn))
                         or _binary_integers(fn))
                    and _library_distribution(fn) and not torch.jit.is_tracing()):
                self._dgm_check_observed(name, fn, value)  # (observed: data, or pyro.condition; the library's
                # families draw no bool values, and a one-hot family draws floats; a class with its own
                # get_log_prob, or a user's own site distribution, decides what values it takes and how it scores)
        values[name] = value
        ctx.event_dims[name] = fn.event_dim

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        x = values[b.var[0]]
        if not isinstance(x, Tensor):
            x = self._dgm_value_tensor(b.var[0], x)
        if x.layout is not torch.strided or x.is_nested or x.is_quantized or (type(x) is not Tensor
                                                                               and unusual_tensor(x)):
            raise LayoutError(f"{describe(self)}: cannot score {b.var[0]!r}, {unusual_tensor(x, b.var[0])}: the "
                              "densities take dense tensors")
        if x.is_complex() or (x.dtype == torch.bool and getattr(self.pyro_dist, "support", None) is constraints.real):
            # (a Normal's formula would give a complex "log-density", as Pixyz's does; its standard form would take
            # a bool value as 0/1 where its general form, and Pixyz's, refuse it)
            self._dgm_not_real(b.var[0], x)
        whole = sum_features and feature_dims is None
        if self._dgm_closed_lp is not None and (whole or self.pyro_dist not in closed_forms.EVENT_DIM):
            got = self._dgm_closed_params(b, values, ctx)
            if got is not None and _TorchDistribution._validate_args:
                try:
                    valid = closed_forms.valid_value(self.pyro_dist, x)
                except RuntimeError as e:  # (a value on the meta device: no value to read)
                    self._dgm_value_device(b.var[0], x, got.params.values(), e)
                    raise
                if not valid:
                    got = self._dgm_decline(b, got.params, ctx)  # the general path raises torch's error about it
            if got is not None:
                self._dgm_set_last(got.params, True)  # Pixyz's get_log_prob sets dist (the hard one of a relaxed
                # family), built if read
                ev = max(got.ndim - self._dgm_batch_ndim(b, values, ctx), 0)
                xs = x.shape
                for t in got.params.values():
                    if t.shape != xs:  # checked before the closed form broadcasts it (issue 13)
                        shape = None
                        try:
                            for t in got.params.values():
                                shape = (t.shape if shape is None or shape == t.shape
                                         else broadcast_shape(shape, t.shape))
                        except ValueError:
                            self._dgm_params_do_not_broadcast(got.params)
                        self._dgm_check_value(b.var[0], xs, shape, ev, sum_features, feature_dims)
                        break
                fn = self._dgm_closed_lp
                if self._dgm_const_only and self._dgm_is_standard():
                    fn = closed_forms.LOG_PROB_STANDARD[self.pyro_dist]
                try:
                    lp = fn(got.params, x, tuple(range(-ev, 0)) if whole else ())
                except (RuntimeError, ValueError):
                    self._dgm_decline(b, got.params, ctx)  # the general path below reports it, naming the shapes
                else:
                    ctx.event_dims[b.var[0]] = ev
                    return lp if whole else self._dgm_sum_dims(lp, sum_features, feature_dims, "log-density")
        base, ev, _ = self._dgm_parts(b, values, ctx, expand=False, value=x, record=True)
        ev = max(ev, 0)
        shape = base.batch_shape + base.event_shape
        if x.shape != shape:
            self._dgm_check_value(b.var[0], x.shape, shape, ev + len(base.event_shape), sum_features, feature_dims)
        # as when drawing: later factors conditioned on x see its event dims, so its leading dims (sample_shape and
        # batch) stay batch dims of theirs too, and the factors' log-densities have one shape
        ctx.event_dims[b.var[0]] = ev + len(base.event_shape)
        try:
            lp = base.log_prob(x)
        except (ValueError, RuntimeError, TypeError, NotImplementedError) as e:
            if isinstance(e, NotBinaryError):  # (integers other than 0 and 1 under a Bernoulli: unscaled pixels)
                raise NotBinaryError(f"{describe(self)}: cannot score {b.var[0]!r}: {e}") from e
            refuse_param_dtype(self, e, base, f"score {b.var[0]!r}")  # (an input given as integers or bools)
            if not isinstance(e, (ValueError, RuntimeError)):
                raise
            self._dgm_value_device(b.var[0], x, base.__dict__.values(), e)
            bad = self._dgm_diagnosis(base, x, b.var[0])
            if not bad and isinstance(e, OutOfRangeError):  # (the scoring's own check: negative probabilities)
                raise OutOfRangeError(f"{describe(self)}: cannot score {b.var[0]!r}: {e}") from e
            if bad:  # not a matter of shapes: a NaN in the data, or a parameter that the network gave out of range
                raise OutOfRangeError(f"{describe(self)}: cannot score {b.var[0]!r}: {bad} ({e})") from e
            if x.dtype == torch.bool and not isinstance(e, NotOneHotError):  # not a matter of shapes either (a
                self._dgm_not_real(b.var[0], x, e)  # complex value was refused above); a bool multi-hot vector is no
                # matter of dtype: converted to float, it would be scored by its arg-max
            if x.shape == shape and not isinstance(e, ValueError):  # not a matter of shapes (an operation torch
                add_note(e, f"(while {describe(self)} scored {b.var[0]!r})", ("score", id(self)))  # does not
                # support there): its error
                raise
            bs = base.batch_shape
            raise clearer(e, f"{describe(self)}: cannot score {b.var[0]!r} of shape {tuple(x.shape)} under "
                             f"batch shape {tuple(bs[:len(bs) - ev])} and event shape "
                             f"{tuple(bs[len(bs) - ev:] + base.event_shape)}: {e}") from e
        if sum_features and feature_dims is None:
            return lp.sum(tuple(range(-ev, 0))) if ev else lp
        return self._dgm_sum_dims(lp, sum_features, feature_dims, "log-density")

    @staticmethod
    def _dgm_note_non_finite_inputs(error: Exception, names: Sequence[str], values: Any) -> None:
        """Say in ``error``'s message which of the inputs ``names`` hold NaN or infinite entries (the cause of
        parameters that torch refuses as NaN, which its message does not say). In the message, not a note: Pyro's
        trace raises a new exception of the message when a site fails."""
        if not (isinstance(values, Mapping) and error.args and isinstance(error.args[0], str)):
            return
        try:
            bad = [v for v in names if isinstance(values.get(v), Tensor) and values[v].layout == torch.strided
                   and values[v].is_floating_point() and not bool(torch.isfinite(values[v]).all())]
            if not bad:
                return
            index = torch.nonzero(~torch.isfinite(values[bad[0]]))[0].tolist()
        except Exception:  # noqa: BLE001 (a value the check cannot read: the error is said as it is)
            return
        error.args = (f"{error.args[0]}\n(the input{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} "
                      f"hold{'' if len(bad) > 1 else 's'} NaN or infinite entries, the first at index {index} of "
                      f"{bad[0]!r})", *error.args[1:])

    @staticmethod
    def _dgm_non_finite(base: Any, x: Tensor, name: str) -> str:
        """What is NaN or infinite among the value and the parameters ``base`` was built with ('' when none)."""
        found = [f"the value of {name!r}"] if x.is_floating_point() and not bool(torch.isfinite(x).all()) else []
        for k in getattr(base, "arg_constraints", {}):
            t = base.__dict__.get(k)  # built parameters only (not the lazy ones derived from them)
            if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                found.append(f"its parameter {k!r}")
        return " and ".join(found) + (" holds NaN or infinite entries" if len(found) == 1 else
                                      " hold NaN or infinite entries") if found else ""

    @staticmethod
    def _dgm_out_of_range(base: Any) -> str:
        """Which parameter ``base`` was built with breaks its constraint, and how ('' when none): found where torch
        built it without validation (``validate_args=False``) and a kernel then refused it (``probs`` of 1.5)."""
        inner = base.__dict__.get("_categorical")  # (a one-hot categorical's and a multinomial's parameters)
        if inner is not None:
            base = inner
        for k, c in getattr(base, "arg_constraints", {}).items():
            t = base.__dict__.get(k)  # built parameters only (not the lazy ones derived from them)
            if not isinstance(t, Tensor) or constraints.is_dependent(c):
                continue
            ok = c.check(t)
            if torch._is_all_true(ok):
                continue
            lb, ub = getattr(c, "lower_bound", None), getattr(c, "upper_bound", None)
            if isinstance(c, constraints.interval) and isinstance(lb, (int, float)) and isinstance(ub, (int, float)):
                where = f"outside [{lb:g}, {ub:g}]"
            elif isinstance(c, constraints.greater_than) and isinstance(lb, (int, float)):
                where = f"not greater than {lb:g}"
            else:
                where = f"that break its constraint {c}"
            example = f" (e.g. {t[~ok].flatten()[0].item():g})" if ok.shape == t.shape else ""
            return f"its parameter {k!r} holds values {where}{example}"
        return ""

    def _dgm_diagnosis(self, base: Any, x: Tensor, name: str) -> str:
        """What :meth:`_dgm_non_finite` or else :meth:`_dgm_out_of_range` finds; '' also where the checks cannot
        run (their data-dependent branches under ``torch.func.vmap``), so that torch's own error is raised."""
        try:
            return self._dgm_non_finite(base, x, name) or self._dgm_out_of_range(base)
        except RuntimeError:
            return ""

    def _dgm_draw_error(self, e: Exception, base: Any, name: str) -> NoReturn:
        """Raise the error of a draw that torch's sampler refused: naming the parameter out of range (an
        :class:`OutOfRangeError`, also torch's RuntimeError) when there is one, or one of an integer dtype that the
        sampler has no kernel for (a :class:`DTypeError`), else ``e`` itself."""
        if ((isinstance(e, NotImplementedError) and "not implemented for" in str(e))  # ("normal_kernel_cpu" not
                or (isinstance(e, TypeError) and "floating point" in str(e))):  # implemented for 'Long', or
            # torch.finfo of an integer dtype: a Laplace's sampler; another TypeError, a user's own, as it is)
            refuse_param_dtype(self, e, base, f"draw {name!r}")
            raise e
        bad = self._dgm_diagnosis(base, torch.zeros(()), name)
        if bad:
            raise OutOfRangeError(f"{describe(self)}: cannot draw {name!r}: {bad} ({e})") from e
        if isinstance(e, (OutOfRangeError, ShapeError)) and describe(self) not in str(e):  # (a check of the site
            # distribution's own: a relaxed temperature, out of range or of another batch than batch_n asks for)
            raise type(e)(f"{describe(self)}: cannot draw {name!r}: {e}") from e
        if isinstance(e, RuntimeError) and "n_sample <= 0" in str(e):  # (torch.multinomial: a sample_shape of 0)
            raise ShapeError(f"{describe(self)}: cannot draw {name!r}: its sampler draws at least one value, and "
                             f"sample_shape or batch_n asks for none ({e})") from e
        raise e

    def _dgm_value_device(self, name: str, x: Tensor, params: Iterable[Any], error: Exception) -> None:
        """Raise a :class:`DeviceError` for the error torch raised scoring ``x`` when ``x`` is on another device
        than the parameters (tensors among ``params``), naming both; else nothing."""
        own = next((t.device for t in params if isinstance(t, Tensor)), None)
        if own is not None and x.device != own:
            raise DeviceError(f"{describe(self)}: cannot score {name!r} on device {x.device}: the parameters are on "
                              f"device {own}; move the value with {name}.to({str(own)!r}) (torch: {error})") from error

    def _dgm_params_do_not_broadcast(self, params: Mapping[str, Tensor]) -> NoReturn:
        shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in params.items())
        raise ShapeError(f"{describe(self)}: the shapes of the parameters do not broadcast ({shapes}); each must have "
                         "the batch and feature shape of the others, or 1 there")

    def _dgm_check_value(self, name: str, value_shape: torch.Size, shape: torch.Size, n_features: int,
                         summed: bool = True, feature_dims: Sequence[int] | None = None) -> None:
        """Raise ``ValueError`` (a :class:`~pyro_dgm.utils.checks.ShapeError`, also the RuntimeError that torch
        raises where the shapes do not broadcast at all) if a value of ``value_shape`` would be broadcast over
        parameters of full shape ``shape`` (of which the last ``n_features`` dims are feature dims); see
        :func:`~pyro_dgm.utils.checks.value_shape_problem` (``summed``: ``sum_features``; ``feature_dims``: the dims
        it sums, of the broadcast log-density). A value that passes but is likely laid out wrong warns, once per
        distribution and shapes (:func:`~pyro_dgm.utils.checks.value_shape_doubt`)."""
        # (no memo while torch.compile traces: the check costs nothing in the graph, and the memo would hash the
        # symbolic batch size, so Dynamo would guard on its value: a graph per batch size)
        memo = not is_compiling()
        if type(summed) is not bool:  # (Pixyz reads sum_features by its truth: [] or [1] too)
            summed = bool(summed)
        dims = None
        if summed and isinstance(feature_dims, (list, tuple)):  # (else _dgm_sum_dims names what is wrong)
            size = max(len(value_shape), len(shape))
            try:
                dims = frozenset(-d if d < 0 else size - d for d in map(operator.index, feature_dims))
            except TypeError:
                dims = None
        if memo:
            key = (value_shape, shape, n_features, STRICT_SHAPES[0], summed, dims)
            seen = self.__dict__.get("_dgm_shapes_ok")
            if seen is not None and key in seen:
                return
        why = value_shape_problem(value_shape, shape, n_features, summed=summed, summed_dims=dims)
        if why is None:
            if not memo:
                return
            doubt = value_shape_doubt(value_shape, shape, n_features) if summed and dims is None else None
            if doubt is not None:
                warnings.warn(f"{describe(self)}: the value of {name!r} has shape {tuple(value_shape)} under "
                              f"parameters of shape {tuple(shape)}: {doubt}", UserWarning,
                              stacklevel=user_stacklevel())
            if seen is None or len(seen) > 64:
                seen = self.__dict__["_dgm_shapes_ok"] = set()
            seen.add(key)
            return
        k = len(shape) - min(n_features, len(shape))
        copies = [m for m in copy_plates() if len(value_shape) > len(shape) and value_shape[0] == m.size]
        hint = (f". Data given to a model or guide under Pyro's plate {copies[0].name!r} (vectorized particles, "
                "a parallel Predictive) has no dim for its copies: observed data computed from a global latent, "
                "one per copy, is not supported there (run the copies one by one: vectorize_particles=False, "
                "Predictive(parallel=False))") if copies else ""
        raise ShapeError(f"{describe(self)}: the value of {name!r} has shape {tuple(value_shape)}, but the "
                         f"distribution has batch shape {tuple(shape[:k])} and feature shape {tuple(shape[k:])}, so "
                         f"{name!r} should have shape {tuple(shape)} (leading sample dims allowed): {why}"
                         + (". A value's features are never broadcast over the parameters' (they would be scored more "
                            "than once)" if "feature" in why else "") + hint)

    def _dgm_sum_dims(self, t: Tensor, sum_features: bool, feature_dims: Sequence[int] | None, what: str) -> Tensor:
        """Sum the element-wise ``t`` over ``feature_dims``; an out-of-range dim raises naming this distribution."""
        if not (sum_features and feature_dims):
            return t
        from pyro_dgm.losses.pdf import as_dims  # a list of ints, or a TypeError naming this distribution
        feature_dims = as_dims(self, "feature_dims", feature_dims, allow_int=False)
        try:
            return t.sum(dim=feature_dims)
        except (IndexError, RuntimeError) as e:
            kind = DimensionError if isinstance(e, IndexError) else ShapeError  # also torch's type (Pixyz's)
            raise kind(f"{describe(self)}: cannot sum the element-wise {what} of shape {tuple(t.shape)} over "
                       f"feature_dims={list(feature_dims)}: it has {t.dim() - 1} feature dim(s) after the batch "
                       f"dim (a {self.distribution_name}'s own event dim, if any, is already summed)") from e

    # ------------------------------------------------------------------ moments
    def _dgm_moment(self, x_dict: ValuesLike, kwargs: Mapping[str, Any]) -> Any:
        current_of(self)  # (a get_params, set_dist or torch class a later cell set on the class)
        values = self._dgm_input_dict(x_dict, self._dgm_b.input_var)
        fn, base = self._dgm_fn(self._dgm_b, values, CallState(kwargs=kwargs), expand=False)
        if not sets_dist(self):  # (a set_dist of the user's has set Pixyz's dist itself)
            self._dgm_set_last(base, True)  # Pixyz's moments and entropy call set_dist(x_dict) (not sampling)
        return fn, base

    def get_entropy(self, x_dict: ValuesLike = None, sum_features: bool = True,
                    feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        """The analytic entropy given the inputs, summed over the feature dims unless told otherwise.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> h = Normal(loc=0., scale=1., var=["x"]).get_entropy()
        >>> bool(torch.allclose(h, torch.tensor([0.5 * (1 + torch.log(2 * torch.tensor(torch.pi)))])))
        True
        """
        fn, base = self._dgm_moment(x_dict, kwargs)
        try:
            h = base.entropy()
        except (RuntimeError, TypeError, NotImplementedError) as e:
            refuse_param_dtype(self, e, base, "compute the entropy")
            like = _empty_batch_like(base)
            if like is None:
                raise
            h = like.new_zeros(base.batch_shape)  # (torch's Multinomial takes a max over no rows)
        if sum_features and feature_dims is None:
            # the sum over the feature (event) dims; not fn.entropy(): torch's Independent cannot sum an empty batch
            n = len(fn.event_shape) - len(base.event_shape)
            return h.sum(tuple(range(-n, 0))) if n else h
        return self._dgm_sum_dims(h, sum_features, feature_dims, "entropy")

    def sample_mean(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        """The mean of the variable given the inputs.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> Normal(loc=2., scale=3., var=["x"]).sample_mean()
        tensor([2.])
        """
        return self._dgm_moment(x_dict, kwargs)[1].mean

    def sample_variance(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        """The variance of the variable given the inputs.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> Normal(loc=2., scale=3., var=["x"]).sample_variance()
        tensor([9.])
        """
        return self._dgm_moment(x_dict, kwargs)[1].variance


DistributionBase._dgm_own_dist = DistributionBase.__dict__["dist"]  # (see base.site_builder)
