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

A value drawn by the user's own code (or by ``get_sample``) is not a ``pyro.sample`` site unless that code draws
through ``super().sample`` (then the site has the distribution's own variable name); inside a Pyro model run with
data (``ctx.obs``) the original hook runs, so observed sites stay sites.

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
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from torch import Tensor

from pyro_dgm.utils.checks import describe
from pyro_dgm.utils.dicts import sum_samples

if TYPE_CHECKING:
    from pyro_dgm.distributions.base import Distribution
    from pyro_dgm.distributions.bindings import Binding, CallState

__all__ = ["install", "entered"]

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
            code = getattr(inspect.unwrap(vars(klass)[name]), "__code__", None)
            return code is not None and not os.path.abspath(code.co_filename).startswith(_LIBRARY + os.sep)
    return False


def _entering(fn: Any) -> Any:
    """The user's public method, run with its distribution marked as inside it (:func:`entered`)."""
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        with entered(self):
            return fn(self, *args, **kwargs)

    method._enters = True  # type: ignore[attr-defined]
    return method


def install(cls: Any) -> None:
    """Route ``cls``'s hooks through its public methods where the user wrote them: ``set_dist`` or ``get_sample``
    (Pixyz's atomic ``sample`` and ``get_log_prob`` go through them), ``get_params`` (a family's parameters: what
    Pixyz's ``set_dist`` calls), then ``sample`` and ``get_log_prob``."""
    if hasattr(cls, "set_dist") and hasattr(cls, "get_sample"):
        if (_user_defined(cls, "set_dist") or _user_defined(cls, "get_sample")) and not cls._dgm_user_set_dist:
            cls._dgm_inner_set_dist_draw = cls._dgm_draw_with  # for Pyro model runs with data (observed sites)
            cls._dgm_draw_with, cls._dgm_user_set_dist = _draw_via_set_dist, True
            if _user_defined(cls, "set_dist"):  # scoring, moments, entropy and KL see what set_dist sets
                cls._dgm_score_with, cls._dgm_fn = _score_via_set_dist, _fn_via_set_dist
    for public, hook, inner, flag, via in (
            ("get_params", "_dgm_params", "_dgm_inner_params", "_dgm_user_get_params", _params_via_get_params),
            ("sample", "_dgm_draw_with", "_dgm_inner_draw_with", "_dgm_user_sample", _draw_via_sample),
            ("get_log_prob", "_dgm_score_with", "_dgm_inner_score_with", "_dgm_user_log_prob",
             _score_via_get_log_prob)):
        if not hasattr(cls, hook) or not _user_defined(cls, public):
            continue
        fn = vars(cls).get(public)
        if hook != "_dgm_params" and fn is not None and callable(fn) and not getattr(fn, "_enters", False):
            setattr(cls, public, _entering(fn))  # (get_params needs no mark: its super() call reads _dgm_inner_params)
        own = vars(cls).get(hook)
        if own is None:  # inherited: the parent's hook (its inner one if the parent routes it already)
            own = getattr(cls, inner) if getattr(cls, flag) else getattr(cls, hook)
        setattr(cls, inner, own)
        setattr(cls, hook, via)
        setattr(cls, flag, True)


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
    """A family's parameters from the user's ``get_params``, called as Pixyz's ``set_dist`` calls it (with the
    inputs under the distribution's own names and the networks' keyword arguments); its ``super().get_params()``
    computes them with the original hook (``_dgm_inner_params``)."""
    params = self.get_params(_local_inputs(self, b, values), **ctx.kwargs)
    if not isinstance(params, Mapping):
        raise TypeError(f"{describe(self)}: get_params() must return a dict of parameters, got "
                        f"{type(params).__name__}")
    return dict(params)


def _draw_via_sample(self: Distribution, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
    if id(self) in _inside() or ctx.obs is not None:
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
    return self.get_log_prob(local, sum_features=sum_features, feature_dims=feature_dims,  # type: ignore[no-any-return]
                             **ctx.kwargs)




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


def _fn_via_set_dist(self: Any, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                     value: Tensor | None = None) -> tuple[Any, Any]:
    """The distribution object that ``set_dist`` sets (every dim a batch dim, as in Pixyz) and the same with every
    dim after the first as an event dim: what moments, the entropy and the KL divergence read."""
    self.set_dist(_local_inputs(self, b, values), batch_n=ctx.batch_n)  # (Pixyz passes no network keywords)
    base = self.dist
    ev = len(base.batch_shape) - 1
    return (base.to_event(ev) if ev > 0 else base), base
