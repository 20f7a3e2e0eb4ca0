"""Attributes that a user's subclass may take over: pyro_dgm's public names that Pixyz lacks.

A Pixyz program may use any name Pixyz leaves free for its own attributes (``self.factors = 3`` in a distribution,
``self.distributions = [...]`` in a loss). pyro_dgm keeps its private state under ``_dgm_`` names; its public names
that Pixyz lacks are :class:`Yielding` attributes: they read the user's value where one was assigned, and pyro_dgm
itself always reads the ``_dgm_`` implementation.

Examples
--------
>>> class Counter:
...     count = Yielding("_dgm_count")
...     _dgm_count = 0
>>> c = Counter()
>>> c.count
0
>>> c.count = "mine"
>>> c.count, c._dgm_count
('mine', 0)
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from torch import nn

__all__ = ["MISSING", "Yielding", "YieldingModule", "users_own", "users_value"]

MISSING = object()


def users_value(obj: Any, name: str) -> Any:
    """What a user's subclass assigned to ``obj.name``: a submodule, parameter or buffer (``nn.Module`` keeps those
    out of ``__dict__``; ``None`` where one was set to ``None``, as torch reads it), else ``MISSING``."""
    d = obj.__dict__
    for store in ("_modules", "_parameters", "_buffers"):
        hit = d.get(store, {}).get(name, MISSING)
        if hit is not MISSING:
            return hit
    return MISSING


def users_own(cls: type, name: str) -> bool:
    """Whether the attribute ``name`` of ``cls`` is defined by a class outside pyro_dgm (a user's subclass: its own
    ``prob_text``, or a family subclass's own ``distribution_torch_class``)."""
    owner = next((k for k in cls.__mro__ if name in vars(k)), None)
    return owner is not None and not owner.__module__.startswith("pyro_dgm.")


#: per class, whether it is defined outside pyro_dgm (see users_class)
_USERS_CLASSES: dict[type, bool] = {}


def users_class(cls: type) -> bool:
    """Whether ``cls`` is defined outside pyro_dgm (a user's loss term or distribution class); read once per
    class."""
    own = _USERS_CLASSES.get(cls)
    if own is None:
        own = _USERS_CLASSES[cls] = not cls.__module__.startswith("pyro_dgm.")
    return own


class Yielding:
    """A public attribute of pyro_dgm's (``factors``, ``binding``, ...) that yields to a user's value of that name.

    Pixyz has no such attribute, so a Pixyz subclass may use the name for its own (``self.factors = 3``); it then
    reads its own value back, while pyro_dgm reads its own from ``impl`` (the ``_dgm_`` name), never the public one.
    """

    yields = True

    def __init__(self, impl: str) -> None:
        self.impl = impl

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = getattr(owner.__dict__.get(self.impl), "__doc__", None)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get(self.name, MISSING)
        if value is MISSING:
            value = users_value(obj, self.name)
        return getattr(obj, self.impl) if value is MISSING else value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value

    def __delete__(self, obj: Any) -> None:
        obj.__dict__.pop(self.name, None)


class YieldingModule(nn.Module):
    """An ``nn.Module`` whose yielding names (:class:`Yielding`, or any descriptor marked ``yields = True``) also take
    a parameter or buffer: torch refuses to register one under a name the class already has."""

    def _dgm_register(self, store_name: str, name: str, register: Any, *args: Any) -> None:
        """Run torch's ``register``; under a yielding name, first place a stand-in in the store, which torch's check
        passes, and take it out again if torch refuses the value."""
        store = self.__dict__.get(store_name, {})
        placed = name not in store and getattr(inspect.getattr_static(type(self), name, None), "yields", False)
        if placed:
            store[name] = None
        try:
            register(name, *args)
        except BaseException:
            if placed and store.get(name) is None:
                del store[name]
            raise

    def register_parameter(self, name: str, param: Any) -> None:
        self._dgm_register("_parameters", name, super().register_parameter, param)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        self._dgm_register("_buffers", name, super().register_buffer, tensor, persistent)


def set_up_subclasses(obj: Any, base: type, marker: str) -> None:
    """Run ``base.__init_subclass__`` now for the classes of ``obj`` below ``base`` whose creation skipped it: a
    user's mixin before ``base`` whose own ``__init_subclass__`` does not call ``super()`` (a registry's) stops the
    chain there (Pixyz's classes set nothing up at that time, so such a program runs under Pixyz). ``marker`` is the
    name that ``base.__init_subclass__`` sets in each class's ``__dict__``."""
    cls = type(obj)
    if marker in cls.__dict__:
        return
    for k in reversed(cls.__mro__):
        if k is not base and issubclass(k, base) and marker not in k.__dict__:
            base.__dict__["__init_subclass__"].__func__(k)


def refuse_pixyz_hooks(cls: type, base: type, names: Sequence[str], callers: Sequence[str], instead: str) -> None:
    """Raise a ``TypeError`` naming the method when ``cls`` (a user's subclass of ``base``) has, from its own body or
    a mixin, one of Pixyz's private methods ``names`` that ``base`` computes without calling: in Pixyz, ``base``'s
    ``callers`` call it, so overriding it changes Pixyz's numbers, and here it would be ignored silently. A class
    that overrides every one of ``callers`` itself is left alone (its helper of that name is its own). ``instead``
    says what to override.

    Examples
    --------
    >>> class Base:
    ...     def forward(self): return 1
    >>> def _scale(self): return 3
    >>> refuse_pixyz_hooks(type("Own", (Base,), {"forward": lambda self: 2, "_scale": _scale}), Base, ("_scale",),
    ...                    ("forward",), "override forward")
    >>> refuse_pixyz_hooks(type("Hooked", (Base,), {"_scale": _scale}), Base, ("_scale",), ("forward",),
    ...                    "override forward")
    Traceback (most recent call last):
    ...
    TypeError: Hooked: overrides _scale, a private method of Pixyz's Base that pyro_dgm's Base does not call (it \
would be ignored); override forward
    """
    own = [n for n in names if getattr(cls, n, None) is not getattr(base, n, None)]
    if not own or all(getattr(cls, c, None) is not getattr(base, c, None) for c in callers):
        return
    raise TypeError(f"{cls.__name__}: overrides {own[0]}, a private method of Pixyz's {base.__name__} that "
                    f"pyro_dgm's {base.__name__} does not call (it would be ignored); {instead}")
