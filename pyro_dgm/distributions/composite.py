"""Helpers for distributions built from other distributions (flows, products and mixtures of experts).

An inner distribution is used through the same hooks as a factor of a joint: ``_dgm_fn(binding, values, ctx, expand)``
(the Pyro distribution of its site in the current pass, see :class:`~pyro_dgm.distributions.family.DistributionBase`)
and ``_dgm_params(binding, values, ctx)``, under its binding renamed to the outer distribution's variable names.
"""
from __future__ import annotations

import copy
import operator
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.bindings import Binding, CallState, expand_batch_n
from pyro_dgm.distributions.ops import ReplaceVarDistribution
from pyro_dgm.distributions.overrides import current_of, own_methods
from pyro_dgm.distributions.special import drawn_in_pass
from pyro_dgm.utils.checks import (ArgumentError, DTypeError, ShapeError, add_note, clearer, describe,
                                   refuse_param_dtype, user_stacklevel, users_own_error)
from pyro_dgm.utils.modules import PlainBuffers

__all__ = ["unwrap", "site_fn", "site_params", "check_inner", "distribution_list", "weight_list", "expand_root",
           "ExpertWeights", "OptionalInputs", "OneSiteDistribution"]


def unwrap(d: Distribution) -> tuple[Distribution, Binding]:
    """The distribution that implements ``d``'s hooks, and the binding ``d`` runs it under."""
    b = d._dgm_binding
    while isinstance(d, ReplaceVarDistribution):
        d = d.p
    return d, b


def check_inner(owner: str, d: Any, what: str, need: str = "_dgm_fn") -> None:
    """Raise ``TypeError`` unless ``d`` is a single distribution that has a Pyro site distribution (``need``); one
    that is no distribution at all is an :class:`~pyro_dgm.utils.checks.ArgumentError` (also Pixyz's
    ``AttributeError`` there, from reading ``d.var``)."""
    if not isinstance(d, Distribution):
        raise ArgumentError(f"{owner}: {what} must be a pyro_dgm distribution, got {type(d).__name__}")
    if d._dgm_factors != (d,):
        raise TypeError(f"{owner}: {what} {d.prob_text} is a product of {len(d._dgm_factors)} factors; it must be a "
                        "single distribution")
    core, _ = unwrap(d)
    if not hasattr(core, need):
        kind = "Pyro distribution" if need == "_dgm_fn" else "parameters"
        raise TypeError(f"{owner}: {what} {describe(d)} has no {kind} to build on; use a parametric family "
                        "(Normal, ...) or a flow, product or mixture distribution")


def distribution_list(owner: str, arg: str, given: Any, what: str, one: bool) -> list[Distribution]:
    """``given`` as a list of distributions (each then checked by :func:`check_inner`): a list, tuple or other
    iterable, or, where ``one``, a single distribution (Pixyz's ``tolist``); anything else raises an
    :class:`~pyro_dgm.utils.checks.ArgumentError` naming ``owner`` and ``arg`` (``what``: what each element is)."""
    if isinstance(given, Distribution):
        if one:
            return [given]
        raise ArgumentError(f"{owner}: {arg} must be a list of distributions (the {what}s), got one, "
                            f"{describe(given)}; pass a list, e.g. [{given.prob_text}, ...]")
    try:
        return list(given)
    except TypeError:
        raise ArgumentError(f"{owner}: {arg} must be a list of distributions (the {what}s), got "
                            f"{type(given).__name__} {given!r}") from None


def _weights_of(owner: Any, given: Any) -> list[float]:
    """The numbers a weights object holds now, in order; a ``TypeError`` naming ``owner`` for an entry that is no
    number (Pixyz's ``must be real number, not str`` at its next use)."""
    try:
        if isinstance(given, Tensor):
            return [float(w) for w in given.detach().reshape(-1).tolist()]
        return [_number(w) for w in given]
    except (TypeError, ValueError, RuntimeError) as e:
        raise ArgumentError(f"{describe(owner)}: weight_modalities must hold numbers, one per weight, got {given!r} "
                            f"({e})") from None


