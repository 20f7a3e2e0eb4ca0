r"""Closed forms on parameter tensors: the hot path of scoring, drawing and the analytic KL.

Building a ``pyro.distributions`` object per call (argument broadcasting, ``Independent`` wrappers, the KL
registry's dispatch) costs more Python time than the arithmetic of a small latent layer. For the families that
deep generative models use on every step, these functions compute the same values straight from the parameters:

* :data:`LOG_PROB` — the element-wise log-density of a value, summed over ``dims`` (the Pyro class's formula, up
  to rounding); a Bernoulli negates *after* summing, so a 784-pixel likelihood allocates no negated copy of its
  cross-entropy;
* :data:`RSAMPLE` — a reparameterized draw, with the same random stream as the Pyro class's ``rsample`` (from the
  ``torch.Generator`` it is given, else torch's default generator);
* :data:`KL` — the analytic :math:`D_{KL}[p \| q]` element-wise, as ``torch.distributions.kl`` defines it, and
  :data:`KL_TO_STANDARD` for a constant ``q`` in its standard form (:data:`IS_STANDARD`: N(0, I) for a Normal),
  which :data:`LOG_PROB_STANDARD` also scores with fewer operations.

They are keyed by the Pyro class of a family (``DistributionBase.pyro_dist``), so a family with its own class (a
subclass, e.g. :class:`~pyro_dgm.distributions.FactorizedBernoulli`) never inherits a closed form that is not its
own.

With torch's argument validation on (:func:`validating`, torch's and Pyro's default), the callers first make the
checks the distribution object would make (:func:`valid_params`, :func:`valid_value`: the class's
``arg_constraints`` and ``support``); when one fails they build the object after all, so a bad parameter or value
is reported exactly as torch reports it. :func:`disabled` turns the closed forms off (for comparisons and
debugging).

Examples
--------
>>> import torch, pyro.distributions as dist
>>> loc, scale, x = torch.zeros(2, 3), torch.ones(2, 3), torch.randn(2, 3)
>>> lp = LOG_PROB[dist.Normal]({"loc": loc, "scale": scale}, x, (-1,))
>>> bool(torch.allclose(lp, dist.Normal(loc, scale).to_event(1).log_prob(x)))
True
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Mapping

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_dgm.utils.shapes import broadcast_shape

__all__ = ["LOG_PROB", "LOG_PROB_STANDARD", "RSAMPLE", "KL", "KL_TO_STANDARD", "IS_STANDARD", "validating",
           "valid_params", "valid_value", "disabled", "bernoulli_log_prob", "bernoulli_cross_entropy"]

Params = Mapping[str, Tensor]
_HALF_LOG_2PI = math.log(math.sqrt(2 * math.pi))


ENABLED = [True]


def validating() -> bool:
    """Whether torch checks distribution arguments by default (``pyro.enable_validation``)."""
    return bool(torch.distributions.Distribution._validate_args)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, every distribution builds its ``pyro.distributions`` object (the general path).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
    >>> with disabled():
    ...     general = p.get_log_prob({"x": torch.ones(1, 2)})
    >>> bool(torch.allclose(general, p.get_log_prob({"x": torch.ones(1, 2)})))
    True
    """
    was = ENABLED[0]
    ENABLED[0] = False
    try:
        yield
    finally:
        ENABLED[0] = was


def valid_params(cls: type, params: Params, skip: tuple[str, ...] = ()) -> bool:
    """Whether ``params`` satisfy ``cls.arg_constraints``, as ``cls(**params)`` checks them under validation.

    ``skip`` names parameters checked before (constants, checked when the distribution was built).
    """
    constraints = cls.arg_constraints
    compiling = torch.compiler.is_compiling()
    for name, value in params.items():
        c = constraints.get(name)
        if c is None or name in skip or isinstance(c, torch.distributions.constraints._Dependent):
            continue
        if compiling:  # asserted in the compiled graph (a test of the values here would break it)
            torch._assert_async(c.check(value).all(), f"{cls.__name__}: the parameter {name!r} is outside its "
                                f"constraint {type(c).__name__.strip('_')} (torch's argument validation)")
        elif not torch._is_all_true(c.check(value)):
            return False
    return True


def valid_value(cls: type, value: Tensor) -> bool:
    """Whether ``value`` lies in ``cls.support``, as ``log_prob`` checks it under validation."""
    support = cls.support
    if isinstance(support, torch.distributions.constraints._Dependent):
        return False  # a support that depends on the parameters: let the object check it
    if torch.compiler.is_compiling():  # asserted in the compiled graph
        torch._assert_async(support.check(value).all(), f"{cls.__name__}: a value is outside the support "
                            f"{type(support).__name__.strip('_')} (torch's argument validation)")
        return True
    return bool(torch._is_all_true(support.check(value)))


