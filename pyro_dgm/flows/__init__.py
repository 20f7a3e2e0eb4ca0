"""Flows: invertible maps with exact log-determinants, as Pyro ``TransformModule`` objects (seed paper §5.2, Glow).

Every flow works in ``pyro.distributions.TransformedDistribution`` and in :class:`FlowList` together with Pyro's own
transforms; :mod:`pyro_dgm.distributions.flow_distribution` turns them into distributions.
"""
from pyro_dgm.flows.base import ConditionedFlow, Flow, FlowList
from pyro_dgm.flows.conv import ChannelConv
from pyro_dgm.flows.coupling import AffineCoupling, channel_wise_mask, checkerboard_mask
from pyro_dgm.flows.normalizations import ActNorm2d, BatchNorm1d, BatchNorm2d
from pyro_dgm.flows.operations import Flatten, Permutation, Preprocess, Reverse, Shuffle, Squeeze, Unsqueeze
from pyro_dgm.flows.planar import PlanarFlow

__all__ = ["Flow", "FlowList", "ConditionedFlow", "PlanarFlow", "AffineCoupling", "ChannelConv", "Squeeze",
           "Unsqueeze", "Permutation", "Shuffle", "Reverse", "Flatten", "Preprocess", "BatchNorm1d", "BatchNorm2d",
           "ActNorm2d", "checkerboard_mask", "channel_wise_mask"]

# Pixyz's module paths, reachable as attributes of the package as there (pixyz.flows.flows.Flow)
from pyro_dgm.flows import flows, normalizing_flows  # noqa: E402,F401
