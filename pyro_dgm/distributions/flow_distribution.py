r"""Flow-based distributions (seed paper §5.2): a prior pushed through a flow, scored by change of variables.

- :class:`TransformedDistribution`: :math:`z = f(x)`, :math:`x \sim p_{prior}(x)` (normalizing flows in variational
  inference, where ``f`` runs in the sampling direction);
- :class:`InverseTransformedDistribution`: :math:`x = f^{-1}(z, y)`, :math:`z \sim p_{prior}(z)` (density models such
  as Real NVP and Glow, where ``f`` maps data to the latent space, optionally given a context ``y``);
- the seed-era conveniences :class:`PlanarFlowDistribution` and :class:`RealNVPDistribution` (alias ``RealNVP``).

Each draws its variable as one Pyro site, ``pyro.sample(var, pyro.distributions.TransformedDistribution(prior, flow))``,
so it multiplies with other distributions, runs in ``model``/``guide`` and in any loss that calls ``sample`` and
``get_log_prob``. The log-density is exact: :math:`\log p(z) = \log p_{prior}(f^{-1}(z)) - \log|\det \partial f/\partial
x|`. A value just sampled is scored from the flow's memory of ``(x, z, logdet)``, as in Pixyz, so a flow without a
closed-form inverse scores its own samples.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor
from torch.distributions import Transform

from pyro_dgm.distributions.composite import OneSiteDistribution, check_inner, expand_root, own_site, site_fn
from pyro_dgm.distributions.base import Distribution, ValuesLike
from pyro_dgm.distributions.bindings import Binding, CallState
from pyro_dgm.distributions.effects import PYRO_STACK, given_event_dim, ignores_sites
from pyro_dgm.flows import AffineCoupling, BatchNorm1d, Flow, FlowList, PlanarFlow, Squeeze, Unsqueeze
from pyro_dgm.flows.base import (ConditionedFlow, _dgm_memory, _uninvertible_layer, drawn_input, event_dims_fixed,
                                 given_input, logdets_kept, memory_mark, own_event_dims, refresh_logdet)
from pyro_dgm.layers import MLP, ResNet, ScaleTranslate
from pyro_dgm.utils.checks import (DTypeError, ShapeError, add_note, as_var_list, clearer, describe,
                                   users_own_error)
from pyro_dgm.utils.modules import submodules
from pyro_dgm.utils.random import seeded_call
from pyro_dgm.utils import get_dict_values  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["TransformedDistribution", "InverseTransformedDistribution", "PlanarFlowDistribution",
           "RealNVPDistribution", "RealNVP"]


def as_flow(flow: Any, owner: str) -> Flow:
    """``flow`` as a pyro_dgm flow: a flow is kept, a transform or a list becomes a :class:`FlowList`."""
    if isinstance(flow, Flow):
        return flow
    if isinstance(flow, (Transform, ConditionalTransform)) or (isinstance(flow, (list, tuple)) and flow):
        return FlowList(flow)
    raise TypeError(f"{owner}: flow must be a Flow, a torch/Pyro transform or a list of them, got "
                    f"{type(flow).__name__}")


def _one_var(var: Any, owner: str) -> list[str]:
    names = as_var_list(var, owner, "var")
    if len(names) != 1:
        raise ValueError(f"{owner}: a flow distribution generates one variable, got var={names}")
    return names


def _features_shape(flow: Flow) -> torch.Size:
    """Pixyz's ``features_shape`` of a flow distribution: ``[flow.in_features]``, or ``[]`` when that is None (it is
    what ``print`` shows; the shapes of samples come from the prior)."""
    return torch.Size([flow.in_features]) if flow.in_features else torch.Size()


def _torch_shape_error(e: BaseException) -> bool:
    """Whether ``e`` is torch's own error about shapes (raised in torch's code, or by a torch operation in a flow's
    code: not by the flow's own ``raise``, and not running out of memory): what a draw through a flow that cannot
    take the prior's shape meets."""
    if isinstance(e, torch.OutOfMemoryError) or not any(w in str(e) for w in ("shape", "size", "dimension")):
        return False
    return not users_own_error(e)


