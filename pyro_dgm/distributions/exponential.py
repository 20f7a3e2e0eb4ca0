r"""The parametric families: each is its Pyro class and its parameter names.

Pixyz scores Bernoulli variables with the cross-entropy form, so values in ``[0, 1]`` (grey-level pixels) are
accepted, and so is any real value (Pixyz's own examples score ``torch.randn`` data). The relaxed families draw
relaxed samples and score them under the hard distribution: RelaxedBernoulli as Pixyz does (the Bernoulli's
cross-entropy), RelaxedCategorical by the categorical log-probability of the sample's arg-max. Pixyz scores a
RelaxedCategorical sample, and computes its entropy, as if its classes were independent Bernoulli variables (a sum
of per-class cross-entropies), which is not the log-probability of any categorical distribution; we keep the
categorical's (``tests/pixyz_compat/test_diff_distributions.py`` shows both). The analytic KL of a relaxed family
is that of its hard distribution (:func:`scored_distribution`; Pixyz's RelaxedCategorical: a sum of per-class
Bernoulli divergences). Pixyz's Multinomial ignores
``total_count`` (it always draws one trial); ours uses it.
"""
from __future__ import annotations

import math
import operator
from typing import Any, ClassVar, Iterable, Sequence

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import probs_to_logits

from pyro_dgm.distributions import closed_forms
from pyro_dgm.distributions.family import DistributionBase
from pyro_dgm.utils.checks import DTypeError, NotOneHotError, OutOfRangeError, ShapeError, describe
from pyro_dgm.utils.compat import is_compiling

__all__ = ["Normal", "Bernoulli", "RelaxedBernoulli", "FactorizedBernoulli", "Categorical", "RelaxedCategorical",
           "Multinomial", "Dirichlet", "Beta", "Laplace", "Gamma"]


class _ScoredAsReal(constraints.Constraint):
    """A Bernoulli's support: discrete for inference, so that Pyro's guides and HMC treat a latent Bernoulli as they
    treat a plain one (they refuse it, or enumerate it), and any real value when a value is scored (Pixyz scores any
    real value by the cross-entropy; NaN is refused, as by ``constraints.real``)."""

    is_discrete = True
    event_dim = 0

    def check(self, value: Tensor) -> Tensor:
        return value == value


def check_value_shape(d: torch.distributions.Distribution, value: Tensor) -> None:
    """The shape half of torch's ``_validate_sample`` (the families here score values outside their support, as
    Pixyz does, so the support half is left out): the value's right dims are the event shape, and the value
    broadcasts with the batch shape. A value conditioned into a Pyro model reaches ``log_prob`` without pyro_dgm's
    own checks; without this, torch's broadcast error (or an arg-max of another length) would be all it met.
    """
    full = d.batch_shape + d.event_shape
    if value.shape == full:  # the common case, one comparison
        return
    ev = d.event_shape
    n = len(ev)
    if value.dim() < n or value.shape[value.dim() - n:] != ev:
        raise ShapeError(f"{type(d).__name__}: the value of shape {tuple(value.shape)} does not end in the event "
                         f"shape {tuple(ev)} that the parameters give")
    try:
        torch.broadcast_shapes(value.shape, full)
    except RuntimeError:
        raise ShapeError(f"{type(d).__name__}: the value of shape {tuple(value.shape)} does not broadcast with the "
                         f"batch and event shape {tuple(full)} that the parameters give") from None


class BernoulliBCE(dist.Bernoulli):
    """Bernoulli whose log-density is the binary cross-entropy ``x log p + (1 - x) log(1 - p)``, for any real ``x``.

    Built from ``probs`` it scores them directly (``F.binary_cross_entropy``, as hand-written VAEs do) instead of
    going through logits; built from ``logits``, with the logits. Pixyz 0.3.3 scores any real value so (its own
    examples score ``torch.randn`` data under a Bernoulli decoder), so values outside ``[0, 1]`` are scored too, by
    the same formula (:func:`pyro_dgm.distributions.closed_forms.bernoulli_log_prob`), with or without argument
    validation; the parameters are still validated.
    """

    support = _ScoredAsReal()  # Pixyz scores any real value by the cross-entropy; {0, 1} for Pyro's inference
    _dgm_binary_integers = True  # integer values other than 0 and 1 are refused (closed_forms.check_binary)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            check_value_shape(self, value)
        d = self.__dict__
        params = {"probs": self.probs} if "probs" in d and "logits" not in d else {"logits": self.logits}
        return closed_forms.bernoulli_log_prob(params, value, ())  # the one formula, shared with the closed form


