r"""Products of Gaussian experts (Wu & Goodman 2018, MVAE; Vedantam et al. 2018):
:math:`p(z|x,y) \propto p(z)\,p(z|x)\,p(z|y)`.

The product of Gaussians :math:`\mathcal N(\mu_k, \sigma_k^2)` with weights :math:`w_k` is Gaussian with precision
:math:`\sum_k w_k \sigma_k^{-2}` and mean :math:`\sum_k w_k \sigma_k^{-2}\mu_k / \sum_k w_k \sigma_k^{-2}`. An expert
whose inputs are not given is left out of the product (a missing modality); an expert with scale 0 counts as missing
for that element (Pixyz's convention, which :class:`ElementWiseProductOfNormal` uses per sample). The test is on the
scale the expert gives, not on its square: a tiny positive scale whose square underflows (1e-30 in float32) is the
most certain expert, not a missing one (Pixyz drops it), and the precisions are combined relative to the largest
weighted one, so that neither one near the float's range nor a weight far from 1 overflows or cuts another
(:func:`_combine`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from pyro_dgm.distributions.composite import (ExpertWeights, OptionalInputs, check_inner, distribution_list,
                                             inputs_of, site_params, weight_list)
from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.bindings import Binding, CallState
from pyro_dgm.distributions.exponential import Normal
from pyro_dgm.distributions.family import DistributionBase, given_value_error
from pyro_dgm.utils.checks import NotATensorError, ShapeError, describe, ordered_union
from pyro_dgm.utils.latex import latex_name
from pyro_dgm.utils import get_dict_values, tolist  # noqa: F401  (helpers Pixyz's module namespace has)
from pyro_dgm.utils.attributes import refuse_pixyz_hooks

__all__ = ["ProductOfNormal", "NormalPoE", "ElementWiseProductOfNormal", "Experts", "product_of_experts"]


def _combine(terms: Sequence[tuple[float | Tensor, Tensor, Tensor, bool]]) -> tuple[Tensor, Tensor]:
    """The product's ``(loc, scale)`` from ``(w, scale, loc, stacked)`` terms (``w`` a number or a tensor;
    ``stacked``: several experts along dim 0, summed): with precisions ``T = w / scale**2`` (0 where the scale or the
    weight is exactly 0: a missing expert, Pixyz's convention), ``sum(T loc) / sum(T)`` and ``1 / sqrt(sum(T))``.

    Computed relative to the largest precision of each element: with ``e = scale / sqrt(w)`` (the scale of an expert
    of weight 1 and that precision) and ``s`` the smallest ``e`` there, ``T s**2 = w (s / scale)**2`` is at most 1
    and 1 for the most certain expert. The same numbers, but neither a scale whose square underflows (1e-30 in
    float32) or whose precision would overflow, nor a weight far from 1 beside another (1e-30 and 1e30), cuts an
    expert that counts or lets one that does not swamp it. ``s`` is detached: the product does not depend on it."""
    if len(terms) > 1 and not any(isinstance(w, Tensor) or st or w == 0 for w, _, _, st in terms):
        together = _stacked(terms)
        if together is not None:
            return together
    terms = [(scale.new_zeros(()), scale, loc, st) if not isinstance(w, Tensor) and w == 0 else (w, scale, loc, st)
             for w, scale, loc, st in terms]  # (a weight of 0 as a tensor: its expert stays in the graph, as Pixyz's)
    ref: Tensor | None = None
    kept = []  # where each term counts: a scale other than 0 and a weight other than 0
    for w, scale, _, stacked in terms:
        a = scale.detach().abs()
        if isinstance(w, Tensor):
            k = (scale != 0) & (w != 0)
            e = a * torch.rsqrt(w.detach())
        else:
            k = scale != 0
            e = a if w == 1 else a * (float(w) ** -0.5)
        kept.append(k)
        pos = torch.where(k, e, float("inf"))
        t = pos.amin(0) if stacked else pos
        ref = t if ref is None else torch.minimum(ref, t)
    assert ref is not None
    ref = _in_range(ref)
    num: Tensor | None = None
    den: Tensor | None = None
    for (w, scale, loc, stacked), k in zip(terms, kept):
        c = ref if not isinstance(w, Tensor) and w == 1 else ref * (torch.sqrt(w) if isinstance(w, Tensor) else
                                                                     float(w) ** 0.5)
        r = _relative_precision(c, scale.abs(), k)
        n = r * loc
        if stacked:
            n, r = n.sum(0), r.sum(0)
        num, den = (n, r) if num is None or den is None else (num + n, den + r)
    assert num is not None and den is not None
    return num / den, ref * torch.rsqrt(den)


def _stacked(terms: Sequence[tuple[float | Tensor, Tensor, Tensor, bool]]) -> tuple[Tensor, Tensor] | None:
    """:func:`_combine` of terms of positive numeric weights, one expert each, stacked into one tensor: the same
    formula in a third of the operations. ``None`` where their parameters differ in dtype or device (the general
    path)."""
    scales = [t[1] for t in terms]
    locs = [t[2] for t in terms]
    first = scales[0]
    if any(x.dtype != first.dtype or x.device != first.device for x in (*scales, *locs)):
        return None
    s = torch.stack(torch.broadcast_tensors(*scales))  # (the scales and the locations each their own shape: a
    m = torch.stack(torch.broadcast_tensors(*locs))  # constant scale keeps its batch dim of 1, as Pixyz's)
    if s.dim() != m.dim():
        lower = min(s, m, key=lambda t: t.dim())
        lower = lower.reshape(lower.shape[:1] + (1,) * abs(s.dim() - m.dim()) + lower.shape[1:])
        s, m = (lower, m) if s.dim() < m.dim() else (s, lower)
    shape = s.shape[1:]
    k = s != 0
    a = s.abs()
    ws = [float(t[0]) for t in terms]
    lead = (len(ws),) + (1,) * len(shape)
    with torch.no_grad():
        e = a if all(w == 1 for w in ws) else a * torch.tensor([w ** -0.5 for w in ws], dtype=a.dtype,
                                                              device=a.device).reshape(lead)
        ref = _in_range(torch.where(k, e, float("inf")).amin(0))
        c = ref if all(w == 1 for w in ws) else ref * torch.tensor([w ** 0.5 for w in ws], dtype=a.dtype,
                                                                   device=a.device).reshape(lead)
    r = _relative_precision(c, a, k)
    den = r.sum(0)
    return (r * m).sum(0) / den, ref * torch.rsqrt(den)


def _in_range(ref: Tensor) -> Tensor:
    """The reference scale clamped into the float's range: inf where every expert is missing (0 / 0 in the product,
    as Pixyz's), and an ``e`` beyond the range gives the nearest reference."""
    fi = torch.finfo(ref.dtype)
    return ref.clamp(fi.smallest_normal * fi.eps, fi.max)


def _relative_precision(c: Tensor, a: Tensor, k: Tensor) -> Tensor:
    """``(c / a)**2`` where the term counts (``k``), else 0: an expert's precision times the reference's variance,
    at most 1 where it counts (``c = sqrt(w) s`` is at most ``a``, the scale); the stand-in 1 where it does not keeps
    NaN out of the gradient."""
    q = c / torch.where(k, a, 1.0)
    return torch.where(k, q * q, 0.0)


def product_of_experts(loc: Tensor, scale: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    r"""The product of Gaussian experts stacked along dim 0: the early API reference's ``NormalPoE.experts``.

    With precisions :math:`T_k = 1 / (\sigma_k^2 + \epsilon)`, the product is :math:`\mathcal N(\sum_k T_k \mu_k /
    \sum_k T_k, 1 / \sum_k T_k)`; ``eps`` keeps an expert of scale 0 finite (``eps=0`` is the exact product).

    Parameters
    ----------
    loc, scale : Tensor
        The experts' means and standard deviations, ``(K, ...)`` (they broadcast).
    eps : float, default 1e-8
        Added to each variance.

    Returns
    -------
    tuple of Tensor
        The product's ``(loc, scale)``, of the shape of ``loc[0]``.

    Examples
    --------
    >>> loc, scale = torch.tensor([[0.0], [3.0]]), torch.tensor([[1.0], [0.5]])
    >>> product_of_experts(loc, scale, eps=0)  # precisions 1 and 4: mean 12 / 5, variance 1 / 5
    (tensor([2.4000]), tensor([0.4472]))
    """
    loc, scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
    if loc.dim() == 0:
        raise ShapeError("NormalPoE.experts: loc and scale stack the experts along dim 0; got scalars")
    prec = 1.0 / (scale * scale + eps)
    total = prec.sum(0)
    return (prec * loc).sum(0) / total, torch.rsqrt(total)


def expert_given(owner: Distribution, e: Distribution, mapping: Mapping[str, str], values: Mapping[str, Any]) -> bool:
    """Whether expert ``e`` of ``owner`` takes part given ``values``: no when none of its inputs is given (a missing
    modality), yes when every input it cannot do without is (all of an ordinary expert's; any of a product's, which
    leaves its own missing experts out, as Pixyz's inner product does). An ordinary expert given only some of its
    inputs is refused."""
    ins = inputs_of(e, mapping)
    have = [v in values for v in ins]
    if all(have):
        return True
    if not any(have):
        return False
    missing = [v for v in (mapping.get(r, r) for r in e._dgm_required_input_var) if v not in values]
    if missing:
        raise ValueError(f"{describe(owner)}: expert {e.prob_text} is given only some of its inputs; missing "
                         f"{missing} (give all of them, or none to leave the expert out)")
    return True


class Experts(list):
    """The experts of a product of Normals (a list), also callable as the early API reference's
    ``NormalPoE.experts(loc, scale, eps=1e-8)``: see :func:`product_of_experts`.

    Examples
    --------
    >>> experts = Experts(["q_x", "q_y"])
    >>> len(experts), experts[0]
    (2, 'q_x')
    >>> experts(torch.tensor([[1.0], [3.0]]), torch.ones(2, 1), eps=0)
    (tensor([2.]), tensor([0.7071]))
    """

    def __call__(self, loc: Tensor, scale: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
        return product_of_experts(loc, scale, eps)


class ProductOfNormal(ExpertWeights, OptionalInputs, Normal):
    r"""The product of Gaussian experts and a prior expert, renormalized: a Normal distribution.

    .. math::
        p(z|x_1, \dots, x_K) \propto p(z)^{w_0} \prod_k p_k(z|x_k)^{w_k}

    The prior expert is :math:`\mathcal N(0, I)` unless ``prior`` is given. Experts whose inputs are missing from the
    values are left out, so ``sample``, ``get_log_prob``, ``model`` and ``guide`` accept any subset of the inputs
    (with none, it is the prior).

    Parameters
    ----------
    p : list of Normal
        The experts; they share one variable.
    weight_modalities : list of float, optional
        :math:`w_0, w_1, \dots, w_K` (prior first); all 1 by default.
    name : str, default ``"p"``
    features_shape : tuple of int, optional
        Taken from the experts when they have constant parameters; needed when no expert is given.
    prior : Normal, optional
        The prior expert (default :math:`\mathcal N(0, I)`, as in Pixyz).

    Raises
    ------
    ValueError
        For no experts, experts of different variables or families, or a wrong number of weights.

    Examples
    --------
    >>> qx = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q_x")
    >>> qy = Normal(loc="y", scale=0.5, var=["z"], cond_var=["y"], name="q_y")
    >>> q = ProductOfNormal([qx, qy], name="q")
    >>> print(q.prob_joint_factorized_and_text)
    q(z|x,y) \propto p(z)q_{x}(z|x)q_{y}(z|y)
    >>> params = q.get_params({"x": torch.tensor([[3.0]]), "y": torch.tensor([[1.0]])})
    >>> params["loc"], params["scale"] ** 2  # precisions 1 + 1 + 4, mean (3 + 4) / 6
    (tensor([[1.1667]]), tensor([[0.1667]]))
    >>> q.get_params({"x": torch.tensor([[3.0]])})["loc"]  # y missing: prior and q_x only
    tensor([[1.5000]])
    """

    _dgm_repr_hidden_buffers = ("weight_modalities",)  # a list attribute in Pixyz, not printed

    def __init__(self, p: Sequence[Distribution] | Distribution = (), weight_modalities: Sequence[float] | None = None,
                 name: str = "p", features_shape: Sequence[int] = torch.Size(), prior: Distribution | None = None
                 ) -> None:
        owner = f"{type(self).__name__} {name}"
        experts = distribution_list(owner, "p", p, "expert", one=True)
        if not experts:
            raise ValueError(f"{owner}: expected at least one expert, got an empty list")
        for i, e in enumerate([*experts, *([prior] if prior is not None else [])]):
            check_inner(owner, e, "prior" if i == len(experts) else f"expert {i}", need="_dgm_params")
        var = list(experts[0].var)
        for i, e in enumerate([*experts, *([prior] if prior is not None else [])]):
            what = "prior" if i == len(experts) else f"expert {i}"
            if list(e.var) != var:
                raise ValueError(f"{owner}: every expert must generate {var}, but {what} {e.prob_text} generates "
                                 f"{e.var}")
            if e.distribution_name != "Normal":
                raise ValueError(f"{owner}: experts must be Normal distributions, but {what} {e.prob_text} is "
                                 f"{e.distribution_name}")
        n = len(experts) + 1
        weights = [1.0] * n if weight_modalities is None else weight_list(
            owner, weight_modalities, n, "the prior's, then one per expert")
        if len(weights) != n:
            raise ValueError(f"{owner}: expected {n} weights (the prior's, then one per expert), got {len(weights)}")
        if not all(w >= 0 for w in weights) or not any(weights):  # (a weight scales a precision: Pixyz's product
            # of negative or zero precisions is a NaN mean and an infinite scale, silently)
            raise ValueError(f"{owner}: weight_modalities must be non-negative and not all 0 (each scales an "
                             f"expert's precision), got {weights}")
        cond = ordered_union(*(e.cond_var for e in experts), prior.cond_var if prior is not None else [])
        # the shape of the prior's zeros when no expert is given; features_shape itself stays as given (Pixyz's)
        prior_shape = torch.Size(features_shape) or next(
            (e.features_shape for e in [*experts, prior] if e is not None and e.features_shape), torch.Size())
        super().__init__(var=var, cond_var=cond, name=name, features_shape=features_shape)
        self._prior_shape = prior_shape
        self.p = nn.ModuleList(experts)
        self.prior = prior
        self._dgm_init_weights(weights, weight_modalities)

    @property
    def experts(self) -> Experts:
        """The experts (without the prior), a list; called, the early reference's ``experts(loc, scale, eps=1e-8)``
        gives the product of experts stacked along dim 0 (:func:`product_of_experts`).

        Examples
        --------
        >>> a = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="a")
        >>> poe = ProductOfNormal([a])
        >>> [e.prob_text for e in poe.experts]
        ['a(z|x)']
        >>> poe.experts(torch.tensor([[0.0], [2.0]]), torch.ones(2, 1), eps=0)  # the prior and a at x = 2
        (tensor([1.]), tensor([0.7071]))
        """
        return Experts(self.p)

    #: the product's own, as Pixyz's class has one: a ``get_params`` a later cell sets on ``Normal`` reaches the
    #: experts, not the product's combined parameters (p478: they went through it a second time, +3 on a mean)
    get_params = DistributionBase.get_params

    @property
    def prob_factorized_text(self) -> str:
        prior = self.prior.prob_text if self.prior is not None else f"p({','.join(self._var)})"
        return prior + "".join(e.prob_text for e in self.p)

    @property
    def prob_joint_factorized_and_text(self) -> str:
        return f"{self.prob_text} \\propto {self.prob_factorized_text}"

    def forward(self, **inputs: Tensor) -> dict[str, Tensor]:
        """The product's ``loc`` and ``scale`` given the inputs of the experts that are present."""
        return self.get_params(inputs)

    # ------------------------------------------------------------------ the product
    def _dgm_weights(self) -> Sequence[float] | Tensor:
        """The weights as numbers, read once per change of the buffer (a number multiplies no tensor, and a weight of
        1 not at all): another tensor, storage or version. The buffer itself (its entries are tensors) while
        torch.compile traces, for weights that take gradients (an ``nn.Parameter`` put in its place), under
        ``torch.func``'s transforms (``functional_call`` of other weights, batched by ``vmap``) and on the meta
        device."""
        if "_dgm_given_weights" in self.__dict__:
            self._dgm_follow_given()
        buf = self._dgm_weights_buffer()
        if (torch.compiler.is_compiling() or buf.requires_grad or buf.is_meta
                or torch._C._functorch.is_functorch_wrapped_tensor(buf)):
            return buf  # (nor weights on the meta device, which have no values to read)
        seen = self.__dict__.get("_dgm_weights_read")
        try:
            key = (buf._version, buf.data_ptr())
        except RuntimeError:  # (an inference-mode buffer has no version: read it each time)
            return buf.tolist()
        if seen is None or seen[0] is not buf or seen[1] != key:
            seen = (buf, key, buf.tolist(), buf.untyped_storage())  # (its storage held: the address is not reused)
            self.__dict__["_dgm_weights_read"] = seen
        return seen[2]

    def _dgm_expert_terms(self, m: Mapping[str, str], values: Mapping[str, Any], ctx: CallState,
                          weights: Sequence[float] | Tensor) -> list[tuple[Tensor, Tensor, Tensor, bool]]:
        """``(w, scale, loc, stacked)`` of each expert whose inputs are given (see :func:`_combine`), ``weights``
        those of :meth:`_dgm_weights`."""
        terms = []
        for i, e in enumerate(self.p):
            if not expert_given(self, e, m, values):
                continue
            params = site_params(e, m, values, ctx)
            for k in ("loc", "scale"):
                if not isinstance(params.get(k), Tensor):  # (a network's numpy array or number: Pixyz stacks the
                    got = params.get(k)  # experts' tensors, and fails on them too)
                    var = dict(e._dgm_b.param_vars).get(k) if hasattr(e, "_dgm_b") else None
                    if var is not None:  # (the caller's value of a variable, not the expert's forward)
                        raise given_value_error(f"{describe(self)}: expert {i} ({describe(e)})", var, k, got)
                    raise NotATensorError(f"{describe(self)}: expert {i} ({describe(e)}) gave {k} as "
                                          f"{type(got).__module__}.{type(got).__name__}; an expert's parameters must "
                                          "be tensors (its forward() must return tensors: torch.as_tensor(...))")
            w = weights[i + 1]
            terms.append((w, params["scale"], params["loc"], False))
        return terms

    def _dgm_check_expert_shapes(self, terms: Sequence[tuple[Tensor, Tensor, Tensor, bool]],
                                 conditional: Sequence[bool]) -> None:
        """Refuse conditional experts whose locations (or whose scales) differ from each other's in their number of
        dims or in a feature dim (every dim but the first): broadcasting them would mix features or rows (a ``loc``
        of ``(B, 1)`` spread over the features, one of ``(B, 1, D)`` multiplying every row by every row); Pixyz
        stacks the experts' locations, and their scales, and refuses any difference. A batch size of 1 beside ``B``
        broadcasts, as elsewhere, and an expert without inputs (constant parameters, which Pixyz leaves out of the
        product) is broadcast over the others, as a prior is."""
        own = [(loc, scale) for (_, scale, loc, stacked), c in zip(terms, conditional) if c and not stacked]
        if len(own) < 2:
            return
        for k, what in ((0, "loc"), (1, "scale")):
            shapes = [tuple(t[k].shape) for t in own]
            first = shapes[0]
            if any(len(sh) != len(first) or sh[1:] != first[1:] for sh in shapes[1:]):
                raise ShapeError(f"{describe(self)}: the experts' parameters differ in shape beyond the batch dim "
                                 f"(the {what} of the experts given, in order: {', '.join(map(str, shapes))}); each "
                                 "expert must give its parameters one shape (batch, *features), with the same "
                                 "features")

    # ------------------------------------------------------------------ Pixyz's hooks
    def _get_expert_params(self, params_dict: Mapping[str, Any] = {}, **kwargs: Any  # noqa: B006 (Pixyz's)
                           ) -> tuple[Tensor, Tensor, Tensor]:
        """Pixyz's hook: the given experts' ``loc`` and ``scale``, broadcast to one shape, stacked along a new dim 0
        (an expert is given when one of its inputs is in ``params_dict``), and the weights of the prior and those
        experts, with as many dims as ``loc``. Called (with :meth:`_compute_expert_params`) where a subclass
        overrides either, as Pixyz's ``get_params`` calls them; the product is computed otherwise without them (the
        same numbers)."""
        buf = self.weight_modalities
        locs, scales, weights = [], [], [buf[0]]
        for i, e in enumerate(self.p):
            inputs = {v: params_dict[v] for v in e.cond_var if v in params_dict}
            if inputs:
                out = e.get_params(inputs, **kwargs)
                locs.append(out["loc"])
                scales.append(out["scale"])
                weights.append(buf[i + 1])
        if not locs:
            raise ValueError(f"{describe(self)}: _get_expert_params: no expert's input is given "
                             f"(the experts' inputs: {list(self.input_var)})")
        both = torch.broadcast_tensors(*locs, *scales)  # (a constant scale of shape () beside a batch of locations)
        loc, scale = torch.stack(both[:len(locs)]), torch.stack(both[len(locs):])
        weight = torch.stack(weights).to(scale.device)
        return loc, scale, weight.reshape(-1, *([1] * (loc.dim() - 1)))

    @staticmethod
    def _compute_expert_params(loc: Tensor, scale: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """Pixyz's hook: the product's ``loc`` and ``scale`` from the experts' (stacked along dim 0) and the weights
        (the prior N(0, 1)'s first): precisions summed with their weights, an expert of scale 0
        left out."""
        var = scale ** 2
        given = var != 0
        prec = torch.where(given, 1 / torch.where(given, var, torch.ones_like(var)), torch.zeros_like(var))
        out_var = 1 / ((weight[1:] * prec).sum(0) + weight[0])
        return (weight[1:] * prec * loc).sum(0) * out_var, out_var.sqrt()

    #: Pixyz's hooks, called where overridden (see :meth:`_dgm_hooked`; a compiled loss follows them)
    _dgm_hook_names = ("_get_expert_params", "_compute_expert_params")

    def _dgm_hooked(self) -> bool:
        """Whether this class, or this product itself, overrides Pixyz's hooks (read at each call: a later cell may
        set one; Pixyz calls ``self``'s)."""
        cls, d = type(self), self.__dict__
        return (cls._get_expert_params is not ProductOfNormal._get_expert_params
                or cls._compute_expert_params is not ProductOfNormal._compute_expert_params
                or "_get_expert_params" in d or "_compute_expert_params" in d)

    def _dgm_hooked_params(self, b: Binding, values: Mapping[str, Any]) -> dict[str, Tensor]:
        """The parameters as Pixyz's ``get_params`` computes them, through the hooks of :meth:`_dgm_hooked` (whose
        prior is N(0, 1): a product given another ``prior`` is refused, which the hooks would drop)."""
        if self.prior is not None:
            raise TypeError(f"{describe(self)}: overrides {type(self).__name__}._get_expert_params or "
                            "_compute_expert_params, Pixyz's hooks, whose prior expert is N(0, 1); with prior="
                            f"{self.prior.prob_text} given, override get_params instead")
        m = dict(zip(self._cond_var, b.cond_var))
        given = {own: values[new] for own, new in m.items() if new in values}
        if given:
            loc, scale, weight = self._get_expert_params(given)
        else:  # (no expert: Pixyz's prior alone)
            loc, scale, weight = torch.zeros(1), torch.zeros(1), torch.ones(1)
        loc, scale = self._compute_expert_params(loc, scale, weight)
        return {"loc": loc, "scale": scale}

    def _dgm_params(self, b: Binding, values: Mapping[str, Any], ctx: CallState) -> dict[str, Tensor]:
        if self._dgm_hooked():
            return self._dgm_hooked_params(b, values)
        m = {own: new for own, new in zip(self._cond_var, b.cond_var) if own != new}
        weights = self._dgm_weights()
        buf = self.weight_modalities
        w0 = weights[0]
        if self.prior is None:
            terms = self._dgm_expert_terms(m, values, ctx, weights)  # (no expert given and no feature shape known: 0-d
            zero = torch.zeros((1, *self._prior_shape) if terms or self._prior_shape else (), dtype=buf.dtype,  # as
                               device=buf.device)  # Pixyz's, not a batch of one)
            prior_term = (w0, torch.ones_like(zero), zero, False)
        else:
            pp = site_params(self.prior, m, values, ctx)
            prior_term = (w0, pp["scale"], pp["loc"], False)
            terms = self._dgm_expert_terms(m, values, ctx, weights)
        if len(terms) > 1:
            conditional = [bool(inputs_of(e, m)) for e in self.p if expert_given(self, e, m, values)]
            self._dgm_check_expert_shapes(terms, conditional)
        try:
            loc, scale = _combine([prior_term, *terms])
        except RuntimeError as e:  # experts (or the prior) whose parameters do not broadcast
            shapes = ", ".join(f"{tuple(loc.shape[1:] if stacked else loc.shape)}" for _, _, loc, stacked in terms)
            prior = "the prior's " + str(tuple(pp["loc"].shape)) if self.prior is not None else "no prior"
            raise ShapeError(f"{describe(self)}: the experts' parameters do not broadcast (their locations: {shapes}; "
                             f"{prior}); each expert must give the same feature shape, for inputs of one batch "
                             f"size") from e
        if scale.dim() < loc.dim():  # (a constant scale beside inputs: Pixyz's product gives it the location's
            scale = scale.reshape((1,) * (loc.dim() - scale.dim()) + tuple(scale.shape))  # number of dims, of 1s)
        return {"loc": loc, "scale": scale}  # each its own shape, as Pixyz's (they broadcast)

    def _dgm_fn(self, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                value: Tensor | None = None) -> tuple[Any, Any]:
        present = tuple(v for v in b.input_var if v in values)
        if len(present) != len(b.input_var):  # missing experts: batch dims come from the inputs given
            b = Binding(b.var, b.cond_var, present, b.fwd_pos, b.fwd_kw, b.param_vars)
        return super()._dgm_fn(b, values, ctx, expand, value=value)


class NormalPoE(ProductOfNormal):
    r"""The seed's ``NormalPoE(prior, dists)``: :math:`p(z|x,y) \propto p(z)p(z|x)p(z|y)` with an explicit prior.

    Examples
    --------
    >>> prior = Normal(loc=0., scale=1., var=["z"], name="p_{prior}")
    >>> a = Normal(loc="x", scale=1., var=["z"], cond_var=["x"])
    >>> print(NormalPoE(prior, [a]).prob_joint_factorized_and_text)
    p(z|x) \propto p_{prior}(z)p(z|x)
    """

    def __init__(self, prior: Distribution, dists: Sequence[Distribution] = (), **kwargs: Any) -> None:
        super().__init__(list(dists), prior=prior, **kwargs)


#: Pixyz's private hooks of its element-wise product, which this one computes without
_ELEMENTWISE_HOOKS = ("_get_mask", "_get_params_with_masking", "_get_expert_params", "_compute_expert_params")


class ElementWiseProductOfNormal(ProductOfNormal):
    r"""A product of Normal experts, one per element of the input vector, all given by one network ``p(z|x)``:

    .. math::
        p(z|x) \propto p(z) \prod_{i: x_i \ne 0} p(z|x_i)

    Expert :math:`i` is the network applied to :math:`x` with every element but :math:`x_i` set to 0; where
    :math:`x_i = 0` the expert is missing for that sample (Vedantam et al. 2018; the MVAE's per-sample subsets).
    The network runs once on all ``D`` masked copies of the batch.

    Parameters
    ----------
    p : Normal
        The expert network, with one conditioning variable (a vector).
    name : str, default ``"p"``
    features_shape : tuple of int, optional

    Examples
    --------
    >>> class Expert(Normal):
    ...     def __init__(self):
    ...         super().__init__(var=["z"], cond_var=["x"], name="q")
    ...     def forward(self, x):  # expert i alone: mean 2 * x_i, scale 1
    ...         return {"loc": 2 * x.sum(-1, keepdim=True), "scale": torch.ones_like(x[..., :1])}
    >>> q = ElementWiseProductOfNormal(Expert())
    >>> q.get_params({"x": torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])})["loc"]  # (2/2, 4/3)
    tensor([[1.0000],
            [1.3333]])
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dgm_refuse_hooks()

    @classmethod
    def _dgm_refuse_hooks(cls) -> None:
        refuse_pixyz_hooks(cls, ElementWiseProductOfNormal, _ELEMENTWISE_HOOKS, ("get_params",),
                           "subclass ProductOfNormal (whose _get_expert_params and _compute_expert_params are called "
                           "where overridden), or override get_params")

    def _dgm_hooked(self) -> bool:
        """Never: Pixyz's hooks of this product are not called (one set on the class since it was made, or by a
        mixin, is refused here, at each call)."""
        own = next((n for n in _ELEMENTWISE_HOOKS if n in self.__dict__), None)
        if own is not None:
            raise TypeError(f"{describe(self)}: {own} set on the product, a private method of Pixyz's "
                            "ElementWiseProductOfNormal that pyro_dgm's does not call (it would be ignored); "
                            "override get_params")
        type(self)._dgm_refuse_hooks()
        return False

    def __init__(self, p: Distribution, name: str = "p", features_shape: Sequence[int] = torch.Size()) -> None:
        if not isinstance(p, Distribution):  # (ProductOfNormal takes a list of experts; this takes one network)
            raise TypeError(f"ElementWiseProductOfNormal {name}: p must be one pyro_dgm distribution (the expert "
                            f"network, whose input's elements are the experts), got {type(p).__name__}")
        if len(p.cond_var) != 1:
            raise ValueError(f"ElementWiseProductOfNormal {name}: the expert network must have one conditioning "
                             f"variable, got cond_var={p.cond_var}")
        super().__init__([p], name=name, features_shape=features_shape)

    @property
    def prob_factorized_text(self) -> str:
        e = self.p[0]
        x = latex_name(e.cond_var[0])
        x = f"{{{x}}}" if "_" in x or "^" in x else x  # (x_{1}: its element {x_{1}}_{i}, not a double subscript)
        z = ",".join(map(latex_name, self._var))
        return f"p({z})\\prod_{{i}}{e.name}({','.join(map(latex_name, e.var))}|{x}_{{i}})"

    def _dgm_expert_terms(self, m: Mapping[str, str], values: Mapping[str, Any], ctx: CallState,
                          weights: Sequence[float] | Tensor) -> list[tuple[Tensor, Tensor, Tensor, bool]]:
        e = self.p[0]
        xname = inputs_of(e, m)[0]
        if xname not in values:
            return []
        x = values[xname]
        if not isinstance(x, Tensor) or x.dim() < 1:
            error = ShapeError if isinstance(x, Tensor) else NotATensorError
            got = "a 0-d tensor" if isinstance(x, Tensor) else f"a {type(x).__name__}"
            raise error(f"{describe(self)}: the value of {xname!r} must be a tensor of shape (..., features), one "
                        f"expert per feature; got {got}")
        d = x.shape[-1]
        lead = x.shape[:-1]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        masked = (x.unsqueeze(-2) * eye).movedim(-2, 0).reshape(-1, d)  # expert i sees only x_i
        params = site_params(e, m, {**values, xname: masked}, ctx)
        try:
            loc, scale = torch.broadcast_tensors(params["loc"], params["scale"])
            loc = loc.reshape(d, *lead, *loc.shape[1:])
            scale = scale.reshape(d, *lead, *scale.shape[1:])
        except RuntimeError as err:  # (an input of other features than the expert's parameters have)
            shapes = ", ".join(f"{k} {tuple(params[k].shape)}" for k in ("loc", "scale"))
            raise ShapeError(f"{describe(self)}: {describe(e)} given {xname!r} of shape {tuple(x.shape)} (one row "
                             f"per feature: {tuple(masked.shape)}) gave {shapes}, which do not fit: {err}") from err
        present = (x != 0).movedim(-1, 0).to(loc.dtype)
        present = present.reshape(*present.shape, *([1] * (loc.dim() - present.dim())))
        w = weights[1]
        return [(present if not isinstance(w, Tensor) and w == 1 else w * present, scale, loc, True)]  # the D experts
        # along dim 0
