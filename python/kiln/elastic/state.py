"""Defines `State`, the training state an elastic worker commits, rolls back and shares.

A `State` holds the model, the optimizer, an optional `ElasticSampler` and LR scheduler,
and any user fields (``state.history = []``). `State.restore` rolls back to the last
commit after a failed collective; `State.sync` sends the source rank's state to every rank
of a new generation (ARCHITECTURE.md §5).

Two kinds of commit:

- ``commit()`` (a copy commit) keeps an in-memory copy of everything, the model and
  optimizer tensors included (copied into buffers reused from the last commit);
- ``commit(copy=False)`` (a step-boundary commit, what `ElasticRuntime` does after each
  step by default) copies only what is small: the step, the sampler position, the LR
  scheduler, the user fields, the optimizer's hyperparameters (``lr`` ...), the model's
  buffers (batch-norm statistics) and the RNG state. The model's parameters and the
  optimizer's state are not copied: `restore` leaves them as they are, which is exact as
  long as they were not changed since the commit. The runtime's step guarantees that:
  the optimizer applies a step's update only after the step's one gradient all-reduce
  succeeded, so a failed step has not touched them. `restore` checks it (parameters'
  version counters) and raises instead of leaving a half-updated model.
"""

from __future__ import annotations

import collections
import copy as _copy
import io
from typing import Any, Optional

import torch

__all__ = ["State"]

_OWN_ATTRIBUTES = frozenset({"model", "optimizer", "sampler", "lr_scheduler", "step",
                             "_fields", "_committed", "_rng_committed"})

# Field values kept by reference in a commit: immutable, so no copy is needed.
_IMMUTABLE = (int, float, bool, str, bytes, type(None))