closed_forms.register_log_prob(BernoulliBCE)(closed_forms.bernoulli_log_prob)


class FactorizedBernoulliBCE(BernoulliBCE):
    """:class:`BernoulliBCE` that scores zeros as 0 (missing features, Vedantam et al. 2017)."""

    def log_prob(self, value: Tensor) -> Tensor:
        lp = super().log_prob(value)
        return torch.where(value == 0, torch.zeros((), dtype=lp.dtype, device=lp.device), lp)


def check_temperature(d: Any, temperature: Any) -> None:
    """Under validation, refuse to draw with a temperature that is not positive (torch's relaxed families do not
    check it: 0 draws NaN or hard values, a negative one mirrored samples, silently), in torch's words for a
    parameter (an :class:`OutOfRangeError`, which the family's draw names). Scoring takes no temperature (the hard
    distribution's), so it is not checked there, as in Pixyz. A number, an integer tensor and a float one alike; not
    where the check cannot read values (under ``torch.func.vmap`` or while ``torch.compile`` traces)."""
    if not d._validate_args:
        return
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        temperature = torch.tensor(float(temperature))
    if (isinstance(temperature, Tensor) and not temperature.is_complex() and temperature.dtype != torch.bool
            and not torch._C._are_functorch_transforms_active() and not is_compiling()):
        ok = temperature > 0
        if not bool(ok.all()):
            raise OutOfRangeError(f"Expected parameter temperature ({type(temperature).__name__} of shape "
                                  f"{tuple(temperature.shape)}) of distribution {type(d).__name__} to satisfy the "
                                  f"constraint GreaterThan(lower_bound=0.0), but found invalid values:\n"
                                  f"{temperature[~ok].flatten()[:5]}")


class _PositiveTemperature:
    """Draws that refuse a temperature that is not positive (:func:`check_temperature`), and draw a row of noise for
    each row of a batch that only the temperature has (torch's relaxed families take their batch shape from the
    probabilities alone: a temperature of shape ``(N, 1)`` beside constant probabilities scaled one draw, the same
    for all N rows, as Pixyz's do; a Pyro site, expanded to its plates, drew N)."""

    def _dgm_full_batch(self) -> Any:
        """This distribution, or one expanded to the batch shape its temperature broadcasts it to."""
        t = self.temperature  # type: ignore[attr-defined]
        if not isinstance(t, Tensor) or t.dim() == 0:
            return self
        logits = self.logits  # type: ignore[attr-defined]
        try:
            shape = torch.broadcast_shapes(t.shape, logits.shape)
        except RuntimeError as e:  # (batch_n rows of probabilities beside another number of temperatures)
            raise ShapeError(f"the temperature of shape {tuple(t.shape)} does not broadcast with the probabilities "
                             f"of shape {tuple(logits.shape)} (give one temperature, or one per row of the "
                             f"batch)") from e
        pad = len(shape) - logits.dim()
        if shape[pad:] == logits.shape and all(n == 1 for n in shape[:pad]):  # (no rows the temperature adds: leading
            return self  # 1s of a constant's batch dim, which torch's draw broadcasts as Pixyz's does)
        return self.expand(shape[:len(shape) - len(self.event_shape)])  # type: ignore[attr-defined]

    def _dgm_torch_shape(self, x: Tensor, sample_shape: torch.Size) -> Tensor:
        """``x``, drawn from :meth:`_dgm_full_batch`, in the shape torch's (and Pixyz's) draw has, where the two
        differ only by dims of 1 (a temperature of shape ``(1, N, 1)``: its leading 1 goes left of ``sample_shape``
        there, right of it in the expanded draw)."""
        try:
            want = torch.broadcast_shapes(tuple(sample_shape) + tuple(self.logits.shape),  # type: ignore[attr-defined]
                                          tuple(self.temperature.shape))  # type: ignore[attr-defined]
        except RuntimeError:
            return x
        if x.shape != want and [n for n in x.shape if n != 1] == [n for n in want if n != 1]:
            return x.reshape(want)
        return x

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        check_temperature(self, self.temperature)  # type: ignore[attr-defined]
        full = self._dgm_full_batch()
        if full is not self:
            return self._dgm_torch_shape(full.rsample(sample_shape), sample_shape)
        return super().rsample(sample_shape)  # type: ignore[misc]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        check_temperature(self, self.temperature)  # type: ignore[attr-defined]
        full = self._dgm_full_batch()
        if full is not self:
            return self._dgm_torch_shape(full.sample(sample_shape), sample_shape)
        return super().sample(sample_shape)  # type: ignore[misc]


