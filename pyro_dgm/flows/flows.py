"""Pixyz's module ``pixyz.flows.flows``: :class:`Flow` and :class:`FlowList` (see :mod:`.base`).

Examples
--------
>>> from pyro_dgm.flows.flows import Flow, FlowList
>>> issubclass(FlowList, Flow)
True
"""
from pyro_dgm.flows.base import Flow, FlowList

__all__ = ["Flow", "FlowList"]