class _FlowSite(dist.TransformedDistribution):
    """Pyro's ``TransformedDistribution`` whose ``sample()`` (a draw with ``reparam=False``) keeps the flow in the
    autograd graph: only the base draw carries no gradient, as in Pixyz, so the flow's parameters learn from samples
    (planar flows in variational inference).

    Under :func:`pyro_dgm.utils.random.generator` only the base draw runs under ``seeded_draws`` (the flow's
    networks run as usual, not through the dispatch mode that gives the random operations the generator).

    Its flow keeps the event dims the distribution gave it from the prior's event shape (an input with sample dims,
    ``(L, N, D)``, is a batch of vectors here), where a flow alone decides them from each input."""

    #: the site does not wrap this sampler in seeded_draws: the base draw is wrapped alone (Distribution._dgm_site)
    seeds_its_draws = True
    #: a draw without reparameterization keeps the flow's gradient (see unreparameterized)
    _dgm_flow_site = True

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self._dgm_flowed(seeded_call(self.base_dist, self.base_dist.sample, sample_shape))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self._dgm_flowed(seeded_call(self.base_dist, self.base_dist.rsample, sample_shape))

    def _dgm_flowed(self, drawn: Tensor) -> Tensor:
        """The flow applied to the base's draw, which must keep the draw's batch dims (those of the site as drawn:
        the Pyro plates around it, vectorized particles, included; a value a handler gives the site is not drawn)."""
        x = drawn
        with event_dims_fixed():
            for t in self.transforms:
                x = _step(t, x)
        batch = drawn.shape[:max(drawn.dim() - len(self.base_dist.event_shape), 0)]
        if isinstance(x, Tensor) and (x.dim() < len(batch) or any(n != m and m != 1 for n, m in zip(x.shape, batch))):
            owner, name = self._dgm_owner if self._dgm_owner is not None else (None, "its variable")
            raise ShapeError(f"{describe(owner) if owner is not None else 'TransformedDistribution'}: the flow turned "
                             f"the prior's draw (batch shape {tuple(batch)}) into {name!r} of shape {tuple(x.shape)}: "
                             "a flow must keep the batch dims of its input (its forward() dropped one)")
        return x

    #: the distribution and the variable of this site, named by an error of torch's about the value's dtype
    _dgm_owner: tuple[Any, str] | None = None

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "_FlowSite":
        new = super().expand(batch_shape, _instance)
        new._dgm_owner = self._dgm_owner
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if isinstance(value, Tensor) and not value.numel() and value.dim() > len(self.event_shape):
            return self._dgm_empty_log_prob(value)
        try:
            with event_dims_fixed():
                return super().log_prob(value)
        except RuntimeError as e:  # a value that pyro.condition or model(x=...) gives the site, of another dtype
            if isinstance(e, ValueError) or self._dgm_owner is None or "type" not in str(e).lower():
                raise
            owner, name = self._dgm_owner
            own = owner._dgm_weights_dtype()
            if own is None or value.dtype == own:
                raise
            raise DTypeError(f"{describe(owner)}: cannot score {name!r} of dtype {value.dtype}: its parameters are "
                             f"{own}; convert the value with {name}.to({own}) (torch: {e})") from e


    def _dgm_empty_log_prob(self, value: Tensor) -> Tensor:
        """The log-density of a batch of no rows: no values, of the batch shape (torch's ``Independent`` cannot sum
        0 rows: "cannot reshape tensor of 0 elements into shape [0, -1]"; Pixyz's flows give the empty value). It
        depends on the flow's parameters with a gradient of 0, the derivative of a sum over no rows."""
        n = value.dim() - len(self.event_shape)
        out = value.new_zeros(torch.broadcast_shapes(value.shape[:n], self.batch_shape))
        for t in self.transforms:
            for _ in range(4):  # (torch's inverse of a conditioned flow: each holds the other, the flow is inside)
                if t is None or isinstance(t, torch.nn.Module):
                    break
                inner = getattr(t, "flow", None)
                t = inner if inner is not None else getattr(t, "_inv", None)
            for p in t.parameters() if isinstance(t, torch.nn.Module) else ():
                if p.requires_grad:
                    out = out + p.sum() * 0.0
        return out


# What Pyro's views show (a trace's site table, pyro.render_model): Pyro's name of the distribution; the qualified
# name stays the class's own, so pickle finds it.
_FlowSite.__name__ = "TransformedDistribution"


def _step(t: Any, x: Tensor) -> Tensor:
    """One transform of a draw: a flow remembers it (:meth:`~pyro_dgm.flows.Flow._dgm_draw`)."""
    return t._dgm_draw(x) if isinstance(t, Flow) else t(x)


