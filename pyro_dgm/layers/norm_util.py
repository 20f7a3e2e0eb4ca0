"""Pixyz's module ``pixyz.layers.norm_util``: :class:`WNConv2d`, a weight-normalized convolution (see
:mod:`.resnet`).

Examples
--------
>>> import torch
>>> from pyro_dgm.layers.norm_util import WNConv2d
>>> WNConv2d(3, 4, 3, padding=1)(torch.zeros(1, 3, 5, 5)).shape
torch.Size([1, 4, 5, 5])
"""
from pyro_dgm.layers.resnet import WNConv2d

__all__ = ["WNConv2d"]
