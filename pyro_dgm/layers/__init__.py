"""Network building blocks for flows: :class:`ResNet` (Real NVP's scale and translate networks), :class:`MLP` and
:class:`ScaleTranslate` (a coupling network's output as a bounded log-scale and a translation)."""
from pyro_dgm.layers.coupling_nets import MLP, ScaleTranslate
from pyro_dgm.layers.resnet import ResidualBlock, ResNet, WNConv2d

__all__ = ["ResNet", "ResidualBlock", "WNConv2d", "MLP", "ScaleTranslate"]

# Pixyz's module path, reachable as an attribute of the package as there
from pyro_dgm.layers import norm_util  # noqa: E402,F401
