"""Defines `ElasticSampler`, the data partitioner of elastic training.

Each epoch visits a deterministic permutation of the dataset (from ``seed + epoch``), one
global batch per step. A step's global batch is split over the ranks of the current
world, so when the world changes mid-epoch the rest of the epoch is re-partitioned over
the new ranks: no sample is visited twice and none is skipped. The sampler's state is two
integers (epoch, samples consumed this epoch), cheap to commit and to broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["ElasticSampler", "StepBatch"]


@dataclass(frozen=True)
class StepBatch:
    """One rank's share of one step.

    Attributes
    ----------
    indices : list of int
        Dataset indices for this rank (may be empty when the global batch has fewer
        samples than there are ranks).
    global_size : int
        Samples in the whole step over all ranks: divide a sum of per-sample losses by it
        so that summing gradients over the ranks gives the global-batch mean.
    """

    indices: list[int]
    global_size: int


class ElasticSampler:
    """Deterministic, re-partitionable order of a map-style dataset.

    Exactly one of ``global_batch_size`` and ``batch_size_per_device`` is given:

    - ``global_batch_size=B``: every step consumes ``B`` samples whatever the world size
      (the default of elastic training: a world change does not change the optimisation);
    - ``batch_size_per_device=b``: a step consumes ``b * world_size`` samples (pair it with
      learning-rate scaling).

    In a world of ``W`` ranks, rank ``r`` gets ``n // W + (r < n % W)`` of a step's ``n``
    samples, at its offset in the step's slice of the permutation. Not thread-safe.

    Parameters
    ----------
    dataset_size : int
        Number of samples (``len(dataset)``), at least 1.
    global_batch_size : int, optional
        Samples per step over all ranks.
    batch_size_per_device : int, optional
        Samples per step per rank.
    seed : int, optional
        Permutation seed; epoch ``e`` uses ``seed + e``. Every rank must use the same.
    shuffle : bool, optional
        False visits the samples in index order (every epoch the same).
    drop_last : bool, optional
        True skips an epoch's last step when it would be smaller than a full step.

    Attributes
    ----------
    epoch : int
        The current epoch, from 0.
    consumed : int
        Samples of the current epoch's permutation already consumed.
    """

    def __init__(self, dataset_size: int, *, global_batch_size: Optional[int] = None,
                 batch_size_per_device: Optional[int] = None, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) \
                or dataset_size < 1:
            raise ValueError(f"dataset_size must be a positive int, got {dataset_size!r}")
        if (global_batch_size is None) == (batch_size_per_device is None):
            raise ValueError("give exactly one of global_batch_size (constant global "
                             "batch) and batch_size_per_device (batch grows with the "
                             "world)")
        for name, value in (("global_batch_size", global_batch_size),
                            ("batch_size_per_device", batch_size_per_device)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.dataset_size = dataset_size
        self.global_batch_size = global_batch_size
        self.batch_size_per_device = batch_size_per_device
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.consumed = 0
        self._order_epoch: Optional[int] = None
        self._order: list[int] = []

    # ---- sizes ----------------------------------------------------------------------

    def step_size(self, world_size: int) -> int:
        """Samples the next step consumes over all ranks (0 only when the epoch is over
        with ``drop_last``)."""
        _check_world(world_size)
        full = (self.global_batch_size if self.global_batch_size is not None
                else self.batch_size_per_device * world_size)
        left = self.dataset_size - self.consumed
        if left < full and self.drop_last:
            return 0
        return min(full, left)

    def steps_left_in_epoch(self, world_size: int) -> int:
        """Steps until the current epoch ends if the world stays ``world_size``."""
        _check_world(world_size)
        full = (self.global_batch_size if self.global_batch_size is not None
                else self.batch_size_per_device * world_size)
        left = self.dataset_size - self.consumed
        return left // full if self.drop_last else (left + full - 1) // full

    def steps_per_epoch(self, world_size: int) -> int:
        """Steps of a whole epoch in a world of ``world_size``."""
        _check_world(world_size)
        full = (self.global_batch_size if self.global_batch_size is not None
                else self.batch_size_per_device * world_size)
        n = self.dataset_size
        return n // full if self.drop_last else (n + full - 1) // full

    @property
    def epoch_fraction(self) -> float:
        """Fraction of the current epoch already consumed, in [0, 1)."""
        return self.consumed / self.dataset_size

    # ---- the step -------------------------------------------------------------------

    def batch(self, rank: int, world_size: int) -> StepBatch:
        """Returns rank ``rank``'s share of the next step; does not advance.

        Raises
        ------
        ValueError
            If ``rank`` is not in ``[0, world_size)``.
        """
        _check_world(world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        n = self.step_size(world_size)
        base, extra = divmod(n, world_size)
        start = self.consumed + rank * base + min(rank, extra)
        count = base + (1 if rank < extra else 0)
        order = self._epoch_order()
        return StepBatch(order[start:start + count], n)

    def advance(self, world_size: int) -> bool:
        """Marks the next step (as sized for ``world_size``) consumed.

        Returns
        -------
        bool
            True when this step ended the epoch (``epoch`` was incremented and
            ``consumed`` reset to 0).
        """
        self.consumed += self.step_size(world_size)
        full = (self.global_batch_size if self.global_batch_size is not None
                else self.batch_size_per_device * world_size)
        left = self.dataset_size - self.consumed
        if left == 0 or (self.drop_last and left < full):
            self.epoch += 1
            self.consumed = 0
            return True
        return False

    def _epoch_order(self) -> list[int]:
        if self._order_epoch != self.epoch:
            if self.shuffle:
                import torch  # lazily: the sampler's arithmetic needs no torch

                g = torch.Generator()
                g.manual_seed(self.seed + self.epoch)
                self._order = torch.randperm(self.dataset_size, generator=g).tolist()
            else:
                self._order = list(range(self.dataset_size))
            self._order_epoch = self.epoch
        return self._order

    # ---- state ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The position: ``{"epoch", "consumed"}`` plus the configuration it depends on."""
        return {"epoch": self.epoch, "consumed": self.consumed,
                "dataset_size": self.dataset_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a position from `state_dict`.

        Raises
        ------
        ValueError
            If ``state`` was taken from a sampler over a dataset of another size or with
            another seed (the positions would not mean the same samples).
        """
        if state.get("dataset_size") != self.dataset_size or state.get("seed") != self.seed:
            raise ValueError(
                f"sampler state is for dataset_size={state.get('dataset_size')} "
                f"seed={state.get('seed')}, this sampler has dataset_size="
                f"{self.dataset_size} seed={self.seed}; every worker must load the same "
                "dataset and use the same seed")
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0 or not 0 <= consumed < self.dataset_size:
            raise ValueError(f"sampler state out of range: epoch={epoch} "
                             f"consumed={consumed} (dataset_size={self.dataset_size})")
        self.epoch, self.consumed = epoch, consumed


def _check_world(world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