def _number(w: Any) -> float:
    if isinstance(w, (str, bytes)):  # (float("2.5") would read it; Pixyz's arithmetic refuses it)
        raise TypeError(f"must be real number, not {type(w).__name__}")
    return float(w)


def weight_list(owner: str, weight_modalities: Any, n: int, what: str) -> list[float]:
    """``weight_modalities`` as a list of floats; anything else (a number, a string) raises an
    :class:`~pyro_dgm.utils.checks.ArgumentError` naming ``owner``, expecting ``n`` numbers (``what``: which)."""
    try:
        if isinstance(weight_modalities, str):
            raise TypeError
        if isinstance(weight_modalities, Tensor):  # (an nn.Parameter's numbers, read without its gradient)
            weight_modalities = weight_modalities.detach()
        return [_number(w) for w in weight_modalities]
    except (TypeError, ValueError):
        raise ArgumentError(f"{owner}: weight_modalities must be a list of {n} number{'s' if n != 1 else ''} "
                            f"({what}), got {weight_modalities!r}") from None


def site_fn(d: Distribution, mapping: Mapping[str, str], values: Mapping[str, Any], ctx: CallState,
            expand: bool = True, value: Any = None) -> tuple[Any, Any]:
    """``d``'s site distribution (feature dims as event dims) and its base, with ``d``'s names renamed by
    ``mapping`` (the outer distribution's renaming); ``value`` is the value to be scored, when known."""
    core, b = unwrap(d)
    current_of(core)  # (a method a later cell set on its class, before its parameters are read: p477, a mixture's
    # first component, a flow's prior drew with the old get_params)
    b = b.renamed(mapping) if mapping else b
    if value is None:
        return core._dgm_fn(b, values, ctx, expand)  # type: ignore[attr-defined]
    return core._dgm_fn(b, values, ctx, expand, value=value)  # type: ignore[attr-defined]


def own_site(d: Distribution, mapping: Mapping[str, str], values: Mapping[str, Any], ctx: CallState, fn: Any) -> Any:
    """``fn``, the site distribution of inner distribution ``d`` (a mixture's component, a flow's prior) renamed by
    ``mapping``, drawn and scored by ``d``'s own ``sample`` and ``get_log_prob`` where its class has them
    (:func:`~pyro_dgm.distributions.overrides.own_methods`): Pixyz's composites call their parts' public methods."""
    core, b = unwrap(d)
    current_of(core)  # (a method a later cell set on its class)
    return own_methods(core, b.renamed(mapping) if mapping else b, values, ctx, fn)


def site_params(d: Distribution, mapping: Mapping[str, str], values: Mapping[str, Any],
                ctx: CallState) -> dict[str, Any]:
    """``d``'s parameters (constants and network outputs) under the outer names (other keys its network returns
    are kept: the caller reads the parameters it needs, as Pixyz's products of experts read ``get_params``)."""
    core, b = unwrap(d)
    current_of(core)  # (a get_params a later cell set on its class: p477, a product of experts read the old one)
    was = ctx.extra_params
    ctx.extra_params = True
    try:
        return core._dgm_params(b.renamed(mapping) if mapping else b, values, ctx)  # type: ignore[attr-defined]
    finally:
        ctx.extra_params = was


def expand_root(owner: Distribution, fn: Any, b: Binding, ctx: CallState) -> Any:
    """Expand a site distribution built from unexpanded parts as a factor's is: to ``batch_n`` when it has no inputs
    or given inputs of batch 1, and by ``sample_shape`` when none of its inputs was drawn in this pass (a
    :class:`Deterministic`'s outputs of given inputs hold no draw: see
    :class:`~pyro_dgm.distributions.special.GivenEventDims`)."""
    if drawn_in_pass(b.input_var, ctx):
        return fn
    if ctx.batch_n is not None and (not b.input_var or (ctx.obs is None and len(fn.batch_shape) == 1)):
        fn = expand_batch_n(owner, fn, ctx.batch_n)  # (given inputs of one batch dim of 1: batch_n values, as a
        # family's; of another size: refused. Inputs with more batch dims, a plate's, are left as they are)
    if ctx.sample_shape:
        fn = fn.expand(ctx.sample_shape + fn.batch_shape)
    return fn


