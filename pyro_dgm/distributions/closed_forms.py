r"""Closed forms on parameter tensors: the hot path of scoring, drawing and the analytic KL.

Building a ``pyro.distributions`` object per call (argument broadcasting, ``Independent`` wrappers, the KL
registry's dispatch) costs more Python time than the arithmetic of a small latent layer. For the families that
deep generative models use on every step, these functions compute the same values straight from the parameters:

* :data:`LOG_PROB` — the element-wise log-density of a value, summed over ``dims`` (the Pyro class's formula, up
  to rounding); a Bernoulli is scored by :func:`bernoulli_cross_entropy`, with ``binary_cross_entropy``'s value
  and gradients at about a third of its CPU time;
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
from typing import Any, Callable, Iterator, Mapping, NamedTuple, TypeVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

from pyro_dgm.utils.checks import NotBinaryError, switched
from pyro_dgm.utils.shapes import broadcast_shape
from pyro_dgm.utils.compat import is_compiling

__all__ = ["LOG_PROB", "LOG_PROB_STANDARD", "RSAMPLE", "KL", "KL_TO_STANDARD", "IS_STANDARD", "EVENT_DIM",
           "OWN_VALUE_CHECK", "register_log_prob", "register_rsample", "register_kl", "register_standard",
           "ClosedParams", "GeneralPath", "validating", "valid_params", "valid_value", "holds", "disabled",
           "bernoulli_log_prob", "bernoulli_cross_entropy", "in_unit_interval", "check_binary"]

Params = Mapping[str, Tensor]
_HALF_LOG_2PI = math.log(math.sqrt(2 * math.pi))


ENABLED = [True]


#: Pyro class -> ``f(params, value, dims)``: the log-density of ``value``, summed over ``dims``
#: (:func:`register_log_prob`).
LOG_PROB: dict[type, Callable[[Params, Tensor, tuple[int, ...]], Tensor]] = {}
#: Pyro class -> the number of its parameters' right dims that one value's score consumes (a one-hot categorical's
#: class dim: 1), where it is not 0: its :data:`LOG_PROB` sums over ``dims`` that count them (``register_log_prob``).
EVENT_DIM: dict[type, int] = {}
#: Pyro classes whose :data:`LOG_PROB` checks the value itself (raising :class:`GeneralPath` where the class's
#: ``log_prob`` would raise or treat the value apart), so that :func:`valid_value` does not check its support.
OWN_VALUE_CHECK: set[type] = set()
#: Pyro class -> ``f(params, generator)``: a reparameterized draw, with the random stream of the class's ``rsample``
#: (``generator=None``: torch's default generator; see :func:`pyro_dgm.utils.random.generator`;
#: :func:`register_rsample`).
RSAMPLE: dict[type, Callable[[Params, torch.Generator | None], Tensor]] = {}
#: (Pyro class of p, Pyro class of q) -> ``f(p_params, q_params)``: the element-wise analytic KL[p || q]
#: (:func:`register_kl`).
KL: dict[tuple[type, type], Callable[[Params, Params], Tensor]] = {}
#: Pyro class -> ``f(params)``: whether constant parameters are the family's standard form (N(0, I) for a Normal;
#: :func:`register_standard`).
IS_STANDARD: dict[type, Callable[[Params], bool]] = {}
#: Pyro class -> ``f(params, value, dims)``: :data:`LOG_PROB` for parameters in the standard form, with fewer
#: operations.
LOG_PROB_STANDARD: dict[type, Callable[[Params, Tensor, tuple[int, ...]], Tensor]] = {}
#: Pyro class -> ``f(p_params)``: :data:`KL` against ``q`` in the standard form, from ``p``'s parameters alone.
KL_TO_STANDARD: dict[type, Callable[[Params], Tensor]] = {}

_F = TypeVar("_F", bound=Callable[..., Any])


def register_log_prob(*classes: type, event_dim: int = 0, checks_value: bool = False) -> Callable[[_F], _F]:
    """Register ``f(params, value, dims)`` as the log-density of the Pyro classes ``classes``, summed over ``dims``
    (the decorator of a family's scoring formula, as ``torch.distributions.kl.register_kl`` is of a KL).

    ``event_dim``: how many of the parameters' right dims one value's score consumes (:data:`EVENT_DIM`; ``dims``
    counts them, and the function is used only where the scores are summed over every feature dim).
    ``checks_value``: the function checks the value itself (:data:`OWN_VALUE_CHECK`).

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> class MyNormal(dist.Normal):
    ...     pass
    >>> @register_log_prob(MyNormal)
    ... def _my_log_prob(params, x, dims):
    ...     return LOG_PROB[dist.Normal](params, x, dims)
    >>> LOG_PROB[MyNormal] is _my_log_prob
    True
    """
    def register(f: _F) -> _F:
        for cls in classes:
            LOG_PROB[cls] = f
            if event_dim:
                EVENT_DIM[cls] = event_dim
            if checks_value:
                OWN_VALUE_CHECK.add(cls)
        return f
    return register


def register_rsample(*classes: type) -> Callable[[_F], _F]:
    """Register ``f(params, generator)``, a reparameterized draw with the random stream of the classes' ``rsample``
    (see :func:`register_log_prob`)."""
    def register(f: _F) -> _F:
        for cls in classes:
            RSAMPLE[cls] = f
        return f
    return register


def register_kl(p_class: type, q_class: type) -> Callable[[_F], _F]:
    r"""Register ``f(p_params, q_params)``, the element-wise analytic :math:`D_{KL}[p \| q]` of two Pyro classes
    (``torch.distributions.kl``'s value; see :func:`register_log_prob`)."""
    def register(f: _F) -> _F:
        KL[p_class, q_class] = f
        return f
    return register


def register_standard(cls: type, log_prob: Callable[[Params, Tensor, tuple[int, ...]], Tensor] | None = None,
                      kl: Callable[[Params], Tensor] | None = None) -> Callable[[_F], _F]:
    """Register the test ``f(params) -> bool`` of the standard form of a family's constant parameters (N(0, I)),
    with the cheaper log-density (``log_prob``) and KL against it (``kl``, from ``p``'s parameters alone)."""
    def register(f: _F) -> _F:
        IS_STANDARD[cls] = f
        if log_prob is not None:
            LOG_PROB_STANDARD[cls] = log_prob
        if kl is not None:
            KL_TO_STANDARD[cls] = kl
        return f
    return register


class GeneralPath(ValueError):
    """Raised by a closed form for an input it leaves to the general path (the distribution object's own
    ``log_prob``), which scores it or reports it as torch does."""


class ClosedParams(NamedTuple):
    """What the closed forms take from a distribution (``DistributionBase``'s one gate to them): its parameters by
    name and the largest number of dims among them."""

    params: dict[str, Tensor]
    ndim: int


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
    yield from switched(ENABLED, False)  # (blocks of several threads may end in any order)


def valid_params(cls: type, params: Params, skip: tuple[str, ...] = ()) -> bool:
    """Whether ``params`` satisfy ``cls.arg_constraints``, as ``cls(**params)`` checks them under validation.

    ``skip`` names parameters checked before (constants, checked when the distribution was built).
    """
    constraints = cls.arg_constraints
    for name, value in params.items():
        c = constraints.get(name)
        if c is None or name in skip or torch.distributions.constraints.is_dependent(c):
            continue
        if not holds(c, value):
            return False
    return True


_C = torch.distributions.constraints
_BOUNDS = {_C._Real: (False, False), _C._GreaterThan: (True, False), _C._GreaterThanEq: (True, False),
           _C._LessThan: (False, True), _C._Interval: (True, True), _C._HalfOpenInterval: (True, True)}


_EXACT: dict[tuple[Any, ...], bool] = {}


def _exact_bounds(c: Any, lb: Any, ub: Any, dtype: torch.dtype) -> bool:
    """Whether ``c``'s bounds ``lb`` and ``ub`` are numbers that ``dtype`` holds exactly (0 and 1; not 0.1): the check
    compares them in the value's dtype, a number read from the value compares with them as they are, which agree
    only then."""
    key = (type(c), lb, ub, dtype)
    try:
        return _EXACT[key]
    except KeyError:
        pass
    except TypeError:  # (a bound that is a tensor: unhashable)
        return False
    ok = all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)
                           and torch.tensor(b, dtype=dtype).item() == b) for b in (lb, ub))
    if len(_EXACT) < 4096:
        _EXACT[key] = ok
    return ok


