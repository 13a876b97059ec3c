"""Kiln's elastic training runtime for PyTorch scripts (ARCHITECTURE.md §5).

Workers of an elastic job meet at a rendezvous kept by kilnd; each membership change is
a new generation with its own torch.distributed process group. Survivors keep their
process and their model in memory: a crash of a peer rolls back one step and re-forms
the group, a newcomer receives the committed state from rank 0, and the data of the
epoch is re-partitioned over the new world.

Two levels of API:

- `FabricModel` (WMLA's EDT API): ``FabricModel(model, datasets_fn, loss_fn,
  optimizer).train(epochs, batch_size_per_device)``;
- for custom loops: `State` (commit / restore / sync), `ElasticSampler` and
  `ElasticRuntime` (``with runtime.step():`` and `ElasticRuntime.allreduce_gradients`).

A step commits at its boundary without copying the model or optimizer: the step's one
gradient all-reduce comes before the optimizer's update, so a failed step has nothing to
undo there (`kiln.elastic.runtime`). Loops that change the model before a collective opt
into copies with ``ElasticRuntime(state, commit_every=N)``.

Outside Kiln (no ``KILN_ELASTIC``) the same code trains as a single process.
"""

from kiln.elastic.fabric import Callback, FabricModel, KilnLogger, LoggerCallback
from kiln.elastic.rendezvous import (Generation, GenerationWatcher, Leave, RendezvousClient,
                                     RendezvousError)
from kiln.elastic.runtime import ElasticRuntime, PeerFailure, default_device
from kiln.elastic.sampler import ElasticSampler, StepBatch
from kiln.elastic.state import State

__all__ = ["FabricModel", "Callback", "LoggerCallback", "KilnLogger", "ElasticRuntime",
           "PeerFailure", "State", "ElasticSampler", "StepBatch", "RendezvousClient",
           "RendezvousError", "Generation", "GenerationWatcher", "Leave", "default_device"]