def _sum(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    return t.sum(dims) if dims else t


def _normal_log_prob(params: Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    loc, scale = params["loc"], params["scale"]
    return _sum(-0.5 * ((x - loc) / scale).pow(2) - scale.log() - _HALF_LOG_2PI, dims)


def _standard_normal_log_prob(params: Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    shape = broadcast_shape(x.shape, params["loc"].shape)
    return _sum(-0.5 * (x if shape == x.shape else x.expand(shape)).pow(2) - _HALF_LOG_2PI, dims)


def bernoulli_cross_entropy(probs: Tensor, x: Tensor) -> Tensor:
    r"""The element-wise :math:`x \log p + (1 - x) \log(1 - p)` for any real ``x``, each logarithm clamped at
    :math:`-100` as ``torch.nn.functional.binary_cross_entropy`` clamps them (so it is minus that function's value
    wherever the function accepts ``x``, i.e. on ``[0, 1]``).

    Examples
    --------
    >>> p, x = torch.tensor([0.25, 0.5]), torch.tensor([2.0, 0.5])
    >>> bernoulli_cross_entropy(p, x)  # 2 log(1/4) - log(3/4), log(1/2)
    tensor([-2.4849, -0.6931])
    """
    return torch.lerp(torch.log1p(-probs).clamp_min(-100.0), probs.log().clamp_min(-100.0), x)


def bernoulli_log_prob(params: Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """A Bernoulli scored by cross-entropy, for any real value as Pixyz scores it, from ``probs`` or ``logits``.

    From ``probs`` on the CPU it is ``F.binary_cross_entropy`` (one fused kernel, as hand-written VAEs score), which
    refuses a value outside ``[0, 1]`` with an error before computing anything: such a value (Pixyz's examples score
    ``torch.randn`` data) is then scored by :func:`bernoulli_cross_entropy`, the same formula. On other devices the
    fused kernel would stop the process on such a value (a device-side assertion, not an exception), so
    :func:`bernoulli_cross_entropy` scores every value there.
    """
    probs = params.get("probs")
    if probs is None:
        logits = params["logits"]
        if logits.shape != x.shape:
            logits, x = torch.broadcast_tensors(logits, x)
        return -_sum(F.binary_cross_entropy_with_logits(logits, x, reduction="none"), dims)
    if probs.dtype != x.dtype:  # e.g. float64 data (numpy's) under float32 networks: Pixyz's value is float64
        dtype = torch.promote_types(probs.dtype, x.dtype)
        probs, x = probs.to(dtype), x.to(dtype)
    if probs.shape != x.shape:
        probs, x = torch.broadcast_tensors(probs, x)
    if probs.is_cpu:
        try:
            return -_sum(F.binary_cross_entropy(probs, x, reduction="none"), dims)
        except RuntimeError:
            if not torch._is_all_true((probs >= 0) & (probs <= 1)):
                raise  # the probabilities themselves are wrong: the caller reports it
    return _sum(bernoulli_cross_entropy(probs, x), dims)


def _normal_rsample(params: Params, generator: torch.Generator | None = None) -> Tensor:
    loc, scale = params["loc"], params["scale"]
    shape = broadcast_shape(loc.shape, scale.shape)
    eps = torch.empty(shape, dtype=loc.dtype, device=loc.device)
    if generator is None:  # torch's default generator, without parsing a keyword on the hot path
        eps.normal_()
    else:
        eps.normal_(generator=generator)
    return loc + eps * scale


def _kl_normal_normal(p: Params, q: Params) -> Tensor:
    var_ratio = (p["scale"] / q["scale"]).pow(2)
    t1 = ((p["loc"] - q["loc"]) / q["scale"]).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def _kl_normal_standard(p: Params) -> Tensor:
    scale = p["scale"]
    return 0.5 * (p["loc"].pow(2) + scale.pow(2) - 1) - scale.log()


def _is_standard_normal(params: Params) -> bool:
    return bool((params["loc"] == 0).all()) and bool((params["scale"] == 1).all())


#: Pyro class -> ``f(params, value, dims)``: the log-density of ``value``, summed over ``dims``.
LOG_PROB: dict[type, Callable[[Params, Tensor, tuple[int, ...]], Tensor]] = {
    dist.Normal: _normal_log_prob,  # the Bernoulli of pyro_dgm.distributions.exponential registers itself
}
#: Pyro class -> ``f(params, generator)``: a reparameterized draw, with the random stream of the class's ``rsample``
#: (``generator=None``: torch's default generator; see :func:`pyro_dgm.utils.random.generator`).
RSAMPLE: dict[type, Callable[[Params, torch.Generator | None], Tensor]] = {dist.Normal: _normal_rsample}
#: (Pyro class of p, Pyro class of q) -> ``f(p_params, q_params)``: the element-wise analytic KL[p || q].
KL: dict[tuple[type, type], Callable[[Params, Params], Tensor]] = {(dist.Normal, dist.Normal): _kl_normal_normal}
#: Pyro class -> ``f(params)``: whether constant parameters are the family's standard form (N(0, I) for a Normal).
IS_STANDARD: dict[type, Callable[[Params], bool]] = {dist.Normal: _is_standard_normal}
#: Pyro class -> ``f(params, value, dims)``: :data:`LOG_PROB` for parameters in the standard form, with fewer
#: operations.
LOG_PROB_STANDARD: dict[type, Callable[[Params, Tensor, tuple[int, ...]], Tensor]] = {
    dist.Normal: _standard_normal_log_prob}
#: Pyro class -> ``f(p_params)``: :data:`KL` against ``q`` in the standard form, from ``p``'s parameters alone.
KL_TO_STANDARD: dict[type, Callable[[Params], Tensor]] = {dist.Normal: _kl_normal_standard}
