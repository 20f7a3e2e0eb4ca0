r"""A residual network with weight-normalized convolutions, for the coupling layers of Real NVP and Glow."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WNConv2d", "ResidualBlock", "ResNet"]


class _WeightNormConv2d(nn.Conv2d):
    r"""A ``Conv2d`` whose weight is :math:`g\, v / \|v\|` (norm per output channel), with the parameters
    ``weight_g`` and ``weight_v`` that ``torch.nn.utils.weight_norm`` (deprecated) gives, so state dicts and printouts
    are those of Pixyz's ``WNConv2d``; ``weight`` is the normalized weight, computed (``remove_weight_norm`` does not
    apply: no weight-norm hook is registered)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        weight = self._parameters.pop("weight").detach()  # (Conv2d's initialization, put in g and v)
        self.weight_g = nn.Parameter(torch.norm_except_dim(weight, 2, 0))
        self.weight_v = nn.Parameter(weight.clone())

    def _get_name(self) -> str:
        return "Conv2d"

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        r"""The normalized weight :math:`g\, v / \|v\|`, as ``weight_norm`` computes it (read-only: set ``weight_g``
        and ``weight_v``)."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, self.bias)


class WNConv2d(nn.Module):
    """A weight-normalized 2-D convolution (Salimans & Kingma 2016).

    Examples
    --------
    >>> tuple(WNConv2d(3, 5, kernel_size=3, padding=1)(torch.zeros(2, 3, 4, 4)).shape)
    (2, 5, 4, 4)
    >>> sorted(WNConv2d(3, 5, kernel_size=3, padding=1).state_dict())
    ['conv.bias', 'conv.weight_g', 'conv.weight_v']
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = _WeightNormConv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: batch norm, ReLU, 3x3 convolution, twice, plus the input.

    Examples
    --------
    >>> tuple(ResidualBlock(4, 4)(torch.zeros(2, 4, 3, 3)).shape)
    (2, 4, 3, 3)
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_norm = nn.BatchNorm2d(in_channels)
        self.in_conv = WNConv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.out_norm = nn.BatchNorm2d(out_channels)
        self.out_conv = WNConv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.in_conv(F.relu(self.in_norm(x)))
        return x + self.out_conv(F.relu(self.out_norm(h)))


class ResNet(nn.Module):
    r"""Real NVP's residual network for the scale and translate factors of a coupling layer.

    The input is batch-normalized (doubled if ``double_after_norm``), concatenated with its negation and passed
    through ReLU, a convolution, ``num_blocks`` residual blocks whose outputs are summed through 1x1 skip
    convolutions, then batch norm, ReLU and a 1x1 convolution to ``out_channels``. Leading batch dims beyond one are
    flattened and restored, so it also runs on ``(L, B, C, H, W)`` inputs.

    Parameters
    ----------
    in_channels, mid_channels, out_channels : int
    num_blocks : int
    kernel_size, padding : int
        Of the first convolution (the blocks use 3x3).
    double_after_norm : bool
        Double the normalized input (Real NVP does for the first coupling).

    Examples
    --------
    >>> net = ResNet(in_channels=3, mid_channels=8, out_channels=6, num_blocks=1, kernel_size=3, padding=1,
    ...              double_after_norm=False)
    >>> s, t = net(torch.randn(2, 3, 4, 4)).chunk(2, dim=-3)
    >>> tuple(s.shape)
    (2, 3, 4, 4)
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, num_blocks: int, kernel_size: int,
                 padding: int, double_after_norm: bool) -> None:
        super().__init__()
        self.in_norm = nn.BatchNorm2d(in_channels)
        self.double_after_norm = double_after_norm
        self.in_conv = WNConv2d(2 * in_channels, mid_channels, kernel_size, padding, bias=True)
        self.in_skip = WNConv2d(mid_channels, mid_channels, kernel_size=1, padding=0, bias=True)
        self.blocks = nn.ModuleList([ResidualBlock(mid_channels, mid_channels) for _ in range(num_blocks)])
        self.skips = nn.ModuleList([WNConv2d(mid_channels, mid_channels, kernel_size=1, padding=0, bias=True)
                                    for _ in range(num_blocks)])
        self.out_norm = nn.BatchNorm2d(mid_channels)
        self.out_conv = WNConv2d(mid_channels, out_channels, kernel_size=1, padding=0, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        x = self.in_norm(x)
        if self.double_after_norm:
            x = 2.0 * x
        x = self.in_conv(F.relu(torch.cat((x, -x), dim=1)))
        skip = self.in_skip(x)
        for block, skip_conv in zip(self.blocks, self.skips):
            x = block(x)
            skip = skip + skip_conv(x)
        out = self.out_conv(F.relu(self.out_norm(skip)))
        return out.reshape(*lead, *out.shape[1:])
