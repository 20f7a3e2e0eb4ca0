r"""Planar flow (Rezende & Mohamed 2015): :math:`f(x) = x + \hat u \tanh(w^\top x + b)`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_dgm.flows.base import Flow, NotInvertibleError, positive_int
from pyro_dgm.utils.settings import epsilon

__all__ = ["PlanarFlow"]


class PlanarFlow(Flow):
    r"""Planar flow :math:`z = x + \hat u \tanh(w^\top x + b)` on vectors ``(..., in_features)``.

    :math:`\log|\det \partial z/\partial x| = \log(|1 + \hat u^\top \psi(x)| + \epsilon)` with
    :math:`\psi(x) = (1 - \tanh^2(w^\top x + b))\, w` and Pixyz's :math:`\epsilon` (``epsilon()``, 1e-7), which
    keeps it finite where the map is singular.

    The map is invertible when :math:`w^\top \hat u \ge -1`. With ``constraint_u=True``, :math:`\hat u = u +
    (m(w^\top u) - w^\top u)\, w / \|w\|^2` with :math:`m(a) = -1 + \mathrm{softplus}(a)` guarantees it (Pixyz divides
    by :math:`\|w\|` instead, which does not). The inverse has no closed form: :meth:`inverse` solves the scalar
    equation :math:`\alpha + w^\top\hat u \tanh(\alpha + b) = w^\top z` for :math:`\alpha = w^\top x` by bisection,
    then takes two Newton steps with gradients, so inverses are exact to float precision, with exact first and second
    derivatives.

    Parameters
    ----------
    in_features : int
    constraint_u : bool, default False
        Reparameterize :math:`u` so the flow is always invertible (Pixyz's default is False).
    cache_size : {1, 0}

    Raises
    ------
    ValueError
        From :meth:`inverse`, when :math:`w^\top \hat u < -1` (the map is not invertible).

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> f = PlanarFlow(2, constraint_u=True)
    >>> x = torch.randn(4, 2)
    >>> z, logdet = f.forward_with_logdet(x)
    >>> bool(torch.allclose(f.inverse(z), x, atol=1e-5)), tuple(logdet.shape)
    (True, (4,))
    """

    _dgm_pixyz_inverse_missing = True  # (ours is found numerically)

    def __init__(self, in_features: int, constraint_u: bool = False, cache_size: int = 1) -> None:
        in_features = positive_int("PlanarFlow", "in_features", in_features)
        super().__init__(in_features, event_dim=1, cache_size=cache_size)
        self.constraint_u = constraint_u
        self.w = nn.Parameter(torch.empty(1, in_features))
        self.b = nn.Parameter(torch.empty(1))
        self.u = nn.Parameter(torch.empty(1, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``w``, ``b``, ``u`` uniformly in :math:`\\pm 1/\\sqrt{D}`."""
        std = 1.0 / math.sqrt(self.w.size(1))
        for p in (self.w, self.b, self.u):
            nn.init.uniform_(p, -std, std)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, constraint_u={self.constraint_u}"

    _dgm_details = extra_repr

    def deriv_tanh(self, x: Tensor) -> Tensor:
        r""":math:`1 - \tanh^2(x)` (Pixyz's helper)."""
        return 1 - torch.tanh(x) ** 2

    def u_hat(self) -> Tensor:
        r"""The effective :math:`\hat u` (``u`` itself unless ``constraint_u``)."""
        if not self.constraint_u:
            return self.u
        wu = (self.w * self.u).sum()
        return self.u + (F.softplus(wu) - 1.0 - wu) * self.w / (self.w * self.w).sum()

    def _dgm_logdet(self, a: Tensor, wu: Tensor) -> Tensor:
        """``a = w^T x + b`` of shape ``(..., 1)``; ``wu = w^T u_hat``."""
        return torch.log(torch.abs(1.0 + (1.0 - torch.tanh(a) ** 2) * wu) + epsilon()).squeeze(-1)

    def _dgm_store_logdet(self, ld: Tensor) -> None:
        # Pixyz squeezes its (N, 1) log-det, so a batch of one stores a scalar
        super()._dgm_store_logdet(ld.reshape(()) if ld.shape == (1,) else ld)

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        a = F.linear(x, self.w, self.b)  # (..., 1)
        z = x + u * torch.tanh(a)
        return z, self._dgm_logdet(a, (self.w * u).sum())

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        wu = (self.w * u).sum()
        if float(wu.detach()) < -1.0:
            raise NotInvertibleError(f"{self._dgm_describe()}: the map is not invertible because w.u = "
                                     f"{float(wu.detach()):.4g} < -1; build it with constraint_u=True")
        c = F.linear(z, self.w)  # w^T z = alpha + wu * tanh(alpha + b), alpha = w^T x
        b = self.b
        with torch.no_grad():
            half = torch.abs(wu).detach() + 1e-12
            lo, hi = c - half, c + half
            for _ in range(3 - int(math.log2(torch.finfo(z.dtype).eps))):  # halve the bracket to the dtype's precision
                mid = 0.5 * (lo + hi)
                above = mid + wu * torch.tanh(mid + b) > c
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            alpha0 = 0.5 * (lo + hi)
        alpha = alpha0  # two Newton steps with gradients from the root: the first gives the exact first derivatives,
        for _ in range(2):  # the second the exact second ones (Hessian-vector products, a gradient penalty; one step
            t = torch.tanh(alpha + b)  # lacked the curvature term -g''/g'^3: 4 % off, probe p257)
            g = alpha + wu * t - c
            dg = (1.0 + wu * (1.0 - t ** 2)).clamp_min(torch.finfo(z.dtype).tiny)
            alpha = alpha - g / dg
        a = alpha + b
        x = z - u * torch.tanh(a)
        return x, self._dgm_logdet(a, wu)