def holds(c: Any, value: Tensor) -> bool:
    """``torch._is_all_true(c.check(value))``: whether every entry of ``value`` satisfies the constraint ``c``; for
    the elementwise constraints with number bounds (real, positive, an interval...) on a float tensor, from its
    smallest and largest entries: one reduction where the check makes a tensor of booleans per comparison (117 us
    against 24 for the probabilities of a 128 x 784 Bernoulli decoder). ``nan`` reads as neither: ``amin`` and
    ``aminmax`` give ``nan`` where an entry is ``nan``, which compares ``False``, as the check's comparisons do.

    Examples
    --------
    >>> from torch.distributions import constraints
    >>> holds(constraints.positive, torch.tensor([0.5, 2.0])), holds(constraints.unit_interval, torch.tensor([1.5]))
    (True, False)
    >>> holds(constraints.real, torch.tensor([0.0, float("nan")])), holds(constraints.real, torch.tensor(-math.inf))
    (False, True)
    """
    low, high = _BOUNDS.get(type(c), (None, None))
    if low is None or not value.is_floating_point() or not value.numel():
        return bool(torch._is_all_true(c.check(value)))
    lb, ub = getattr(c, "lower_bound", None), getattr(c, "upper_bound", None)
    if not _exact_bounds(c, lb, ub, value.dtype) or torch._C._are_functorch_transforms_active():  # (a number
        return bool(torch._is_all_true(c.check(value)))  # cannot be read under vmap)
    v = value.detach()
    if low and high:
        lo_t, hi_t = torch.aminmax(v)
    else:
        lo_t = hi_t = v.amax() if high else v.amin()
    if not v.is_cpu:  # one wait for the device
        t = _C.real.check(lo_t) if not (low or high) else lo_t.new_ones((), dtype=torch.bool)
        if low:
            t = t & (lo_t > lb if type(c) is _C._GreaterThan else lo_t >= lb)
        if high:
            t = t & (hi_t < ub if type(c) in (_C._LessThan, _C._HalfOpenInterval) else hi_t <= ub)
        return bool(t)
    # (reading a number costs less than comparing tiny tensors)
    if not (low or high):
        lo = lo_t.item()
        return lo == lo
    if low and not (lo_t.item() > lb if type(c) is _C._GreaterThan else lo_t.item() >= lb):
        return False
    return not high or (hi_t.item() < ub if type(c) in (_C._LessThan, _C._HalfOpenInterval) else hi_t.item() <= ub)


