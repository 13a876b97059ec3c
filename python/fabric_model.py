"""WMLA compatibility shim: ``from fabric_model import FabricModel`` keeps working under Kiln.

WMLA's elastic distributed training (EDT) scripts import FabricModel from the top-level
``fabric_model`` module (1.2.x-2.x, after putting ``$FABRIC_HOME/libs/fabric.zip`` on
``sys.path``; Kiln sets ``FABRIC_HOME`` for edtPyTorch execs so that line runs). The
implementation is `kiln.elastic.FabricModel`; see there.
"""

from kiln.elastic import Callback, FabricModel, LoggerCallback

__all__ = ["FabricModel", "Callback", "LoggerCallback"]
