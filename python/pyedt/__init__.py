"""WMLA compatibility shim: the ``pyedt`` package of WMLA 4.x notebooks.

``from pyedt.fabric_model import FabricModel`` gives `kiln.elastic.FabricModel`.
"""
