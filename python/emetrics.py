"""WMLA compatibility shim: ``from emetrics import EMetrics`` keeps working under Kiln.

The implementation is `kiln.emetrics.EMetrics`; see there.
"""

from kiln.emetrics import EMetrics

__all__ = ["EMetrics"]
