r"""Log-density terms: :class:`LogProb` (:math:`\log p(x|z)`) and :class:`Prob` (:math:`p(x|z)`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from torch import Tensor

from pyro_dgm.losses.base import Loss

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["LogProb", "Prob"]


class LogProb(Loss):
    r"""The log-density :math:`\log p(x|z)` of a distribution, as a loss term.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> print(p.log_prob())
    \log p(x)
    >>> p.log_prob().eval({"x": torch.zeros(1)})
    tensor([-0.9189])
    """

    def __init__(self, p: "Distribution", sum_features: bool = True,
                 feature_dims: Sequence[int] | None = None) -> None:
        super().__init__(input_var=list(p.var) + [v for v in p.input_var if v not in p.var])
        self.p = p
        self.sum_features = sum_features
        self.feature_dims = feature_dims

    @property
    def latex(self) -> str:
        return rf"\log {self.p.prob_text}"

    def forward(self, values: Mapping[str, Any], **kwargs: Any) -> Tensor:
        return self.p.get_log_prob(values, sum_features=self.sum_features, feature_dims=self.feature_dims, **kwargs)


class Prob(LogProb):
    r"""The density :math:`p(x|z)` of a distribution, as a loss term."""

    @property
    def latex(self) -> str:
        return self.p.prob_text

    def forward(self, values: Mapping[str, Any], **kwargs: Any) -> Tensor:
        return super().forward(values, **kwargs).exp()
