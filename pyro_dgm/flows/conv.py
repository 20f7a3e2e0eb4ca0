r"""Glow's invertible 1x1 convolution (Kingma & Dhariwal 2018), optionally LU-decomposed."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pyro_dgm.flows.base import Flow

__all__ = ["ChannelConv"]


class ChannelConv(Flow):
    r"""Invertible 1x1 convolution: every pixel's channel vector is multiplied by one :math:`C \times C` matrix
    :math:`W`, so :math:`\log|\det \partial z/\partial x| = H\,W \log|\det W|`.

    The matrix starts as a random rotation, the Q factor of a Gaussian matrix drawn from NumPy's global generator (as
    Pixyz draws it, so a program seeded as before starts from the same matrix). With ``decomposed=True`` it is
    parameterized as :math:`W = P L (U + \mathrm{diag}(\mathrm{sign}(s)\, e^{\log|s|}))` (a fixed permutation
    :math:`P`, unit lower triangular :math:`L`, strictly upper triangular :math:`U`; parameters ``l``, ``u``,
    ``log_s`` as in Pixyz), so the log-determinant is :math:`H\,W \sum \log|s|` and the inverse takes two
    triangular solves.

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
    pyro_dgm.utils.checks.ShapeError: ChannelConv(in_channels=3, decomposed=True): expected 3 channels ...(2, 4, 4, 4)
    """

    _dgm_feature_name = "channels"
    _dgm_constant_logdet = True

    def __init__(self, in_channels: int, decomposed: bool = False, cache_size: int = 1) -> None:
        super().__init__(in_channels, event_dim=3, cache_size=cache_size)
        self.decomposed = decomposed
        w64 = torch.from_numpy(np.linalg.qr(np.random.randn(in_channels, in_channels))[0])
        w = w64.to(torch.float32)  # (Pixyz's values: drawn in float32, held in the default dtype, as every layer)
        dtype = torch.get_default_dtype()
        self.w_shape = [in_channels, in_channels]
        if not decomposed:
            self.weight = nn.Parameter(w.to(dtype))
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.register_buffer("l_mask", torch.tril(torch.ones(in_channels, in_channels), -1), persistent=False)
        self.register_buffer("eye", torch.eye(in_channels, dtype=dtype), persistent=False)  # (Pixyz's attribute: L's
        # unit diagonal; it moves with the layer)
        self.l = nn.Parameter(lower.to(dtype))  # noqa: E741 (Pixyz's name); its unit diagonal is masked out in use
        # (registered in Pixyz's order: its optimizers' saved states hold the parameters by position)
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dtype))
        self.u = nn.Parameter(torch.triu(upper, 1).to(dtype))

    def _dgm_details(self) -> str:
        return f"in_channels={self.in_features}, decomposed={self.decomposed}"

    def _dgm_factors(self) -> tuple[Tensor, Tensor]:
        """``L`` (unit lower triangular) and ``U`` (upper triangular with the diagonal ``s``)."""
        eye = getattr(self, "eye", None)  # (a layer pickled before it had one: made here)
        if eye is None:
            eye = torch.eye(self.l_mask.shape[0], dtype=self.l.dtype, device=self.l.device)
        elif eye.device != self.l.device:  # one assigned as a plain tensor, the layer moved since: moved as Pixyz's
            eye = self.eye = eye.to(self.l.device)  # forward moves it
        lower = self.l * self.l_mask + eye
        upper = self.u * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def get_weight(self, inverse: bool = False) -> tuple[Tensor, Tensor]:
        r"""The matrix :math:`W` (or :math:`W^{-1}`) and :math:`\log|\det W|`."""
        if not self.decomposed:
            logabsdet = torch.linalg.slogdet(self.weight)[1]
            if not inverse:
                return self.weight, logabsdet
            return torch.linalg.inv(self.weight.double()).to(self.weight.dtype), logabsdet
        lower, upper = self._dgm_factors()
        if not inverse:
            return self.p @ lower @ upper, self.log_s.sum()
        eye = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device)
        l_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return u_inv @ l_inv @ self.p.T, self.log_s.sum()

    def get_parameters(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        r"""Pixyz's interface: the convolution weight :math:`W` (or :math:`W^{-1}`) of shape ``(C, C, 1, 1)`` and
        :math:`H\,W \log|\det W|` for images ``x``."""
        w, logabsdet = self.get_weight(inverse)
        return w.view(*w.shape, 1, 1), logabsdet * (x.shape[-1] * x.shape[-2])

    def _dgm_apply_weight(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        w, logabsdet = self.get_weight(inverse)
        out = torch.einsum("ij,...jhw->...ihw", w.to(v.dtype), v)
        pixels = v.shape[-1] * v.shape[-2]
        return out, (logabsdet * pixels).to(v.dtype).expand(v.shape[:-3])

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._dgm_apply_weight(x, inverse=False)

    def inverse(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        r"""Return :math:`f^{-1}(x)` (Pixyz names the argument ``x`` here)."""
        return super().inverse(x, y)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._dgm_apply_weight(z, inverse=True)