class RelaxedBernoulliHardScore(_PositiveTemperature, dist.RelaxedBernoulli):
    """Relaxed (Concrete) samples, scored under the Bernoulli of the same logits.

    ``mean``, ``variance`` and ``entropy`` are those of that Bernoulli too (as Pixyz's), so that they agree with the
    scoring; torch's relaxed distribution defines none of them.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            check_value_shape(self, value)
        return closed_forms.bernoulli_log_prob({"logits": self.logits}, value, ())

    def _hard(self) -> dist.Bernoulli:
        base = self.base_dist
        probs = base.__dict__.get("probs")
        if probs is not None and base._param is probs:  # built from probabilities: those, not the logits torch
            return dist.Bernoulli(probs=probs, validate_args=False)  # clamps 0 and 1 to (eps, 1 - eps) (a finite
        return dist.Bernoulli(logits=self.logits, validate_args=False)  # KL to a zero probability; no gradient)

    @property
    def mean(self) -> Tensor:
        return self._hard().mean

    @property
    def variance(self) -> Tensor:
        return self._hard().variance

    def entropy(self) -> Tensor:
        return self._hard().entropy()


class RelaxedOneHotCategoricalHardScore(_PositiveTemperature, dist.RelaxedOneHotCategorical):
    """Relaxed (Gumbel-softmax) samples, scored under the one-hot categorical of their arg-max.

    ``mean``, ``variance`` and ``entropy`` are those of that one-hot categorical (torch's relaxed distribution
    defines none of them).
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            check_value_shape(self, value)
        logits = categorical_log_pmf(self.base_dist._categorical)
        logits, value = torch.broadcast_tensors(logits, value)
        lp = logits.gather(-1, value.argmax(-1, keepdim=True)).squeeze(-1)
        if not value.is_floating_point():  # (Pixyz's raises on an integer value; a one-hot one is scored here)
            return integer_one_hot_score(self, value, lp, logits.shape[-1], indices=False)
        if value.dtype != lp.dtype:  # a float64 value: a float64 score (Pixyz's)
            lp = lp.to(torch.promote_types(lp.dtype, value.dtype))
        # a NaN or infinite value has no arg-max class (torch.argmax takes NaN for the largest): NaN, as under Pixyz
        return torch.where(value.isfinite().all(-1), lp, lp.new_full((), math.nan))

    def _hard(self) -> dist.OneHotCategorical:
        categorical = self.base_dist._categorical
        probs = categorical.__dict__.get("probs")
        if probs is not None and categorical._param is probs:  # built from probabilities (see the Bernoulli's)
            return dist.OneHotCategorical(probs=probs, validate_args=False)
        return dist.OneHotCategorical(logits=self.logits, validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self._hard().mean

    @property
    def variance(self) -> Tensor:
        return self._hard().variance

    def entropy(self) -> Tensor:
        return self._hard().entropy()


_LOG_FLOOR = math.exp(-100.0)  # (float64: the probability below which a class scores -100)


def categorical_log_pmf(categorical: Any) -> Tensor:
    """The normalized log-probabilities of a torch ``Categorical``: from its probabilities, each logarithm clamped
    at -100 as ``binary_cross_entropy`` clamps it (:func:`log_of_probs`); from logits, torch's own."""
    probs = categorical.__dict__.get("probs")
    if probs is not None and categorical._param is probs:  # built from probabilities (see RelaxedBernoulli's _hard)
        return log_of_probs(probs)  # (float16: torch's logits, as log_of_probs says)
    return categorical.logits


def log_of_probs(probs: Tensor) -> Tensor:
    """The logarithms of normalized probabilities, each clamped at -100 as ``binary_cross_entropy`` clamps it
    (torch's logits clamp a probability to float's eps first: a class of probability 1e-30 would score log(eps) =
    -15.94, also inside a mixture, instead of -69.08). Computed in float32 at least (bfloat16's). A probability of
    exactly 0 scores -100, and in float32 or bfloat16 one below float32's smallest normal number (1.2e-38) the
    logarithm of that number, -87.3 (in float64, down to e^-100), each with a gradient of 0 (the logarithm's
    derivative there is 1/0 or overflows: a softmax that underflows would make every gradient NaN); a NaN
    probability scores NaN. float16 probabilities keep torch's logits, clamped at float16's eps (9.8e-4, Pixyz's
    numbers): below it the derivative 1/p overflows float16 (a NaN gradient through a softmax).

    Examples
    --------
    >>> log_of_probs(torch.tensor([0.0, 0.25, 0.75]))
    tensor([-100.0000,   -1.3863,   -0.2877])
    """
    if probs.dtype == torch.float16:
        return probs_to_logits(probs)
    if probs.is_cpu and not is_compiling() and not torch.jit.is_tracing() and not (
            torch._C._are_functorch_transforms_active()) and torch._is_any_true(probs < 0):
        # (built without validation: a network without its softmax; also under validation, as a distribution of
        # constants built once without it is reused; a NaN passes: it scores NaN) one reduction on the CPU, as the
        # Bernoulli's check; the caller names the distribution
        bad = probs[probs < 0].flatten()[0].item()
        raise OutOfRangeError(f"the probabilities hold a negative value (e.g. {bad:g})")
    work = probs if probs.dtype in (torch.float32, torch.float64) else probs.float()
    safe = work.clamp_min(torch.finfo(work.dtype).tiny).log()
    # -100 at and below e^-100 (float64; in float32 the clamp above stops at -87.3, so at 0 alone); NaN stays
    # NaN. (One where, no clamp of its result: torch 2.13's inductor gives a zero backward to a clamp_min after
    # this where at some batch sizes.)
    floor = _LOG_FLOOR if work.dtype == torch.float64 else 0.0
    out = torch.where(work <= floor, -100.0, safe)
    return out if out.dtype == probs.dtype else out.to(probs.dtype)


def _categorical_score(categorical: Any, index: Tensor) -> Tensor:
    """torch's ``Categorical.log_prob`` of class indices (broadcast alike), with :func:`categorical_log_pmf`."""
    return _score_index(categorical_log_pmf(categorical), index)


def _score_index(log_pmf: Tensor, index: Tensor) -> Tensor:
    """The entries of ``log_pmf`` at the class indices ``index`` (broadcast alike), as torch's ``log_prob``."""
    if index.dtype == torch.int64 and index.shape == log_pmf.shape[:-1]:  # (one index per row: nothing to broadcast)
        return log_pmf.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    index, log_pmf = torch.broadcast_tensors(index.long().unsqueeze(-1), log_pmf)
    return log_pmf.gather(-1, index[..., :1]).squeeze(-1)


class CategoricalIndex(dist.Categorical):
    """Pyro's ``Categorical`` (class indices) scored with the probabilities' own logarithm
    (:func:`categorical_log_pmf`)."""

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _categorical_score(self, value)


CategoricalIndex.__name__ = "Categorical"  # (printed as Pyro's; pickled under its own qualified name)


class OneHotCategoricalArgMax(dist.OneHotCategorical):
    """One-hot categorical that scores any vector by its arg-max, as Pixyz's Categorical does (a relaxed sample
    scored under a categorical prior), without torch's check that the value is one-hot; a one-hot value scores as
    under ``OneHotCategorical``, whose support (for Pyro's enumeration and guides) this keeps."""

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:  # the arg-max of a vector of another length is no class of this distribution
            check_value_shape(self, value)
        lp = _categorical_score(self._categorical, value.max(-1)[1])
        if not value.is_floating_point():  # (the float one-hot labels of training pay nothing here)
            return integer_one_hot_score(self, value, lp, self._categorical._num_events)
        return _finite_arg_max_score(lp, value, self._validate_args)


def _finite_arg_max_score(lp: Tensor, value: Tensor, validate: bool) -> Tensor:
    """``lp``, the scores of the float ``value``'s arg-maxes, NaN where a vector holds a NaN or infinite entry, which
    has no arg-max (``max`` would call it class 0); refused under validation (``validate``), as torch refuses it
    (also under ``vmap``)."""
    finite = value.isfinite().all(-1)
    if validate and not torch._is_all_true(finite):
        raise ValueError("The value argument must be finite: a NaN or infinite entry has no arg-max")
    return torch.where(finite, lp, lp.new_full((), math.nan))


@closed_forms.register_log_prob(OneHotCategoricalArgMax, event_dim=1, checks_value=True)
def _one_hot_categorical_log_prob(params: closed_forms.Params, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """:class:`OneHotCategoricalArgMax`'s score of the float one-hot (or relaxed) value ``x``, summed over ``dims``
    (the class dim, -1, among them), without its objects: torch's normalization of ``probs`` or ``logits``, then
    :func:`categorical_log_pmf`'s logarithms. Integer values, a last dim of another size and, under validation, a
    NaN or infinite value go to the object's ``log_prob`` (:class:`~.closed_forms.GeneralPath`), which scores or
    refuses them."""
    probs = params.get("probs")
    if probs is not None:
        if probs.dim() == 0:
            raise closed_forms.GeneralPath
        log_pmf = log_of_probs(probs / probs.sum(-1, keepdim=True))
    else:
        logits = params["logits"]
        if logits.dim() == 0:
            raise closed_forms.GeneralPath
        log_pmf = logits - logits.logsumexp(dim=-1, keepdim=True)
    if not x.is_floating_point() or x.dim() == 0 or x.shape[-1] != log_pmf.shape[-1]:
        raise closed_forms.GeneralPath
    lp = _finite_arg_max_score(_score_index(log_pmf, x.max(-1)[1]), x, closed_forms.validating())
    rest = tuple(d + 1 for d in dims if d != -1)  # (the class dim is consumed)
    return lp.sum(rest) if rest else lp


def integer_one_hot_score(d: Any, value: Tensor, lp: Tensor, k: int, indices: bool = True) -> Tensor:
    """``lp``, the score of an integer or bool ``value`` by its arg-max under a one-hot family ``d`` of ``k`` classes,
    where each of its vectors is one-hot (one 1, the rest 0), as Pixyz scores it; another vector is no one-hot
    vector nor soft label (class indices ``[0, 2, 1]`` or ``[0, 1, 1]``, whose arg-max would be taken as one label
    for every row): refused under validation, else NaN, as a NaN entry is. Float values never come here (the float
    one-hot labels of training pay nothing). ``indices``: the message names the family's option to score indices."""
    bad = ((value != 0) & (value != 1)).any(-1) | (value.sum(-1) != 1)
    if d._validate_args and bool(bad.any()):
        row = value.reshape(-1, value.shape[-1])[bad.reshape(-1).nonzero()[0, 0]] if bad.dim() else value
        # (the value's shape is in the caller's message: here it may be broadcast against the batch)
        raise NotOneHotError(f"{type(d).__name__}: the value of dtype {value.dtype} holds the vector {row.tolist()}, "
                             "which is not one-hot (one 1, the rest 0): a one-hot categorical "
                             f"scores one-hot vectors of {k} classes; class indices y are one-hot as "
                             f"F.one_hot(y, {k}).float()"
                             + (" (or score indices with Categorical(..., one_hot=False))" if indices else ""))
    return torch.where(bad, lp.new_full((), math.nan), lp)


def scored_distribution(d: Any) -> Any:
    """The distribution ``d`` scores under: a relaxed family's hard distribution (kept inside ``Independent``), or
    ``d``. The analytic KL of a relaxed family is that of its hard distribution (Pixyz's KullbackLeibler of a
    RelaxedBernoulli is the Bernoulli's); torch registers no KL of its relaxed distributions, and importing pyro_dgm
    registers nothing with torch.

    Examples
    --------
    >>> d = RelaxedBernoulliHardScore(torch.tensor(0.5), probs=torch.tensor([0.3]))
    >>> type(scored_distribution(d)).__name__
    'Bernoulli'
    """
    if isinstance(d, torch.distributions.Independent):
        inner = scored_distribution(d.base_dist)
        return d if inner is d.base_dist else torch.distributions.Independent(inner, d.reinterpreted_batch_ndims)
    if isinstance(d, (RelaxedBernoulliHardScore, RelaxedOneHotCategoricalHardScore)):
        return d._hard()
    return d


# What Pyro's views show (pyro.render_model's "x ~ Bernoulli", a distribution's repr): the family's name. The
# qualified names stay the classes' own, so pickle finds them.
BernoulliBCE.__name__ = "Bernoulli"
FactorizedBernoulliBCE.__name__ = "FactorizedBernoulli"
RelaxedBernoulliHardScore.__name__ = "RelaxedBernoulli"
RelaxedOneHotCategoricalHardScore.__name__ = "RelaxedCategorical"
OneHotCategoricalArgMax.__name__ = "OneHotCategorical"


class Normal(DistributionBase):
    r"""Normal distribution :math:`\mathcal{N}(x; \mu, \sigma^2)` with ``loc`` and ``scale``.

    Examples
    --------
    >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[2], name="p")
    >>> print(p.prob_text, tuple(p.sample(batch_n=3)["x"].shape))
    p(x) (3, 2)
    """

    pyro_dist = dist.Normal
    param_groups = (("loc",), ("scale",))
    distribution_name: ClassVar[str] = "Normal"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), loc: Any = None, scale: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, loc=loc, scale=scale, **kwargs)


