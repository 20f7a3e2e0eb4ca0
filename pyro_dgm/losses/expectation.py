r"""The expectation :math:`\mathbb{E}_{p(z|x)}[f]` of a loss under samples of a distribution, and ``REINFORCE``."""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from pyro_dgm.losses.base import Loss, ordered_union, with_input_var
from pyro_dgm.losses.context import sampler_options
from pyro_dgm.losses.pdf import LogProb, check_distribution
from pyro_dgm.losses.special import LossArgumentError, ValueLoss
from pyro_dgm.utils.checks import ArgumentError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["Expectation", "E", "REINFORCE", "StochasticReconstructionLoss"]


def _sample_shape(sample_shape: Sequence[int] | int | None, num_samples: int | None, owner: str) -> torch.Size:
    """The shape of the draws: ``(num_samples,)`` when given, else ``sample_shape`` (an int, or ``None`` for one).

    Raises
    ------
    LossArgumentError
        If ``sample_shape`` is not an int or a sequence of ints (a TypeError, as ``torch.Size`` raises under Pixyz).
    ShapeError
        If it holds no sample (``[0]``): a ValueError, and the RuntimeError Pixyz raises when evaluating it.
    """
    if num_samples is not None:
        if not isinstance(num_samples, numbers.Integral) or num_samples < 1:
            raise ValueError(f"{owner}: num_samples must be a positive int, got {num_samples!r}")
        return torch.Size([int(num_samples)])
    if sample_shape is None:
        return torch.Size([1])
    try:
        shape = torch.Size([int(sample_shape)] if isinstance(sample_shape, numbers.Integral) else sample_shape)
    except (TypeError, ValueError):
        raise LossArgumentError(f"{owner}: sample_shape must be an int or a sequence of ints (the shape of the "
                                f"draws, e.g. [2] for two samples), got {sample_shape!r:.80}") from None
    if shape.numel() < 1:
        raise ShapeError(f"{owner}: sample_shape {tuple(shape)} holds no sample")
    return shape


def check_sample_shape(sample_shape: Any, owner: str) -> None:
    """Raise as :class:`Expectation` does for a ``sample_shape`` of the wrong kind, naming ``owner`` (a term built on
    an expectation: ``ELBO``, a Monte Carlo ``KullbackLeibler``) instead of the expectation.

    Examples
    --------
    >>> check_sample_shape([2, 3], "ELBO")
    >>> check_sample_shape("a", "ELBO")
    Traceback (most recent call last):
    ...
    pyro_dgm.losses.special.LossArgumentError: ELBO: sample_shape must be an int or a sequence of ints (the shape \
of the draws, e.g. [2] for two samples), got 'a'
    """
    _sample_shape(sample_shape, None, owner)