def inputs_of(d: Distribution, mapping: Mapping[str, str]) -> tuple[str, ...]:
    """The input variables of ``d`` under the outer names."""
    return tuple(mapping.get(v, v) for v in d.input_var)


def refuse_bool_value(owner: Distribution, name: str, x: Any, e: BaseException) -> None:
    """Raise a :class:`DTypeError` for torch's error ``e`` where the value ``x`` of ``name`` that ``owner`` failed
    to score is a bool tensor (torch's densities refuse bool arithmetic); return otherwise."""
    if isinstance(x, Tensor) and x.dtype == torch.bool and isinstance(e, RuntimeError):
        raise DTypeError(f"{describe(owner)}: cannot score {name!r} of dtype torch.bool: it scores numbers "
                         f"(convert with {name}.float()) (torch: {e})") from e


class OneSiteDistribution(Distribution):
    """Base of composite distributions drawn at one Pyro site whose density does not factorize over features
    (flows, mixtures): the renaming passed to the inner distributions, and scoring through the site distribution.

    Subclasses implement ``_dgm_fn(binding, values, ctx, expand)`` and name what they are in ``_dgm_kind``.
    """

    _dgm_kind = "composite distribution"

    def _dgm_mapping(self, b: Binding) -> dict[str, str]:
        """The renaming from this distribution's own conditioning names to the binding's."""
        return {own: new for own, new in zip(self._cond_var, b.cond_var) if own != new}

    def _dgm_fn(self, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                value: Tensor | None = None) -> tuple[Any, Any]:
        raise NotImplementedError

    #: Whether ``sum_features=False`` and ``feature_dims`` are ignored with a warning (a mixture, as in Pixyz, whose
    #: value is log p(x) whatever they say) rather than refused (a flow: Pixyz's per-feature value is wrong).
    _dgm_ignores_feature_options = False

    def _dgm_check_features(self, name: str, x: Any, ev: torch.Size) -> None:
        """Refuse a value ``x`` of variable ``name`` whose trailing dims are not the event shape ``ev``."""
        if not isinstance(x, Tensor) or x.dim() < len(ev) or x.shape[x.dim() - len(ev):] != ev:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            error = ShapeError if isinstance(x, Tensor) else ValueError  # (where Pixyz meets torch's RuntimeError)
            raise error(f"{describe(self)}: expected {name!r} of shape (..., {', '.join(map(str, ev))}), got {got}")
        if x.is_complex():  # (a mixture of Normals would give a complex "log-density", as Pixyz's does)
            raise DTypeError(f"{describe(self)}: cannot score {name!r} of dtype {x.dtype}: it scores real numbers "
                             f"(convert with {name}.real)")

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        x = values[b.var[0]]
        if not isinstance(x, Tensor):  # a numpy array, a number or a list of numbers: the tensor it spells, as a
            x = self._dgm_value_tensor(b.var[0], x)  # family takes it (anything else: a NotATensorError)
            values = {**values, b.var[0]: x}
        fn = self._dgm_fn(b, values, ctx, expand=False, value=x)[0]
        ev = fn.event_shape
        self._dgm_check_features(b.var[0], x, ev)
        if ((not sum_features or feature_dims is not None) and not _all_features(feature_dims, sum_features, x, ev)
                and (ev or feature_dims)):  # (a value without feature dims: each element's is the whole, as asked)
            if not self._dgm_ignores_feature_options:
                raise ValueError(f"{describe(self)}: the log-density of a {self._dgm_kind} does not factorize over "
                                 f"features; score {b.var[0]!r} with sum_features=True and no feature_dims (or "
                                 "feature_dims listing every feature dim)")
            warnings.warn(f"{describe(self)}: the log-density of a {self._dgm_kind} does not factorize over features; "
                          f"sum_features=False and feature_dims are ignored, as in Pixyz: this is log p({b.var[0]})",
                          UserWarning, stacklevel=user_stacklevel())
        ctx.event_dims[b.var[0]] = fn.event_dim  # as when drawing: later factors see x's event dims
        if x.dtype in (torch.float16, torch.bfloat16):  # half-precision data into full-precision layers: promoted, as
            own = self._dgm_weights_dtype()  # Pixyz's flows promote it (its coupling's mask is float32)
            if own is not None and own not in (torch.float16, torch.bfloat16):
                x = x.to(own)
        try:
            return fn.log_prob(x)
        except (ValueError, RuntimeError) as e:  # torch's validation of the value, a dtype the flow refuses...
            if isinstance(e, DTypeError):  # the flow site's own, naming this distribution
                raise
            refuse_bool_value(self, b.var[0], x, e)
            refuse_param_dtype(self, e, fn, f"score {b.var[0]!r}")  # (an expert given integer or bool inputs)
            own = self._dgm_weights_dtype()
            if (isinstance(e, RuntimeError) and not isinstance(e, ValueError) and own is not None and x.dtype != own
                    and "type" in str(e).lower()):
                raise DTypeError(f"{describe(self)}: cannot score {b.var[0]!r} of dtype {x.dtype}: its parameters "
                                 f"are {own}; convert the value with {b.var[0]}.to({own}) (torch: {e})") from e
            if users_own_error(e):  # a flow's own check (Pixyz raises it as it is): kept, with a note
                add_note(e, f"(while {describe(self)} scored {b.var[0]!r} of shape {tuple(x.shape)})",
                         ("score", id(self)))
                raise
            raise clearer(e, f"{describe(self)}: cannot score {b.var[0]!r} of shape {tuple(x.shape)} and dtype "
                             f"{x.dtype}: {e}") from e


