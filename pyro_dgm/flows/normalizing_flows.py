"""Pixyz's module ``pixyz.flows.normalizing_flows``: :class:`PlanarFlow` (see :mod:`.planar`).

Examples
--------
>>> from pyro_dgm.flows.normalizing_flows import Flow, PlanarFlow
>>> issubclass(PlanarFlow, Flow)
True
"""
from pyro_dgm.flows.base import Flow
from pyro_dgm.flows.planar import PlanarFlow
from pyro_dgm.utils.settings import epsilon

__all__ = ["PlanarFlow", "Flow", "epsilon"]