class Laplace(DistributionBase):
    """Laplace distribution with ``loc`` and ``scale``.

    Examples
    --------
    >>> float(Laplace(loc=0., scale=1., var=["x"]).get_log_prob({"x": torch.zeros(1)}))  # log(1/2)
    -0.6931471824645996
    """

    pyro_dist = dist.Laplace
    param_groups = (("loc",), ("scale",))
    distribution_name: ClassVar[str] = "Laplace"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), loc: Any = None, scale: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, loc=loc, scale=scale, **kwargs)


class Bernoulli(DistributionBase):
    """Bernoulli distribution with ``probs`` (or ``logits``); scores any real value by cross-entropy, as Pixyz.

    Examples
    --------
    >>> p = Bernoulli(probs=torch.tensor([0.25, 0.5]), var=["x"])
    >>> p.get_log_prob({"x": torch.tensor([[1., 0.]])}).exp()
    tensor([0.1250])
    """

    pyro_dist = BernoulliBCE
    param_groups = (("probs", "logits"),)
    distribution_name: ClassVar[str] = "Bernoulli"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), probs: Any = None, *, logits: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, probs=probs, logits=logits, **kwargs)


class FactorizedBernoulli(Bernoulli):
    """Bernoulli that ignores features whose value is 0 (Vedantam et al. 2017, visually grounded imagination).

    Examples
    --------
    >>> p = FactorizedBernoulli(probs=torch.tensor([0.25, 0.5]), var=["x"])
    >>> p.get_log_prob({"x": torch.tensor([[1., 0.]])}).exp()
    tensor([0.2500])
    """

    pyro_dist = FactorizedBernoulliBCE
    distribution_name: ClassVar[str] = "FactorizedBernoulli"  # type: ignore[misc]


