"""Distributions outside the parametric families: :class:`Deterministic`, :class:`EmpiricalDistribution` and
:class:`CustomProb` (with their seed-era names ``DataDistribution`` and ``CustomLikelihoodDistribution``)."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyro
from torch import Tensor

from pyro_dgm.distributions.base import Distribution, has_network, sum_samples
from pyro_dgm.distributions.bindings import Binding, CallState, forward_binding, forward_extras
from pyro_dgm.distributions.effects import conditioned_value, run_bound_network
from pyro_dgm.utils.checks import ArgumentError, DimensionError, NotATensorError, ShapeError, describe

__all__ = ["Deterministic", "EmpiricalDistribution", "CustomProb", "DataDistribution", "CustomLikelihoodDistribution"]


class GivenEventDims(int):
    """The event dims of a value that a pass computed from given values only (the outputs of a
    :class:`Deterministic` whose inputs hold no draw of the pass, the data of an :class:`EmpiricalDistribution`), as
    ``CallState.event_dims`` records them; an ``int`` to every other reader.

    Such a value holds no draw of the pass, so a factor that reads it draws ``sample_shape`` values (and takes
    ``batch_n``) as a factor whose inputs are all given does, as in Pixyz; a factor that reads a draw of the pass
    draws one value per draw (docs/porting.md).
    """

    __slots__ = ()


def drawn_in_pass(inputs: Iterable[str], ctx: CallState) -> bool:
    """Whether one of ``inputs`` holds a draw of this pass (a value it drew, or computed from one): then the factor
    that reads them draws one value per draw, not ``sample_shape`` values more."""
    event_dims = ctx.event_dims
    for v in inputs:
        e = event_dims.get(v)
        if e is not None and type(e) is not GivenEventDims:
            return True
    return False


class Deterministic(Distribution):
    """A degenerate distribution: ``forward`` maps ``cond_var`` to the values of ``var``.

    Examples
    --------
    >>> import torch
    >>> class Generator(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], cond_var=["z"])
    ...         self.model = torch.nn.Linear(2, 3)
    ...     def forward(self, z):
    ...         return {"x": self.model(z)}
    >>> p = Generator()
    >>> tuple(p.sample({"z": torch.randn(4, 2)})["x"].shape)
    (4, 3)
    >>> p.get_log_prob({"z": torch.zeros(1, 2), "x": torch.zeros(1, 3)})
    Traceback (most recent call last):
     ...
    NotImplementedError: Generator p(x|z): the log-density of a deterministic distribution is not defined
    """

    distribution_name = "Deterministic"  # type: ignore[assignment]
    #: It runs its ``forward`` on every use, as Pixyz does. ``memoizable = True`` (on the class or the instance)
    #: opts in to sharing one pass between the uses of one loss evaluation: the outputs are then reused only when
    #: ``forward`` drew no random numbers and changed no input, weight, buffer or attribute (``memoize_unless_random``),
    #: so a random one (TD-VAE's sampled time steps, added noise) still draws anew; ``docs/porting.md`` lists what
    #: a shared pass does not see (a consumer's ``.data`` edits, a user's code differentiating through it).
    memoizable = False
    memoize_unless_random = True

    def __init__(self, var: Sequence[str], cond_var: Sequence[str] | None = None, name: str = "p",
                 **kwargs: Any) -> None:
        try:
            super().__init__(var=var, cond_var=cond_var, name=name, **kwargs)
        except TypeError as e:
            if "unexpected keyword argument" not in str(e):
                raise
            raise TypeError(f"{type(self).__name__} {name} (var={var!r:.60}): {e}; a Deterministic takes var, "
                            "cond_var, name and features_shape (its network's settings go to its own __init__)"
                            ) from None
        if type(self)._dgm_rebind is Deterministic._dgm_rebind:  # (not a family first in the bases: it binds itself)
            self._dgm_rebind()

    def _dgm_rebind(self) -> None:
        # as Pixyz (and our families), a Deterministic that cannot run (no forward, or forward's arguments not the
        # cond_var) builds, prints and multiplies, and raises at its first call
        unusable: BaseException | None = None
        pos: tuple[str, ...] = ()
        kw: tuple[tuple[str, str], ...] = ()
        if not has_network(self):  # (a forward set on the instance, d.forward = ..., is found first, as in Pixyz)
            unusable = NotImplementedError(
                f"{describe(self)}: subclass Deterministic with a forward({', '.join(self._cond_var)}) that returns "
                f"{{{', '.join(repr(v) for v in self._var)}: ...}}")
        else:
            try:
                pos, kw = forward_binding(self, ())
            except (ValueError, TypeError) as e:
                unusable = e
        self.__dict__.pop("_dgm_draw_with", None)  # (the error of an earlier binding)
        if unusable is not None:
            err = unusable

            def _dgm_draw_with(*_: Any, **__: Any) -> None:  # shadows the method on this instance only
                raise type(err)(*err.args)

            self._dgm_draw_with = _dgm_draw_with
        self._dgm_b = Binding(self._var, self._cond_var, self._dgm_input_var, pos, kw)

    @property
    def _dgm_binding(self) -> Binding:
        return self._dgm_b

    def _dgm_draw_factor(self, values: dict[str, Any], ctx: CallState) -> None:
        b = self._dgm_b  # first: a forward that a later cell gave the class (D.forward = ...) is bound here, before
        self._dgm_draw_with(b, values, ctx)  # the draw is looked up (the error of its old binding shadows it)

    @property
    def has_reparam(self) -> bool:
        return True

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        try:
            kw = {k: values[v] for k, v in b.fwd_kw}
            if ctx.kwargs:
                kw.update(forward_extras(self, ctx.kwargs))
            out = run_bound_network(self, self._dgm_b.fwd_pos, [values[v] for v in b.fwd_pos], kw)
        except Exception as e:  # noqa: BLE001 (named, with its type kept)
            self._dgm_note_inputs(e, b, values)
            raise
        if not isinstance(out, dict) or set(out) != set(self._var):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ArgumentError(f"{describe(self)}: forward() must return a dict with exactly the keys {self._var}, "
                                f"got {got}")
        bn = self._dgm_batch_ndim(b, values, ctx)
        given = not drawn_in_pass(b.input_var, ctx)  # (its outputs then hold no draw of the pass either)
        own_var = self._var
        # the values in the order of forward's dict, as Pixyz's (so sample's result and a product's draws)
        pairs = zip(own_var, b.var) if len(own_var) == 1 else ((k, b.var[own_var.index(k)]) for k in out)
        obs = ctx.obs
        for own, v in pairs:
            value = out[own]
            given_v = obs is not None and v in obs
            if given_v:  # given to a Pyro model's call (joint.model(h=h0)): h0 holds, as
                if isinstance(value, Tensor) and not isinstance(obs[v], Tensor):  # under poutine.condition and in
                    raise NotATensorError(f"{describe(self)}: the value of {v!r} given to the model must be a "
                                          f"tensor (or a numpy array), got {type(obs[v]).__name__}")  # a guide
                value = obs[v]  # (a forward's (h, c) given back: as given)
            if not isinstance(value, Tensor):  # an LSTM's (h, c), a number...: passed on as it is, as Pixyz does
                values[v] = value
                continue
            if ctx.rows_from and v in ctx.rows_from:  # a given value, the computed one (N rows of its features)
                self._dgm_note_given(v, obs[v] if given_v else conditioned_value(v), out[own], bn, ctx, not given_v)
            ev = max(value.dim() - bn, 0)
            values[v] = self._dgm_record(v, value, ev, given_v)
            ctx.event_dims[v] = GivenEventDims(ev) if given else ev

    def _dgm_note_given(self, name: str, given: Any, computed: Any, bn: int, ctx: CallState, conditioned: bool
                        ) -> None:
        """Record whether a value given for an output is one example (:meth:`Distribution._dgm_note_rows`): the
        shape of what the network computes without its ``bn`` batch dims."""
        if isinstance(given, Tensor) and isinstance(computed, Tensor):
            self._dgm_note_rows(name, given, computed.shape[min(bn, computed.dim()):], ctx, conditioned)

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        raise NotImplementedError(f"{describe(self)}: the log-density of a deterministic distribution is not "
                                  "defined")

    def sample(self, x_dict: Any = {}, return_all: bool = True,  # noqa: B006 (Pixyz's signature)
               **kwargs: Any) -> dict[str, Tensor]:
        """``{var: forward(**inputs)}`` (plus the inputs when ``return_all``); ``kwargs`` are
        :meth:`Distribution.sample`'s options (``batch_n``, ``sample_shape``...)."""
        return Distribution.sample(self, x_dict, return_all=return_all, **kwargs)

    def sample_mean(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        """The value of the (first) variable given the inputs."""
        return self.sample(x_dict, return_all=False, **kwargs)[self._var[0]]


class EmpiricalDistribution(Distribution):
    """The data distribution :math:`p_{data}(x)`: sampling returns the given data; it has no density.

    Examples
    --------
    >>> import torch
    >>> p = EmpiricalDistribution(var=["x"])
    >>> print(p.prob_text)
    p_{data}(x)
    >>> x = torch.randn(2, 3)
    >>> p.sample({"x": x})["x"] is x
    True
    """

    distribution_name = "Data distribution"  # type: ignore[assignment]

    def __init__(self, var: Sequence[str], name: str = "p_{data}") -> None:
        super().__init__(var=var, cond_var=None, name=name)
        self._dgm_input_var = list(self._var)

    @property
    def has_reparam(self) -> bool:
        return True

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        for v in b.var:
            if v not in ctx.event_dims:  # (given data: a factor that reads it is drawn as one of given inputs)
                ctx.event_dims[v] = GivenEventDims(max(values[v].dim() - 1, 0))

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        raise NotImplementedError(f"{describe(self)}: the data distribution has no density")

    def sample(self, x_dict: Any = {}, return_all: bool = True,  # noqa: B006 (Pixyz's signature)
               **kwargs: Any) -> dict[str, Tensor]:
        """The given data (and, when ``return_all``, the other given values)."""
        return Distribution.sample(self, x_dict, return_all=return_all, **kwargs)

    def sample_mean(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        """The given data."""
        return self.sample(x_dict, return_all=False)[self._var[0]]


DataDistribution = EmpiricalDistribution


class CustomProb(Distribution):
    """A distribution given by its log-density function ``log_prob_function(**{var: value})``; it cannot sample.

    In a Pyro model its log-density enters as ``pyro.factor``.

    Examples
    --------
    >>> import torch
    >>> p = CustomProb(lambda x: -0.5 * x ** 2, var=["x"])
    >>> p.get_log_prob({"x": torch.ones(3, 2)})
    tensor([-1., -1., -1.])
    """

    def __init__(self, log_prob_function: Callable[..., Tensor], var: Sequence[str],
                 distribution_name: str = "Custom PDF", **kwargs: Any) -> None:
        if not callable(log_prob_function):
            raise TypeError(f"CustomProb: log_prob_function must be callable, got {type(log_prob_function).__name__}")
        super().__init__(var=var, **kwargs)
        self._log_prob_function = log_prob_function
        self._distribution_name = distribution_name
        self._dgm_input_var = list(self._var)
        try:  # as Pixyz, a function that does not take the variables fails at the first call, not here
            self._dgm_check_signature()
        except TypeError as e:
            err = e

            def _dgm_score_with(*_: Any, **__: Any) -> Tensor:  # shadows the method on this instance only
                raise TypeError(*err.args)

            self._dgm_score_with = _dgm_score_with

    def _dgm_check_signature(self) -> None:
        """``log_prob_function`` is called with the variables as keywords: check that it takes them (and no more)."""
        fn = self._log_prob_function
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: it will tell at the call
            return
        prms = list(sig.parameters.values())
        call = f"log_prob_function({', '.join(f'{v}=...' for v in self._var)})"
        if not any(p.kind is p.VAR_KEYWORD for p in prms):
            names = {p.name for p in prms if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
            missing = [v for v in self._var if v not in names]
            if missing:
                raise TypeError(f"{describe(self)}: log_prob_function{sig} takes no argument {missing[0]!r}; it is "
                                f"called as {call}, so name its arguments after var {self._var}")
        extra = [p.name for p in prms if p.default is p.empty and p.name not in self._var
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if extra:
            raise TypeError(f"{describe(self)}: log_prob_function{sig} requires {extra[0]!r}, which is not in var "
                            f"{self._var}; it is called as {call}")

    @property
    def log_prob_function(self) -> Callable[..., Tensor]:
        """The user's log-density function."""
        return self._log_prob_function

    @property
    def distribution_name(self) -> str:  # type: ignore[override]
        return self._distribution_name

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        lp = self._log_prob_function(**{own: values[v] for own, v in zip(self._var, b.var)})
        if not isinstance(lp, Tensor):  # (Pixyz: AttributeError: 'float' object has no attribute 'dim')
            raise TypeError(f"{describe(self)}: log_prob_function must return a tensor of log-densities (one per "
                            f"batch element, e.g. shape (batch,) or (batch, features)), got {type(lp).__name__}")
        if not sum_features:
            return lp
        try:
            return sum_samples(lp, feature_dims)
        except (IndexError, TypeError, RuntimeError) as e:  # a dim out of range or repeated: torch's raw errors
            kind = DimensionError if isinstance(e, IndexError) else ShapeError if isinstance(e, RuntimeError) \
                else TypeError  # (Pixyz's too; each keeps torch's type)
            raise kind(f"{describe(self)}: cannot sum the log-density of shape {tuple(lp.shape)} over feature_dims="
                       f"{feature_dims!r}: {e}") from e

    def sample(self, x_dict: Any = {}, return_all: bool = True,  # noqa: B006 (Pixyz's signature)
               **kwargs: Any) -> dict[str, Tensor]:
        """A distribution given by its log-density cannot sample: raises NotImplementedError (as Pixyz)."""
        raise NotImplementedError(f"{describe(self)}: a distribution given by its log-density cannot sample")

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        if ctx.obs is None:
            raise NotImplementedError(f"{describe(self)}: a distribution given by its log-density cannot sample")
        pyro.factor(_prob_site(self, b), self._dgm_score_with(b, values, ctx, True, None))


def _prob_site(d: Distribution, b: Binding) -> str:
    return f"{d.name}({','.join(b.var)})"


class CustomLikelihoodDistribution(CustomProb):
    """The early API reference's ``CustomLikelihoodDistribution(var=["x"], likelihood=f)``: :class:`CustomProb`
    with the log-likelihood function given by keyword after ``var``.

    ``likelihood`` is called as ``CustomProb``'s ``log_prob_function`` is, ``likelihood(**{var: value})``, and
    returns the log-likelihood (what the reference's ``log_likelihood(x_dict)`` returns), so
    ``CustomLikelihoodDistribution(var=["x"], likelihood=f)`` scores as ``CustomProb(f, var=["x"])``. ``CustomProb``'s
    positional order, ``CustomLikelihoodDistribution(f, ["x"])``, is still taken (a callable first).

    Parameters
    ----------
    var : list of str, default ``["x"]``
    likelihood : callable
        The log-likelihood function.
    **kwargs
        ``CustomProb``'s other arguments (``name``, ``distribution_name``...).

    Raises
    ------
    ValueError
        If no likelihood function is given (as the early reference's class).

    Examples
    --------
    >>> import torch
    >>> p = CustomLikelihoodDistribution(var=["x"], likelihood=lambda x: -0.5 * x ** 2)
    >>> p.log_likelihood({"x": torch.ones(3, 2)})
    tensor([-1., -1., -1.])
    >>> print(p.prob_text, p.input_var)
    p(x) ['x']
    """

    def __init__(self, var: Any = ("x",), likelihood: Any = None, **kwargs: Any) -> None:
        if callable(var) and likelihood is not None and not callable(likelihood):  # CustomProb's order
            var, likelihood = likelihood, var
        if likelihood is None:
            likelihood = kwargs.pop("log_prob_function", None)
        if likelihood is None or callable(var):
            raise ValueError("CustomLikelihoodDistribution: give the log-likelihood function, "
                             "CustomLikelihoodDistribution(var=['x'], likelihood=f), called as f(x=...)")
        super().__init__(likelihood, var=var, **kwargs)