def valid_value(cls: type, value: Tensor) -> bool:
    """Whether ``value`` lies in ``cls.support``, as ``log_prob`` checks it under validation (a class whose closed form
    checks the value itself, :data:`OWN_VALUE_CHECK`: ``True``)."""
    if cls in OWN_VALUE_CHECK:
        return True
    support = cls.support
    if torch.distributions.constraints.is_dependent(support):
        return False  # a support that depends on the parameters: let the object check it
    return holds(support, value)


def _sum(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    return t.sum(dims) if dims else t


_HALF = (torch.float16, torch.bfloat16)


@register_log_prob(dist.Normal)
def _normal_log_prob(params: Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    loc, scale = params["loc"], params["scale"]
    if loc.dtype in _HALF or scale.dtype in _HALF:  # torch's arrangement, with its rounding (Pixyz's bfloat16
        return _sum(-((x - loc) ** 2) / (2 * scale.pow(2)) - scale.log() - _HALF_LOG_2PI, dims)  # numbers under
        # autocast; data stored in half precision scored by float32 parameters is computed in float32, below)
    # 5 operations forward where torch's arrangement takes 9 (and fewer backward): the same value up to rounding,
    # finite where the scale's square underflows or the distance's overflows (torch's gives NaN or -inf there)
    d = (x - loc) / scale
    log_scale = scale.log()
    if log_scale.dtype != d.dtype:  # data of a wider dtype (float64 data, float32 parameters): the logarithm in the
        log_scale = log_scale.to(d.dtype)  # parameters' dtype and the rest in the data's, as torch's formula rounds
    return _sum(torch.addcmul(torch.rsub(log_scale, -_HALF_LOG_2PI), d, d, value=-0.5), dims)  # (rsub: no
    # Python-level Tensor.__rsub__)


def _standard_normal_log_prob(params: Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    loc, scale = params["loc"], params["scale"]
    if x.dtype != loc.dtype or x.dtype != scale.dtype:  # the dtype the general formula takes (float16 data:
        x = x.to(torch.promote_types(torch.promote_types(x.dtype, loc.dtype), scale.dtype))  # float32's)
    shape = broadcast_shape(x.shape, loc.shape)
    return _sum(-0.5 * (x if shape == x.shape else x.expand(shape)).pow(2) - _HALF_LOG_2PI, dims)


class _CrossEntropy(torch.autograd.Function):
    r""":math:`x \log p + (1 - x) \log(1 - p)` with ``binary_cross_entropy``'s value (each logarithm clamped at
    :math:`-100`) and gradients (for ``p``, :math:`(x - p) / \max(p (1 - p), 10^{-12})`, finite where ``p`` is 0
    or 1; in float64 the exact :math:`x / p - (1 - x) / (1 - p)` where the logarithms are not clamped, see
    :func:`_d_probs`), for any real ``x``. On the CPU it costs about a third of that function's forward and
    backward, whose kernels are not vectorized; its backward is made of torch operations, so it has a second
    derivative too."""

    generate_vmap_rule = True  # torch.func.vmap / grad / jacrev work through it

    @staticmethod
    def forward(probs: Tensor, x: Tensor) -> Tensor:
        return torch.lerp(torch.log1p(-probs).clamp_min(-100.0), probs.log().clamp_min(-100.0), x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        probs, x = ctx.saved_tensors
        grad_probs = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_probs = grad * _d_probs(probs, x)
        if ctx.needs_input_grad[1]:
            grad_x = grad * _d_x(probs)
        return grad_probs, grad_x

    @staticmethod
    def jvp(ctx: Any, probs_tangent: Tensor | None, x_tangent: Tensor | None) -> Tensor:
        """Forward-mode derivative (``torch.autograd.forward_ad``, ``torch.func.jvp``/``jacfwd``/``hessian``)."""
        probs, x = ctx.saved_tensors
        out = probs_tangent * _d_probs(probs, x) if probs_tangent is not None else None
        if x_tangent is not None:
            out = x_tangent * _d_x(probs) if out is None else out + x_tangent * _d_x(probs)
        return out if out is not None else torch.zeros_like(probs)


def _d_probs(probs: Tensor, x: Tensor) -> Tensor:
    """binary_cross_entropy's derivative for the probabilities, negated: (x - p) / max(p (1 - p), 1e-12). In float64
    it is x / max(p, f) - (1 - x) / max(1 - p, f) with f the square root of the smallest normal number (about
    1.5e-154): exact, with its own derivative, wherever the logarithms are not clamped (p of 1e-13 from a sigmoid of
    -30: 1e13, where the function's floor gives 1e12; x = 0 at p of 1e-300: -1, where one quotient's floor gave 0),
    as Pixyz's and Pyro's are there, and still finite (at most |x| 6.7e153) where p is 0 or 1."""
    if probs.dtype == torch.float64:
        return x / probs.clamp_min(_FLOOR_64) - (1 - x) / (1 - probs).clamp_min(_FLOOR_64)
    return (x - probs) / ((1 - probs) * probs).clamp_min(1e-12)  # torch's arrangement: its rounding


_FLOOR_64 = torch.finfo(torch.float64).tiny ** 0.5


def _d_x(probs: Tensor) -> Tensor:
    """The derivative of :math:`x \\log p + (1 - x) \\log(1 - p)` (each logarithm clamped) for ``x``."""
    return probs.log().clamp_min(-100.0) - torch.log1p(-probs).clamp_min(-100.0)


def bernoulli_cross_entropy(probs: Tensor, x: Tensor) -> Tensor:
    r"""The element-wise :math:`x \log p + (1 - x) \log(1 - p)` for any real ``x``, each logarithm clamped at
    :math:`-100` as ``torch.nn.functional.binary_cross_entropy`` clamps them (so it is minus that function's value
    wherever the function accepts ``x``, i.e. on ``[0, 1]``), with that function's gradients: finite where a
    probability is exactly 0 or 1 (a saturated sigmoid), where the formula's own would be ``nan``.

    ``probs`` and ``x`` have one shape and one dtype.

    Examples
    --------
    >>> p, x = torch.tensor([0.25, 0.5]), torch.tensor([2.0, 0.5])
    >>> bernoulli_cross_entropy(p, x)  # 2 log(1/4) - log(3/4), log(1/2)
    tensor([-2.4849, -0.6931])
    >>> p = torch.tensor([1.0, 1.0], requires_grad=True)
    >>> bernoulli_cross_entropy(p, torch.tensor([1.0, 0.0])).sum().backward()
    >>> p.grad  # 0 where p is right, binary_cross_entropy's -1e12 where it is sure and wrong
    tensor([ 0.0000e+00, -1.0000e+12])
    """
    if probs.dtype in _FLOOR_DTYPES and not torch.jit.is_tracing() and not is_compiling():
        return _CrossEntropy.apply(probs, x)
    # float16 (1e-12 is 0 there: the gradient's floor would not hold), TorchScript traces (Pyro's JIT
    # ELBOs fail on a traced autograd.Function) and torch.compile (Dynamo does not trace a custom jvp): torch
    # operations alone, each logarithm taken of 1 where its argument is exactly 0 (then replaced by -100), so that
    # no gradient is 0 * inf (0 there, where the function's is 1e12); probabilities outside [0, 1] give nan
    zero, one = probs == 0, probs == 1
    log_p = torch.where(zero, -100.0, torch.where(zero, 1.0, probs).log()).clamp_min(-100.0)
    log_q = torch.where(one, -100.0, torch.log1p(-torch.where(one, 0.0, probs))).clamp_min(-100.0)
    return torch.lerp(log_q, log_p, x)


_FULL_DTYPES = (torch.float32, torch.float64)
_FLOOR_DTYPES = (*_FULL_DTYPES, torch.bfloat16)  # (dtypes in which the gradient's floor, 1e-12, is not 0)
#: Up to this many elements, F.binary_cross_entropy's one kernel costs less than the autograd function's Python
#: (measured at 16 x 8: 9 us against 28 us forward); above, its unvectorized CPU kernels cost more (128 x 784:
#: 1.5 ms against 0.45 ms forward and backward). The values and gradients are the same.
_FUSED_UP_TO = 4096


_OUT_OF_RANGE = "all elements of input should be between 0 and 1"  # (binary_cross_entropy's words, for the caller)


def in_unit_interval(t: Tensor) -> bool:
    """Whether every entry of ``t`` lies in [0, 1] (``False`` for ``nan``): one reduction and one wait for the device
    (off the CPU).

    Examples
    --------
    >>> in_unit_interval(torch.tensor([0.0, 0.5, 1.0])), in_unit_interval(torch.tensor([0.5, float("nan")]))
    (True, False)
    """
    return holds(_C.unit_interval, t)


def _in_unit_interval_if_known(t: Tensor) -> bool:
    """:func:`in_unit_interval`, or ``True`` where the values cannot be read (under ``torch.func.vmap``, a
    batched tensor)."""
    try:
        return in_unit_interval(t)
    except RuntimeError:
        return True


def _differentiated(x: Tensor) -> bool:
    """Whether a derivative for the scored value itself is asked for (a generated value, a gradient for the data):
    the fused kernel's is ``log p - log(1 - p)`` unclamped, infinite where a probability is 0 or 1."""
    return x.requires_grad or forward_ad._current_level >= 0  # (a dual level open: x may carry a tangent)


def check_binary(x: Tensor) -> None:
    """Refuse integer values other than 0 and 1 (:class:`~pyro_dgm.utils.checks.NotBinaryError`): an image of uint8
    pixels 0..255 scored under a Bernoulli without scaling it (Pixyz raises torch's error for every integer value; a
    float value, any real one, is scored by the cross-entropy as Pixyz scores it). Also under ``torch.func``
    transforms; while torch.compile traces, an assertion in the graph (a ``RuntimeError`` with this text, without
    the distribution's name: the graph is reused for later batches, which a check made while tracing would not see).

    Examples
    --------
    >>> check_binary(torch.tensor([0, 1, 1]))
    >>> check_binary(torch.tensor([0, 255], dtype=torch.uint8))
    Traceback (most recent call last):
    ...
    pyro_dgm.utils.checks.NotBinaryError: the integer value holds 255 (dtype torch.uint8): a Bernoulli scores integer \
values 0 and 1; scale other integers to [0, 1] first (uint8 pixels: x.float() / 255)
    """
    if not x.numel():
        return
    binary = ((x == 0) | (x == 1)).all()
    if is_compiling():
        torch._assert_async(binary, f"an integer value other than 0 and 1: {_NOT_BINARY}")
        return
    if not torch._is_all_true(binary):  # (also under vmap, where a batched tensor has no bool)
        try:
            held = f"holds {x[(x != 0) & (x != 1)].flatten()[0].item()}"
        except RuntimeError:  # (under a torch.func transform: no value to read)
            held = "holds values other than 0 and 1"
        raise NotBinaryError(f"the integer value {held} (dtype {x.dtype}): {_NOT_BINARY}")


_NOT_BINARY = "a Bernoulli scores integer values 0 and 1; scale other integers to [0, 1] first (uint8 pixels: " \
    "x.float() / 255)"


def bernoulli_log_prob(params: Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """A Bernoulli scored by cross-entropy, for any real value as Pixyz scores it, from ``probs`` or ``logits``.

    From ``probs`` it is :func:`bernoulli_cross_entropy` (on the CPU, ``F.binary_cross_entropy`` itself for up to
    4096 elements when no derivative for the value is asked for): ``F.binary_cross_entropy``'s value and gradients
    for any real value (Pixyz's examples score ``torch.randn`` data under a Bernoulli decoder). On the CPU, probabilities
    outside ``[0, 1]`` (or ``nan``) raise that function's ``RuntimeError``, which the caller reports naming the
    distribution; on other devices the check would wait for the device at every call, so it is not made there.
    Under ``torch.compile``, ``torch.func`` transforms and in low precision, CPU scoring goes through
    ``F.binary_cross_entropy`` itself (whose kernel checks the probabilities without a branch in Python); a
    TorchScript trace records torch operations that give ``nan`` for probabilities outside ``[0, 1]``.
    """
    if not x.is_floating_point() and x.dtype is not torch.bool:
        check_binary(x)
    probs = params.get("probs")
    if probs is None:
        logits = params["logits"]
        if not x.is_floating_point():  # integer or boolean values, in the logits' dtype (as from probabilities)
            x = x.to(logits.dtype)
        if torch.jit.is_tracing() or logits.shape != x.shape:  # (shapes are tensors under Pyro's JIT: no test)
            logits, x = torch.broadcast_tensors(logits, x)
        return -_sum(F.binary_cross_entropy_with_logits(logits, x, reduction="none"), dims)
    if probs.dtype != x.dtype:  # e.g. float64 data (numpy's) under float32 networks: Pixyz's value is float64
        dtype = torch.promote_types(probs.dtype, x.dtype)
        probs, x = probs.to(dtype), x.to(dtype)
    if probs.shape != x.shape:
        probs, x = torch.broadcast_tensors(probs, x)
    if torch.jit.is_tracing():  # torch operations alone (see bernoulli_cross_entropy): the kernel would refuse a later
        # value outside [0, 1], and catching that crashes. The probabilities the trace is made with are checked (the
        # caller names them); the trace's later ones cannot be, and give nan when out of range
        if probs.is_cpu and not in_unit_interval(probs):
            raise RuntimeError(_OUT_OF_RANGE)
        return _sum(bernoulli_cross_entropy(probs, x), dims)
    if probs.is_cpu:
        if probs.dtype not in _FULL_DTYPES or probs.dtype == torch.float64:  # low precision, at every size in the
            # probabilities' dtype (the kernel would compute in float32 under autocast): the function in bfloat16, torch
            # operations in float16 (see bernoulli_cross_entropy), whose gradients are finite where a probability is
            # 0 or 1; float64: the function with its float64 floor (the kernel's gradient for the probabilities is
            # floored at 1e-12 in float64 too; compiled, torch operations whose gradient has no floor)
            if not is_compiling() and not _in_unit_interval_if_known(probs):
                raise RuntimeError(_OUT_OF_RANGE)
            return _sum(bernoulli_cross_entropy(probs, x), dims)
        functorch = torch._C._are_functorch_transforms_active()
        if not is_compiling() and not functorch and (probs.numel() > _FUSED_UP_TO or _differentiated(x)):  # (the
            # size last: read while tracing, it would make the compiled code guard on it, one graph more)
            if not in_unit_interval(probs):
                raise RuntimeError(_OUT_OF_RANGE)
            return _sum(_CrossEntropy.apply(probs, x), dims)
        if is_compiling() or functorch:  # no try in a graph, and the kernel that the aot_eager and eager backends
            # run refuses values outside [0, 1]: its value is linear in the value, so it is given only 0 and 1 (the
            # same value and gradients; the probabilities are checked as before, inductor's kernel checks none).
            # Under torch.func too: the kernel's gradient for the value is unclamped (infinite where a probability
            # is 0 or 1), the two kernels' difference is the clamped one, and their kernels check the probabilities
            lp_1 = F.binary_cross_entropy(probs, torch.ones_like(probs), reduction="none")
            lp_0 = F.binary_cross_entropy(probs, torch.zeros_like(probs), reduction="none")
            return -_sum(torch.lerp(lp_0, lp_1, x), dims)
        try:
            return -_sum(F.binary_cross_entropy(probs, x, reduction="none"), dims)
        except RuntimeError:
            if not torch._is_all_true((probs >= 0) & (probs <= 1)):
                raise  # the probabilities themselves are wrong: the caller reports it
    return _sum(bernoulli_cross_entropy(probs, x), dims)


@register_rsample(dist.Normal)
def _normal_rsample(params: Params, generator: torch.Generator | None = None) -> Tensor:
    loc, scale = params["loc"], params["scale"]
    shape = broadcast_shape(loc.shape, scale.shape)
    eps = torch.empty(shape, dtype=loc.dtype, device=loc.device)
    if generator is None:  # torch's default generator, without parsing a keyword on the hot path
        eps.normal_()
    else:
        eps.normal_(generator=generator)
    return loc + eps * scale


@register_kl(dist.Normal, dist.Normal)
def _kl_normal_normal(p: Params, q: Params) -> Tensor:
    var_ratio = (p["scale"] / q["scale"]).pow(2)
    t1 = ((p["loc"] - q["loc"]) / q["scale"]).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def _kl_normal_standard(p: Params) -> Tensor:
    var = p["scale"].pow(2)  # torch's arrangement of the general formula with q = N(0, 1): the same rounding
    return 0.5 * (var + p["loc"].pow(2) - 1 - var.log())


@register_standard(dist.Normal, log_prob=_standard_normal_log_prob, kl=_kl_normal_standard)
def _is_standard_normal(params: Params) -> bool:
    return bool((params["loc"] == 0).all()) and bool((params["scale"] == 1).all())
