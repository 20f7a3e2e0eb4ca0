r"""Affine coupling (Dinh et al. 2017, Real NVP): half of the input, chosen by a mask, scales and shifts the rest."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from pyro_dgm.flows.base import ChannelOrFeatureFlow, Flow, sum_rightmost  # noqa: F401  (Pixyz's module exposes Flow)
from pyro_dgm.utils.checks import ShapeError

__all__ = ["AffineCoupling", "checkerboard_mask", "channel_wise_mask"]

MASK_TYPES = ("checkerboard", "channel_wise")


def _checkerboard(height: int, width: int, inverse_mask: bool, dtype: torch.dtype, device: Any) -> Tensor:
    idx = torch.arange(height, device=device).view(-1, 1) + torch.arange(width, device=device)
    return ((idx + (1 if inverse_mask is False else 0)) % 2).to(dtype)  # (Pixyz's test: only False is not inverse)


def _channel_wise(channels: int, inverse_mask: bool, dtype: torch.dtype, device: Any) -> Tensor:
    mask = torch.zeros(channels, dtype=dtype, device=device)
    if inverse_mask:
        mask[channels // 2:] = 1
    else:
        mask[:channels // 2] = 1
    return mask


def checkerboard_mask(height: int, width: int, inverse_mask: bool = False) -> np.ndarray:
    """A ``(height, width)`` checkerboard of ones and zeros (float32 NumPy array, as Pixyz's); the top-left entry is 1
    unless ``inverse_mask``.

    Examples
    --------
    >>> checkerboard_mask(3, 4)
    array([[1., 0., 1., 0.],
           [0., 1., 0., 1.],
           [1., 0., 1., 0.]], dtype=float32)
    """
    return _checkerboard(height, width, inverse_mask, torch.float32, None).numpy()


def channel_wise_mask(channels: int, inverse_mask: bool = False) -> np.ndarray:
    """Ones on the first ``channels // 2`` entries (the others if ``inverse_mask``), zeros elsewhere (float32 NumPy
    array, as Pixyz's).

    Examples
    --------
    >>> channel_wise_mask(5), channel_wise_mask(4, inverse_mask=True)
    (array([1., 1., 0., 0., 0.], dtype=float32), array([0., 0., 1., 1.], dtype=float32))
    """
    return _channel_wise(channels, inverse_mask, torch.float32, None).numpy()


class AffineCoupling(ChannelOrFeatureFlow):
    r"""Affine coupling layer: with a binary mask :math:`m`,

    .. math::
        z = m \odot x + (1 - m) \odot \left(x \odot \exp(s(m \odot x, y)) + t(m \odot x, y)\right),

    so :math:`\log|\det \partial z/\partial x| = \sum (1 - m) \odot s`. The inverse is exact.

    Parameters
    ----------
    in_features : int
        Features of a vector, or channels of an image.
    mask_type : {"channel_wise", "checkerboard"}
        ``"channel_wise"`` keeps the first ``in_features // 2`` features/channels (the rest with ``inverse_mask``);
        ``"checkerboard"`` keeps alternate pixels of an image (or alternate features of a vector).
    scale_net, translate_net : callable, optional
        :math:`s` and :math:`t`: each maps the masked input (and the context ``y``, for a conditional flow) to a
        tensor of the input's shape.
    scale_translate_net : callable, optional
        One network returning ``(s, t)`` instead (not used when both of the above are given, as in Pixyz).
    inverse_mask : bool, default False
        Swap the roles of the two halves.
    event_dim : int, optional
        3 for images ``(..., C, H, W)``, 1 for vectors ``(..., D)``. By default (``None``) it is decided from each
        input, as Pixyz does: images for inputs with 4 or more dims (``(N, C, H, W)``), vectors otherwise; then, as in
        Pixyz, ``in_features`` is not checked against the input.
    cache_size : {1, 0}

    Raises
    ------
    ValueError
        For an unknown ``mask_type`` or missing networks.

    Examples
    --------
    >>> net = torch.nn.Linear(4, 8)
    >>> f = AffineCoupling(4, scale_translate_net=lambda x: net(x).chunk(2, dim=-1))
    >>> x = torch.randn(3, 4)
    >>> z, logdet = f.forward_with_logdet(x)
    >>> bool(torch.equal(z[:, :2], x[:, :2])), bool(torch.allclose(f.inverse(z), x, atol=1e-6))
    (True, True)
    >>> conv = torch.nn.Conv2d(3, 6, 3, padding=1)  # the same class on images (N, C, H, W), channel-wise
    >>> g = AffineCoupling(3, scale_translate_net=lambda x: conv(x).chunk(2, dim=1))
    >>> g.build_mask(torch.zeros(2, 3, 4, 4)).flatten().tolist()
    [1.0, 0.0, 0.0]
    """

    def __init__(self, in_features: int, mask_type: str = "channel_wise",
                 scale_net: Callable[..., Tensor] | None = None, translate_net: Callable[..., Tensor] | None = None,
                 scale_translate_net: Callable[..., tuple[Tensor, Tensor]] | None = None,
                 inverse_mask: bool = False, event_dim: int | None = None, cache_size: int = 1) -> None:
        if mask_type not in MASK_TYPES:
            raise ValueError(f"AffineCoupling: mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        if event_dim not in (None, 1, 3):
            raise ValueError(f"AffineCoupling: event_dim must be 1 (vectors) or 3 (images), got {event_dim!r}")
        what = "channels" if event_dim == 3 else "features"
        if scale_net is not None and translate_net is not None:
            scale_translate_net = None  # as Pixyz: the pair is used when both are given
        elif scale_translate_net is None:
            raise ValueError("AffineCoupling: give scale_translate_net (returning (s, t)), or both scale_net and "
                             "translate_net")
        else:
            scale_net = translate_net = None
        for arg, net in (("scale_net", scale_net), ("translate_net", translate_net),
                         ("scale_translate_net", scale_translate_net)):
            if net is not None and not callable(net):  # (Pixyz fails at the first draw: "'str' object is not
                raise TypeError(f"AffineCoupling: {arg} must be a network (a callable module or function), got "
                                f"{type(net).__name__} {net!r:.40}")  # callable")
        super().__init__(in_features, event_dim=event_dim, cache_size=cache_size)
        self._dgm_feature_name = what
        self.mask_type = mask_type
        self.inverse_mask = inverse_mask
        self.scale_net = scale_net
        self.translate_net = translate_net
        self.scale_translate_net = scale_translate_net

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, mask_type={self.mask_type}, inverse_mask={self.inverse_mask}"

    _dgm_details = extra_repr

    def _dgm_expected_size(self, inverse: bool) -> int | None:
        return None if self._dgm_auto else self.in_features

    def build_mask(self, x: Tensor) -> Tensor:
        """The mask for input ``x``, broadcastable to it: ``(1, D)``, ``(1, C, 1, 1)`` or ``(1, 1, H, W)``.

        Examples
        --------
        >>> f = AffineCoupling(2, mask_type="checkerboard", scale_translate_net=lambda x: (x, x),
        ...                    inverse_mask=True)
        >>> f.build_mask(torch.zeros(1, 2, 3, 3))
        tensor([[[[0., 1., 0.],
                  [1., 0., 1.],
                  [0., 1., 0.]]]])
        """
        self._dgm_follow(x.shape, False)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        if self._dgm_domain_event_dim == 3:
            c, h, w = x.shape[-3:]
            if self.mask_type == "checkerboard":
                return _checkerboard(h, w, self.inverse_mask, dtype, x.device).view(1, 1, h, w)
            return _channel_wise(c, self.inverse_mask, dtype, x.device).view(1, c, 1, 1)
        d = x.shape[-1]
        if self.mask_type == "checkerboard":
            return _checkerboard(1, d, self.inverse_mask, dtype, x.device)
        return _channel_wise(d, self.inverse_mask, dtype, x.device).view(1, d)

    def get_parameters(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(s, t)`` from the networks given the masked input ``x`` and the context ``y``."""
        args = (x,) if y is None else (x, y)
        try:
            if self.scale_translate_net is not None:
                out = self.scale_translate_net(*args)
                if not isinstance(out, (tuple, list)) or len(out) != 2:
                    raise TypeError(f"{self._dgm_describe()}: scale_translate_net must return a pair (s, t), got "
                                    f"{type(out).__name__}")
                log_s, t = out
            else:
                log_s = self.scale_net(*args)
                t = self.translate_net(*args)
        except RuntimeError as e:
            self._dgm_not_in_features(e, x)
            raise
        for name, v in (("s", log_s), ("t", t)):
            if not isinstance(v, Tensor) or v.shape[-self._dgm_domain_event_dim:] != x.shape[-self._dgm_domain_event_dim:]:
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ShapeError(f"{self._dgm_describe()}: the network's {name} must have the input's shape "
                                 f"{tuple(x.shape)}, got {got}")
        return log_s, t

    def _dgm_not_in_features(self, e: RuntimeError, x: Tensor) -> None:
        """Where the networks refused ``x`` (torch's "mat1 and mat2 shapes cannot be multiplied") and ``x`` has not
        ``in_features`` features (channels), a :class:`ShapeError` naming the flow and both sizes; the mask follows
        the input, as in Pixyz, so an input of another size is taken as long as the networks take it."""
        ev = self._dgm_domain_event_dim
        if type(e) is not RuntimeError or x.dim() < ev or x.shape[-ev] == self.in_features:
            return
        text = str(e)
        if "shape" in text or "size" in text or "dimension" in text:
            raise ShapeError(f"{self._dgm_describe()}: its networks cannot take an input of shape {tuple(x.shape)}, "
                             f"whose {x.shape[-ev]} {self._dgm_feature_name} at dim {-ev} are not the in_features="
                             f"{self.in_features} it was built for (torch: {text})") from e

    def _dgm_coupling(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The kept part, the complement of the mask, and ``s``, ``t`` restricted to the transformed part."""
        mask = self.build_mask(v)
        kept = mask * v
        log_s, t = self.get_parameters(kept, context)
        free = 1 - mask
        return kept, free, log_s * free, t * free

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        kept, free, log_s, t = self._dgm_coupling(x, context)
        z = kept + free * x * torch.exp(log_s) + t
        return z, sum_rightmost(log_s, self._dgm_domain_event_dim)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        kept, free, log_s, t = self._dgm_coupling(z, context)
        x = kept + free * (z - t) * torch.exp(-log_s)
        return x, sum_rightmost(log_s, self._dgm_domain_event_dim)