class _Relaxed(DistributionBase):
    """What the relaxed families share: Pixyz's parameters (``temperature`` after ``probs``/``logits`` in
    ``params_keys``, after ``features_shape`` positionally), no ``sample_mean`` draw, and ``set_dist(sampling=...)``."""

    param_groups = (("probs", "logits"), ("temperature",))  # Pixyz's params_keys order
    buffer_order = ("probs", "logits", "temperature")
    sample_mean_draws = False  # Pixyz: sample(sample_mean=True) raises NotImplementedError

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), temperature: Any = 0.1, probs: Any = None, *,
                 logits: Any = None, **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, temperature=temperature, probs=probs, logits=logits,
                         **kwargs)
        t = self._buffers.get("temperature")  # a constant (not a cond_var's name): Pixyz draws from a temperature
        if (isinstance(t, Tensor) and t.is_floating_point() and not t.is_meta  # (no values yet: probe p262)
                and not bool((t > 0).all())):  # <= 0: NaN or mirrored
            bad = t[~(t > 0)].flatten()[0].item()  # samples, silently
            raise ValueError(f"{describe(self)}: temperature must be positive, got {bad} (the relaxation's "
                             "temperature: small values, e.g. 0.1, approach the discrete distribution)")

    def set_dist(self, x_dict: Any = {}, batch_n: int | None = None, sampling: bool = False,  # noqa: B006
                 **kwargs: Any) -> None:
        """Pixyz's ``set_dist``: the relaxed distribution when ``sampling``, else the hard one it scores under."""
        self._dgm_set_torch_dist(x_dict, batch_n, not sampling, kwargs)

    def sample_mean(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        """The mean of the hard distribution it scores under (its probabilities)."""
        return self._dgm_hard_moment(super().sample_mean, x_dict, kwargs, lambda p: p, True)

    def sample_variance(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        """The variance of the hard distribution it scores under, ``probs * (1 - probs)`` per class."""
        return self._dgm_hard_moment(super().sample_variance, x_dict, kwargs, lambda p: p * (1 - p), False)

    def _dgm_hard_moment(self, moment: Any, x_dict: Any, kwargs: Any, of_probs: Any, bools: bool) -> Tensor:
        """``moment(x_dict, **kwargs)``; for integer probabilities (0 and 1 from an input; also bool ones where
        ``bools``), which torch's relaxed distribution cannot take, ``of_probs(probs)`` in their dtype: Pixyz's hard
        distribution takes them and gives its mean (the probabilities) and variance so."""
        try:
            return moment(x_dict, **kwargs)
        except DTypeError:
            probs = self.get_params(x_dict, **kwargs).get("probs")
            if not isinstance(probs, Tensor) or probs.is_floating_point() or probs.is_complex() or (
                    probs.dtype == torch.bool and not bools):  # (1 - p of bools: torch refuses it, as under Pixyz)
                raise
            return of_probs(probs)


class RelaxedBernoulli(_Relaxed):
    """Relaxed Bernoulli (binary Concrete) with ``temperature`` and ``probs``/``logits``.

    Samples are relaxed and reparameterized; ``get_log_prob`` scores them under the Bernoulli (as Pixyz).

    Examples
    --------
    >>> p = RelaxedBernoulli(temperature=0.1, probs=torch.tensor([0.3]), var=["x"])
    >>> x = p.sample(batch_n=4)["x"]
    >>> bool(((x > 0) & (x < 1)).all())
    True
    """

    pyro_dist = RelaxedBernoulliHardScore
    distribution_name: ClassVar[str] = "RelaxedBernoulli"  # type: ignore[misc]


class Categorical(DistributionBase):
    """Categorical distribution with ``probs`` (or ``logits``) over the last dim.

    With ``one_hot=True`` (Pixyz's default) values are one-hot vectors, else indices.

    Examples
    --------
    >>> p = Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=["y"])
    >>> p.get_log_prob({"y": torch.eye(3)}).exp()
    tensor([0.2000, 0.3000, 0.5000])
    >>> Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=["y"], one_hot=False).get_log_prob(
    ...     {"y": torch.tensor([2])}).exp()
    tensor([0.5000])
    """

    param_groups = (("probs", "logits"),)
    _dgm_class_params = ("probs", "logits")
    distribution_name: ClassVar[str] = "Categorical"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), probs: Any = None, *, logits: Any = None,
                 one_hot: bool = True, **kwargs: Any) -> None:
        self.one_hot = one_hot
        super().__init__(var, cond_var, name, features_shape, probs=probs, logits=logits, **kwargs)

    @property
    def one_hot(self) -> bool:
        """Whether values are one-hot vectors (else class indices); settable."""
        d = self.__dict__
        return d["_dgm_one_hot"] if "_dgm_one_hot" in d else d.get("one_hot", True)  # (a pickle of an older version
        # keeps it under its own name)

    @one_hot.setter
    def one_hot(self, value: bool) -> None:
        self.__dict__["_dgm_one_hot"] = value
        if "_dgm_b" in self.__dict__:  # built: the closed forms are the other class's now
            self._dgm_closed_forms()

    @property
    def pyro_dist(self) -> Any:  # type: ignore[override]
        """The Pyro class: :class:`OneHotCategoricalArgMax` or, with ``one_hot=False``, :class:`CategoricalIndex`;
        or the class set on this instance (a subclass's ``distribution_torch_class``, as for every family)."""
        own = self.__dict__.get("pyro_dist")
        if own is not None:
            return own
        return OneHotCategoricalArgMax if self.one_hot else CategoricalIndex

    @pyro_dist.setter
    def pyro_dist(self, value: Any) -> None:
        self.__dict__["pyro_dist"] = value