def _all_features(feature_dims: Sequence[int] | None, sum_features: bool, x: Tensor, ev: Any) -> bool:
    """Whether ``feature_dims`` names exactly the feature (event) dims of ``x``: the sum over them is the whole
    log-density, which a flow computes (Pixyz's value there is right too)."""
    if not sum_features or feature_dims is None:
        return False
    n = x.dim()
    try:
        dims = [operator.index(d) for d in feature_dims if not isinstance(d, bool)]
    except TypeError:
        return False
    if len(dims) != len(feature_dims):  # ([True]: torch's sum refuses it, as Pixyz's does)
        return False
    if not all(-n <= d < n for d in dims) or len({d % n for d in dims}) != len(dims):  # out of range, repeated:
        return False  # refused, as torch's sum refuses them (Pixyz's error)
    return len(ev) > 0 and {d % n for d in dims} == set(range(n - len(ev), n))


class ExpertWeights(PlainBuffers):
    """Mixin for the products and mixtures of experts, whose ``weight_modalities`` is a buffer (it moves with the
    module, and state dicts hold it). Pixyz keeps a list attribute that its state dicts lack: a state dict saved
    by Pixyz loads with the weights given at construction (``strict=True`` refused it, a missing key); a list
    assigned to it (``poe.weight_modalities = [1., 0., 1.]``, leaving an expert out) sets the buffer. The list,
    array or tensor given (at construction or so assigned) is read again at each use, as Pixyz reads its attribute:
    the weights it changed since are copied into the buffer (:meth:`_dgm_follow_given`)."""

    weight_modalities: Tensor
    _dgm_plain_buffers = ("weight_modalities",)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "weight_modalities":
            super().__setattr__(name, value)
            return
        if "_buffers" not in self.__dict__:
            return  # (a subclass's before Module.__init__: the constructor's weights replace it, as Pixyz's do)
        given, buf = value, self._buffers.get("weight_modalities")
        if buf is not None and isinstance(value, Tensor):
            if value.dim() != 1 and not (value.dim() > 1 and value.numel() == value.shape[0]):
                raise ValueError(f"{describe(self)}: the weight_modalities assigned must be one weight per expert, "
                                 f"a tensor of shape ({buf.numel()},), got shape {tuple(value.shape)}")
            if not isinstance(value, nn.Parameter):
                if value.dim() != 1:  # (Pixyz reads weights[i] of a (k, 1) tensor as the i-th weight)
                    value = value.reshape(value.shape[0])
                if value.dtype != buf.dtype or value.device != buf.device:
                    value = value.detach().to(dtype=buf.dtype, device=buf.device)  # (Pixyz's product takes its
                    # weights as torch.Tensor(w), of the default dtype: a float64 tensor must not make it float64)
        elif buf is not None and value is not None:
            try:  # (as the constructor checks them; what is no list of numbers, or of another length, the
                now = _weights_of(self, value)  # buffer's assignment refuses by its own error)
            except TypeError:
                now = []
            if len(now) >= buf.numel():
                now = now[:buf.numel()]  # (Pixyz reads the first n of a longer list)
                self._dgm_check_weights(now, value, "assigned")
                value = now
        super().__setattr__(name, value)
        self._dgm_keep_given(given)  # (Pixyz's attribute is then the object assigned: its changes are followed)

    def _dgm_init_weights(self, weights: list[float], given: Any) -> None:
        """The constructor's part: the buffer of the checked ``weights``, following ``given``, the object the user
        gave (:meth:`_dgm_keep_given`); an ``nn.Parameter`` given is the weights itself, as Pixyz's attribute is
        (among the parameters; its gradient reaches it here: see porting.md)."""
        self.register_buffer("weight_modalities", torch.tensor(weights))  # type: ignore[attr-defined]
        self._dgm_keep_given(given)
        if isinstance(given, nn.Parameter):
            self.weight_modalities = given

    def _dgm_weights_buffer(self) -> Tensor:
        """The weights' buffer (or the ``nn.Parameter`` assigned in its place); an
        :class:`~pyro_dgm.utils.checks.ArgumentError` naming the distribution if ``None`` was assigned (Pixyz's
        ``TypeError`` at the next use)."""
        buf = self._buffers.get("weight_modalities")
        if buf is None:
            buf = self._parameters.get("weight_modalities")
        if buf is None:
            raise ArgumentError(f"{describe(self)}: weight_modalities is None; assign the weights, a list, an array "
                                "or a tensor of numbers, one per weight")
        return buf

    def _dgm_check_weights(self, now: list[float], given: Any, how: str) -> None:
        if not all(0 <= w < float("inf") for w in now) or not sum(now) > 0:
            raise ValueError(f"{describe(self)}: the weight_modalities {how} ({given!r}) are {now}, but must be "
                             "finite non-negative numbers, not all 0 (each scales an expert)")

    def _dgm_keep_given(self, given: Any) -> None:
        """Follow ``given``, the weights object the user gave (a list or a numpy array; a tensor other than the
        buffer): Pixyz keeps that object as its attribute and reads it at each use, so a change made to it in place
        afterwards (``w[1] = 5.``) weighs the experts from then on (:meth:`_dgm_follow_given`)."""
        d = self.__dict__
        buf = d.get("_buffers", {}).get("weight_modalities")
        if (given is None or buf is None or isinstance(given, (tuple, str)) or isinstance(given, nn.Parameter)
                or not (isinstance(given, (list, Tensor)) or type(given).__module__ == "numpy")):
            d.pop("_dgm_given_weights", None)  # (a tuple cannot change; an nn.Parameter assigned is the weights
            return  # itself; a tensor assigned is followed even while it is the buffer: .to() replaces the buffer)
        d["_dgm_given_weights"] = [given, _weights_of(self, given)[:buf.numel()]]

    def _dgm_follow_given(self) -> None:
        """Copy into the buffer the weights that changed in the object the user gave (see :meth:`_dgm_keep_given`)
        since it was last read; the object itself is never written. (Pixyz has one object: a change made through the
        product, ``poe.weight_modalities[1] = 5.``, is the buffer's alone here, and the object's later changes of
        other weights leave it; a change of the object back to the value it had when last read is not seen.)"""
        kept = self.__dict__.get("_dgm_given_weights")
        if kept is None or torch.compiler.is_compiling():  # (a compiled call: followed before it, by CompiledEval)
            return
        buf = self.__dict__["_buffers"].get("weight_modalities")
        if (buf is None or buf.is_meta or buf.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(buf)
                or buf.is_inference()):
            return  # (weights that are no plain buffer now: an nn.Parameter, torch.func's, the meta device's)
        given, last = kept
        n = buf.numel()
        now = _weights_of(self, given)[:n]  # (Pixyz reads the first n of a list that grew)
        if now == last:
            return
        if len(now) < n:
            raise ValueError(f"{describe(self)}: the weight_modalities given ({given!r}) now hold {len(now)} weights, "
                             f"but the product has {n}")
        held = buf.tolist()
        for i, (a, b) in enumerate(zip(now, last)):
            if a != b:
                held[i] = a
        self._dgm_check_weights(held, given, "given, changed since,")
        with torch.no_grad():
            buf.copy_(torch.tensor(held, dtype=buf.dtype, device=buf.device))
        kept[1] = now

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        if self._buffers.get("weight_modalities") is not None:
            state_dict.setdefault(prefix + "weight_modalities", self.weight_modalities)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,  # type: ignore[misc]
                                      missing_keys, unexpected_keys, error_msgs)

    def _get_input_dict(self, x: Any, var: Sequence[str] | None = None) -> dict[str, Any]:
        """Pixyz's protected helper as its products and mixtures of experts have it: the values are ``x``, and a
        dict may leave experts' inputs out (the values it holds of ``var``, default :attr:`input_var`)."""
        if type(x) is dict:
            return {v: x[v] for v in (self.input_var if var is None else var) if v in x}
        return super()._get_input_dict(x, var)  # type: ignore[misc]


