r"""Evidence bounds: :func:`ELBO` (Pixyz's Monte Carlo ELBO) and :class:`IWELBO` (the importance-weighted bound).

Both are *bounds*, not losses: they are large when the model is good; minimize ``-ELBO(p, q).mean()``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from pyro_dgm.losses.base import Loss, ordered_union, with_input_var
from pyro_dgm.losses.expectation import Expectation, check_sample_shape
from pyro_dgm.losses.pdf import LogProb, check_distribution

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["ELBO", "IWELBO", "LogMarginal"]


def _check_pq(owner: str, p: "Distribution", q: "Distribution") -> None:
    check_distribution(p, owner, "p")
    check_distribution(q, owner, "q")
    missing = [v for v in q.var if v not in p.var]
    if missing:
        raise ValueError(f"{owner}: the proposal {q.prob_text} draws {missing}, which the model {p.prob_text} does "
                         f"not generate; p must be the joint over the observed and the latent variables")


def ELBO(p: "Distribution", q: "Distribution", sample_shape: Sequence[int] = torch.Size([1]), *,
         input_var: Sequence[str] | None = None) -> Expectation:
    r"""The evidence lower bound :math:`\mathbb{E}_{q(z|x)}[\log p(x,z) - \log q(z|x)]` (Monte Carlo).

    Parameters
    ----------
    p : Distribution
        The joint model, e.g. :math:`p(x,z) = p(x|z)p(z)`.
    q : Distribution
        The approximate posterior, e.g. :math:`q(z|x)`. As in Pixyz, it may draw variables that ``p`` only
        conditions on or leaves out (a constant factor such as M2's uniform :math:`p(y)`).
    sample_shape : tuple of int, default ``(1,)``
        The number of samples is its product.
    input_var : list of str, optional
        The early API reference's ``ELBO(p, approximate_dist, input_var=None)``: the variables
        :meth:`~pyro_dgm.losses.base.Loss.eval` asks for (see :func:`~pyro_dgm.losses.base.with_input_var`).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * Normal(loc=0., scale=1., var=["z"])
    >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    >>> elbo = ELBO(p, q)
    >>> print(elbo, elbo.input_var)
    \mathbb{E}_{q(z|x)} \left[\log p(x,z) - \log q(z|x) \right] ['x']
    >>> # q may draw a variable that p does not generate (as Pixyz allows: M2's unlabelled bound leaves out p(y))
    >>> q_zy = q * Normal(loc="x", scale=1., var=["y"], cond_var=["x"], name="q")
    >>> ELBO(p, q_zy).input_var
    ['x']
    """
    check_distribution(p, "ELBO", "p")
    check_distribution(q, "ELBO", "q")
    check_sample_shape(sample_shape, f"ELBO of {p.prob_text} and {q.prob_text}")
    return with_input_var(Expectation(q, LogProb(p) - LogProb(q), sample_shape=sample_shape), input_var, "ELBO")


class IWELBO(Loss):
    r"""The importance-weighted bound :math:`\mathcal{L}_K = \log \frac{1}{K}\sum_{k=1}^K \frac{p(x,z_k)}{q(z_k|x)}`,
    :math:`z_k \sim q(z|x)`, one value per batch element (Burda et al. 2016).

    :math:`\mathcal{L}_1` is the ELBO; :math:`\mathcal{L}_K \le \log p(x)` grows with :math:`K` towards it, so with a
    large ``k`` it estimates the test log-likelihood. The ``k`` samples are drawn ``chunk_size`` at a time (the data
    repeated ``chunk_size`` times along the batch dim), and their log-weights are combined with a running
    ``logsumexp``, so memory grows with ``chunk_size``, not ``k``.

    Parameters
    ----------
    p : Distribution
        The joint model over the observed and the latent variables.
    q : Distribution
        The proposal over the latent variables given the observed ones.
    k : int, default 1
        The number of importance samples.
    chunk_size : int, optional
        Samples drawn at once (default: all ``k``).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[1])
    >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * prior
    >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    >>> bound = IWELBO(p, q, k=100, chunk_size=30)
    >>> print(bound)
    \log \frac{1}{100} \sum_{k=1}^{100} \frac{p(x,z)}{q(z|x)}
    >>> bound.eval({"x": torch.zeros(5, 1)}).shape
    torch.Size([5])
    """

    def __init__(self, p: "Distribution", q: "Distribution", k: int = 1, chunk_size: int | None = None) -> None:
        _check_pq("IWELBO", p, q)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"IWELBO: k must be a positive int, got {k!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"IWELBO: chunk_size must be a positive int, got {chunk_size!r}")
        p_inputs = [v for v in ordered_union(p.var, p.input_var) if v not in q.var]
        super().__init__(ordered_union(q.input_var, p_inputs))
        self.p, self.q = p, q
        self.k = k
        self.chunk_size = chunk_size or k

    @property
    def latex(self) -> str:
        k = self.k
        return rf"\log \frac{{1}}{{{k}}} \sum_{{k=1}}^{{{k}}} \frac{{{self.p.prob_text}}}{{{self.q.prob_text}}}"

    @staticmethod
    def _dgm_repeat(values: dict[str, Any], c: int) -> dict[str, Any]:
        out = {}
        for name, v in values.items():
            if isinstance(v, Tensor) and v.dim() >= 1:
                out[name] = v.repeat(c, *([1] * (v.dim() - 1)))
            else:
                out[name] = v
        return out

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        batch = None
        for v in self._input_var:
            x = values[v]
            if isinstance(x, Tensor) and x.dim() >= 1:
                batch = x.shape[0]
                break
        if batch is None:
            raise ValueError(f"IWELBO {self.latex}: needs a batch of data (a tensor with a batch dim) in "
                             f"{self._input_var}")
        chunks: list[Tensor] = []
        done = 0
        while done < self.k:
            c = min(self.chunk_size, self.k - done)
            rep = self._dgm_repeat(values, c)
            drawn = self.q.sample(rep, reparam=True, return_all=False, **kwargs)
            rep.update(drawn)
            log_w = self.p.get_log_prob(rep, **kwargs) - self.q.get_log_prob(rep, **kwargs)
            if log_w.shape != (c * batch,):
                raise ValueError(f"IWELBO {self.latex}: expected one log-weight per repeated data point, shape "
                                 f"{(c * batch,)}, got {tuple(log_w.shape)}; check that the log-densities of "
                                 f"{self.p.prob_text} and {self.q.prob_text} have the batch shape of the data "
                                 "(give constant-parameter factors a features_shape)")
            chunks.append(log_w.reshape(c, batch).logsumexp(dim=0))
            done += c
        return torch.stack(chunks).logsumexp(dim=0) - math.log(self.k)


LogMarginal = IWELBO
