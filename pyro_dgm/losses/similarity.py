r"""Seed-era cross-modal terms on the means of two encoders: :class:`SimilarityLoss` and
:class:`MultiModalContrastivenessLoss` (from Pixyz's early API reference; Pixyz 0.3.3 no longer has them).

Both compare, per batch element, the embedding of one modality with the embedding of the paired other modality and
with that of a mismatched one (the batch shuffled by a random permutation), and penalize with a hinge when the
matched pair is not closer than the mismatched one by ``margin``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_dgm.losses.base import Loss, ordered_union
from pyro_dgm.utils.random import STATE as _RNG

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["SimilarityLoss", "MultiModalContrastivenessLoss"]


class _PairedEmbeddings(Loss):
    """The means of ``p1`` and ``p2`` over ``var`` given their inputs, and a mismatching permutation."""

    def __init__(self, p1: "Distribution", p2: "Distribution", input_var: Sequence[str] | None,
                 var: Sequence[str] | None, margin: float) -> None:
        var = list(var) if var is not None else list(p1.var)
        for p in (p1, p2):
            missing = [v for v in var if v not in p.var]
            if missing:
                raise ValueError(f"{type(self).__name__}: {p.prob_text} does not generate {missing[0]!r}; both "
                                 f"distributions must generate var={var}")
        super().__init__(ordered_union(p1.input_var, p2.input_var) if input_var is None else list(input_var))
        self.p1, self.p2, self.var, self.margin = p1, p2, var, float(margin)

    def _dgm_embeddings(self, values: dict[str, Any], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        e1 = self.p1.sample(values, sample_mean=True, return_all=False, **kwargs)
        e2 = self.p2.sample(values, sample_mean=True, return_all=False, **kwargs)
        a = torch.cat([e1[v].flatten(1) for v in self.var], dim=-1)
        b = torch.cat([e2[v].flatten(1) for v in self.var], dim=-1)
        if a.shape[0] < 2:
            raise ValueError(f"{type(self).__name__}: needs a batch of at least 2 pairs to form mismatched pairs, "
                             f"got {a.shape[0]}")
        n = a.shape[0]
        shift = torch.randint(1, n, (), device=a.device, generator=_RNG.generator)  # None: torch's default
        perm = (torch.arange(n, device=a.device) + shift) % n  # no fixed point
        return a, b, perm


class SimilarityLoss(_PairedEmbeddings):
    r"""A margin ranking loss on cosine similarity between two modalities' embeddings (Leidai et al.).

    With :math:`s(a, b)` the cosine similarity of the means of :math:`p_1(z|x_1)` and :math:`p_2(z|x_2)`, and
    :math:`\tilde{\cdot}` a mismatched pair of the batch, the value per batch element is
    :math:`\max(0, m - s(a, b) + s(a, \tilde b)) + \max(0, m - s(a, b) + s(\tilde a, b))`.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p1 = Normal(loc="x1", scale=1., var=["z"], cond_var=["x1"], name="p_1")
    >>> p2 = Normal(loc="x2", scale=1., var=["z"], cond_var=["x2"], name="p_2")
    >>> x = torch.eye(3)
    >>> SimilarityLoss(p1, p2, margin=0.5).eval({"x1": x, "x2": x})  # matched pairs identical, others orthogonal
    tensor([0., 0., 0.])
    """

    def __init__(self, p1: "Distribution", p2: "Distribution", input_var: Sequence[str] | None = None,
                 var: Sequence[str] | None = None, margin: float = 0.0) -> None:
        super().__init__(p1, p2, input_var, var, margin)

    @property
    def latex(self) -> str:
        return rf"\mathcal{{L}}_{{sim}} \left[{self.p1.prob_text}, {self.p2.prob_text} \right]"

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        a, b, perm = self._dgm_embeddings(values, kwargs)
        cos = F.cosine_similarity(a, b, dim=-1)
        zero = torch.zeros((), dtype=cos.dtype, device=cos.device)
        return (torch.maximum(zero, self.margin - cos + F.cosine_similarity(a, b[perm], dim=-1))
                + torch.maximum(zero, self.margin - cos + F.cosine_similarity(a[perm], b, dim=-1)))


class MultiModalContrastivenessLoss(_PairedEmbeddings):
    r"""A contrastive hinge on Euclidean distances between two modalities' embeddings (Disentangling by
    Partitioning, Hsu & Glass 2018).

    With :math:`d(a, b)` the distance between the means of :math:`p_1` and :math:`p_2` for a pair and
    :math:`\tilde b` a mismatched one, the value per batch element is :math:`d(a, b)^2 + \max(0, m - d(a, \tilde b))^2`:
    matched pairs are pulled together, mismatched ones pushed at least ``margin`` apart.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p1 = Normal(loc="x1", scale=1., var=["z"], cond_var=["x1"], name="p_1")
    >>> p2 = Normal(loc="x2", scale=1., var=["z"], cond_var=["x2"], name="p_2")
    >>> x = torch.eye(3)  # matched pairs at distance 0, mismatched at sqrt(2) > margin
    >>> MultiModalContrastivenessLoss(p1, p2, margin=0.5).eval({"x1": x, "x2": x})
    tensor([0., 0., 0.])
    """

    def __init__(self, p1: "Distribution", p2: "Distribution", input_var: Sequence[str] | None = None,
                 var: Sequence[str] | None = None, margin: float = 0.5) -> None:
        super().__init__(p1, p2, input_var, var, margin)

    @property
    def latex(self) -> str:
        return rf"\mathcal{{L}}_{{contrast}} \left[{self.p1.prob_text}, {self.p2.prob_text} \right]"

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        a, b, perm = self._dgm_embeddings(values, kwargs)
        matched = (a - b).pow(2).sum(-1)
        mismatched = (a - b[perm]).pow(2).sum(-1).sqrt()
        return matched + torch.clamp(self.margin - mismatched, min=0).pow(2)
