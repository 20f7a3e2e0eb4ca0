r"""A Pyro site's distribution drawn without reparameterization: what ``sample(reparam=False)`` (Pixyz's default)
hands Pyro inside a handler, so that an inference algorithm scores the site by its score function, not by a pathwise
gradient that the value (drawn without a graph) does not carry."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["unreparameterized"]

#: ``(class, kind) -> its subclass``: kind ``"score"`` has no reparameterized sampler, kind ``"detached"`` draws its
#: reparameterized samples without a graph (a flow's base)
_SUBCLASSES: dict[tuple[type, str], type] = {}


def _rebuilt(cls: type, kind: str, state: dict[str, Any]) -> Any:
    """An object of ``cls``'s subclass of ``kind`` with the attributes ``state`` (what pickling keeps of one: the
    subclass is made at run time, so it is pickled as its class and its kind)."""
    out = cls.__new__(cls)
    out.__dict__.update(state)
    out.__class__ = _subclass(cls, kind)
    return out


def _subclass(cls: type, kind: str) -> type:
    key = (cls, kind)
    out = _SUBCLASSES.get(key)
    if out is None:  # (the class's own name and module: labels, render_model, messages read them)

        def expand(self: Any, batch_shape: Sequence[int], _instance: Any = None) -> Any:
            new = cls.expand(self, batch_shape, _instance)  # (a class whose expand builds its own class: the
            if type(new) is cls:  # subclass kept, as Pyro's plates expand a site's distribution)
                new.__class__ = out
            return new

        def __reduce_ex__(self: Any, protocol: Any) -> Any:
            return _rebuilt, (cls, kind, self.__dict__)

        def rsample(self: Any, sample_shape: Sequence[int] = torch.Size()) -> Tensor:  # (the family's own, without
            with torch.no_grad():  # a graph: its sample() may be this very rsample, as torch's default is)
                return cls.rsample(self, torch.Size(sample_shape))

        def to_event(self: Any, reinterpreted_batch_ndims: int | None = None) -> Any:
            new = cls.to_event(self, reinterpreted_batch_ndims)  # (an Independent rebuilds itself from its base,
            return unreparameterized(new) if new.has_rsample else new  # which has a reparameterized sampler)

        attrs: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                 "_dgm_unreparameterized": kind, "expand": expand, "__reduce_ex__": __reduce_ex__}
        attrs.update({"has_rsample": False, "to_event": to_event} if kind == "score" else {"rsample": rsample})
        out = _SUBCLASSES[key] = type(cls)(cls.__name__, (cls,), attrs)
    return out


def unreparameterized(fn: Any) -> Any:
    r"""``fn`` as the site of a draw without a gradient: a shallow copy of its class's subclass with
    ``has_rsample = False`` (its draws carry no gradient, and Pyro's ELBOs give its parameters the score-function
    term, as for any distribution without a reparameterized sampler). A flow's site (a ``TransformedDistribution``
    of :mod:`pyro_dgm.distributions.flow_distribution`; not the relaxed families', which torch builds as
    transformed distributions too) keeps its pathwise gradient through the flow and draws its base without one, as
    Pixyz's ``sample()`` applies the flow to a prior's draw. Everything else (its class for ``isinstance`` and the KL
    registry, its parameters, ``expand``) is ``fn``'s.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> loc = torch.zeros(2, requires_grad=True)
    >>> fn = dist.Normal(loc, 1.).to_event(1)
    >>> d = unreparameterized(fn)
    >>> d.has_rsample, d.sample().requires_grad, d.log_prob(torch.ones(2)).requires_grad, isinstance(d, type(fn))
    (False, False, True, True)
    """
    out = copy.copy(fn)
    if getattr(fn, "_dgm_flow_site", False):
        base = copy.copy(fn.base_dist)
        base.__class__ = _subclass(type(base), "detached")
        out.base_dist = base
        return out
    out.__class__ = _subclass(type(fn), "score")
    return out


def _normal_based(fn: Any) -> bool:
    """Whether ``fn`` draws through a ``torch.distributions.Normal`` (itself, or its base: ``Independent``, an
    expanded or transformed one)."""
    for _ in range(8):
        if isinstance(fn, torch.distributions.Normal):
            return True
        fn = getattr(fn, "base_dist", None)
        if fn is None:
            return False
    return False


def plain_sample(fn: Any, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
    """``fn.sample(sample_shape)``: a draw without a graph. While ``torch.compile`` traces, a Normal's is
    ``fn.rsample(sample_shape).detach()``, the same numbers from the same random stream in eager code: inductor
    merged two ``torch.normal(loc, scale)`` calls of the same parameters in one training graph into one, so an
    ``Expectation`` of ``reparam=False`` over two samples drew one (probe p369; torch 2.13)."""
    if fn.has_rsample and _normal_based(fn):
        from pyro_dgm.utils.compat import is_compiling

        if is_compiling():
            return fn.rsample(sample_shape).detach()
    return fn.sample(sample_shape)
