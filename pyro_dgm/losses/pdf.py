r"""Density terms: :class:`LogProb` (:math:`\log p(x|z)`), :class:`Prob` (:math:`p(x|z)`) and :func:`NLL`."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Sequence

from torch import Tensor

from pyro_dgm.losses.base import PREC_ATOM, PREC_FUNC, Loss, with_input_var
from pyro_dgm.losses.special import DimsArgumentError
from pyro_dgm.utils.checks import ArgumentError, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["LogProb", "Prob", "NLL"]


def check_distribution(p: Any, owner: str, arg: str = "p") -> None:
    from pyro_dgm.distributions.base import Distribution

    if not isinstance(p, Distribution):
        raise ArgumentError(f"{owner}: {arg} must be a pyro_dgm Distribution, got {type(p).__name__}")


def as_dims(owner: Any, arg: str, dims: Any, allow_int: bool = True) -> list[int]:
    """``dims`` (an int when ``allow_int``, or a sequence of ints: Python, numpy or one-element torch integers) as a
    list of ints; anything else (a string, a float, a bool) raises
    :class:`~pyro_dgm.losses.special.DimsArgumentError` (a TypeError, what torch's ``sum`` raises under Pixyz, and
    a RuntimeError, what torch 2.11 and older raise there)
    naming ``owner`` and ``arg``.

    Examples
    --------
    >>> import numpy as np
    >>> as_dims("KullbackLeibler", "dim", np.int64(1)), as_dims("KullbackLeibler", "dim", (0, -1))
    ([1], [0, -1])
    >>> as_dims("LogProb", "feature_dims", "a", allow_int=False)
    Traceback (most recent call last):
    ...
    pyro_dgm.losses.special.DimsArgumentError: LogProb: feature_dims must be a list of ints (dims of the \
element-wise value to sum), got 'a'
    """
    try:
        if isinstance(dims, (str, bytes, bool)):
            raise TypeError
        if allow_int:
            try:
                return [operator.index(dims)]
            except TypeError:
                pass
        items = list(dims)
        if any(isinstance(d, bool) for d in items):
            raise TypeError
        return [operator.index(d) for d in items]
    except TypeError:
        kind = "an int or a list of ints" if allow_int else "a list of ints"
        who = owner if isinstance(owner, str) else describe(owner)
        raise DimsArgumentError(f"{who}: {arg} must be {kind} (dims of the element-wise value to sum), got "
                                f"{dims!r:.80}") from None


class LogProb(Loss):
    r"""The log-density :math:`\log p(x|z)` of a distribution, as a loss term (one value per batch element).

    Parameters
    ----------
    p : Distribution
    sum_features : bool, default True
        Sum over the feature dims (else element-wise).
    feature_dims : list of int, optional
        Sum over these dims instead.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> print(p.log_prob(), p.log_prob().input_var)
    \log p(x) ['x']
    >>> p.log_prob().eval({"x": torch.zeros(1)})
    tensor([-0.9189])
    """

    _dgm_prec = PREC_FUNC

    def __init__(self, p: "Distribution", sum_features: bool = True,
                 feature_dims: Sequence[int] | None = None) -> None:
        check_distribution(p, type(self).__name__)
        super().__init__(input_var=list(p.var) + [v for v in p.input_var if v not in p.var])
        self.p = p
        self.sum_features = sum_features
        self.feature_dims = feature_dims
        if sum_features and feature_dims:  # (Pixyz sums only then; torch's sum would refuse it at each evaluation)
            as_dims(self, "feature_dims", feature_dims, allow_int=False)

    @property
    def latex(self) -> str:
        return rf"\log {self.p.prob_text}"

    def forward(self, x: dict[str, Any] | None = None, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        """Pixyz's ``forward(x={}, **kwargs)``: the values are named ``x`` here (``LogProb(p)(x={...})``)."""
        return self._dgm_value({} if x is None else x, **kwargs), {}

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        return self.p.get_log_prob(values, sum_features=self.sum_features, feature_dims=self.feature_dims, **kwargs)


class Prob(LogProb):
    r"""The density :math:`p(x|z)` of a distribution, as a loss term.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> print(p.prob())
    p(x)
    >>> p.prob().eval({"x": torch.zeros(1)})
    tensor([0.3989])
    """

    _dgm_prec = PREC_ATOM

    @property
    def latex(self) -> str:
        return self.p.prob_text

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        return super()._dgm_value(values, **kwargs).exp()


def NLL(p: "Distribution", sum_features: bool = True, feature_dims: Sequence[int] | None = None, *,
        input_var: Sequence[str] | None = None) -> Loss:
    r"""The negative log-likelihood :math:`-\log p(x|z)` (seed-era name).

    ``input_var`` is the early API reference's ``NLL(p, input_var=None)``: the variables
    :meth:`~pyro_dgm.losses.base.Loss.eval` asks for (see :func:`~pyro_dgm.losses.base.with_input_var`); a list
    given in ``sum_features``' place (a bool) is read so, the reference's positional order.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> nll = NLL(Normal(loc=0., scale=1., var=["x"]))
    >>> print(nll, nll.eval({"x": torch.zeros(1)}))
    - \log p(x) tensor([0.9189])
    >>> NLL(Normal(loc=0., scale=1., var=["x"]), ["x", "y"]).input_var  # the early reference's order
    ['x', 'y']
    """
    if isinstance(sum_features, (list, tuple, str)) and input_var is None:  # NLL(p, input_var), the early order
        input_var, sum_features = sum_features, True
    return with_input_var(-LogProb(p, sum_features=sum_features, feature_dims=feature_dims), input_var, "NLL")
