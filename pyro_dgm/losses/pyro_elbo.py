r"""A term made of plain Pyro model/guide functions: :class:`PyroELBO`, composable with every other loss."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from pyro.infer import ELBO as _PyroELBOBase
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceTailAdaptive_ELBO
from torch import Tensor

from pyro_dgm.losses.base import PREC_NEG, Loss

__all__ = ["PyroELBO"]


def _required_args(fn: Callable[..., Any]) -> list[str]:
    from pyro_dgm.distributions.base import Distribution

    owner = getattr(fn, "__self__", None)
    if isinstance(owner, Distribution):  # a distribution's .model/.guide takes its data by name: its inputs
        return list(owner._dgm_required_input_var)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]


def _check_takes(fn: Callable[..., Any], role: str, names: Sequence[str]) -> None:
    """Refuse data names that ``fn``'s signature cannot take (Pyro calls model and guide with the same data)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        return
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if _in_order(fn, names):
        return
    for v in names:
        if v not in named:
            raise ValueError(f"PyroELBO: the {role} takes no argument {v!r} (input_var={list(names)}, its arguments "
                             f"{[p.name for p in params]}); input_var names the data that both model and guide "
                             "take")


def _in_order(fn: Callable[..., Any], names: Sequence[str]) -> bool:
    """Whether ``fn`` takes ``names`` as its first positional arguments, in that order."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= len(names):
        return positional[:len(names)] == list(names)
    kinds = {p.kind for p in params}  # (a *args without **kwargs takes the rest by position only; a wrapper's
    # (*args, **kwargs) is called by name, as it may hand them to a function that takes them so)
    return inspect.Parameter.VAR_POSITIONAL in kinds and inspect.Parameter.VAR_KEYWORD not in kinds and \
        positional == list(names)[:len(positional)]


class _ByPosition:
    """``fn`` called with the data given by position, as Pyro's scripts pass it to ``svi.step(x)``: Pyro's JIT
    ELBOs key their compiled traces by the keyword arguments' values (a tensor's identity: every new batch would be
    traced again and kept) and by the number of positional ones. ``fn`` gets them by position if it takes them so,
    in that order, else by name."""

    def __init__(self, fn: Callable[..., Any], names: Sequence[str]) -> None:
        self.fn, self.names = fn, tuple(names)
        self.positional = _in_order(fn, names)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.positional:
            return self.fn(*args, **kwargs)
        return self.fn(**dict(zip(self.names, args)), **kwargs)


class PyroELBO(Loss):
    r"""Pyro's loss (the negative ELBO) of a plain Pyro ``model`` and ``guide`` as a loss term.

    Its value is ``elbo.differentiable_loss(model, guide, *data)``, with ``data`` the values of :attr:`input_var`
    (default: the arguments of ``model`` and ``guide`` that have no default; for a pyro_dgm distribution's
    ``.model``/``.guide``, its required inputs), so its gradients are Pyro's own (surrogate terms for
    non-reparameterized sites included). Pyro's ELBOs with a ``differentiable_loss`` work (``Trace_ELBO``,
    ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` for a discrete label, ``TraceTMC_ELBO`` and their ``Jit`` versions),
    and ``TraceGraph_ELBO``, whose value is the loss and whose gradient that of Pyro's surrogate (score-function terms
    with their downstream costs and baselines, as ``SVI`` differentiates it); ``RenyiELBO``, which Pyro computes only
    inside its own step, and ``TraceTailAdaptive_ELBO``, which has no loss value, are refused (a ``TypeError``; use
    them with ``pyro.infer.SVI``, or ``IWELBO`` for alpha = 0).
    The value is a scalar summed over the data, as Pyro computes it; add per-datum terms after ``.sum()`` to match it.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide functions taking the data by name (or by position, in the order of ``input_var``).
    elbo : pyro.infer.ELBO, default ``Trace_ELBO()``
    input_var : list of str, optional
        The data names passed to ``model``/``guide``.

    Examples
    --------
    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(x):
    ...     z = pyro.sample("z", dist.Normal(0., 1.))
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(z, 1.), obs=x)
    >>> def guide(x):
    ...     pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.)), 1.))
    >>> from pyro_dgm.losses import Parameter
    >>> loss = PyroELBO(model, guide) + 0.1 * Parameter("c")
    >>> print(loss, loss.input_var)
    -\mathrm{ELBO}_{Trace\_ELBO} \left[model, guide \right] + 0.1 c ['x', 'c']
    >>> loss.eval({"x": torch.zeros(3), "c": 1.}).shape
    torch.Size([])
    """

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any],
                 elbo: _PyroELBOBase | None = None, input_var: Sequence[str] | None = None) -> None:
        if not callable(model) or not callable(guide):
            raise TypeError(f"PyroELBO: model and guide must be callables, got {type(model).__name__} and "
                            f"{type(guide).__name__}")
        elbo = Trace_ELBO() if elbo is None else elbo
        if not isinstance(elbo, _PyroELBOBase) or isinstance(elbo, Loss):
            raise TypeError(f"PyroELBO: elbo must be a Pyro ELBO such as Trace_ELBO(), got {type(elbo).__name__}")
        if (not hasattr(elbo, "differentiable_loss") and not isinstance(elbo, TraceGraph_ELBO)) or isinstance(
                elbo, TraceTailAdaptive_ELBO):  # (its differentiable_loss is Trace_ELBO's, whose value is inf there)
            raise TypeError(f"PyroELBO: {type(elbo).__name__} gives no differentiable loss (Pyro computes its gradient "
                            "only inside its own SVI step); use an ELBO with differentiable_loss (Trace_ELBO, "
                            "TraceMeanField_ELBO, TraceEnum_ELBO, TraceTMC_ELBO) or TraceGraph_ELBO, or train it with "
                            "pyro.infer.SVI")
        if input_var is None:
            input_var = [v for v in _required_args(model) + _required_args(guide)]
            input_var = list(dict.fromkeys(input_var))
            if not input_var:
                raise ValueError("PyroELBO: cannot tell which data model and guide take (neither has a required "
                                 "argument); pass input_var=[...] naming them")
        else:
            for fn, role in ((model, "model"), (guide, "guide")):
                _check_takes(fn, role, list(input_var))
        super().__init__(list(input_var))
        self.model, self.guide, self.elbo = model, guide, elbo
        self._dgm_callers: tuple[_ByPosition, _ByPosition] | None = None

    @property
    def _dgm_prec(self) -> int:  # type: ignore[override]
        return PREC_NEG

    @property
    def latex(self) -> str:
        name = type(self.elbo).__name__.replace("_", r"\_")
        m = getattr(self.model, "__name__", "model").replace("_", r"\_")
        g = getattr(self.guide, "__name__", "guide").replace("_", r"\_")
        return rf"-\mathrm{{ELBO}}_{{{name}}} \left[{m}, {g} \right]"

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        data = tuple(values[v] for v in self._input_var)  # (the values of a larger formula may hold others)
        elbo = self.elbo
        callers = self.__dict__.get("_dgm_callers")
        if (callers is None or callers[0].fn is not self.model or callers[1].fn is not self.guide
                or callers[0].names != tuple(self._input_var)):  # (made once: a JIT ELBO keys its trace by them)
            callers = self.__dict__["_dgm_callers"] = (_ByPosition(self.model, self._input_var),
                                                       _ByPosition(self.guide, self._input_var))
        model, guide = callers
        if isinstance(elbo, TraceGraph_ELBO):  # the loss, with the gradient of Pyro's surrogate
            value, surrogate = elbo._loss_and_surrogate_loss(model, guide, data, kwargs)
            value, surrogate = torch.as_tensor(value), torch.as_tensor(surrogate)
            return surrogate - surrogate.detach() - value.detach()
        if not torch.is_grad_enabled() and isinstance(elbo, TraceEnum_ELBO):  # (its differentiable_loss refuses a
            # value without a gradient: Model.test, SVI.evaluate_loss, an eval under no_grad; Pyro's loss there)
            return torch.as_tensor(elbo.loss(model, guide, *data, **kwargs))
        return elbo.differentiable_loss(model, guide, *data, **kwargs)
