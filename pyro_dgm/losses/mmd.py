r"""The maximum mean discrepancy :class:`MMD` between two distributions, estimated from samples."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor

from pyro_dgm.losses.base import Loss, ordered_union
from pyro_dgm.losses.divergences import Divergence  # noqa: F401  (Pixyz's module exposes it)
from pyro_dgm.losses.pdf import check_distribution
from pyro_dgm.utils import get_dict_values  # noqa: F401  (helpers Pixyz's module namespace has)
from pyro_dgm.utils.checks import ArgumentError, NotSupportedError

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["MMD", "gaussian_rbf_kernel", "inverse_multiquadratic_rbf_kernel", "pairwise_distance_matrix"]


def pairwise_distance_matrix(x: Tensor, y: Tensor, metric: str = "euclidean") -> Tensor:
    """Squared Euclidean distances ``[i, j] = ||x_i - y_j||^2`` between the rows of ``x`` and ``y``.

    ``metric`` is Pixyz's argument; ``"euclidean"`` (this squared distance) is the only metric, as in Pixyz.

    Examples
    --------
    >>> pairwise_distance_matrix(torch.zeros(1, 2), torch.tensor([[1., 2.], [0., 1.]]))
    tensor([[5., 1.]])
    """
    if metric != "euclidean":
        raise NotImplementedError(f"pairwise_distance_matrix: metric must be 'euclidean' (the only one, as in "
                                  f"Pixyz), got {metric!r}")
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(dim=-1)


def gaussian_rbf_kernel(x: Tensor, y: Tensor, sigma_sqr: float = 2.0, **kwargs: Any) -> Tensor:
    r"""The Gaussian kernel :math:`k(x, y) = \exp(-\|x - y\|^2 / \sigma^2)`; other keyword arguments are ignored
    (as in Pixyz, whose MMD passes every kernel parameter to the kernel).

    Examples
    --------
    >>> gaussian_rbf_kernel(torch.zeros(1, 2), torch.ones(1, 2), sigma_sqr=2.)
    tensor([[0.3679]])
    """
    return torch.exp(-pairwise_distance_matrix(x, y) / sigma_sqr)


def inverse_multiquadratic_rbf_kernel(x: Tensor, y: Tensor, sigma_sqr: float = 2.0, **kwargs: Any) -> Tensor:
    r"""The inverse multi-quadratic kernel :math:`k(x, y) = \sigma^2 / (\|x - y\|^2 + \sigma^2)`; other keyword
    arguments are ignored (as in Pixyz).

    Examples
    --------
    >>> inverse_multiquadratic_rbf_kernel(torch.zeros(1, 2), torch.ones(1, 2), sigma_sqr=2.)
    tensor([[0.5000]])
    """
    return sigma_sqr / (pairwise_distance_matrix(x, y) + sigma_sqr)


_KERNELS: dict[str, Callable[..., Tensor]] = {"gaussian": gaussian_rbf_kernel,
                                              "inv-multiquadratic": inverse_multiquadratic_rbf_kernel}


def draw_joint_sample(d: "Distribution", values: dict[str, Any], batch_n: int | None, kwargs: dict[str, Any],
                      flat: bool = True) -> Tensor:
    """A reparameterized draw of ``d``'s variable, flattened to ``(batch, features)`` (what MMD compares) unless
    ``flat`` is false (Wasserstein's metric gets the draws as they are, as under Pixyz)."""
    x = d.sample(values, batch_n=batch_n, reparam=True, return_all=False, **kwargs)[d.var[0]]
    return x.reshape(x.shape[0], -1) if flat else x


class SampleDivergence(Loss):
    """What Pixyz's sample-based divergences (MMD, Wasserstein) share: the distribution whose input gives the batch
    size (``input_dist``) and Pixyz's ``_get_batch_n`` for subclasses written for Pixyz."""

    input_dist: Any
    batch_n: Any

    def _get_batch_n(self, x_dict: Mapping[str, Any]) -> int:
        """The batch size: the first dim of the first input of :attr:`input_dist` (Pixyz's helper, for subclasses
        written for Pixyz)."""
        if self.input_dist is None:
            raise ValueError(f"{type(self).__name__} {self.latex}: neither distribution takes an input; the batch "
                             f"size is batch_n={self.batch_n}")
        return int(x_dict[self.input_dist.input_var[0]].shape[0])

    def _dgm_draws(self, values: dict[str, Any], n: int | None, kwargs: dict[str, Any], flat: bool = True
                   ) -> tuple[Tensor, Tensor]:
        """A draw of ``p``'s and of ``q``'s variable, ``n`` rows each (flattened to ``(n, features)`` if ``flat``).
        ``eval``'s keyword arguments go to the draws but ``batch_n``, which the loss sets (Pixyz's draws failed on it
        with Python's bare "got multiple values for keyword argument 'batch_n'")."""
        if "batch_n" in kwargs:
            name = type(self).__name__
            raise ArgumentError(f"{name} {self.latex}: eval got batch_n={kwargs['batch_n']!r}, but the number of "
                                f"draws is the loss's own: the first dim of the input where a distribution takes "
                                f"one, else {name}(p, q, batch_n=...) (here {self.batch_n!r})")
        return draw_joint_sample(self.p, values, n, kwargs, flat), draw_joint_sample(self.q, values, n, kwargs, flat)


class MMD(SampleDivergence):
    r"""The squared maximum mean discrepancy :math:`D_{MMD^2}[p \| q]` between samples of ``p`` and ``q`` (a scalar).

    .. math::
        \frac{1}{n(n-1)}\sum_{i \ne j} k(x_i, x_j) + \frac{1}{n(n-1)}\sum_{i \ne j} k(y_i, y_j)
        - \frac{2}{n^2}\sum_{i, j} k(x_i, y_j), \quad x_i \sim p, \ y_j \sim q,

    the unbiased estimate (Gretton et al. 2012), with one sample of each per batch element (``n`` is the batch size;
    with a batch of one, the biased estimate :math:`k(x,x) + k(y,y) - 2k(x,y)`, as there is no pair to average).
    Samples are reparameterized, so gradients reach both distributions. Pixyz 0.3.3 divides by the number of features
    instead of the number of samples and keeps the diagonal; this is the textbook estimator.

    Parameters
    ----------
    p, q : Distribution
        Distributions over the same single variable.
    kernel : ``"gaussian"`` or ``"inv-multiquadratic"``, or a callable ``k(x, y) -> [n, m]``
    batch_n : int, optional
        The number of samples when neither distribution has inputs.
    **kernel_params
        Passed to the kernel (``sigma_sqr=2.``).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    >>> mmd = MMD(q, prior, kernel="gaussian", sigma_sqr=2.)
    >>> print(mmd)
    D_{MMD^2} \left[q(z|x)||p_{prior}(z) \right]
    >>> mmd.eval({"x": torch.zeros(8, 2)}).shape
    torch.Size([])
    """

    def __init__(self, p: "Distribution", q: "Distribution", kernel: str | Callable[..., Tensor] = "gaussian",
                 batch_n: int | None = None, **kernel_params: Any) -> None:
        check_distribution(p, "MMD", "p")
        check_distribution(q, "MMD", "q")
        if set(p.var) != set(q.var) or len(p.var) != 1:
            raise ValueError(f"MMD: p and q must be over the same single variable, got {p.prob_text} (var {p.var}) "
                             f"and {q.prob_text} (var {q.var})")
        if callable(kernel):
            self.kernel = kernel
        elif isinstance(kernel, str) and kernel in _KERNELS:
            self.kernel = _KERNELS[kernel]
            unknown = [k for k in kernel_params if k != "sigma_sqr"]
            if unknown:  # (a typo of sigma_sqr would give the default bandwidth's value: Pixyz ignores it silently)
                warnings.warn(f"MMD: the {kernel} kernel takes sigma_sqr; {', '.join(map(repr, unknown))} "
                              f"{'is' if len(unknown) == 1 else 'are'} ignored (as in Pixyz)", UserWarning,
                              stacklevel=2)
        else:
            raise NotSupportedError(f"MMD: unknown kernel {kernel!r}; use one of {sorted(_KERNELS)} or a callable")
        super().__init__(ordered_union(p.input_var, q.input_var))
        self.p, self.q = p, q
        # Pixyz's: the distribution whose input gives the batch size (None here when neither has one: batch_n does)
        self.input_dist = p if p.input_var else q if q.input_var else None
        self.batch_n = batch_n
        self.kernel_params = kernel_params

    @property
    def latex(self) -> str:
        return rf"D_{{MMD^2}} \left[{self.p.prob_text}||{self.q.prob_text} \right]"

    def _dgm_batch_n(self, values: dict[str, Any]) -> int | None:
        for v in self._input_var:
            x = values[v]
            if isinstance(x, Tensor) and x.dim() >= 1:
                return x.shape[0]
        return self.batch_n

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        n = self._dgm_batch_n(values)
        x, y = self._dgm_draws(values, n, kwargs)
        if x.shape != y.shape:
            raise ValueError(f"MMD {self.latex}: the samples have different shapes {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        m = x.shape[0]
        k = self.kernel
        kxx, kyy, kxy = (k(x, x, **self.kernel_params), k(y, y, **self.kernel_params),
                         k(x, y, **self.kernel_params))
        if m < 2:  # no pair of distinct samples: the unbiased estimate does not exist, take the biased one
            return kxx.mean() + kyy.mean() - 2 * kxy.mean()
        off = m * (m - 1)
        return ((kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off
                - 2 * kxy.mean())