class OptionalInputs:
    """Mixin for distributions whose inputs may be left out (experts that are missing): a call needs only ``var``.

    ``input_var`` still lists every input, so products order this factor after the factors that generate them;
    ``replace_var`` keeps the behaviour.
    """

    _var: list[str]
    _cond_var: list[str]
    _dgm_input_var: list[str]

    @property
    def _dgm_required_input_var(self) -> list[str]:
        """The inputs a call cannot do without: none (every expert may be missing)."""
        return []

    def _dgm_input_dict(self, x: Any, needed: Sequence[str] | None = None) -> dict[str, Any]:
        needed = self._dgm_input_var if needed is None else needed
        return super()._dgm_input_dict(x, [v for v in needed if v not in self._cond_var])  # type: ignore[misc]

    def _dgm_run_pyro(self, data: Mapping[str, Any] | None, kwargs: Mapping[str, Any],
                      guide: bool = False) -> dict[str, Any]:
        given = set(data or ()) | set(kwargs)
        if all(v in given for v in self._dgm_input_var):
            return super()._dgm_run_pyro(data, kwargs, guide=guide)  # type: ignore[misc]
        view = copy.copy(self)  # shares modules and Pyro name; its factor loop still runs (and registers) self
        view._dgm_input_var = [v for v in self._dgm_input_var if v in given]
        return Distribution._dgm_run_pyro(view, data, kwargs, guide=guide)  # type: ignore[arg-type]

    def replace_var(self, **replace_dict: str) -> Distribution:
        r = super().replace_var(**replace_dict)  # type: ignore[misc]
        if type(r) is ReplaceVarDistribution and isinstance(r.p, OptionalInputs):
            return OptionalReplaceVarDistribution(r.p, r.replace_dict)
        return r


class OptionalReplaceVarDistribution(OptionalInputs, ReplaceVarDistribution):
    """A renamed distribution whose inputs may be left out (see :class:`OptionalInputs`)."""