class RelaxedCategorical(_Relaxed):
    """Relaxed one-hot categorical (Gumbel-softmax) with ``temperature`` and ``probs``/``logits``.

    Samples are relaxed and reparameterized; ``get_log_prob`` scores the arg-max under the categorical.

    Examples
    --------
    >>> p = RelaxedCategorical(temperature=0.5, probs=torch.tensor([0.5, 0.5]), var=["y"])
    >>> float(p.get_log_prob({"y": torch.tensor([[0.9, 0.1]])}).exp())
    0.5
    """

    pyro_dist = RelaxedOneHotCategoricalHardScore
    _dgm_class_params = ("probs", "logits")
    distribution_name: ClassVar[str] = "RelaxedCategorical"  # type: ignore[misc]


class Multinomial(DistributionBase):
    """Multinomial distribution of ``total_count`` draws with ``probs`` (or ``logits``).

    Examples
    --------
    >>> p = Multinomial(total_count=2, probs=torch.tensor([0.5, 0.5]), var=["x"])
    >>> p.get_log_prob({"x": torch.tensor([[1., 1.]])}).exp()
    tensor([0.5000])
    """

    param_groups = (("probs", "logits"),)
    _dgm_class_params = ("probs", "logits")
    distribution_name: ClassVar[str] = "Multinomial"  # type: ignore[misc]

    def __init__(self, total_count: int = 1, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (),
                 name: str = "p", features_shape: Iterable[int] = torch.Size(), probs: Any = None, *,
                 logits: Any = None, **kwargs: Any) -> None:
        self._total_count = _count(total_count, f"Multinomial {name}")
        super().__init__(var, cond_var, name, features_shape, probs=probs, logits=logits, **kwargs)

    @property
    def total_count(self) -> int:
        """The number of draws (read-only, as in Pixyz)."""
        return self._total_count

    def pyro_dist(self, **params: Tensor) -> Any:  # type: ignore[override]
        n = self._total_count
        return dist.Multinomial(n, **params) if n else _NoTrials(0, **params)

    pyro_dist.has_rsample = False  # type: ignore[attr-defined]

    @property
    def distribution_torch_class(self) -> type:
        """``pyro.distributions.Multinomial`` (a ``torch.distributions.Multinomial``), built with ``total_count``."""
        return dist.Multinomial


