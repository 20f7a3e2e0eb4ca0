"""Families written against Pixyz's protocol: ``distribution_torch_class`` and ``params_keys``.

Pixyz lets a user define a family by subclassing ``DistributionBase`` with two properties: the torch distribution
class and the names of its parameters. Our families declare :attr:`~.family.DistributionBase.pyro_dist` and
:attr:`~.family.DistributionBase.param_groups` instead; :func:`adopt` derives them from Pixyz's properties (a torch
class gets Pyro's ``TorchDistributionMixin``, as ``pyro.distributions`` wraps torch's own classes), so such a subclass
runs unchanged. A bare ``DistributionBase`` (no family at all) keeps whatever parameters it is given, as Pixyz's does:
it builds and prints, and cannot compute.

Examples
--------
>>> import torch
>>> from pyro_dgm.distributions import DistributionBase
>>> class StudentT(DistributionBase):  # Pixyz's way to add a family
...     @property
...     def params_keys(self):
...         return ["df", "loc", "scale"]
...     @property
...     def distribution_torch_class(self):
...         return torch.distributions.StudentT
...     @property
...     def distribution_name(self):
...         return "StudentT"
>>> t = StudentT(var=["x"], df=3., loc=0., scale=1.)
>>> expected = torch.distributions.StudentT(3., 0., 1.).log_prob(torch.tensor(0.5))
>>> bool(torch.allclose(t.get_log_prob({"x": torch.tensor([[0.5]])}), expected))
True
"""
from __future__ import annotations

import copy as _copy
import functools
import inspect
import weakref
from typing import Any, Mapping

import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin

from pyro_dgm.utils.attributes import users_own

__all__ = ["adopt", "pyro_class", "as_pyro", "LiveTorchClass", "LateKeys", "construct"]

#: per class or function: whether it takes ``validate_args`` (a user's torch class may not; Pixyz never passes it)
_TAKES_VALIDATE: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _takes_validate_args(fn: Any) -> bool:
    try:
        return _TAKES_VALIDATE[fn]
    except (KeyError, TypeError):
        pass
    try:
        sig = inspect.signature(fn)
        takes = "validate_args" in sig.parameters or any(
            q.kind is inspect.Parameter.VAR_KEYWORD for q in sig.parameters.values())
    except (TypeError, ValueError):  # (no signature to read: try it)
        takes = True
    try:
        _TAKES_VALIDATE[fn] = takes
    except TypeError:  # (not weakly referenceable)
        pass
    return takes


def construct(fn: Any, params: Mapping[str, Any], validate_args: bool | None) -> Any:
    """``fn(**params, validate_args=...)``, or ``fn(**params)`` where ``fn`` takes no ``validate_args`` (a user's own
    torch class or function, which Pixyz calls with the parameters only), made a Pyro distribution (:func:`as_pyro`)."""
    if _takes_validate_args(fn):
        return as_pyro(fn(**params, validate_args=validate_args))
    return as_pyro(fn(**params))


def as_pyro(d: Any, copy: bool = False) -> Any:
    """``d`` with Pyro's ``TorchDistributionMixin`` (``to_event``...): ``d`` itself where it has it, else ``d`` (or,
    with ``copy``, a shallow copy of it: the user's own object, which must stay as it is) of :func:`pyro_class` of
    its class (a plain ``torch.distributions`` object a user's ``set_dist``, ``dist`` property or
    ``distribution_torch_class`` function made; an instance of its class still)."""
    if isinstance(d, TorchDistributionMixin) or not isinstance(d, torch.distributions.Distribution):
        return d
    if copy:
        d = _copy.copy(d)
    try:
        d.__class__ = pyro_class(type(d))
    except TypeError:  # (a class whose layout the made subclass cannot take)
        pass
    return d


