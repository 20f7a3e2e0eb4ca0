r"""Normalizing layers as flows: batch normalization (Dinh et al. 2017) and activation normalization (Glow)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pyro_dgm.flows.base import Flow

__all__ = ["BatchNorm1d", "BatchNorm2d", "ActNorm2d"]


class BatchNorm1d(Flow):
    r"""Batch normalization with an inverse: :math:`z = e^{\log\gamma} (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`.

    In training mode :math:`\mu, \sigma^2` are the statistics of the batch (over every dim but the features) and the
    inverse uses those of the last forward batch; in eval mode both use the running statistics. The log-determinant
    treats the statistics as constants, :math:`\sum \log\gamma - \tfrac12 \log(\sigma^2 + \epsilon)`, exact in eval
    mode.

    Parameters
    ----------
    in_features : int
    momentum : float, default 0.0
        The weight of the old running statistics: ``running = momentum * running + (1 - momentum) * batch`` (Pixyz's
        convention, the opposite of ``torch.nn.BatchNorm1d``'s; 0 keeps the last batch's statistics).
    eps : float, default 1e-5
    cache_size : {1, 0}

    Examples
    --------
    >>> f = BatchNorm1d(3)
    >>> x = torch.randn(20, 3) * 4 + 1
    >>> z = f.forward(x)
    >>> bool(torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)), bool(torch.allclose(f.inverse(z), x, atol=1e-5))
    (True, True)
    """

    _feature_name = "features"

    def __init__(self, in_features: int, momentum: float = 0.0, eps: float = 1e-5, cache_size: int = 1) -> None:
        super().__init__(in_features, event_dim=self._event_dim(), cache_size=cache_size)
        shape = self._param_shape(in_features)
        self.log_gamma = nn.Parameter(torch.zeros(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("batch_mean", None, persistent=False)
        self.register_buffer("batch_var", None, persistent=False)

    @staticmethod
    def _event_dim() -> int:
        return 1

    @staticmethod
    def _param_shape(n: int) -> tuple[int, ...]:
        return (n,)

    def _reduce_dims(self, v: Tensor) -> list[int]:
        return list(range(v.dim() - 1))

    def _pixels(self, v: Tensor) -> int:
        return 1

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, momentum={self.momentum}"

    def _stats(self, x: Tensor | None) -> tuple[Tensor, Tensor]:
        if x is None:  # inverse: the last batch's statistics in training mode, else the running ones
            if self.training and self.batch_mean is not None:
                return self.batch_mean, self.batch_var
            return self.running_mean, self.running_var
        if not self.training:
            return self.running_mean, self.running_var
        dims = self._reduce_dims(x)
        mean = x.mean(dim=dims)
        var = ((x - mean) ** 2).mean(dim=dims)
        mean, var = mean.reshape(self.running_mean.shape), var.reshape(self.running_var.shape)
        with torch.no_grad():
            self.batch_mean, self.batch_var = mean.detach(), var.detach()
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * self.batch_mean
            self.running_var = m * self.running_var + (1 - m) * self.batch_var
        return mean, var

    def _logdet(self, v: Tensor, var: Tensor) -> Tensor:
        ld = (self.log_gamma - 0.5 * torch.log(var + self.eps)).sum() * self._pixels(v)
        return ld.to(v.dtype).expand(v.shape[:v.dim() - self._domain_event_dim])

    def _forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        mean, var = self._stats(x)
        z = torch.exp(self.log_gamma) * (x - mean) / torch.sqrt(var + self.eps) + self.beta
        return z, self._logdet(x, var)

    def _inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        mean, var = self._stats(None)
        x = (z - self.beta) * torch.exp(-self.log_gamma) * torch.sqrt(var + self.eps) + mean
        return x, self._logdet(z, var)


class BatchNorm2d(BatchNorm1d):
    r"""Batch normalization of the channels of images ``(..., C, H, W)``, with an inverse (see :class:`BatchNorm1d`).

    The log-determinant counts every pixel: :math:`H W \sum_c \log\gamma_c - \tfrac12\log(\sigma_c^2 + \epsilon)`
    (Pixyz's sums over a wrong dim and leaves out :math:`H W`).

    Examples
    --------
    >>> f = BatchNorm2d(2).eval()
    >>> x = torch.randn(5, 2, 3, 3)
    >>> z, logdet = f.forward_with_logdet(x)
    >>> bool(torch.allclose(f.inverse(z), x, atol=1e-5)), tuple(logdet.shape)
    (True, (5,))
    """

    _feature_name = "channels"

    @staticmethod
    def _event_dim() -> int:
        return 3

    @staticmethod
    def _param_shape(n: int) -> tuple[int, ...]:
        return (n, 1, 1)

    def _reduce_dims(self, v: Tensor) -> list[int]:
        return [d for d in range(v.dim()) if d != v.dim() - 3]

    def _pixels(self, v: Tensor) -> int:
        return v.shape[-1] * v.shape[-2]


class ActNorm2d(Flow):
    r"""Activation normalization (Glow): a per-channel affine map :math:`z = (x + b) e^{\log s}`.

    The first forward call in training mode sets :math:`b` and :math:`\log s` so that the output of that batch has zero
    mean and standard deviation ``scale`` per channel; afterwards both are trained as parameters. Whether this has
    happened is a buffer, so it survives ``state_dict``/``load_state_dict`` (Pixyz keeps a plain attribute, so a
    loaded model re-initializes and overwrites its trained values). Log-determinant: :math:`H W \sum \log s`.

    Parameters
    ----------
    in_features : int
        The number of channels.
    scale : float, default 1.0
    cache_size : {1, 0}

    Examples
    --------
    >>> f = ActNorm2d(3)
    >>> x = torch.randn(8, 3, 4, 4) * 5 + 2
    >>> z = f.forward(x)
    >>> bool(torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)), bool(f.initialized)
    (True, True)
    >>> bool(torch.allclose(f.inverse(z), x, atol=1e-4))
    True
    """

    _feature_name = "channels"

    def __init__(self, in_features: int, scale: float = 1.0, cache_size: int = 1) -> None:
        super().__init__(in_features, event_dim=3, cache_size=cache_size)
        self.bias = nn.Parameter(torch.zeros(in_features, 1, 1))
        self.logs = nn.Parameter(torch.zeros(in_features, 1, 1))
        self.scale = float(scale)
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, scale={self.scale}"

    def initialize_parameters(self, x: Tensor) -> None:
        """Set the bias and log-scale from the batch ``x`` (zero mean, standard deviation ``scale`` per channel)."""
        dims = [d for d in range(x.dim()) if d != x.dim() - 3]
        with torch.no_grad():
            mean = x.mean(dim=dims).reshape(self.bias.shape)
            std = torch.sqrt(((x - mean) ** 2).mean(dim=dims)).reshape(self.logs.shape)
            self.bias.copy_(-mean)
            self.logs.copy_(torch.log(self.scale / (std + 1e-6)))
            self.initialized.fill_(True)

    def _logdet(self, v: Tensor) -> Tensor:
        return (self.logs.sum() * v.shape[-1] * v.shape[-2]).to(v.dtype).expand(v.shape[:-3])

    def _forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize_parameters(x)
        return (x + self.bias) * torch.exp(self.logs), self._logdet(x)

    def _inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return z * torch.exp(-self.logs) - self.bias, self._logdet(z)