class State:
    """What an elastic training loop must not lose: model, optimizer, data position,
    step and user fields.

    User fields are given as keyword arguments and read and written as attributes
    (``state.best_accuracy = 0.9``); they are copied at each commit (numbers by reference,
    anything else deep-copied), so keep them small (numbers, short lists, small tensors).
    A copy commit copies the model and optimizer tensor by tensor into buffers kept from
    the last one; a step-boundary commit does not copy them (see the module docstring).

    Not thread-safe: one training loop uses it.

    Parameters
    ----------
    model : torch.nn.Module, optional
        Its ``state_dict`` (parameters and buffers) is committed and synced.
    optimizer : torch.optim.Optimizer, optional
        Its ``state_dict`` (momentum buffers, param groups with their lr) likewise.
    sampler : ElasticSampler, optional
        Its position (epoch, samples consumed) likewise.
    lr_scheduler : optional
        Anything with ``state_dict``/``load_state_dict`` (a torch LR scheduler).
    **fields
        User fields.

    Attributes
    ----------
    step : int
        Steps completed; the elastic runtime adds one after each successful step.
    committed_step : int
        ``step`` at the last `commit`, -1 before the first.
    committed_copy : bool
        Whether the last commit copied the model and optimizer (False: a step-boundary
        commit, or none yet).
    """

    def __init__(self, model: Optional[torch.nn.Module] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, sampler: Any = None,
                 *, lr_scheduler: Any = None, **fields: Any) -> None:
        object.__setattr__(self, "_fields", dict(fields))
        object.__setattr__(self, "_committed", None)
        object.__setattr__(self, "_rng_committed", None)
        self.model = model
        self.optimizer = optimizer
        self.sampler = sampler
        self.lr_scheduler = lr_scheduler
        self.step = 0

    # ---- user fields as attributes ----------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the name is a user field or a typo.
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        raise AttributeError(f"State has no field {name!r}; fields are "
                             f"{sorted(fields)} (add one with State(..., {name}=...) or "
                             f"state.{name} = ...)")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            self._fields[name] = value

    @property
    def fields(self) -> dict[str, Any]:
        """The user fields (the live dict)."""
        return self._fields

    @property
    def committed_step(self) -> int:
        return -1 if self._committed is None else self._committed["step"]

    # ---- commit and rollback ----------------------------------------------------------

    @property
    def committed_copy(self) -> bool:
        return self._committed is not None and self._committed["copy"]

    def commit(self, copy: bool = True) -> None:
        """Commits the state, replacing the previous commit.

        Parameters
        ----------
        copy : bool, optional
            True (default): keep a copy of the whole state, model and optimizer included;
            `restore` rolls anything back. False: a step-boundary commit that copies only
            the small parts (step, sampler, LR scheduler, user fields, optimizer
            hyperparameters, model buffers, RNG); `restore` then expects the model's
            parameters and the optimizer's state not to have changed since. About free
            next to a copy commit, which copies every tensor of the model and optimizer.
        """
        previous = self._committed or {}
        snapshot: dict[str, Any] = {"step": self.step, "copy": bool(copy)}
        if self.model is not None:
            if copy:
                snapshot["model"] = _copy_module_state(self.model.state_dict(),
                                                       previous.get("model"))
            else:
                buffers = previous.get("model_buffers") or {}
                snapshot["model_buffers"] = {
                    name: _copy_tensor(b, buffers.get(name))
                    for name, b in self.model.named_buffers()}
                snapshot["model_params"] = _versions(self._updated_parameters())
        if self.optimizer is not None:
            if copy:
                snapshot["optimizer"] = _copy_optimizer_state(self.optimizer.state_dict(),
                                                              previous.get("optimizer"))
            else:
                snapshot["optimizer_hyper"] = [
                    {k: (list(v) if isinstance(v, list) else v) for k, v in g.items()
                     if k != "params"} for g in self.optimizer.param_groups]
        if self.sampler is not None:
            snapshot["sampler"] = dict(self.sampler.state_dict())
        if self.lr_scheduler is not None:
            snapshot["lr_scheduler"] = _copy.deepcopy(self.lr_scheduler.state_dict())
        snapshot["fields"] = _copy_fields(self._fields)
        object.__setattr__(self, "_committed", snapshot)
        # Each rank keeps its own random stream (dropout masks differ per rank, as in
        # DDP), so RNG is rolled back locally but never synced.
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        object.__setattr__(self, "_rng_committed", rng)

    def restore(self) -> None:
        """Rolls the state back to the last `commit`.

        Raises
        ------
        RuntimeError
            If nothing was committed yet, or if the last commit was a step-boundary one
            (``copy=False``) and a model parameter was changed since (an optimizer step
            ran after it: the model cannot be rolled back without a copy).
        """
        committed = self._committed
        if committed is None:
            raise RuntimeError("State.restore() before any State.commit()")
        if not committed["copy"]:
            self._restore_boundary(committed)
        else:
            self._load(committed)
        rng = self._rng_committed or {}
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _updated_parameters(self) -> list[torch.Tensor]:
        """The parameters a step updates: the optimizer's (a flat list, far cheaper to
        walk than the module tree), else the model's."""
        if self.optimizer is not None:
            return [p for group in self.optimizer.param_groups for p in group["params"]]
        return list(self.model.parameters())

    def _restore_boundary(self, committed: dict[str, Any]) -> None:
        """Restores a step-boundary commit: the small parts; the model's parameters and
        the optimizer's state must be as they were."""
        if self.model is not None:
            if _versions(self._updated_parameters()) != committed["model_params"]:
                raise RuntimeError(
                    f"cannot roll back to step {committed['step']}: the model's parameters "
                    "changed after its step-boundary commit (an optimizer step, or another "
                    "in-place change, ran before the collective that failed), and a "
                    "step-boundary commit keeps no copy of them. Run the step's one "
                    "gradient all-reduce before optimizer.step() and move any later "
                    "collective (validation) into its own "
                    "`with runtime.step(counts_as_step=False):` block, or make the runtime "
                    "copy the state: ElasticRuntime(..., commit_every=1)")
            buffers = dict(self.model.named_buffers())
            for name, saved in committed["model_buffers"].items():
                if name in buffers:
                    buffers[name].copy_(saved)
        if self.optimizer is not None:
            for group, saved in zip(self.optimizer.param_groups,
                                    committed["optimizer_hyper"]):
                group.update({k: (list(v) if isinstance(v, list) else v)
                              for k, v in saved.items()})
        if self.sampler is not None:
            self.sampler.load_state_dict(committed["sampler"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(_copy.deepcopy(committed["lr_scheduler"]))
        object.__setattr__(self, "_fields", _copy_fields(committed.get("fields", {})))
        self.step = int(committed["step"])

    # ---- whole-state dicts (sync and disk checkpoints) ----------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The current state as a dict of plain values and tensors (``torch.save``-able).

        The dict references live tensors: save or serialise it before training on."""
        out: dict[str, Any] = {"step": self.step, "fields": self._fields}
        if self.model is not None:
            out["model"] = self.model.state_dict()
        if self.optimizer is not None:
            out["optimizer"] = self.optimizer.state_dict()
        if self.sampler is not None:
            out["sampler"] = self.sampler.state_dict()
        if self.lr_scheduler is not None:
            out["lr_scheduler"] = self.lr_scheduler.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Loads a dict from `state_dict` (another rank's, or a checkpoint's).

        Raises
        ------
        ValueError
            If ``state`` lacks a part this State has (e.g. a model but no optimizer);
            errors of ``load_state_dict`` of the parts propagate (a model of another
            shape raises RuntimeError).
        """
        for part, owner in (("model", self.model), ("optimizer", self.optimizer),
                            ("sampler", self.sampler), ("lr_scheduler", self.lr_scheduler)):
            if owner is not None and part not in state:
                raise ValueError(f"the state to load has no {part!r} but this State has "
                                 f"one; was it saved by a script with another setup?")
        self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        if self.model is not None:
            self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            # Optimizer.load_state_dict deep-copies, so the committed copy stays intact.
            self.optimizer.load_state_dict(state["optimizer"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(_copy.deepcopy(state["lr_scheduler"]))
        object.__setattr__(self, "_fields", _copy.deepcopy(state.get("fields", {})))
        self.step = int(state["step"])

    def sync(self, group: Any, rank: int, source_rank: int,
             device: Optional[torch.device] = None, *, copy: bool = True) -> int:
        """Makes every rank's state the source rank's, then commits.

        A collective over ``group`` (a torch.distributed ProcessGroup): every rank of the
        group must call it with the same ``source_rank``. The state travels as one
        ``torch.save`` blob in two broadcasts (its size, then its bytes).

        Parameters
        ----------
        group : torch.distributed.ProcessGroup
            The generation's group.
        rank : int
            This process's rank in ``group``.
        source_rank : int
            The rank whose state wins.
        device : torch.device, optional
            Where the group's tensors must live (``cuda`` for NCCL); CPU by default.
        copy : bool, optional
            The kind of the commit that follows (see `commit`).

        Returns
        -------
        int
            Bytes broadcast.

        Raises
        ------
        RuntimeError
            If a peer fails during the broadcast (the caller treats it like any failed
            collective).
        """
        device = device or torch.device("cpu")
        if rank == source_rank:
            buffer = io.BytesIO()
            torch.save(self.state_dict(), buffer)
            payload = torch.frombuffer(bytearray(buffer.getbuffer()), dtype=torch.uint8)
            size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
        else:
            size = torch.zeros(1, dtype=torch.int64, device=device)
        group.broadcast(size, source_rank).wait()
        n = int(size.item())
        if rank == source_rank:
            data = payload.to(device)
        else:
            data = torch.empty(n, dtype=torch.uint8, device=device)
        group.broadcast(data, source_rank).wait()
        if rank != source_rank:
            blob = data.cpu().numpy().tobytes()
            self._load(torch.load(io.BytesIO(blob), map_location="cpu"))
        self.commit(copy=copy)
        return n

    def describe(self) -> str:
        """``"step 812 (epoch 2, 35% done)"``; without a sampler just ``"step 812"``."""
        if self.sampler is None:
            return f"step {self.step}"
        return (f"step {self.step} (epoch {self.sampler.epoch + 1}, "
                f"{int(100 * self.sampler.epoch_fraction)}% done)")


def _versions(tensors: list[torch.Tensor]) -> list[int]:
    # A tensor's version counter grows with every in-place change (an optimizer step).
    return [t._version for t in tensors]


def _copy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """User fields for a commit (a generic deep copy of the dict cost more than the rest
    of a step-boundary commit)."""
    return {k: _copy_value(v) for k, v in fields.items()}


def _copy_value(value: Any) -> Any:
    """Immutable values by reference, lists, tuples and plain dicts rebuilt, anything
    else deep-copied."""
    if isinstance(value, _IMMUTABLE):
        return value
    kind = type(value)
    if kind is list:
        return [_copy_value(v) for v in value]
    if kind is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    if kind is tuple:
        return tuple(_copy_value(v) for v in value)
    return _copy.deepcopy(value)


def _copy_tensor(value: torch.Tensor, previous: Any) -> torch.Tensor:
    """``value`` copied into ``previous`` when it fits (no allocation), else cloned."""
    if (isinstance(previous, torch.Tensor) and previous.shape == value.shape
            and previous.dtype == value.dtype and previous.device == value.device):
        previous.copy_(value.detach())
        return previous
    return value.detach().clone()


def _copy_module_state(state: Any, previous: Any) -> Any:
    """Copies a Module.state_dict (one level of name -> tensor): the fast path of a
    commit every step, where a generic deep copy cost more than the tensor copies."""
    prev = previous if isinstance(previous, dict) else {}
    out: Any = collections.OrderedDict()
    for name, value in state.items():
        out[name] = (_copy_tensor(value, prev.get(name)) if isinstance(value, torch.Tensor)
                     else _copy.deepcopy(value))
    # state_dict() builds a fresh _metadata (per-module versions) each call; nothing
    # mutates it afterwards, so the reference is kept as is.
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata
    return out


def _copy_optimizer_state(state: Any, previous: Any) -> Any:
    """Copies an Optimizer.state_dict: ``state`` (param index -> {name: tensor or
    number}, whose inner dicts are the optimizer's live ones) and ``param_groups``
    (fresh dicts of hyperparameters); other keys generically."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        return _copy_tree(state, previous)
    prev = previous if isinstance(previous, dict) else {}
    prev_state = prev.get("state") or {}
    per_param: dict[Any, Any] = {}
    for index, entry in state["state"].items():
        prev_entry = prev_state.get(index) or {}
        per_param[index] = {
            key: (_copy_tensor(value, prev_entry.get(key)) if isinstance(value, torch.Tensor)
                  else value if isinstance(value, (int, float, bool, str, type(None)))
                  else _copy.deepcopy(value))
            for key, value in entry.items()}
    out: dict[str, Any] = {"state": per_param}
    for key, value in state.items():
        if key == "param_groups":
            out[key] = [{k: list(v) if isinstance(v, list) else v for k, v in group.items()}
                        for group in value]
        elif key != "state":
            out[key] = _copy_tree(value, prev.get(key))
    return out


def _copy_tree(value: Any, previous: Any) -> Any:
    """Copies a state_dict-like tree: tensors are copied into ``previous``'s tensor at the
    same place when its shape, dtype and device match (no allocation), else cloned;
    containers are rebuilt; anything else is deep-copied."""
    if isinstance(value, torch.Tensor):
        return _copy_tensor(value, previous)
    if isinstance(value, dict):
        prev = previous if isinstance(previous, dict) else {}
        out: dict[Any, Any] = (collections.OrderedDict()
                               if isinstance(value, collections.OrderedDict) else {})
        for key, item in value.items():
            out[key] = _copy_tree(item, prev.get(key))
        # Module.load_state_dict reads per-module versions from this attribute.
        metadata = getattr(value, "_metadata", None)
        if metadata is not None:
            out._metadata = _copy.deepcopy(metadata)  # type: ignore[attr-defined]
        return out
    if isinstance(value, (list, tuple)):
        prev_seq = previous if isinstance(previous, (list, tuple)) and \
            len(previous) == len(value) else [None] * len(value)
        items = [_copy_tree(v, p) for v, p in zip(value, prev_seq)]
        return items if isinstance(value, list) else tuple(items)
    return _copy.deepcopy(value)
