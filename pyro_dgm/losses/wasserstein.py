r"""An upper bound of the Wasserstein distance between two distributions: :class:`WassersteinDistance`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from torch import Tensor
from torch.nn import PairwiseDistance

from pyro_dgm.losses.base import ordered_union
from pyro_dgm.losses.divergences import Divergence  # noqa: F401  (Pixyz's module exposes it)
from pyro_dgm.losses.mmd import SampleDivergence
from pyro_dgm.losses.pdf import check_distribution
from pyro_dgm.utils import get_dict_values  # noqa: F401  (helpers Pixyz's module namespace has)

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["WassersteinDistance"]


class WassersteinDistance(SampleDivergence):
    r"""The distance between samples, :math:`W'(p, q) = \mathbb{E}_{x_p \sim p, x_q \sim q}[d(x_p, x_q)]`.

    One sample of each per batch element and the ``metric`` between them (default: the Euclidean norm of the
    difference, ``torch.nn.PairwiseDistance(p=2)``), one value per batch element. The metric gets the draws as
    they are, as in Pixyz (``PairwiseDistance`` of draws ``(N, C, D)``: a norm over the last dim, ``(N, C)``); a
    scalar variable's draws ``(N,)`` get one distance per row from it. :math:`W'` bounds the Wasserstein distance
    from above and equals it when both distributions are deterministic (as in Pixyz).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc="x", scale=1e-6, var=["z"], cond_var=["x"])
    >>> q = Normal(loc=0., scale=1e-6, var=["z"], features_shape=[2], name="q")
    >>> w = WassersteinDistance(p, q)
    >>> print(w)
    W^{upper} \left(p(z|x), q(z) \right)
    >>> w.eval({"x": torch.tensor([[3., 4.]])}).round()
    tensor([5.])
    """

    def __init__(self, p: "Distribution", q: "Distribution",
                 metric: Callable[[Tensor, Tensor], Tensor] | None = None, batch_n: int | None = None) -> None:
        check_distribution(p, "WassersteinDistance", "p")
        check_distribution(q, "WassersteinDistance", "q")
        if set(p.var) != set(q.var) or len(p.var) != 1:
            raise ValueError(f"WassersteinDistance: p and q must be over the same single variable, got {p.prob_text} "
                             f"(var {p.var}) and {q.prob_text} (var {q.var})")
        super().__init__(ordered_union(p.input_var, q.input_var))
        self.p, self.q = p, q
        # Pixyz's: the distribution whose input gives the batch size (None here when neither has one: batch_n does)
        self.input_dist = p if p.input_var else q if q.input_var else None
        if metric is not None and not callable(metric):
            raise TypeError(f"WassersteinDistance: metric must be a callable metric(a, b) of two batches of samples "
                            f"(e.g. torch.nn.PairwiseDistance(p=2), the default), got {metric!r:.80}")
        self.metric = metric if metric is not None else PairwiseDistance(p=2)
        self.batch_n = batch_n

    @property
    def latex(self) -> str:
        return rf"W^{{upper}} \left({self.p.prob_text}, {self.q.prob_text} \right)"

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        n = self.batch_n
        for v in self._input_var:
            x = values[v]
            if isinstance(x, Tensor) and x.dim() >= 1:
                n = x.shape[0]
                break
        a, b = self._dgm_draws(values, n, kwargs, flat=False)  # (the metric gets the draws' own shape)
        if a.shape != b.shape:
            raise ValueError(f"WassersteinDistance {self.latex}: the samples have different shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        if a.dim() == 1 and isinstance(self.metric, PairwiseDistance):  # a scalar variable: one distance per row
            a, b = a.unsqueeze(-1), b.unsqueeze(-1)  # (Pixyz's is one norm over the batch, which estimates no W')
        return self.metric(a, b)