def _count(total_count: Any, owner: str) -> int:
    """``total_count`` as a Python int: any integer (a numpy or 0-d torch integer too, as ``operator.index`` reads
    it) or an integral float (``3.0``), non-negative; Pixyz stores whatever it is given (and never uses it)."""
    try:
        n = operator.index(total_count)
    except TypeError:
        try:
            f = float(total_count) if getattr(total_count, "ndim", 0) == 0 else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if isinstance(total_count, (bool, str)) or not f.is_integer():
            raise ValueError(f"{owner}: total_count must be a non-negative int (the number of trials), got "
                             f"{total_count!r}") from None
        n = int(f)
    if n < 0:
        raise ValueError(f"{owner}: total_count must be a non-negative int (the number of trials), got "
                         f"{total_count!r}")
    return n


class _NoTrials(dist.Multinomial):
    """A multinomial of ``total_count=0``: every draw is the zero vector of counts (torch's ``sample`` asks its
    categorical for no draws, which it refuses)."""

    def sample(self, sample_shape: Any = torch.Size()) -> Tensor:
        return self._categorical._param.new_zeros(self._extended_shape(torch.Size(sample_shape)))


_NoTrials.__name__ = "Multinomial"


class Dirichlet(DistributionBase):
    """Dirichlet distribution with ``concentration`` over the last dim.

    Examples
    --------
    >>> p = Dirichlet(concentration=torch.ones(3), var=["x"])
    >>> float(p.get_log_prob({"x": torch.tensor([[0.2, 0.3, 0.5]])}).exp())  # uniform: 1 / area (1/2)
    2.0
    """

    pyro_dist = dist.Dirichlet
    param_groups = (("concentration",),)
    _dgm_class_params = ("concentration",)
    distribution_name: ClassVar[str] = "Dirichlet"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), concentration: Any = None, **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, concentration=concentration, **kwargs)


