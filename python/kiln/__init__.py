"""Kiln's Python package: what runs inside a training process and in notebooks.

- `report` / `flush` / `Reporter`: send metrics to the Kiln master (native batched API).
- `config`: the trial's hyperparameters from ``config.json``; `context`: the workload
  contract environment (ARCHITECTURE.md §3).
- `kiln.emetrics.EMetrics`: WMLA's emetrics file format (also importable as ``emetrics``).
- `Client`: submit and watch jobs over the REST API; `KilnError` for its failures.
- `save_model`: a trained model as TorchScript plus its signature, for the model registry.
- `kiln.elastic` (imported on its own; needs torch): elastic distributed training,
  `FabricModel` and the `State` / `ElasticRuntime` loop API.

Standard library only; ``torch`` is imported only by training-side modules, lazily.
"""

from kiln.client import Client
from kiln.context import WorkloadContext, config, context
from kiln.errors import KilnError
from kiln.metrics import Reporter, flush, report
from kiln.models import save_model

__version__ = "0.1.0"

__all__ = ["report", "flush", "config", "context", "Reporter", "Client", "KilnError",
           "WorkloadContext", "save_model", "__version__"]
