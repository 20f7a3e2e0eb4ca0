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

import functools
from typing import Any, Mapping

from pyro.distributions.torch_distribution import TorchDistributionMixin

from pyro_dgm.utils.attributes import users_own

__all__ = ["adopt", "pyro_class"]

_WRAPPED: dict[type, type] = {}


def pyro_class(torch_class: type) -> type:
    """``torch_class`` with Pyro's ``TorchDistributionMixin`` (``to_event``, ``expand``...), made once per class; a
    ``functools.partial`` of a class (``partial(StudentT, 3.0)``) becomes the same partial of that class."""
    if isinstance(torch_class, functools.partial) and isinstance(torch_class.func, type):
        return functools.partial(pyro_class(torch_class.func), *torch_class.args, **torch_class.keywords)
    if issubclass(torch_class, TorchDistributionMixin):
        return torch_class
    cls = _WRAPPED.get(torch_class)
    if cls is None:
        cls = _WRAPPED[torch_class] = type(torch_class.__name__, (torch_class, TorchDistributionMixin),
                                           {"__module__": torch_class.__module__})
    return cls


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
        groups = tuple((k,) for k in dist.params_keys) if _user_defined(cls, "params_keys") else cls.param_groups
        return pyro_class(dist.distribution_torch_class), groups
    if _user_defined(cls, "distribution_torch_class") and _user_defined(cls, "params_keys"):
        return pyro_class(dist.distribution_torch_class), tuple((k,) for k in dist.params_keys)
    return None, tuple((k,) for k in params)
