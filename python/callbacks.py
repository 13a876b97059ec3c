"""WMLA compatibility shim: ``from callbacks import Callback, LoggerCallback`` keeps working
under Kiln.

WMLA's EDT scripts subclass `Callback` (hooks run on every worker: ``on_epoch_begin``,
``on_epoch_end``, ...) and `LoggerCallback` (the driver logger, given to
``FabricModel(..., driver_logger=...)``: ``log_train_metrics(metrics, iteration, epoch,
workers)``, ``log_test_metrics(metrics, iteration, epoch)``). The implementations are
`kiln.elastic.Callback` and `kiln.elastic.LoggerCallback`; see there.
"""

from kiln.elastic import Callback, LoggerCallback

__all__ = ["Callback", "LoggerCallback"]