class Beta(DistributionBase):
    """Beta distribution with ``concentration1`` (alpha) and ``concentration0`` (beta).

    Examples
    --------
    >>> float(Beta(concentration1=2., concentration0=1., var=["x"]).get_log_prob({"x": torch.tensor([0.5])}).exp())
    1.0
    """

    pyro_dist = dist.Beta
    param_groups = (("concentration1",), ("concentration0",))
    distribution_name: ClassVar[str] = "Beta"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), concentration1: Any = None,
                 concentration0: Any = None, **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, concentration1=concentration1,
                         concentration0=concentration0, **kwargs)


class Gamma(DistributionBase):
    """Gamma distribution with ``concentration`` and ``rate``.

    Examples
    --------
    >>> float(Gamma(concentration=1., rate=2., var=["x"]).get_log_prob({"x": torch.tensor([0.])}).exp())
    2.0
    """

    pyro_dist = dist.Gamma
    param_groups = (("concentration",), ("rate",))
    distribution_name: ClassVar[str] = "Gamma"  # type: ignore[misc]

    def __init__(self, var: Sequence[str] = ("x",), cond_var: Sequence[str] | None = (), name: str = "p",
                 features_shape: Iterable[int] = torch.Size(), concentration: Any = None, rate: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(var, cond_var, name, features_shape, concentration=concentration, rate=rate, **kwargs)