class LiveTorchClass:
    """The ``pyro_dist`` of a family written the Pixyz way: its ``distribution_torch_class`` is read at each call,
    as Pixyz's ``set_dist`` reads it. It may be a class, a property (which may depend on the instance's state, or
    read an attribute set after ``__init__``), a function (``staticmethod(lambda loc, scale:
    Independent(Normal(loc, scale), 1))``), or another value assigned later to the instance or the class. It builds
    ``owner.distribution_torch_class(**params)`` (:func:`construct`)."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def _fn(self) -> Any:
        fn = self.owner.distribution_torch_class
        if isinstance(fn, functools.partial) and isinstance(fn.func, type):
            return functools.partial(pyro_class(fn.func), *fn.args, **fn.keywords)
        return pyro_class(fn) if isinstance(fn, type) else fn

    def __call__(self, validate_args: bool | None = None, **params: Any) -> Any:
        return construct(self._fn(), params, validate_args)

    @property
    def has_rsample(self) -> bool:
        fn = self._fn()
        return bool(getattr(fn.func if isinstance(fn, functools.partial) else fn, "has_rsample", True))

    @property
    def support(self) -> Any:
        fn = self._fn()
        return getattr(fn.func if isinstance(fn, functools.partial) else fn, "support", None)

    def __repr__(self) -> str:
        return f"LiveTorchClass({type(self.owner).__name__}.distribution_torch_class)"


def pyro_class(torch_class: type) -> type:
    """``torch_class`` with Pyro's ``TorchDistributionMixin`` (``to_event``, ``expand``...), made once per class; a
    ``functools.partial`` of a class (``partial(StudentT, 3.0)``) becomes the same partial of that class."""
    if isinstance(torch_class, functools.partial) and isinstance(torch_class.func, type):
        return functools.partial(pyro_class(torch_class.func), *torch_class.args, **torch_class.keywords)
    if not isinstance(torch_class, type):  # a function that returns a torch distribution (Pixyz only calls it)
        return torch_class
    if issubclass(torch_class, TorchDistributionMixin):
        return torch_class
    cls = vars(torch_class).get("_dgm_pyro_class")  # kept on the class (not in a dict of ours, whose values would
    if cls is None:  # keep a class made in a function alive: each subclasses its key)
        body: dict[str, Any] = {"__module__": torch_class.__module__, "__reduce_ex__": reduce_made}
        if not _takes_validate_args(torch_class):  # (a user's class whose __init__ takes its parameters only)
            body["__init__"] = _init_without_validate_args(torch_class)
        cls = type(torch_class.__name__, (torch_class, TorchDistributionMixin), body)
        type.__setattr__(torch_class, "_dgm_pyro_class", cls)
    return cls


def reduce_made(self: Any, protocol: int) -> Any:
    # pickle finds a made class by neither module nor name (both are its torch class's): rebuild it from that class
    return rebuild_made, (type(self).__mro__[1], dict(self.__dict__))


def rebuild_made(torch_class: type, state: dict[str, Any]) -> Any:
    d = pyro_class(torch_class).__new__(pyro_class(torch_class))
    d.__dict__.update(state)
    return d


def _init_without_validate_args(torch_class: type) -> Any:
    def __init__(self: Any, *args: Any, validate_args: bool | None = None, **kwargs: Any) -> None:
        torch_class.__init__(self, *args, **kwargs)  # (Pixyz calls the class with the parameters only)

    return __init__


def _keys(dist: Any, params: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The parameter groups of Pixyz's ``params_keys``; the given parameters' names where it cannot be read yet (a
    property reading an attribute that the subclass's ``__init__`` sets after ``super().__init__``)."""
    try:
        keys = dist.params_keys
    except AttributeError:
        return LateKeys((k,) for k in params)
    return tuple((k,) for k in keys)


class LateKeys(tuple):
    """Parameter groups taken from the given parameters because ``params_keys`` could not be read when the
    distribution was built: the family reads it again at its first call (``DistributionBase._dgm_read_late_keys``)."""


def _user_defined(cls: type, name: str) -> bool:
    """Whether a subclass defines ``name`` (not DistributionBase itself, whose Pixyz-style views read our family)."""
    owner = next((c for c in cls.__mro__ if name in vars(c)), None)
    return owner is not None and owner.__module__ != "pyro_dgm.distributions.family"


def adopt(dist: Any, params: Mapping[str, Any]) -> tuple[Any, tuple[tuple[str, ...], ...]] | None:
    """``(pyro_dist, param_groups)`` for a DistributionBase subclass without a Pyro family of ours: from Pixyz's
    ``distribution_torch_class``/``params_keys`` if it defines them, else (a bare DistributionBase) the given
    parameter names with no class; ``None`` for our families."""
    cls = type(dist)
    if cls.pyro_dist is not None or cls.param_groups:
        if not users_own(cls, "distribution_torch_class"):  # (ours: e.g. Multinomial's, which reads total_count)
            return None
        # a family's subclass that names another torch class: Pixyz's set_dist builds its dist from that class
        groups = _keys(dist, params) if _user_defined(cls, "params_keys") else cls.param_groups
        return LiveTorchClass(dist), groups
    if _user_defined(cls, "distribution_torch_class") and _user_defined(cls, "params_keys"):
        return LiveTorchClass(dist), _keys(dist, params)
    return None, tuple((k,) for k in params)
