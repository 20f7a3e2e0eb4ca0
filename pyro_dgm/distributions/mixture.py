r"""Mixtures: :class:`MixtureModel` :math:`p(x) = \sum_k p(x|z=k)p(z=k)` with its posterior :math:`p(z|x)` (EM, GMM),
and :class:`MixtureOfNormal` :math:`q(z|x,y) = \sum_k w_k q_k(z|x_k)` (mixture of experts, Shi et al. 2019, MMVAE).

A mixture is one Pyro site whose distribution marginalizes the component exactly (log-sum-exp over the components),
so ``model``/``guide`` need no enumeration; samples pick a component, then draw from it. Asked for the component
too (``sample(return_hidden=True)``, or the option set on a graph) inside a Pyro handler, it makes two sites, the
component ``z`` and then ``x`` from the component it chose (``ChosenComponent``), so that ``poutine.condition``
on ``z`` chooses ``x``'s component; the posterior's draw of ``z`` is a site too.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from pyro import poutine
from pyro.distributions import Categorical as _PyroCategorical
from pyro.distributions import OneHotCategorical as _PyroOneHot
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor, nn
from torch.distributions import Categorical as _TorchCategorical
from torch.distributions import Distribution as _TorchDistribution

from pyro_dgm.distributions.composite import (ExpertWeights, OneSiteDistribution, OptionalInputs, check_inner,
                                              distribution_list, expand_root, own_site, refuse_bool_value, site_fn,
                                              unwrap, weight_list)
from pyro_dgm.distributions.base import Distribution, ValuesLike
from pyro_dgm.distributions.bindings import Binding, CallState, expand_batch_n
from pyro_dgm.distributions.closed_forms import validating
from pyro_dgm.distributions.early_options import check_early_shape, early_sampling_options
from pyro_dgm.distributions.effects import PYRO_STACK, ignores_sites, sites_hidden
from pyro_dgm.distributions.family import _one_hot_support, observed_refusal
from pyro_dgm.distributions.ops import ReplaceVarDistribution
from pyro_dgm.distributions.overrides import UserScored
from pyro_dgm.distributions.poe import expert_given
from pyro_dgm.utils.checks import (NotATensorError, NotOneHotError, OutOfRangeError, ShapeError, describe,
                                   ordered_union, refuse_param_dtype, sample_batch_n)
from pyro_dgm.utils.compat import is_compiling
from pyro_dgm.utils.latex import prob_text as _prob_text
from pyro_dgm.utils.random import STATE as _RNG
from pyro_dgm.utils.random import seeded_call, seeded_draws
from pyro_dgm.utils.attributes import refuse_pixyz_hooks

__all__ = ["MixtureModel", "PosteriorMixtureModel", "MixtureOfNormal", "MixtureDistribution"]


class MixtureDistribution(TorchDistribution):
    r"""A Pyro distribution :math:`\sum_k \pi_k p_k(x)` over components of any family with one event shape.

    Parameters
    ----------
    logits : Tensor
        ``(..., K)`` unnormalized log-weights.
    components : list of distributions
        ``K`` Pyro/torch distributions whose batch shapes broadcast with ``logits.shape[:-1]``.
    validate_args : bool, optional
        Taken for torch's signature and not used: the mixture checks nothing itself, and each component scores a
        value under its own validation.
    normalize : bool, optional
        ``False``: the log-density is :math:`\log \sum_k e^{l_k} p_k(x)` with the weights as given (a prior's own
        ``get_log_prob`` that is not normalized, as Pixyz's mixture adds it); the moments use the normalized
        weights.
    prior : distribution, optional
        Draws the components (one-hot or index values) where given: a prior's own ``sample``, as Pixyz's mixture
        calls it; else they are drawn from the weights.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> a, b = dist.Normal(torch.tensor(-1.0), 1.0), dist.Normal(torch.tensor(1.0), 1.0)
    >>> m = MixtureDistribution(torch.log(torch.tensor([0.25, 0.75])), [a, b])
    >>> x = torch.tensor(0.5)
    >>> expected = torch.log(0.25 * a.log_prob(x).exp() + 0.75 * b.log_prob(x).exp())
    >>> bool(torch.allclose(m.log_prob(x), expected)), round(float(m.mean), 4)
    (True, 0.5)
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, logits: Tensor, components: Sequence[Any], validate_args: bool | None = None,
                 normalize: bool = True, prior: Any = None) -> None:
        if logits.shape[-1] != len(components):
            raise ValueError(f"MixtureDistribution: {logits.shape[-1]} weights for {len(components)} components")
        event = components[0].event_shape
        for c in components:  # the longest event shape (a loop: Dynamo's max takes no key=)
            if len(c.event_shape) > len(event):
                event = c.event_shape
        if any(c.event_shape != event for c in components):
            components = [c if c.event_shape == event else _with_event(c, event) for c in components]
        batch = torch.broadcast_shapes(logits.shape[:-1], *(c.batch_shape for c in components))
        self.components = [c if c.batch_shape == batch else c.expand(batch) for c in components]
        total = logits.logsumexp(-1, keepdim=True)
        self.logits = (logits - total).expand(*batch, logits.shape[-1])
        self._dgm_total = None if normalize else total.expand(*batch, 1)  # (added back to the log-density)
        self._dgm_prior = prior
        super().__init__(batch, event, validate_args=False)

    @property
    def support(self) -> Any:  # type: ignore[override]
        return self.components[0].support

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "MixtureDistribution":
        batch_shape = torch.Size(batch_shape)
        total = self._dgm_total
        logits = self.logits if total is None else self.logits + total
        return MixtureDistribution(logits.expand(*batch_shape, self.logits.shape[-1]),
                                   [c.expand(batch_shape) for c in self.components], normalize=total is None,
                                   prior=self._dgm_prior)

    def component_log_prob(self, value: Tensor) -> Tensor:
        r"""The joint :math:`\log \pi_k + \log p_k(x)`, shape ``(..., K)``."""
        try:
            lps = [c.log_prob(value) for c in self.components]
        except RuntimeError:
            if value.numel():
                raise
            # an empty batch: torch's Independent cannot sum over event dims of no rows (reshape to [0, -1]);
            # Pixyz scores it as an empty tensor
            lps = [_log_prob_of_none(c, value) for c in self.components]
        lp = torch.stack(lps, dim=-1) + self.logits
        return lp if self._dgm_total is None else lp + self._dgm_total

    def log_prob(self, value: Tensor) -> Tensor:
        ev = self.event_shape
        if ev and value.shape[max(value.dim() - len(ev), 0):] != ev:
            # a value of other features (one feature beside 3) would be copied into every feature by broadcasting
            # (a value that pyro.condition gives the site reaches this without pyro_dgm's other checks)
            raise ShapeError(f"MixtureDistribution: the value of shape {tuple(value.shape)} does not end in the "
                             f"event shape {tuple(ev)} of the components")
        return self.component_log_prob(value).logsumexp(-1)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        shape = sample_shape + self.batch_shape
        with torch.no_grad():  # seeded_call: from the generator of pyro_dgm.utils.generator(...), if one is set
            xs = torch.stack([seeded_call(c, c.sample, sample_shape) for c in self.components], dim=len(shape))
            k = self._dgm_components(sample_shape, shape)
            idx = k.reshape(*shape, 1, *([1] * len(self.event_shape))).expand(*shape, 1, *self.event_shape)
            return xs.gather(len(shape), idx).squeeze(len(shape))

    def _dgm_components(self, sample_shape: torch.Size, shape: torch.Size) -> Tensor:
        """The component index of each draw (``shape``): from the prior's own ``sample`` where given, else the
        weights. A prior without inputs is asked for one row per draw (``batch_n``, as Pixyz's mixture asks it:
        plates and ``sample_shape`` are rows to it), one with inputs draws as its site does."""
        prior = self._dgm_prior
        if prior is None:
            return seeded_call(self, _TorchCategorical(logits=self.logits).sample, sample_shape)
        if getattr(prior, "sampler", None) is not None and not prior.inputs:
            rows = shape.numel()
            with sites_hidden():  # (the sites its super().sample() makes are not this draw's)
                out = prior.owner.sample({}, batch_n=rows, return_all=False)
            z = out.get(prior.var) if isinstance(out, Mapping) else None
            if not isinstance(z, Tensor):
                raise TypeError(f"{describe(prior.owner)}: sample() must return {{{prior.var!r}: tensor}}, got "
                                f"{sorted(out) if isinstance(out, Mapping) else type(out).__name__}")
            k = (z.argmax(-1) if prior.event_shape else z.long()).reshape(-1)
            if k.numel() not in (rows, 1):
                raise ShapeError(f"{describe(prior.owner)}: its own sample(batch_n={rows}) drew {k.numel()} "
                                 f"components ({prior.var!r} of shape {tuple(z.shape)}), where the mixture draws "
                                 f"{rows} (shape {tuple(shape)}): draw batch_n rows")
            return k.reshape(shape) if k.numel() == rows else k.reshape(()).expand(shape)
        if prior.batch_shape != self.batch_shape:  # (the mixture's rows: batch_n, plates, inputs)
            prior = prior.expand(self.batch_shape)
        z = prior.sample(sample_shape)
        k = z.argmax(-1) if prior.event_shape else z.long()
        try:
            return k.expand(shape)
        except RuntimeError:
            raise ShapeError(f"MixtureDistribution: the prior's own sample drew components of shape "
                             f"{tuple(k.shape)}, which do not broadcast to the draw's shape {tuple(shape)}") from None

    def _weights(self) -> Tensor:
        return self.logits.exp().reshape(*self.logits.shape, *([1] * len(self.event_shape)))

    @property
    def mean(self) -> Tensor:
        means = torch.stack([c.mean for c in self.components], dim=len(self.batch_shape))
        return (self._weights() * means).sum(len(self.batch_shape))

    @property
    def variance(self) -> Tensor:
        d = len(self.batch_shape)
        means = torch.stack([c.mean for c in self.components], dim=d)
        second = torch.stack([c.variance for c in self.components], dim=d) + means ** 2
        return (self._weights() * second).sum(d) - self.mean ** 2


