r"""Glow's invertible 1x1 convolution (Kingma & Dhariwal 2018), optionally LU-decomposed."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pyro_dgm.flows.base import Flow

__all__ = ["ChannelConv"]


class ChannelConv(Flow):
    r"""Invertible 1x1 convolution: every pixel's channel vector is multiplied by one :math:`C \times C` matrix
    :math:`W`, so :math:`\log|\det \partial z/\partial x| = H\,W \log|\det W|`.

    The matrix starts as a random rotation. With ``decomposed=True`` it is parameterized as
    :math:`W = P L (U + \mathrm{diag}(\mathrm{sign}(s)\, e^{\log|s|}))` (a fixed permutation :math:`P`, unit lower
    triangular :math:`L`, strictly upper triangular :math:`U`), so the log-determinant is
    :math:`H\,W \sum \log|s|` and the inverse takes two triangular solves.

    Parameters
    ----------
    in_channels : int
    decomposed : bool, default False
        Use the LU parameterization.
    cache_size : {1, 0}

    Raises
    ------
    ValueError
        When the input does not have ``in_channels`` channels at dim -3.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> f = ChannelConv(3, decomposed=True)
    >>> x = torch.randn(2, 3, 4, 4)
    >>> z, logdet = f.forward_with_logdet(x)
    >>> bool(torch.allclose(f.inverse(z), x, atol=1e-5)), tuple(logdet.shape)
    (True, (2,))
    >>> f.forward(torch.randn(2, 4, 4, 4))
    Traceback (most recent call last):
     ...
    ValueError: ChannelConv(in_channels=3, decomposed=True): expected 3 channels at dim -3 ... got shape (2, 4, 4, 4)
    """

    _feature_name = "channels"

    def __init__(self, in_channels: int, decomposed: bool = False, cache_size: int = 1) -> None:
        super().__init__(in_channels, event_dim=3, cache_size=cache_size)
        self.decomposed = decomposed
        w = torch.linalg.qr(torch.randn(in_channels, in_channels))[0]
        if not decomposed:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(in_channels, in_channels), -1))
        self.lower = nn.Parameter(lower * self.l_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_features}, decomposed={self.decomposed}"

    def _factors(self) -> tuple[Tensor, Tensor]:
        """``L`` (unit lower triangular) and ``U`` (upper triangular with the diagonal ``s``)."""
        eye = torch.eye(self.l_mask.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.l_mask + eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def get_weight(self, inverse: bool = False) -> tuple[Tensor, Tensor]:
        r"""The matrix :math:`W` (or :math:`W^{-1}`) and :math:`\log|\det W|`."""
        if not self.decomposed:
            logabsdet = torch.linalg.slogdet(self.weight)[1]
            return (torch.linalg.inv(self.weight) if inverse else self.weight), logabsdet
        lower, upper = self._factors()
        if not inverse:
            return self.p @ lower @ upper, self.log_s.sum()
        eye = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device)
        l_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return u_inv @ l_inv @ self.p.T, self.log_s.sum()

    def _apply_weight(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        w, logabsdet = self.get_weight(inverse)
        out = torch.einsum("ij,...jhw->...ihw", w.to(v.dtype), v)
        pixels = v.shape[-1] * v.shape[-2]
        return out, (logabsdet * pixels).to(v.dtype).expand(v.shape[:-3])

    def _forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._apply_weight(x, inverse=False)

    def _inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._apply_weight(z, inverse=True)