class Expectation(Loss):
    r"""Monte Carlo expectation :math:`\mathbb{E}_{p(z|x)}[f] \approx \frac{1}{L}\sum_{l=1}^L f(z_l)`, :math:`z_l \sim p`.

    ``p`` draws its variables given its inputs (reparameterized where its family has ``rsample``, so gradients flow
    through the samples; for other families the samples carry no gradient: use :func:`REINFORCE`), then ``f`` is
    evaluated on the given values plus the samples. With ``L > 1`` samples the values are averaged.

    Parameters
    ----------
    p : Distribution
        The distribution to sample.
    f : Loss
        The term to average.
    sample_shape : tuple of int, default ``(1,)``
        The number of samples is its product (Pixyz's argument).
    reparam : bool, default True
        Keep reparameterized samples in the autograd graph.
    num_samples : int, optional
        The number of samples (overrides ``sample_shape``).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    >>> e = E(q, p.log_prob())
    >>> print(e, e.input_var)
    \mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] ['x']
    >>> _ = torch.manual_seed(0)
    >>> value, samples = e.eval({"x": torch.zeros(3, 1)}, return_dict=True)
    >>> tuple(value.shape), sorted(samples)
    ((3,), ['x', 'z'])
    """

    def __init__(self, p: "Distribution", f: Loss, sample_shape: Sequence[int] | int = torch.Size([1]),
                 reparam: bool = True, num_samples: int | None = None) -> None:
        check_distribution(p, "Expectation")
        if not isinstance(f, Loss):
            raise ArgumentError(f"Expectation: f must be a Loss (e.g. p.log_prob()), got {type(f).__name__}")
        self.sample_shape = _sample_shape(sample_shape, num_samples, f"Expectation over {p.prob_text}")  # Pixyz's
        self.num_samples = self.sample_shape.numel()  # (the draws are sample_shape's, read at each evaluation)
        super().__init__(ordered_union(p.input_var, [v for v in f.input_var if v not in p.var]))
        self.p = p
        self.f = f
        self.reparam = reparam

    @property
    def latex(self) -> str:
        return rf"\mathbb{{E}}_{{{self.p.prob_text}}} \left[{self.f.latex} \right]"

    @property
    def _symbol(self) -> Any:
        import sympy

        return sympy.Symbol(rf"\mathbb{{E}}_{{{self.p.prob_text}}} \left[{self.f.loss_text} \right]")

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        # options meant for loss terms (IterativeLoss's mask) go to f, not to p's sampler (one rule: context.py)
        sampler_kwargs = sampler_options(kwargs)
        results = []
        first: dict[str, Any] = {}
        # every draw of p first, then f at each: Pixyz's order, so that an f that draws too (a nested expectation, a
        # sampled KL) takes the same random numbers
        draws = [self.p.sample(x_dict, reparam=self.reparam, return_all=False, **sampler_kwargs)
                 for _ in range(self.sample_shape.numel())]  # (as Pixyz reads it: one set since counts)
        for i, drawn in enumerate(draws):
            inputs = dict(x_dict)
            inputs.update(drawn)
            value, f_samples = self.f.eval(inputs, return_dict=True, return_all=False, **kwargs)
            results.append(value)
            if i == 0:
                first = dict(drawn)
                first.update(f_samples)
        if len(results) == 1:
            return results[0], first
        stacked = [r if isinstance(r, Tensor) else torch.as_tensor(r, dtype=torch.get_default_dtype())
                   for r in results]
        value = torch.stack(torch.broadcast_tensors(*stacked)).mean(dim=0)
        return value, first


E = Expectation


def REINFORCE(p: "Distribution", f: Loss, b: Loss | float = 0, sample_shape: Sequence[int] = torch.Size([1]),
              reparam: bool = True) -> Expectation:
    r"""The surrogate loss of the score-function (policy-gradient) estimator with reward ``f`` and baseline ``b``:
    :math:`\mathbb{E}_{p(x)}[detach(f(x) - b(x)) \log p(x) + f(x) - b(x)]`.

    It is a surrogate: its *gradient* with respect to ``p``'s parameters is the REINFORCE estimate of the gradient of
    :math:`\mathbb{E}_p[f - b]` (so it works for families without ``rsample``, e.g. Bernoulli); its *value* is not
    :math:`\mathbb{E}_p[f - b]` (log that separately).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Bernoulli, Normal
    >>> p = Bernoulli(probs=0.3, var=["a"])
    >>> reward = Normal(loc=1., scale=1., var=["a"], name="r").log_prob()
    >>> print(REINFORCE(p, reward))
    \mathbb{E}_{p(a)} \left[\log p(a) detach \left(\log r(a) \right) + \log r(a) \right]
    """
    if isinstance(b, numbers.Number):  # (0 by default: Pixyz's default baseline is ValueLoss(0), whose state-dict
        b = ValueLoss(b)  # keys it has; so a reward that is a number is a loss too)
    diff = f - b
    return Expectation(p, diff.detach() * p.log_prob() + diff, sample_shape=sample_shape, reparam=reparam)


def StochasticReconstructionLoss(encoder: "Distribution", decoder: "Distribution",
                                 sample_shape: Sequence[int] = torch.Size([1]), *,
                                 input_var: Sequence[str] | None = None) -> Loss:
    r"""The reconstruction loss :math:`-\mathbb{E}_{q(z|x)}[\log p(x|z)]` (seed-era name).

    ``input_var`` (keyword) is the early API reference's: the variables :meth:`~pyro_dgm.losses.base.Loss.eval`
    asks for (see :func:`~pyro_dgm.losses.base.with_input_var`).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    >>> print(StochasticReconstructionLoss(q, p))
    - \mathbb{E}_{q(z|x)} \left[\log p(x|z) \right]
    """
    return with_input_var(-Expectation(encoder, LogProb(decoder), sample_shape=sample_shape), input_var,
                          "StochasticReconstructionLoss")
