"""WMLA compatibility shim: ``from pyedt.fabric_model import FabricModel`` (WMLA 4.x).

The implementation is `kiln.elastic.FabricModel`; see there.
"""

from kiln.elastic import Callback, FabricModel, LoggerCallback

__all__ = ["FabricModel", "Callback", "LoggerCallback"]