class ChosenComponent(TorchDistribution):
    r"""The component of a :class:`MixtureDistribution` that each draw's component value ``z`` chose:
    :math:`p_{z}(x)`, the site of ``x`` after the site of ``z`` in a Pyro model that draws the component first (a
    mixture's ``sample(return_hidden=True)`` inside a handler).

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> m = MixtureDistribution(torch.zeros(2), [dist.Normal(torch.tensor(-5.), 1.), dist.Normal(torch.tensor(5.), 1.)])
    >>> d = ChosenComponent(m, torch.tensor([0., 1.]), one_hot=True)
    >>> round(float(d.log_prob(torch.tensor(5.))), 4) == round(float(dist.Normal(5., 1.).log_prob(torch.tensor(5.))), 4)
    True
    """

    arg_constraints: dict = {}

    def __init__(self, mixture: MixtureDistribution, z: Tensor, one_hot: bool, validate_args: bool | None = None
                 ) -> None:
        self._dgm_index = (z.argmax(-1) if one_hot else z.long())  # (one-hot values of any dtype; indices too)
        self._dgm_mixture = mixture
        batch = torch.broadcast_shapes(self._dgm_index.shape, mixture.batch_shape)
        super().__init__(batch, mixture.event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return all(c.has_rsample for c in self._dgm_mixture.components)

    @property
    def support(self) -> Any:  # type: ignore[override]
        return self._dgm_mixture.support

    def _pick(self, per_component: Tensor) -> Tensor:
        """Each element's entry of a ``(*batch, K, *event)`` stack."""
        d = len(self.batch_shape)
        index = self._dgm_index.expand(self.batch_shape)
        index = index.reshape(*self.batch_shape, 1, *([1] * (per_component.dim() - d - 1)))
        index = index.expand(*self.batch_shape, 1, *per_component.shape[d + 1:])
        return per_component.expand(*self.batch_shape, *per_component.shape[d:]).gather(d, index).squeeze(d)

    def _stack(self, fn: Any) -> Tensor:
        return torch.stack([fn(c) for c in self._dgm_mixture.components], dim=len(self._dgm_mixture.batch_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        lps = torch.stack([c.log_prob(value) for c in self._dgm_mixture.components], dim=-1)
        index = self._dgm_index.expand(lps.shape[:-1]).unsqueeze(-1)
        return lps.gather(-1, index).squeeze(-1)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape) if self.has_rsample else self._draw(sample_shape, False)

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        return self._draw(sample_shape, True)

    def _draw(self, sample_shape: Sequence[int], reparam: bool) -> Tensor:
        if torch.Size(sample_shape):
            return self.expand(torch.Size(sample_shape) + self.batch_shape)._draw((), reparam)
        return self._pick(self._stack(lambda c: seeded_call(c, c.rsample if reparam else c.sample, torch.Size())))

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "ChosenComponent":
        batch_shape = torch.Size(batch_shape)
        return ChosenComponent(self._dgm_mixture.expand(batch_shape), self._dgm_index.expand(batch_shape), False)

    @property
    def mean(self) -> Tensor:
        return self._pick(self._stack(lambda c: c.mean))

    @property
    def variance(self) -> Tensor:
        return self._pick(self._stack(lambda c: c.variance))


def _log_prob_of_none(c: Any, value: Tensor) -> Tensor:
    """``c.log_prob(value)`` of an empty ``value``, whose event dims a torch ``Independent`` cannot sum (it reshapes
    to ``[0, -1]``): the sum is taken here, over the element-wise log-density of the wrapped distribution."""
    if isinstance(c, torch.distributions.Independent):
        lp = _log_prob_of_none(c.base_dist, value)
        n = c.reinterpreted_batch_ndims
        return lp.sum(tuple(range(-n, 0))) if n else lp
    if isinstance(c, _Reshaped):
        return _log_prob_of_none(c.base, c._as(value, c.event_shape, c.base.event_shape))
    return c.log_prob(value)


def _features_as_event(d: Any, c: Any) -> Any:
    """Component ``c`` of distribution ``d`` with ``d``'s feature dims as event dims where its constants lost their
    batch dim of 1 (an EM step's ``d.loc = new_loc`` of shape ``features_shape``): Pixyz's component scores such a
    value summed over its features, as it scores it alone."""
    core = unwrap(d)[0]
    fs = tuple(getattr(core, "_features_shape", ()) or ())
    if (fs and not core.input_var and not c.event_shape and len(c.batch_shape) == len(fs)
            and tuple(c.batch_shape) == fs):
        return c.to_event(len(fs))
    return c


def _with_event(c: Any, event: torch.Size) -> Any:
    """Component ``c`` with the mixture's event shape, where Pixyz mixes it: as many elements (features ``()`` beside
    ``(1,)``), or a constant of features ``()``, whose value is that of each feature (iid features)."""
    if c.event_shape.numel() == event.numel():
        return _Reshaped(c, event)
    if not c.event_shape and all(n == 1 for n in c.batch_shape):
        return c.expand(c.batch_shape + event).to_event(len(event))  # (1,) + (3,): the batch dim aligns with 1s
    raise ValueError(f"MixtureDistribution: components must share one event shape, got {tuple(c.event_shape)} "
                     f"and {tuple(event)}")


class _Reshaped(TorchDistribution):
    """A component seen with the mixture's event shape, which has as many elements as its own (a constant
    ``Normal`` of features ``()`` beside one of features ``(1,)``, which Pixyz mixes)."""

    arg_constraints: dict = {}

    def __init__(self, base: Any, event_shape: torch.Size) -> None:
        self.base = base
        super().__init__(base.batch_shape, event_shape, validate_args=False)

    @property
    def support(self) -> Any:  # type: ignore[override]
        return self.base.support

    def _as(self, t: Tensor, old: torch.Size, new: torch.Size) -> Tensor:
        return t.reshape(t.shape[:t.dim() - len(old)] + new)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "_Reshaped":
        return _Reshaped(self.base.expand(batch_shape), self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(self._as(value, self.event_shape, self.base.event_shape))

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        return self._as(self.base.sample(sample_shape), self.base.event_shape, self.event_shape)

    @property
    def mean(self) -> Tensor:
        return self._as(self.base.mean.expand(self.base.batch_shape + self.base.event_shape), self.base.event_shape,
                        self.event_shape)

    @property
    def variance(self) -> Tensor:
        return self._as(self.base.variance.expand(self.base.batch_shape + self.base.event_shape),
                        self.base.event_shape, self.event_shape)


class _Mixture(OneSiteDistribution):
    """What the mixtures share: one site whose distribution is a :class:`MixtureDistribution`."""

    _dgm_kind = "mixture"

    def _dgm_mixture(self, b: Binding, values: Mapping[str, Any], ctx: CallState) -> MixtureDistribution:
        raise NotImplementedError

    @property
    def has_reparam(self) -> bool:
        return False

    def _dgm_fn(self, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                value: Tensor | None = None) -> tuple[Any, Any]:
        fn = self._dgm_mixture(b, values, ctx)
        if expand:
            fn = expand_root(self, fn, b, ctx)
        return fn, fn

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        fn, _ = self._dgm_fn(b, values, ctx)
        name = b.var[0]
        try:
            value = self._dgm_record(name, fn.mean, fn.event_dim) if ctx.sample_mean else self._dgm_site(name, fn, ctx)
        except (RuntimeError, NotImplementedError, TypeError) as e:  # (a component given integer or bool inputs)
            refuse_param_dtype(self, e, fn, f"draw {name!r}")
            raise
        if (isinstance(value, Tensor) and not value.is_floating_point() and _TorchDistribution._validate_args
                and _one_hot_support(fn) and not torch.jit.is_tracing()):
            observed_refusal(self, name, fn, value)  # class indices observed under one-hot components: named now,
            # as a family's site names them (its components draw floats, so only data and pyro.condition come here)
        values[name] = value
        ctx.event_dims[name] = fn.event_dim

    def dist(self, x_dict: ValuesLike = None, batch_n: int | None = None, **kwargs: Any) -> MixtureDistribution:
        """The :class:`MixtureDistribution` given the inputs (event dims: the features)."""
        values = self._dgm_input_dict(x_dict)
        return self._dgm_fn(self._dgm_binding, values, CallState(batch_n=batch_n, kwargs=kwargs))[0]

    def sample_mean(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        """The mixture's mean :math:`\\sum_k \\pi_k \\mu_k` given the inputs."""
        return self._dgm_mixture(self._dgm_binding, self._dgm_input_dict(x_dict), CallState(kwargs=kwargs)).mean

    def sample_variance(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        """The mixture's variance (law of total variance) given the inputs."""
        return self._dgm_mixture(self._dgm_binding, self._dgm_input_dict(x_dict), CallState(kwargs=kwargs)).variance

    def get_entropy(self, x_dict: ValuesLike = None, sum_features: bool = True,
                    feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        raise NotImplementedError(f"{describe(self)}: the entropy of a mixture has no closed form; estimate it "
                                  "from samples")


def _per_first_dim(table: Tensor) -> Tensor:
    """A ``(*batch, K)`` table of per-point log-densities summed over the batch dims after the first, as Pixyz sums
    each component's log-density of ``x`` with extra leading dims (``(L, B, D)``: ``(L, K)``, which ``get_log_prob``'s
    ``(L,)`` matches)."""
    return table.flatten(1, -2).sum(1) if table.dim() > 2 else table


class MixtureModel(_Mixture):
    r"""A mixture model :math:`p(x) = \sum_k p(x|z=k)\,p(z=k)` with a categorical prior over the component ``z``.

    The component is marginalized exactly: ``get_log_prob`` is :math:`\log\sum_k` (with ``return_hidden=True``, the
    joint :math:`\log p(x, z=k)` of shape ``(K, batch)``, as Pixyz), and :meth:`posterior` is :math:`p(z|x)`, a
    categorical distribution that samples and scores (the E-step of EM).

    Parameters
    ----------
    distributions : list of Distribution
        The components :math:`p(x|z=k)`; they share one variable.
    prior : Categorical
        :math:`p(z)` over ``len(distributions)`` categories.
    name : str, default ``"p"``

    Raises
    ------
    ValueError
        If the components generate different variables, or the prior is not categorical over ``K`` categories.

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal, Categorical
    >>> comps = [Normal(loc=torch.tensor([float(k)]), scale=1., var=["x"], name=f"p_{k}") for k in range(2)]
    >>> p = MixtureModel(comps, Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="p_{z}"))
    >>> print(p.prob_joint_factorized_and_text)
    p(x) = p_{0}(x|z=0)p_{z}(z=0) + p_{1}(x|z=1)p_{z}(z=1)
    >>> x = torch.tensor([[0.5]])
    >>> bool(torch.allclose(p.get_log_prob({"x": x}).exp(),
    ...                     0.3 * comps[0].get_log_prob({"x": x}).exp() + 0.7 * comps[1].get_log_prob({"x": x}).exp()))
    True
    >>> p.posterior().get_params({"x": x})["probs"]  # equal likelihoods at 0.5: the prior
    tensor([[0.3000, 0.7000]])
    """

    _dgm_ignores_feature_options = True  # (Pixyz's MixtureModel scores log p(x) whatever they say; its
    # MixtureOfNormal, a Normal over split batch rows, would give per-feature values: refused there)

    def __init__(self, distributions: Sequence[Distribution], prior: Distribution, name: str = "p") -> None:
        owner = f"MixtureModel {name}"
        comps = distribution_list(owner, "distributions", distributions, "component", one=False)
        if not comps:
            raise ValueError(f"{owner}: expected at least one component distribution")
        for i, d in enumerate(comps):
            check_inner(owner, d, f"component {i}")
        var = list(comps[0].var)
        for i, d in enumerate(comps):
            if list(d.var) != var or len(var) != 1:
                raise ValueError(f"{owner}: all distributions must generate the same one variable; component 0 "
                                 f"generates {var}, component {i} {d.prob_text} generates {d.var}")
        check_inner(owner, prior, "prior")
        if prior.distribution_name != "Categorical" or len(prior.var) != 1:
            raise ValueError(f"{owner}: the prior must be a Categorical distribution of one variable, got "
                             f"{describe(prior)}")
        k = prior.features_shape[-1] if prior.features_shape else None
        if k is not None and k != len(comps):
            raise ValueError(f"{owner}: the prior has {k} categories but there are {len(comps)} components")
        hidden = prior.var[0]
        cond = [v for v in ordered_union(prior.cond_var, *(d.cond_var for d in comps)) if v not in var]
        if hidden in cond:  # (the same name as the data variable is allowed, as in Pixyz: Categorical's default
            # var is ["x"]; the prior is scored on its categories, never on the data)
            raise ValueError(f"{owner}: the component variable {hidden!r} cannot be an input")
        super().__init__(var=var, cond_var=cond, name=name)  # Pixyz prints no features_shape for a mixture
        self.distributions = nn.ModuleList(comps)
        self.prior = prior
        self._hidden_var = [hidden]

    @property
    def hidden_var(self) -> list[str]:
        """The component variable (the prior's)."""
        return self._hidden_var

    @property
    def distribution_name(self) -> str:
        return "Mixture Model"

    @property
    def prob_factorized_text(self) -> str:
        x, z = self._var[0], self._hidden_var[0]
        pc = f"|{','.join(self.prior.cond_var)}" if self.prior.cond_var else ""  # (conditional parts: pyro_dgm's,
        return " + ".join(f"{d.name}({x}|{z}={k}{''.join(f',{v}' for v in d.cond_var)}){self.prior.name}({z}={k}{pc})"
                          for k, d in enumerate(self.distributions))  # each with its own condition, p(x|z=0,y))

    def _dgm_mixture(self, b: Binding, values: Mapping[str, Any], ctx: CallState) -> MixtureDistribution:
        m = self._dgm_mapping(b)
        comps = [own_site(d, m, values, ctx, _features_as_event(d, site_fn(d, m, values, ctx, False)[0]))
                 for d in self.distributions]
        prior_fn = own_site(self.prior, m, values, ctx, site_fn(self.prior, m, values, ctx, False)[0])  # (its own
        k = len(comps)  # get_log_prob, if any, scores the weights: Pixyz's mixture calls it)
        nb = len(prior_fn.batch_shape)
        if getattr(unwrap(self.prior)[0], "one_hot", True):
            if prior_fn.event_shape[-1:] != (k,):
                raise ValueError(f"{describe(self)}: the prior has {tuple(prior_fn.event_shape)[-1:]} categories but "
                                 f"there are {k} components")
            support = torch.eye(k, dtype=comps[0].mean.dtype, device=comps[0].mean.device)
            support = support.reshape(k, *([1] * nb), k)
        else:
            support = torch.arange(k, device=comps[0].mean.device).reshape(k, *([1] * nb))
        try:
            logits = prior_fn.log_prob(support).movedim(0, -1)
        except OutOfRangeError as e:  # (weights that no softmax made, built without validation)
            raise OutOfRangeError(f"{describe(self)}: cannot score the weights of its prior {describe(self.prior)}: "
                                  f"{e}") from e
        x = values.get(b.var[0])
        if (isinstance(x, Tensor) and x.dim() >= 2 and ctx.obs is None and (not PYRO_STACK or ignores_sites(PYRO_STACK))
                and all(not c.event_shape and all(n == 1 for n in c.batch_shape) for c in comps)):
            # constant components of features () scoring x of shape [N, D...]: as in Pixyz, one component per row,
            # whose features are iid (p(x_n) = sum_k pi_k prod_d p_k(x_nd)), not one per feature
            comps = [_with_event(c, x.shape[1:]) for c in comps]
        own = isinstance(prior_fn, UserScored)  # (a prior with its own get_log_prob or sample: Pixyz's mixture calls
        return MixtureDistribution(logits, comps, normalize=not own, prior=prior_fn if own else None)  # them)

    def get_log_prob(self, x_dict: ValuesLike, return_hidden: bool = False, sum_features: bool = True,
                     feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        r""":math:`\log p(x)`, or with ``return_hidden=True`` the joint :math:`\log p(x, z=k)` of shape ``(K, batch)``
        (``(K, L)`` for ``x`` of shape ``(L, B, D)``: each row's points summed, Pixyz's shape).
        """
        if not return_hidden:  # (options that would change log p(x) are ignored, with a warning, as one site's)
            return super().get_log_prob(x_dict, sum_features=sum_features, feature_dims=feature_dims, **kwargs)
        values = self._dgm_input_dict(x_dict, self._var + self._dgm_input_var)
        fn = self._dgm_mixture(self._dgm_binding, values, CallState(kwargs=kwargs))
        return _per_first_dim(fn.component_log_prob(values[self._var[0]])).movedim(-1, 0)

    def _dgm_pixyz_order(self, b: Binding, ctx: CallState) -> bool:
        """Whether this draw can take Pixyz's order of random numbers (:meth:`_dgm_pixyz_draw`): no inputs, no
        ``sample_shape``, not a Pyro model run and no handler listening."""
        return (not b.input_var and ctx.obs is None and not ctx.sample_mean and not ctx.sample_shape
                and (not PYRO_STACK or ignores_sites(PYRO_STACK)))

    def _dgm_pixyz_draw(self, b: Binding, values: Mapping[str, Any], ctx: CallState) -> tuple[Tensor, Tensor, int]:
        """Pixyz's draw: the component ``z`` of every batch element from the prior, then each element's ``x`` from
        its component in turn (so the same seed gives Pixyz's values). Returns ``x``, ``z`` and ``x``'s event dims."""
        if _RNG.generator is not None:  # the draws from the generator of pyro_dgm.utils.generator(...)
            with seeded_draws(self):
                return self._dgm_pixyz_draw(b, values, ctx)
        m = self._dgm_mapping(b)
        prior_fn = own_site(self.prior, m, values, ctx, site_fn(self.prior, m, values, ctx, False)[0])  # (its own
        one_hot = getattr(unwrap(self.prior)[0], "one_hot", True)  # sample, if any, draws the components)
        k = len(self.distributions)
        if one_hot and prior_fn.event_shape[-1:] != (k,):  # (as the mixture's density says: a draw would index
            raise ValueError(f"{describe(self)}: the prior has {tuple(prior_fn.event_shape)[-1:]} categories but "
                             f"there are {k} components")  # the components wrongly, or only some of them)
        if ctx.batch_n is not None:
            prior_fn = expand_batch_n(self, prior_fn, ctx.batch_n)
        z = prior_fn.sample()
        index = (z.argmax(-1) if one_hot else z).reshape(-1).tolist()
        row = CallState(None, (), ctx.reparam, False, None, ctx.kwargs)  # (each component draws one row, as Pixyz's
        comps = [own_site(d, m, values, row, site_fn(d, m, values, row, False)[0])  # d.sample() does: also one
                 for d in self.distributions]  # whose own set_dist would expand to batch_n)
        use_r = ctx.reparam

        def draw(k: int) -> Tensor:
            d = self.distributions[k]
            if isinstance(d, MixtureModel) and d._dgm_pixyz_order(d._dgm_binding, row):  # (a mixture as a component
                return d._dgm_pixyz_draw(d._dgm_binding, values, row)[0]  # draws as Pixyz's sample(): its component
                # first, then that component's value only)
            return comps[k].rsample() if use_r and comps[k].has_rsample else comps[k].sample()

        xs = [draw(k) for k in index]
        if len({x.shape[1:] for x in xs}) > 1:  # (torch.cat's raw error, as under Pixyz, which draws rows apart)
            shapes = ", ".join(f"{describe(d)}: {tuple((c.batch_shape + c.event_shape)[1:])}"
                               for d, c in zip(self.distributions, comps))
            raise ShapeError(f"{describe(self)}: cannot draw a batch whose rows come from components of different "
                             f"feature shapes ({shapes}); give the components one features_shape")
        return torch.cat(xs, dim=0), z, comps[0].event_dim

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        hidden = bool(ctx.kwargs.get("return_hidden")) if ctx.kwargs else False  # graph.set_option(...)
        if not self._dgm_pixyz_order(b, ctx):
            if hidden:
                self._dgm_draw_both(b, values, ctx)
            else:
                super()._dgm_draw_with(b, values, ctx)
            return
        x, z, ev = self._dgm_pixyz_draw(b, values, ctx)
        values[b.var[0]] = x
        ctx.event_dims[b.var[0]] = ev
        if hidden:
            values[self._hidden_var[0]] = z

    def _dgm_draw_both(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        """Draw ``x`` and its component ``z`` as two Pyro sites (every random choice is one): ``z`` from the weights
        and then ``x`` from the component it chose, so that a handler sees both (``poutine.condition`` on ``z``
        chooses ``x``'s component, as in a Pyro model that draws the component first). Where ``x`` is given (a
        model run with data), or the mean is asked for, or the prior draws the components itself, ``x`` is the
        mixture's site as without ``return_hidden`` and ``z`` a site drawn from the posterior :math:`p(z|x)`: a
        draw from the same joint."""
        fn, _ = self._dgm_fn(b, values, ctx)
        x_name, z_name = b.var[0], self._hidden_var[0]
        kind = _PyroOneHot if getattr(unwrap(self.prior)[0], "one_hot", True) else _PyroCategorical
        from_x = (z_name == x_name or ctx.sample_mean or fn._dgm_prior is not None or fn._dgm_total is not None
                  or (ctx.obs is not None and x_name in ctx.obs))
        if from_x:  # x first, then z from p(z|x)
            super()._dgm_draw_with(b, values, ctx)
            x = values[x_name]
            if not isinstance(x, Tensor):
                return
            lp = fn.component_log_prob(x)
            z_fn = kind(logits=lp - lp.logsumexp(-1, keepdim=True), validate_args=False)
            if z_name == x_name:  # (the component named as the data, as Pixyz allows: returned under that name,
                values[z_name] = seeded_call(self, z_fn.sample, torch.Size())  # no second site of one name)
                return
        else:
            z_fn = kind(logits=fn.logits, validate_args=False)
        # (the draw has no graph, as a categorical's; the site's distribution keeps its graph to the weights, which
        # a plate's expansion inside pyro.sample must not lose)
        z = self._dgm_site(z_name, z_fn, CallState(None, (), False, False, ctx.obs, ctx.kwargs))
        values[z_name] = z
        ctx.event_dims[z_name] = 1 if kind is _PyroOneHot else 0
        if not from_x:
            values[x_name] = self._dgm_site(x_name, ChosenComponent(fn, z, kind is _PyroOneHot), ctx)
            ctx.event_dims[x_name] = fn.event_dim

    def sample(self, x_dict: ValuesLike = None, batch_n: int | None = None, sample_shape: Sequence[int] = torch.Size(),
               return_all: bool = True, return_hidden: bool = False, sample_mean: bool = False, reparam: bool = False,
               **kwargs: Any) -> dict[str, Tensor]:
        """Draw ``x`` (see :meth:`Distribution.sample`); with ``return_hidden=True`` also its component ``z``.

        As in Pixyz, each element's component is drawn from the prior and then its ``x`` from that component, so
        the same seed gives Pixyz's values. With ``sample_shape`` (which Pixyz ignores) or inside a Pyro model,
        ``x`` is drawn from the mixture at once and ``z`` (if asked for) from the posterior :math:`p(z|x)`, which
        is a draw from the same joint. ``sample_mean=True`` gives the mixture's mean (Pixyz: the mean of the
        component with the highest prior weight, which is not the mixture's mean).
        """
        if kwargs and ("batch_size" in kwargs or "shape" in kwargs):  # the early API reference's names
            batch_n, sample_shape, kwargs, expected = early_sampling_options(self, batch_n, sample_shape, kwargs)
            if expected is not None:  # (shape= was read: the call below does not read it again)
                out = MixtureModel.sample(self, x_dict, batch_n, sample_shape, return_all, return_hidden,
                                          sample_mean, reparam, **kwargs)
                check_early_shape(self, out, expected)
                return out
        if batch_n is not None and (type(batch_n) is not int or batch_n < 1):
            batch_n = sample_batch_n(self, batch_n)
        if return_hidden and not sample_mean and not sample_shape:
            values = self._dgm_input_dict(x_dict)
            ctx = CallState(batch_n, sample_shape, reparam, sample_mean, None, kwargs)
            if self._dgm_pixyz_order(self._dgm_binding, ctx):
                x, z, _ = self._dgm_pixyz_draw(self._dgm_binding, values, ctx)
                out = {self._var[0]: x, self._hidden_var[0]: z}
                return {**values, **out} if return_all else out
        if return_hidden:  # (both drawn as sites: _dgm_draw_both)
            kwargs = {**kwargs, "return_hidden": True}
        out = super().sample(x_dict, batch_n=batch_n, sample_shape=sample_shape, return_all=True, reparam=reparam,
                             sample_mean=sample_mean, **kwargs)
        keep = [*self._var, *self._hidden_var] if return_hidden else list(self._var)
        return out if return_all else {v: out[v] for v in keep}

    def posterior(self, name: str | None = None) -> "PosteriorMixtureModel":
        """The posterior over the component, :math:`p(z|x) = p(x, z)/p(x)`."""
        return PosteriorMixtureModel(self, name=name)


class _ScoresItsTable:
    """Mixin of :class:`PosteriorMixtureModel` and its renamings: ``replace_var`` gives a
    :class:`RenamedPosteriorMixtureModel`, whose ``get_log_prob`` is the posterior's (the ``(K, N)`` table), as Pixyz's
    renamed factor passes it on."""

    def replace_var(self, **replace_dict: str) -> Distribution:
        r = super().replace_var(**replace_dict)  # type: ignore[misc]
        if type(r) is ReplaceVarDistribution and isinstance(r.p, _ScoresItsTable):
            out = RenamedPosteriorMixtureModel(r.p, r.replace_dict)
            out.global_options = r.global_options
            return out
        return r


class PosteriorMixtureModel(_ScoresItsTable, Distribution):
    r"""The posterior :math:`p(z|x) = p(x, z)/p(x)` of a :class:`MixtureModel` over its component ``z``, sharing the
    mixture's distributions.

    Laid out as Pixyz lays it out: its ``var`` is the data variable (``x``), and ``get_log_prob({"x": x})`` (so
    ``posterior.prob().eval({"x": x})``, EM's E-step) is the table :math:`\log p(z=k|x_n)` of shape ``(K, N)``.
    Beyond Pixyz: given ``z`` too, ``get_log_prob`` is :math:`\log p(z|x)` per element; ``get_params`` gives the
    responsibilities as ``probs`` of shape ``(N, K)``; ``sample`` draws ``z`` given ``x`` (Pixyz's raises).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal, Categorical
    >>> comps = [Normal(loc=torch.tensor([float(k)]), scale=1., var=["x"]) for k in range(2)]
    >>> post = MixtureModel(comps, Categorical(probs=torch.tensor([0.5, 0.5]), var=["z"])).posterior()
    >>> print(post.prob_joint_factorized_and_text)
    p(z|x) = \frac{p(z,x)}{p(x)}
    >>> post.prob().eval({"x": torch.tensor([[0.0], [1.0]])})  # (K, N): e^{-1/2} : 1 and 1 : e^{-1/2}
    tensor([[0.6225, 0.3775],
            [0.3775, 0.6225]])
    >>> post.get_params({"x": torch.tensor([[0.0]])})["probs"]
    tensor([[0.6225, 0.3775]])
    """

    distribution_name = "Mixture Model (Posterior)"  # type: ignore[assignment]

    def __init__(self, p: MixtureModel, name: str | None = None) -> None:
        super().__init__(var=list(p.var), cond_var=list(p.cond_var), name=p.name if name is None else name)
        self.p = p
        self._hidden_var = list(p.hidden_var)
        self._one_hot = getattr(unwrap(p.prior)[0], "one_hot", True)

    @property
    def hidden_var(self) -> list[str]:
        """The component variable."""
        return self._hidden_var

    @property
    def has_reparam(self) -> bool:
        return False

    @property
    def prob_text(self) -> str:
        return _prob_text(self._name, self._hidden_var, [*self._var, *self._cond_var])

    @property
    def _dgm_factor_text(self) -> str:
        """As a factor of a product, Pixyz's text from the name and the variables (``p(x)``; its variable is the
        mixture's ``x``)."""
        return _prob_text(self._name, self._var, self._cond_var)

    @property
    def prob_factorized_text(self) -> str:
        z, x = self._hidden_var[0], self._var[0]
        c = f"|{','.join(self.p._cond_var)}" if self.p._cond_var else ""  # (conditional components: p(z,x|y))
        return f"\\frac{{{self._name}({z},{x}{c})}}{{{self._name}({x}{c})}}"

    def _dgm_log_post(self, values: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Tensor:
        r""":math:`\log p(z=k|x)`, shape ``(..., K)``."""
        mixture = self.p._dgm_mixture(self.p._dgm_binding, values, CallState(kwargs=kwargs))
        x = values[self._var[0]]
        self.p._dgm_check_features(self._var[0], x, mixture.event_shape)  # as the mixture's density checks it
        try:
            joint = mixture.component_log_prob(x)
        except RuntimeError as e:
            refuse_bool_value(self, self._var[0], x, e)
            raise
        return joint - joint.logsumexp(-1, keepdim=True)

    def _dgm_values(self, x_dict: ValuesLike) -> dict[str, Any]:
        return self._dgm_input_dict(x_dict, self._var + [v for v in self._dgm_input_var if v not in self._var])

    def get_log_prob(self, x_dict: ValuesLike, sum_features: bool = True, feature_dims: Sequence[int] | None = None,
                     **kwargs: Any) -> Tensor:
        r"""Pixyz's ``(K, N)`` table of :math:`\log p(z=k|x_n)`; given ``z`` as well, :math:`\log p(z|x)`."""
        values = self._dgm_values(x_dict)
        kwargs = {k: v for k, v in kwargs.items() if k != "return_hidden"}
        logp = self._dgm_log_post(values, kwargs)
        z = values.get(self._hidden_var[0])
        if z is None:
            return _per_first_dim(logp).movedim(-1, 0)
        out = self._dgm_score_component(logp, z)
        return out.flatten(1).sum(1) if out.dim() > 1 else out  # (points with a leading dim: each row's summed)

    def _dgm_score_component(self, logp: Tensor, z: Any) -> Tensor:
        r""":math:`\log p(z|x)` of a given component value ``z`` (one-hot, or an index), from the table ``logp`` of
        shape ``(*batch, K)``; a value of another shape or out of range is refused, naming it (torch's broadcasting
        would sum several classes' log-posteriors, or its gather fail naming nothing)."""
        name, k, batch = self._hidden_var[0], logp.shape[-1], logp.shape[:-1]
        if not isinstance(z, Tensor):
            raise NotATensorError(f"{describe(self)}: the value of {name!r} must be a tensor, got {type(z).__name__}")
        want = (f"one-hot values of shape {tuple(logp.shape)}: batch shape {tuple(batch)}, feature shape ({k},)"
                if self._one_hot else f"component indices 0..{k - 1} of shape {tuple(batch)}")
        if self._one_hot and (z.dim() == 0 or z.shape[-1] != k or z.dim() > len(batch) + 1 and z.shape[-2] == 1
                              and (not batch or batch[-1] != 1)) or not self._one_hot and (
                z.dim() > len(batch) and z.shape[-1] == 1 and (not batch or batch[-1] != 1)):
            raise ShapeError(f"{describe(self)}: the value of {name!r} has shape {tuple(z.shape)}, but the posterior "
                             f"is over {k} components ({want})")
        try:
            shape = torch.broadcast_shapes(z.shape[:-1] if self._one_hot else z.shape, batch)
        except RuntimeError:
            raise ShapeError(f"{describe(self)}: the value of {name!r} has shape {tuple(z.shape)}, which does not "
                             f"broadcast with the batch shape {tuple(batch)} of the other inputs ({want})") from None
        if self._one_hot:
            weighted = torch.where((z == 0) & logp.isneginf(), 0.0, logp) * z  # (a component of log-posterior
            if z.is_floating_point():  # -inf that z leaves out adds 0, not -inf * 0 = NaN; elsewhere the gradient
                return weighted.sum(-1)  # with respect to z is the log-posterior)
            one_hot = ((z == 0) | (z == 1)).all(-1) & (z.sum(-1) == 1)  # (integer values: indices would be read as
            if not is_compiling() and validating() and z.numel() and not bool(one_hot.all()):  # weights)
                raise NotOneHotError(f"{describe(self)}: the value of {name!r} holds integer vectors that are not "
                                     f"one-hot ({want}); for component indices z of shape {tuple(batch)}, give "
                                     f"F.one_hot(z, {k}).float()")  # (as a one-hot Categorical refuses them)
            score = weighted.sum(-1)  # without validation, NaN where a vector is not one-hot, as the Categorical
            return torch.where(one_hot, score, torch.full_like(score, float("nan")))
        if not is_compiling() and z.is_floating_point() and z.numel() and bool(z.isnan().any()):
            raise OutOfRangeError(f"{describe(self)}: the value of {name!r} holds NaN ({want})")
        index = z.long()
        if not is_compiling() and index.numel() and bool(((index < 0) | (index >= k)).any()):
            bad = index[(index < 0) | (index >= k)].flatten()[0].item()
            raise OutOfRangeError(f"{describe(self)}: the value of {name!r} holds the index {bad}, but there are {k} "
                                  f"components ({want})")
        return logp.expand(*shape, k).gather(-1, index.expand(shape).unsqueeze(-1)).squeeze(-1)

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        own = {outer: mine for mine, outer in zip((*self._var, *self._cond_var), (*b.var, *b.cond_var))
               if mine != outer}
        if own:  # a renaming's binding (replace_var(x="u")): the values under this posterior's own names, as Pixyz's
            # factor passes them (a value under a renamed-away name belongs to another variable: dropped)
            mine = set(own.values())
            values = {own.get(k, k): v for k, v in values.items() if k in own or k not in mine}
        return self.get_log_prob(dict(values), **ctx.kwargs)

    def get_params(self, params_dict: ValuesLike = None, **kwargs: Any) -> dict[str, Tensor]:
        """The responsibilities: ``logits`` (normalized) and ``probs`` of shape ``(N, K)``."""
        logits = self._dgm_log_post(self._dgm_values(params_dict), kwargs)
        return {"logits": logits, "probs": logits.exp()}

    def sample(self, x_dict: ValuesLike = None, batch_n: int | None = None, sample_shape: Sequence[int] = torch.Size(),
               return_all: bool = True, reparam: bool = False, sample_mean: bool = False, *args: Any,
               **kwargs: Any) -> dict[str, Tensor]:
        """Draw the component ``z`` given ``x`` (one-hot, like the prior's values); ``sample_mean`` gives the
        responsibilities. (Pixyz's ``sample(*args, **kwargs)`` raises NotImplementedError.)"""
        if args:
            raise TypeError(f"{describe(self)}: sample() takes at most 6 positional arguments (x_dict, batch_n, "
                            f"sample_shape, return_all, reparam, sample_mean), got {6 + len(args)}")
        values = self._dgm_values(x_dict)
        logits = self._dgm_log_post(values, kwargs)
        d: Any = (_PyroOneHot if self._one_hot else _PyroCategorical)(logits=logits, validate_args=False)
        name = self._hidden_var[0]
        if sample_mean and self._one_hot:
            z = d.probs
        else:  # a Pyro site, as every draw (from the generator of pyro_dgm.utils.generator(...), if one is set)
            shape = torch.Size(sample_shape)  # (the site's distribution keeps its graph: see _dgm_draw_both)
            z = self._dgm_site(name, d.expand(shape + d.batch_shape) if shape else d, CallState())
        return {**values, name: z} if return_all else {name: z}


class MixtureOfNormal(ExpertWeights, OptionalInputs, _Mixture):
    r"""A mixture of experts :math:`q(z|x_1, \dots, x_K) = \sum_k w_k\, q_k(z|x_k)` (Shi et al. 2019, MMVAE).

    Experts whose inputs are not given are left out and the weights of the others renormalized. Samples choose an
    expert per sample at random (Pixyz instead splits the batch into fixed blocks per expert); the log-density is
    :math:`\log\sum_k w_k q_k(z|x_k)` (Pixyz weights the log-densities instead, :math:`\log\sum_k e^{w_k\log q_k}`).

    Parameters
    ----------
    p : list of Distribution
        The experts (usually Normal); they share one variable.
    weight_modalities : list of float, optional
        :math:`w_k` (uniform by default).
    name : str, default ``"p"``
    features_shape : tuple of int, optional

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> qx = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q_x")
    >>> qy = Normal(loc="y", scale=1., var=["z"], cond_var=["y"], name="q_y")
    >>> q = MixtureOfNormal([qx, qy], name="q")
    >>> print(q.prob_factorized_text)  # (q(z|x,y) or q(z|y,x): Pixyz orders the inputs as Python's set of them)
    \frac{1}{2}q_{x}(z|x) + \frac{1}{2}q_{y}(z|y)
    >>> v = {"x": torch.zeros(1, 1), "y": torch.ones(1, 1), "z": torch.zeros(1, 1)}
    >>> bool(torch.allclose(q.get_log_prob(v).exp(), 0.5 * (qx.get_log_prob(v).exp() + qy.get_log_prob(v).exp())))
    True
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        refuse_pixyz_hooks(cls, MixtureOfNormal, ("_get_expert_params", "_compute_expert_params"), ("get_params",),
                           "override sample and get_log_prob, which its products and losses call")

    @property
    def replace_params_dict(self) -> dict[str, list[str]]:
        """Pixyz's attribute: no input gives a parameter (``{}``); a dict assigned to it is kept (not read here, as
        Pixyz's mixture does not read it)."""
        return self.__dict__.setdefault("_dgm_replace_params_dict", {})

    @replace_params_dict.setter
    def replace_params_dict(self, value: dict[str, list[str]]) -> None:
        self.__dict__["_dgm_replace_params_dict"] = value

    def __init__(self, p: Sequence[Distribution] = (), weight_modalities: Sequence[float] | None = None,
                 name: str = "p", features_shape: Sequence[int] = torch.Size()) -> None:
        owner = f"MixtureOfNormal {name}"
        experts = distribution_list(owner, "p", p, "expert", one=True)
        if not experts:
            raise ValueError(f"{owner}: expected at least one expert, got an empty list")
        for i, e in enumerate(experts):
            check_inner(owner, e, f"expert {i}")
        var = list(experts[0].var)
        for i, e in enumerate(experts):
            if list(e.var) != var:
                raise ValueError(f"{owner}: every expert must generate {var}, but expert {i} {e.prob_text} generates "
                                 f"{e.var}")
            groups = getattr(e, "param_groups", None)  # (a Pixyz-style family's are its instance's)
            names = {n for g in groups for n in g} if isinstance(groups, (tuple, list)) and groups else None
            if names is not None and not {"loc", "scale"} <= names:  # (a Bernoulli: a mass mixed with densities;
                raise ValueError(f"{owner}: experts must be location-scale distributions (a Normal, as Pixyz's "
                                 f"MixtureOfNormal reads their loc and scale), but expert {i} {e.prob_text} is a "
                                 f"{e.distribution_name}")  # Pixyz's KeyError 'loc' at the first use)
        weights = [1.0 / len(experts)] * len(experts) if weight_modalities is None else weight_list(
            owner, weight_modalities, len(experts), "one per expert")
        if len(weights) != len(experts) or not all(0 <= w < math.inf for w in weights) or sum(weights) <= 0:
            raise ValueError(f"{owner}: expected {len(experts)} finite non-negative weights (one per expert), "
                             f"got {weights}")
        # the experts' inputs in the order of Python's set of them, as Pixyz's (it depends on the strings' hashes, so
        # on the process's hash seed): the formula p(z|x,y) reads as Pixyz's in the same process
        cond_var = list(set(v for e in experts for v in e.cond_var))
        super().__init__(var=var, cond_var=cond_var, name=name,
                         features_shape=features_shape)  # as given (Pixyz's; the experts decide the shapes)
        self.p = nn.ModuleList(experts)
        self._dgm_init_weights(weights, weight_modalities)

    _dgm_repr_hidden_buffers = ("weight_modalities",)  # a plain attribute in Pixyz, not printed

    @property
    def distribution_name(self) -> str:
        return "Normal"  # Pixyz's (its MixtureOfNormal is a Normal subclass)

    # ------------------------------------------------------------------ Pixyz's torch-object API
    # Pixyz's MixtureOfNormal is a Normal whose batch is split into blocks, one per expert; ours is the mixture, so
    # the object set_dist sets is the mixture (a MixtureDistribution, feature dims as event dims).
    _dgm_site_dist = _Mixture.dist

    @property
    def dist(self) -> Any:  # type: ignore[override]
        """The object :meth:`set_dist` set, else (and when called) the mixture given the inputs (see
        :attr:`pyro_dgm.distributions.DistributionBase.dist`)."""
        d = self.__dict__.get("_dist")
        return self._dgm_site_dist if d is None else d

    @property
    def params_keys(self) -> list[str]:
        """The experts' parameter names (Pixyz's, a Normal's)."""
        return ["loc", "scale"]

    @property
    def distribution_torch_class(self) -> type:
        """:class:`MixtureDistribution` (Pixyz: ``torch.distributions.Normal`` of the batch split between experts)."""
        return MixtureDistribution

    def set_dist(self, x_dict: ValuesLike = {}, batch_n: int | None = None,  # noqa: B006 (Pixyz's default)
                 **kwargs: Any) -> None:
        """Set :attr:`dist` to the mixture given the experts' inputs in ``x_dict``.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> q = MixtureOfNormal([Normal(loc="x", scale=1., var=["z"], cond_var=["x"]),
        ...                      Normal(loc="y", scale=1., var=["z"], cond_var=["y"])])
        >>> q.set_dist({"x": torch.zeros(3, 2), "y": torch.ones(3, 2)})
        >>> q.get_sample(sample_shape=[4])["z"].shape
        torch.Size([4, 3, 2])
        """
        from pyro_dgm.distributions.family import callable_dist

        self.__dict__["_dist"] = callable_dist(self._dgm_site_dist(x_dict, batch_n=batch_n, **kwargs), self)

    def get_sample(self, reparam: bool = False, sample_shape: Sequence[int] = torch.Size()) -> dict[str, Tensor]:
        """Draw from :attr:`dist` (set by :meth:`set_dist`), as Pixyz's ``get_sample``."""
        from pyro_dgm.distributions.family import DistributionBase

        return DistributionBase.get_sample(self, reparam, sample_shape)  # type: ignore[arg-type]

    @property
    def prob_factorized_text(self) -> str:
        self._dgm_follow_given()
        w = self._dgm_weights_buffer().tolist()
        if all(math.isclose(v, w[0]) for v in w):
            k = len(w)
            return " + ".join(f"\\frac{{1}}{{{k}}}{e.prob_text}" for e in self.p)
        total = sum(w)  # the weights it computes with: normalized ([1, 3] is 0.25, 0.75)
        return " + ".join(f"{v / total:.3g}{e.prob_text}" for v, e in zip(w, self.p))

    def _dgm_mixture(self, b: Binding, values: Mapping[str, Any], ctx: CallState) -> MixtureDistribution:
        self._dgm_follow_given()
        weights = self._dgm_weights_buffer()
        m = self._dgm_mapping(b)
        comps, logw = [], []
        for i, e in enumerate(self.p):
            if expert_given(self, e, m, values):  # (a product expert takes a subset of its inputs)
                comps.append(site_fn(e, m, values, ctx, False)[0])
                logw.append(torch.log(weights[i]))
        if not comps:
            raise ValueError(f"{describe(self)}: no expert has its inputs; give at least one of {self._cond_var}")
        try:
            torch.broadcast_shapes(*(c.batch_shape + c.event_shape for c in comps))
        except RuntimeError as e:  # (experts given inputs of other batch sizes)
            shapes = ", ".join(f"{tuple(c.batch_shape + c.event_shape)}" for c in comps)
            raise ShapeError(f"{describe(self)}: the experts' distributions do not broadcast (their shapes: {shapes}); "
                             "each expert must give the same feature shape, for inputs of one batch size") from e
        return MixtureDistribution(torch.stack(logw), comps)


class RenamedPosteriorMixtureModel(_ScoresItsTable, ReplaceVarDistribution):
    """A :class:`PosteriorMixtureModel` with its data variable renamed (``post.replace_var(x="u")``): scored under the
    new name, it gives the posterior's ``(K, N)`` table of :math:`\\log p(z=k|u_n)`, as Pixyz's."""

    def get_log_prob(self, x_dict: ValuesLike, sum_features: bool = True, feature_dims: Sequence[int] | None = None,
                     **kwargs: Any) -> Tensor:
        return self.p.get_log_prob(self._dgm_inner(x_dict), sum_features, feature_dims, **kwargs)