class _FlowDistribution(OneSiteDistribution):
    """What the two flow distributions share: the prior, the flow, sampling, scoring and the Pyro site."""

    prior: Distribution
    flow: Flow
    _dgm_flow_inverted = False  # whether the prior's variable is the flow's output (InverseTransformedDistribution)
    _dgm_kind = "flow"

    def _dgm_init_flow(self, prior: Distribution, flow: Flow, hidden: str) -> None:
        self.prior = prior
        self.flow = flow
        self._dgm_hidden = hidden
        # torch keeps a weak reference to a transform's inverse (``flow.inv``), made anew when it has been freed;
        # this strong one keeps it one object, so torch.compile's guard on it holds from batch to batch
        self.__dict__["_dgm_flow_inv"] = flow.inv

    @property
    def has_reparam(self) -> bool:
        return self.prior.has_reparam

    @property
    def logdet_jacobian(self) -> Tensor | None:
        """The log-determinant stored by the flow's last ``forward(..., compute_jacobian=True)`` (Pixyz)."""
        return self.flow.logdet_jacobian

    def _dgm_transform(self, b: Binding, values: Mapping[str, Any]) -> Transform:
        raise NotImplementedError

    def _dgm_fn(self, b: Binding, values: Mapping[str, Any], ctx: CallState, expand: bool = True,
                value: Tensor | None = None) -> tuple[Any, Any]:
        """The Pyro ``TransformedDistribution`` of this site, and its base distribution (the prior's)."""
        m = self._dgm_mapping(b)
        base = own_site(self.prior, m, values, ctx, site_fn(self.prior, m, values, ctx, False)[0])  # (the prior's
        # own sample and get_log_prob, where its class has them: Pixyz's flow calls them)
        if self._dgm_flow_inverted and isinstance(value, Tensor):  # a value to score: the flow's input side, whose
            learn = getattr(self.flow, "_dgm_sizes_from", None)  # shapes the flow's layers may take (a Flatten's)
            if learn is not None:
                learn(value.shape)
        if self.flow._dgm_auto:  # flows that take their event dims from the input: from the prior's event shape here
            if not self.flow.__dict__.get("_dgm_dist_dims"):
                own_event_dims(self.flow)
            try:
                self.flow._dgm_adapt(torch.Size([1]) + base.event_shape, self._dgm_flow_inverted)
            except ValueError as e:
                self._dgm_unlearned(b, value, e)
                raise
        if expand and b.input_var:  # a context given to the flow only (not to the prior) sets the batch shape too
            own = {m.get(v, v) for v in self.prior.input_var}  # (the prior's inputs: its batch shape has them)
            context = [v for v in b.input_var if v not in own]
            if context:
                batch = torch.broadcast_shapes(base.batch_shape, *(self._dgm_input_batch_shape(v, values, ctx)
                                                                   for v in context))
                if batch != base.batch_shape:
                    base = base.expand(batch)
        t = self._dgm_transform(b, values)
        try:
            fn = _FlowSite(base, [t])
        except ValueError:  # torch's shape bookkeeping asks a layer for its input shape before any forward ran (a
            learn = getattr(self.flow, "_dgm_sizes_from", None)  # Flatten without in_size): the flow runs forward on
            if self._dgm_flow_inverted or learn is None:  # the prior's draws, of its event shape, which Pixyz's
                self._dgm_unlearned(b, value, None)  # forward records
                raise
            learn(torch.Size([1]) + base.event_shape)
            fn = _FlowSite(base, [t])
        fn._dgm_owner = (self, b.var[0])
        if expand:
            fn = expand_root(self, fn, b, ctx)
        return fn, fn.base_dist

    def _dgm_unlearned(self, b: Binding, value: Any, error: ValueError | None) -> None:
        """Refuse a value to score whose shape the flow's layers do not take (a ``Squeeze`` given ``(N, D)``), so
        that a layer whose sizes come from its input (a ``Flatten`` without ``in_size``) could not learn them: named,
        where the layer's own error would say only that its size is unknown."""
        if self._dgm_flow_inverted and isinstance(value, Tensor):
            raise ShapeError(f"{describe(self)}: cannot score {b.var[0]!r} of shape {tuple(value.shape)}: the flow's "
                             "layers do not take that shape, so the shape they take is not known (give a value of "
                             "the shape the flow was built for, e.g. (N, C, H, W) for an image flow, or give its "
                             "Flatten in_size=(C, H, W))") from error

    @staticmethod
    def _dgm_input_batch_shape(v: str, values: Mapping[str, Any], ctx: CallState) -> torch.Size:
        x = values[v]
        ev = ctx.event_dims.get(v)
        if ev is None and PYRO_STACK and not ignores_sites(PYRO_STACK):  # (inside Pyro: the event dims of the
            ev = given_event_dim(x, ctx)  # site whose value it is, or as many batch dims as fit the plates)
        return x.shape[:x.dim() - ev] if ev is not None else x.shape[:1]

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        fn, base = self._dgm_fn(b, values, ctx)
        t = fn.transforms[0]
        name = b.var[0]
        mark = None  # (a draw's: the hidden value below reads the memory it makes without checking the weights)
        try:
            if ctx.sample_mean:
                with event_dims_fixed():
                    mean = t(base.mean)
                value = self._dgm_record(name, mean, fn.event_dim)
            else:
                mark = memory_mark()
                value = self._dgm_site(name, fn, ctx)  # (_FlowSite checks the flow kept its input's batch dims)
        except RuntimeError as e:  # the prior draws in a dtype the flow's layers refuse (a float64 prior)
            own = self._dgm_weights_dtype()
            try:
                drawn = base.mean.dtype
            except (NotImplementedError, AttributeError, RuntimeError, ValueError):  # (a base without a mean)
                drawn = None
            if isinstance(e, ValueError):
                if isinstance(e, ShapeError) and describe(self) not in str(e):  # (a flow's check of its input,
                    raise type(e)(f"{describe(self)}: cannot draw {name!r}: {e}") from e  # naming only the flow)
                raise
            if own is None or drawn is None or drawn == own or "type" not in str(e).lower():
                if not _torch_shape_error(e):  # (a flow's own error, which Pixyz raises as it is, or not
                    add_note(e, f"(while {describe(self)} drew {name!r})", ("draw", id(self)))  # one of shapes:
                    # kept, with a note)
                    raise
                shape = tuple(base.batch_shape + base.event_shape)  # torch's error inside the flow (conv2d's, of a
                raise clearer(e, f"{describe(self)}: cannot draw {name!r}: its flow cannot take the prior's draw "
                                 f"of shape {shape}: {e}") from e  # draw with a sample_shape) names nothing
            raise DTypeError(f"{describe(self)}: cannot draw {name!r}: the prior draws {drawn} values and the flow's "
                             f"parameters are {own}; convert one of them (e.g. the prior with .to({own})) "
                             f"(torch: {e})") from e
        values[name] = value
        ctx.event_dims[name] = fn.event_dim
        if "_dgm_stored_x" in self.__dict__:  # (a dict a Pixyz program assigned to stored_x: the draw refills it)
            self._dgm_refill_stored_x()
        hidden = self._dgm_hidden
        if ctx.obs is None and hidden not in values and hidden != name and (
                not ctx.kwargs or not self._dgm_flow_inverted or ctx.kwargs.get("return_hidden", True)):
            # Pixyz returns the prior's sample too (an InverseTransformedDistribution's, in a product, unless the
            # call or the factor's graph.set_option says return_hidden=False)
            try:
                with torch.set_grad_enabled(ctx.reparam and torch.is_grad_enabled()), event_dims_fixed():
                    inv = t.inv  # from the flow's memory, leaving logdet_jacobian as it was (Pixyz's sample does)
                    if isinstance(t, Flow):
                        values[hidden] = drawn_input(t, value, mark)
                    elif isinstance(inv, Flow):
                        values[hidden] = Flow.condition(inv, None)._dgm_map(value, mark)
                    elif isinstance(inv, ConditionedFlow):
                        values[hidden] = inv._dgm_map(value, mark)
                    else:
                        values[hidden] = inv(value)
            except NotImplementedError:
                return
            ctx.event_dims[hidden] = len(base.event_shape)  # (a torch Independent has no event_dim)

    def _dgm_sample_flow(self, x_dict: ValuesLike, batch_n: int | None, sample_shape: Sequence[int], return_all: bool,
                         reparam: bool, sample_mean: bool, return_hidden: bool, kwargs: dict[str, Any]
                         ) -> dict[str, Tensor]:
        """Draw the variable, and the prior's (the flow's other side) unless ``return_hidden=False``, as Pixyz.

        A value given for the prior's variable is not an input: it is drawn anew, and the drawn value (the one the
        variable was mapped from) is returned in its place, as by Pixyz; with ``return_hidden=False`` the given
        value is handed back unchanged, as by Pixyz. Either way it keeps its place among the given values (Pixyz's
        order: ``x_dict``'s keys, then the new ones)."""
        hidden = self._dgm_hidden
        given = None
        if isinstance(x_dict, Mapping) and hidden in x_dict and hidden not in self._var and \
                hidden not in self._dgm_input_var:
            given = x_dict[hidden]
            given_keys = list(x_dict)
            x_dict = {k: v for k, v in x_dict.items() if k != hidden}
        out = Distribution.sample(self, x_dict, batch_n=batch_n, sample_shape=sample_shape, return_all=True,
                                  reparam=reparam, sample_mean=sample_mean, **kwargs)
        if not return_hidden and hidden not in self._var:
            out.pop(hidden, None)
            if given is not None:
                out[hidden] = given
        if return_all:
            if given is not None and hidden in out:
                ordered = {k: out[k] for k in given_keys if k in out}
                ordered.update(out)
                return ordered
            return out
        keep = list(self._var) + ([hidden] if return_hidden else [])
        return {k: out[k] for k in keep if k in out}

    def get_log_prob(self, x_dict: ValuesLike, sum_features: bool = True, feature_dims: Sequence[int] | None = None,
                     compute_jacobian: bool = False, **kwargs: Any) -> Tensor:
        """The exact log-density (the log-determinant is always computed for the values given). With
        ``compute_jacobian=True`` the flow's ``logdet_jacobian`` (and its layers') then holds the log-determinant at
        these values, as Pixyz's ``TransformedDistribution`` stores it."""
        lp = super().get_log_prob(x_dict, sum_features=sum_features, feature_dims=feature_dims, **kwargs)
        if compute_jacobian and not self._dgm_flow_inverted and isinstance(x_dict, Mapping) and \
                self._var[0] in x_dict:
            refresh_logdet(self.flow, x_dict[self._var[0]])
        return lp

    def dist(self, x_dict: ValuesLike = None, batch_n: int | None = None, **kwargs: Any) -> Any:
        """The ``pyro.distributions.TransformedDistribution`` given the inputs (event dims: the features).

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> from pyro_dgm.flows import PlanarFlow
        >>> p = TransformedDistribution(Normal(loc=torch.zeros(2), scale=1., var=["x"]), PlanarFlow(2), var=["z"])
        >>> d = p.dist(batch_n=3)
        >>> tuple(d.batch_shape), tuple(d.event_shape)
        ((3,), (2,))
        """
        values = self._dgm_input_dict(x_dict)
        return self._dgm_fn(self._dgm_binding, values, CallState(batch_n=batch_n, kwargs=kwargs))[0]

    def _dgm_no_closed_form(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{describe(self)}: {what} of a flow distribution has no closed form; estimate "
                                   "it from samples")

    def get_params(self, params_dict: ValuesLike = None, **kwargs: Any) -> dict[str, Tensor]:
        """The prior's parameters given the inputs."""
        return self.prior.get_params(params_dict, **kwargs)

    def get_entropy(self, x_dict: ValuesLike = None, sum_features: bool = True,
                    feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        raise self._dgm_no_closed_form("the entropy")

    def sample_mean(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        raise self._dgm_no_closed_form("the mean")

    def sample_variance(self, x_dict: ValuesLike = None, **kwargs: Any) -> Tensor:
        raise self._dgm_no_closed_form("the variance")


class TransformedDistribution(_FlowDistribution):
    r"""The distribution of :math:`z = f(x)` for :math:`x \sim p_{prior}(x)` (a flow in the sampling direction).

    :math:`\log p(z) = \log p_{prior}(x) - \log|\det \partial f/\partial x|` with :math:`x = f^{-1}(z)`; samples also
    return ``x`` under the prior's variable name (as Pixyz), unless that name already has a value.

    Parameters
    ----------
    prior : Distribution
        The base distribution :math:`p_{prior}(x)` (or :math:`q(x|c)`; its ``cond_var`` become this one's).
    flow : Flow, transform or list of them
        :math:`f`; a list becomes a :class:`~pyro_dgm.flows.FlowList`.
    var : list of str
        The one variable :math:`z`.
    name : str, default ``"p"``

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> from pyro_dgm.flows import PlanarFlow
    >>> prior = Normal(loc=torch.zeros(2), scale=1., var=["x"], name="p_{prior}")
    >>> q = TransformedDistribution(prior, [PlanarFlow(2), PlanarFlow(2)], var=["z"], name="q")
    >>> print(q.prob_joint_factorized_and_text)
    q(z) = q(z=f_{flow}(x))
    >>> s = q.sample(batch_n=3)
    >>> sorted(s), tuple(q.get_log_prob(s).shape)
    (['x', 'z'], (3,))
    """

    def __init__(self, prior: Distribution, flow: Any, var: Sequence[str], name: str = "p") -> None:
        owner = f"TransformedDistribution {name}"
        check_inner(owner, prior, "prior")
        var = _one_var(var, owner)
        flow = as_flow(flow, owner)
        super().__init__(var=var, cond_var=prior.cond_var, name=name,
                         features_shape=_features_shape(flow))
        self._dgm_init_flow(prior, flow, prior.var[0])

    @property
    def distribution_name(self) -> str:
        return "TransformedDistribution"

    def sample(self, x_dict: ValuesLike = None, batch_n: int | None = None,
               sample_shape: Sequence[int] = torch.Size(), return_all: bool = True, reparam: bool = False,
               compute_jacobian: bool = True, *, sample_mean: bool = False, return_hidden: bool = True,
               **kwargs: Any) -> dict[str, Tensor]:
        """Draw :math:`z = f(x)`, :math:`x \\sim p_{prior}`; the result holds ``x`` too, as Pixyz's (whose
        TransformedDistribution has no ``return_hidden``: it is accepted and ignored). The flow stores the
        log-determinant of this draw in ``logdet_jacobian`` (with ``compute_jacobian=False`` it, and its layers',
        are left as they were, as in Pixyz).

        ``reparam=True`` keeps the prior's draw in the autograd graph too (Pixyz does not pass it on, so the prior's
        parameters get no pathwise gradient); the flow is in the graph either way, as in Pixyz.
        """
        if compute_jacobian:
            return self._dgm_sample_flow(x_dict, batch_n, sample_shape, return_all, reparam, sample_mean, True, kwargs)
        with logdets_kept(self.flow):
            return self._dgm_sample_flow(x_dict, batch_n, sample_shape, return_all, reparam, sample_mean, True, kwargs)

    @property
    def flow_input_var(self) -> list[str]:
        """The prior's variable, the input of the flow."""
        return [self._dgm_hidden]

    @property
    def _flow_input_var(self) -> list[str]:  # (Pixyz's protected name, which subclasses read)
        return [self._dgm_hidden]

    def _inference(self, x_dict: Mapping[str, Any], return_all: bool = True, compute_jacobian: bool = False
                   ) -> dict[str, Tensor]:
        """Pixyz's protected inverse map, which subclasses call: ``{prior var: f^{-1}(z), z: z}`` and the
        conditions (plus ``x_dict`` if ``return_all``); ``compute_jacobian`` runs the flow on it again to store
        its log-determinant."""
        values = self._dgm_input_dict(x_dict, self._var + self._cond_var)
        z = values[self._var[0]]
        x = self.inverse(z)
        out = {self._dgm_hidden: x, self._var[0]: z, **{c: values[c] for c in self._cond_var}}
        if compute_jacobian:
            self.forward(x, compute_jacobian=True)
        return {**out, **x_dict} if return_all else out

    @property
    def prob_factorized_text(self) -> str:
        cond = f"|{','.join(self._cond_var)}" if self._cond_var else ""
        return f"{self._name}({self._var[0]}=f_{{flow}}({self._dgm_hidden}){cond})"

    def _dgm_transform(self, b: Binding, values: Mapping[str, Any]) -> Transform:
        return self.flow

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        z = values[b.var[0]]
        if self.flow.training and isinstance(z, Tensor):
            m = _dgm_memory(self.flow, z=z)
            if m is None or m.z is not z:  # scored by inverting the flow
                self._dgm_check_invertible(b.var[0], z, m.z if m is not None else
                                           self.flow.__dict__.get("_dgm_copied_z"))
        u = values.get(self._dgm_hidden)
        if isinstance(u, Tensor) and isinstance(self.flow, Flow):  # (a sample dict: Pixyz scores its input)
            with given_input(self.flow, u):
                return super()._dgm_score_with(b, values, ctx, sum_features, feature_dims)
        return super()._dgm_score_with(b, values, ctx, sum_features, feature_dims)

    def _dgm_check_invertible(self, name: str, z: Tensor, last: Tensor | None) -> None:
        """Refuse to score a value that is not the flow's last draw (``last``; compared by value: a copy of the draw,
        or the draw scored by a copy of the distribution, is that draw) where the flow has a layer that Pixyz cannot
        invert (a planar flow: Pixyz scores only its last draw) beside a batch normalization in training mode, whose
        inverse uses the statistics of the batch it last ran on: ours (numerical through the first) would not invert
        the map that drew the value. (A flow that Pixyz inverts is scored as Pixyz scores it.)"""
        layers = submodules(self.flow)
        norm = next((f for f in layers if isinstance(f, BatchNorm1d) and f.training), None)
        other = next(filter(_uninvertible_layer, layers), None) if norm is not None else None
        if (norm is not None and other is not None
                and not (last is not None and last.shape == z.shape and torch.equal(last.detach(), z.detach()))):
            raise ValueError(
                f"{describe(self)}: cannot score {name!r}: it is not the flow's last draw, and {type(norm).__name__} "
                f"in training mode has no inverse of the map that drew it (it normalizes with the statistics of the "
                f"batch it last ran on; {type(other).__name__} has no inverse in Pixyz, which refuses too); score a "
                "draw before drawing again, or call .eval() on the distribution first")

    def forward(self, x: Tensor, y: Tensor | None = None, compute_jacobian: bool = True) -> Tensor:
        """:math:`z = f(x)` (the flow's ``forward``; stores ``logdet_jacobian``)."""
        z = self.flow.forward(x, y, compute_jacobian=compute_jacobian)
        if "_dgm_stored_x" in self.__dict__:  # (a dict a Pixyz program assigned to stored_x: the run refills it)
            self._dgm_refill_stored_x()
        return z

    @property
    def stored_x(self) -> dict[int, Tensor]:
        """Pixyz's record of the flow's last forward run, ``{hash(z): x}`` (empty before one), read from what the
        flow remembers of it: a new dict at each read, or the dict assigned to it, which a forward run since the
        last read refills (as Pixyz's forward does: emptied, then the run's entry)."""
        if "_dgm_stored_x" in self.__dict__:
            return self._dgm_refill_stored_x()
        m = getattr(self.flow, "_dgm_memory", None)
        return {} if m is None or m.by_inverse else {hash(m.z): m.x}

    @stored_x.setter
    def stored_x(self, value: dict[int, Tensor]) -> None:
        d = self.__dict__
        d["_dgm_stored_x"] = value
        d["_dgm_stored_from"] = getattr(self.flow, "_dgm_memory", None)  # (a run before the assignment is not in it)

    def _dgm_refill_stored_x(self) -> dict[int, Tensor]:
        """The dict assigned to :attr:`stored_x`, emptied and given the flow's last forward run if it ran since."""
        d = self.__dict__
        own, m = d["_dgm_stored_x"], getattr(self.flow, "_dgm_memory", None)
        if m is not None and not m.by_inverse and d.get("_dgm_stored_from") is not m:
            own.clear()
            own[hash(m.z)] = m.x
            d["_dgm_stored_from"] = m
        return own

    def inverse(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        r""":math:`x = f^{-1}(z)`."""
        return self.flow.inverse(z, y)


class InverseTransformedDistribution(_FlowDistribution):
    r"""The distribution of :math:`x = f^{-1}(z, y)` for :math:`z \sim p_{prior}(z)`: a flow ``f`` maps data ``x`` to
    the latent space (given an optional context ``y``), and the model samples through its inverse.

    :math:`\log p(x|y) = \log p_{prior}(f(x, y)) + \log|\det \partial f/\partial x|`.

    Parameters
    ----------
    prior : Distribution
        :math:`p_{prior}(z)`.
    flow : Flow, transform or list of them
        :math:`f`, from the data to the latent space.
    var : list of str
        The one variable :math:`x`.
    cond_var : list of str, optional
        Conditioning variables: the first is passed to the flow as ``y`` (a conditional flow), as in Pixyz; the others
        (and the prior's own ``cond_var``, which are added) condition the prior.
    name : str, default ``"p"``

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> from pyro_dgm.flows import AffineCoupling
    >>> prior = Normal(loc=torch.zeros(2), scale=1., var=["z"], name="p_{prior}")
    >>> shift = lambda x, y: (torch.zeros_like(x), y.expand_as(x))  # z_2 = x_2 + y
    >>> p = InverseTransformedDistribution(prior, AffineCoupling(2, scale_translate_net=shift), var=["x"],
    ...                                    cond_var=["y"])
    >>> print(p.prob_joint_factorized_and_text)
    p(x|y) = p(x=f^{-1}_{flow}(z,y))
    >>> x, y = torch.tensor([[0.5, 1.0]]), torch.tensor([[3.0]])
    >>> expected = prior.get_log_prob({"z": torch.tensor([[0.5, 4.0]])})
    >>> bool(torch.allclose(p.get_log_prob({"x": x, "y": y}), expected))
    True
    """

    def __init__(self, prior: Distribution, flow: Any, var: Sequence[str], cond_var: Sequence[str] | None = None,
                 name: str = "p") -> None:
        owner = f"InverseTransformedDistribution {name}"
        check_inner(owner, prior, "prior")
        var = _one_var(var, owner)
        given = as_var_list(cond_var, owner, "cond_var")
        flow_cond = given[:1]  # Pixyz passes the first conditioning variable to the flow
        flow = as_flow(flow, owner)
        cond = given + [v for v in prior.cond_var if v not in given]
        super().__init__(var=var, cond_var=cond, name=name,
                         features_shape=_features_shape(flow))
        self._dgm_init_flow(prior, flow, prior.var[0])
        self._dgm_flow_cond_var = flow_cond

    _dgm_flow_inverted = True

    @property
    def distribution_name(self) -> str:
        return "InverseTransformedDistribution"

    def sample(self, x_dict: ValuesLike = None, batch_n: int | None = None,
               sample_shape: Sequence[int] = torch.Size(), return_all: bool = True, reparam: bool = False,
               return_hidden: bool = True, sample_mean: bool = False, **kwargs: Any) -> dict[str, Tensor]:
        """Draw :math:`x = f^{-1}(z, y)`, :math:`z \\sim p_{prior}`; the result holds ``z`` too unless
        ``return_hidden=False``, as Pixyz's."""
        return self._dgm_sample_flow(x_dict, batch_n, sample_shape, return_all, reparam, sample_mean, return_hidden,
                                     kwargs)

    @property
    def flow_output_var(self) -> list[str]:
        """The prior's variable, the output of the flow."""
        return [self._dgm_hidden]

    @property
    def _flow_output_var(self) -> list[str]:  # (Pixyz's protected name, which subclasses read)
        return [self._dgm_hidden]

    @property
    def prob_factorized_text(self) -> str:
        return f"{self._name}({self._var[0]}=f^{{-1}}_{{flow}}({','.join([self._dgm_hidden] + self._cond_var)}))"

    def _dgm_transform(self, b: Binding, values: Mapping[str, Any]) -> Transform:
        if not self._dgm_flow_cond_var:
            # the flow's map as a transform (not the module: torch's inverse of its inverse would call flow(x), so
            # the flow's own forward hooks would run where Pixyz calls flow.forward(x) directly, and a hook's edit
            # would not reach the log-det); one object, kept (see _dgm_init_flow)
            kept = self.__dict__.get("_dgm_flow_map")
            if kept is None or kept[0] is not self.flow:
                kept = self.__dict__["_dgm_flow_map"] = (self.flow, Flow.condition(self.flow, None).inv)
            return kept[1]
        y = values[self._dgm_mapping(b).get(self._dgm_flow_cond_var[0], self._dgm_flow_cond_var[0])]
        return Flow.condition(self.flow, y).inv  # (the library's: a Pixyz flow's own `condition` is the user's)

    def forward(self, x: Tensor, y: Tensor | None = None, compute_jacobian: bool = True) -> Tensor:
        """:math:`z = f(x, y)` (the flow's ``forward``; stores ``logdet_jacobian``)."""
        return self.flow.forward(x, y, compute_jacobian=compute_jacobian)

    def inverse(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        r""":math:`x = f^{-1}(z, y)`."""
        return self.flow.inverse(z, y)

    def inference(self, x_dict: Mapping[str, Any], return_all: bool = True, compute_jacobian: bool = False
                  ) -> dict[str, Tensor]:
        """Map the data to the latent space: ``{prior var: f(x, y)}`` (then ``x_dict``'s other values if
        ``return_all``, Pixyz's order; a value given for the prior's variable is replaced by ``f(x, y)``, where
        Pixyz's returns the given one)."""
        values = self._dgm_input_dict(x_dict, self._var + self._dgm_flow_cond_var)
        y = values[self._dgm_flow_cond_var[0]] if self._dgm_flow_cond_var else None
        hidden = self._dgm_hidden
        out = {hidden: self.flow.forward(values[self._var[0]], y, compute_jacobian=compute_jacobian)}
        if return_all:
            out.update((k, v) for k, v in values.items() if k != hidden)
        return out


class PlanarFlowDistribution(TransformedDistribution):
    r"""The seed's ``PlanarFlow(prior, dim, num_layers)`` distribution: ``num_layers`` planar flows on ``prior``.

    Named so as not to clash with the flow :class:`pyro_dgm.flows.PlanarFlow` (Pixyz 0.3.3 keeps only the flow).
    The flows are built with ``constraint_u=True``, so they are invertible and any value can be scored.

    Parameters
    ----------
    prior : Distribution
    dim : int
        The prior's number of features.
    num_layers : int, default 1
    var : list of str, default ``["x"]``
    name : str, default ``"p"``
    constraint_u : bool, default True
        Build the planar flows with the invertibility constraint (see :class:`pyro_dgm.flows.PlanarFlow`).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> q0 = Normal(loc="h", scale=1., var=["z_0"], cond_var=["h"], name="q")
    >>> q = PlanarFlowDistribution(q0, dim=2, num_layers=4, var=["z"], name="q")
    >>> print(q.prob_text, len(q.flow))
    q(z|h) 4
    >>> s = q.sample({"h": torch.zeros(5, 2)})
    >>> sorted(s), tuple(q.get_log_prob(s).shape)
    (['h', 'z', 'z_0'], (5,))
    """

    def __init__(self, prior: Distribution, dim: int, num_layers: int = 1, var: Sequence[str] = ("x",),
                 name: str = "p", constraint_u: bool = True) -> None:
        if num_layers < 1:
            raise ValueError(f"PlanarFlowDistribution: num_layers must be at least 1, got {num_layers}")
        super().__init__(prior, FlowList([PlanarFlow(dim, constraint_u=constraint_u) for _ in range(num_layers)]),
                         var=var, name=name)


def _image_couplings(channels: int, n: int, mask_type: str, mid_channels: int, num_blocks: int,
                     first: bool) -> list[Flow]:
    return [AffineCoupling(channels, mask_type=mask_type, event_dim=3, inverse_mask=bool(i % 2),
                           scale_translate_net=ScaleTranslate(
                               ResNet(channels, mid_channels, 2 * channels, num_blocks, kernel_size=3, padding=1,
                                      double_after_norm=first and i == 0), channels, event_dim=3))
            for i in range(n)]


def real_nvp_flow(dim: int, num_multiscale_layers: int = 2, image: bool = False, hidden_features: int = 64,
                  mid_channels: int = 32, num_blocks: int = 2) -> FlowList:
    """The flow of :class:`RealNVPDistribution` (from the data to the latent space).

    Vectors: ``num_multiscale_layers`` pairs of affine couplings with alternating masks and MLP networks.
    Images (``dim`` channels): per scale, 3 checkerboard couplings, a squeeze and 3 channel-wise couplings; then 4
    checkerboard couplings and as many unsqueezes as scales, so the latent has the image's shape (Dinh et al.'s
    multi-scale architecture without factoring out half of the variables at each scale).
    """
    flows: list[Flow] = []
    if not image:
        if dim < 2:
            raise ValueError(f"RealNVP: a coupling needs at least 2 features, got dim={dim}")
        for _ in range(num_multiscale_layers):
            for inverse_mask in (False, True):
                net = ScaleTranslate(MLP(dim, hidden_features, 2 * dim), dim)
                flows.append(AffineCoupling(dim, mask_type="checkerboard", event_dim=1, inverse_mask=inverse_mask,
                                            scale_translate_net=net))
        return FlowList(flows)
    c = dim
    for scale in range(num_multiscale_layers):
        flows += _image_couplings(c, 3, "checkerboard", mid_channels, num_blocks, first=scale == 0)
        flows.append(Squeeze())
        c *= 4
        flows += _image_couplings(c, 3, "channel_wise", mid_channels, num_blocks, first=False)
    flows += _image_couplings(c, 4, "checkerboard", mid_channels, num_blocks, first=num_multiscale_layers == 0)
    flows += [Unsqueeze() for _ in range(num_multiscale_layers)]
    return FlowList(flows)


class RealNVPDistribution(InverseTransformedDistribution):
    r"""The seed's ``RealNVP(prior, dim, num_multiscale_layers, image)``: a Real NVP density model
    :math:`x = f^{-1}(z)`, :math:`z \sim p_{prior}(z)` (Dinh et al. 2017); see :func:`real_nvp_flow`.

    Parameters
    ----------
    prior : Distribution
        :math:`p(z)` with the data's shape (``dim`` features, or ``(dim, H, W)`` images).
    dim : int
        Features of a vector, or channels of an image.
    num_multiscale_layers : int, default 2
    var : list of str, default ``["x"]``
    image : bool, default False
    name : str, default ``"p"``
    hidden_features : int, default 64
        Width of the coupling MLPs (vectors).
    mid_channels, num_blocks : int
        Width and depth of the coupling ResNets (images).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = RealNVPDistribution(Normal(loc=torch.zeros(2), scale=1., var=["z"]), dim=2, var=["x"])
    >>> x = torch.randn(4, 2)
    >>> bool(torch.allclose(p.get_log_prob({"x": x}), p.prior.get_log_prob({"z": x}), atol=1e-6))  # starts at f = id
    True
    >>> tuple(p.sample(batch_n=4)["x"].shape)
    (4, 2)
    """

    def __init__(self, prior: Distribution, dim: int, num_multiscale_layers: int = 2, var: Sequence[str] = ("x",),
                 image: bool = False, name: str = "p", hidden_features: int = 64, mid_channels: int = 32,
                 num_blocks: int = 2) -> None:
        flow = real_nvp_flow(dim, num_multiscale_layers, image, hidden_features, mid_channels, num_blocks)
        super().__init__(prior, flow, var=var, name=name)

    # ------------------------------------------------------------------ the early API reference's interface
    def forward(self, x: Tensor, y: Tensor | None = None, compute_jacobian: bool = True, *, inverse: bool = False,
                jacobian: bool = False) -> Any:
        r"""The flow's map: :math:`z = f(x)` (data to latent, as :meth:`InverseTransformedDistribution.forward`);
        with ``inverse=True`` its inverse :math:`x = f^{-1}(z)`; with ``jacobian=True`` also the log-determinant of
        the map computed (one value per batch element).

        ``inverse`` and ``jacobian`` are the early API reference's ``forward(x, inverse=False, jacobian=False)``,
        taken by keyword: the positional arguments are Pixyz 0.3.3's (``y``, ``compute_jacobian``). The log-det of
        the inverse is :math:`\log|\det \partial f^{-1}/\partial z| = -\log|\det \partial f/\partial x|` at
        :math:`x = f^{-1}(z)`. As in Pixyz, the inverse does not store :attr:`logdet_jacobian`.

        Parameters
        ----------
        x : Tensor
            The input of the map (the data, or with ``inverse=True`` the latent value).
        y : Tensor, optional
            The flow's context (Pixyz 0.3.3's argument; a Real NVP has none).
        compute_jacobian : bool, default True
            Store the forward log-det in :attr:`logdet_jacobian` (Pixyz 0.3.3's argument).
        inverse : bool, default False
        jacobian : bool, default False

        Returns
        -------
        Tensor, or (Tensor, Tensor) with ``jacobian=True``

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = RealNVP(Normal(loc=torch.zeros(2), scale=1., var=["z"]), dim=2, var=["x"])
        >>> x = torch.randn(3, 2)
        >>> z, logdet = p.forward(x, jacobian=True)
        >>> x_back, logdet_inv = p.forward(z, inverse=True, jacobian=True)
        >>> bool(torch.allclose(x_back, x, atol=1e-5)), bool(torch.allclose(logdet_inv, -logdet, atol=1e-5))
        (True, True)
        """
        if isinstance(y, bool):
            raise TypeError(f"{describe(self)}: forward's second argument is the flow's context y (Pixyz 0.3.3's "
                            f"forward(x, y=None, compute_jacobian=True)); give the early reference's options by "
                            f"keyword: forward(x, inverse={y})")
        if inverse:
            if not jacobian:
                return self.flow.inverse(x, y)
            with logdets_kept(self.flow):
                out, forward_logdet = Flow.inverse_with_logdet(self.flow, x, y)  # (ours, see below)
            return out, -forward_logdet
        if not jacobian:
            return super().forward(x, y, compute_jacobian)
        if compute_jacobian:
            z = super().forward(x, y, True)
            return z, self.flow.logdet_jacobian
        with logdets_kept(self.flow):
            return Flow.forward_with_logdet(self.flow, x, y)  # (ours: a subclass's of that name is its own)

    def sample(self, x_dict: ValuesLike = None, batch_n: int | None = None,
               sample_shape: Sequence[int] = torch.Size(), return_all: bool = True, reparam: bool = False,
               return_hidden: bool = True, sample_mean: bool = False, *, only_flow: bool = False,
               **kwargs: Any) -> dict[str, Tensor]:
        r"""Draw :math:`x = f^{-1}(z)`, :math:`z \sim p_{prior}` (:meth:`InverseTransformedDistribution.sample`).

        With ``only_flow=True`` (the early API reference's option) ``z`` is not drawn: the given value of the
        prior's variable is mapped, :math:`x = f^{-1}(z)`.

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = RealNVP(Normal(loc=torch.zeros(2), scale=1., var=["z"]), dim=2, var=["x"])
        >>> z = torch.randn(3, 2)
        >>> bool(torch.equal(p.sample({"z": z}, only_flow=True)["x"], p.inverse(z)))
        True
        """
        if not only_flow:
            return super().sample(x_dict, batch_n, sample_shape, return_all, reparam, return_hidden, sample_mean,
                                  **kwargs)
        if isinstance(x_dict, Tensor):
            x_dict = {self._dgm_hidden: x_dict}
        values = self._dgm_input_dict(x_dict, [self._dgm_hidden])
        x = self.inverse(values[self._dgm_hidden])
        out = {self._var[0]: x, self._dgm_hidden: values[self._dgm_hidden]} if return_hidden else {self._var[0]: x}
        return {**values, **out} if return_all else out

    def sample_inv(self, x: ValuesLike, return_all: bool = True, compute_jacobian: bool = False
                   ) -> dict[str, Tensor]:
        """The early API reference's ``sample_inv(x, return_all=True)``: map the data to the latent space,
        ``{prior var: f(x)}`` (and the given values when ``return_all``); :meth:`inference` under its early name.

        Parameters
        ----------
        x : dict or Tensor
            The data (a bare tensor stands for the variable).
        return_all : bool, default True
        compute_jacobian : bool, default False
            Store the log-det in :attr:`logdet_jacobian` (as :meth:`inference`).

        Examples
        --------
        >>> from pyro_dgm.distributions import Normal
        >>> p = RealNVP(Normal(loc=torch.zeros(2), scale=1., var=["z"]), dim=2, var=["x"])
        >>> s = p.sample(batch_n=3)
        >>> bool(torch.allclose(p.sample_inv(s["x"])["z"], s["z"], atol=1e-5))
        True
        """
        if isinstance(x, Tensor):
            x = {self._var[0]: x}
        return self.inference(x, return_all=return_all, compute_jacobian=compute_jacobian)


RealNVP = RealNVPDistribution
