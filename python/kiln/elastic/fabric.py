"""Defines `FabricModel`, the WMLA-style elastic trainer, and its `Callback` hooks.

``FabricModel(model, datasets_fn, loss_fn, optimizer).train(epochs, batch_size_per_device)``
runs the whole loop on `ElasticRuntime`: the `ElasticSampler` shares each global batch
among the current workers, gradients are summed in one all-reduce, a failure rolls back
one step and re-forms the group, rank 0 reports metrics (``kiln.report`` and the
emetrics file), writes ``$CHECKPOINT_DIR`` checkpoints, ``val_dict_list.json`` and the
final TorchScript model. The same script runs as a single process outside Kiln.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Optional, Sequence, Union

import torch

import kiln
from kiln.elastic.runtime import ElasticRuntime, log
from kiln.elastic.sampler import ElasticSampler
from kiln.elastic.state import State
from kiln.emetrics import EMetrics, write_val_dict_list

__all__ = ["FabricModel", "Callback", "LoggerCallback", "KilnLogger", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "elastic-checkpoint.pt"


class Callback:
    """Hooks `FabricModel.train` calls on EVERY rank (so an LR schedule set here stays
    the same on all ranks); ``logs["rank"]`` tells a logging callback which rank it is
    on. Epochs are counted from 0. A hook may run again for the same epoch after a
    failure rolled a step back.

    Attributes
    ----------
    model : FabricModel
        Set before `on_train_begin`.
    params : dict
        ``{"optimizer", "epochs", "batch_size", "global_batch_size"}``.
    """

    model: Any = None
    params: dict[str, Any] = {}

    def set_model(self, model: "FabricModel") -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[dict[str, Any]] = None) -> None:
        """Before the first step of this process."""

    def on_train_end(self, logs: Optional[dict[str, Any]] = None) -> None:
        """After the last step (``logs``: the last epoch's)."""

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        """Before the first step of ``epoch``."""

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        """After ``epoch``'s last step and its validation. ``logs``: ``loss`` and
        ``accuracy`` (training, epoch mean), ``val_loss`` and ``val_accuracy`` (when
        validated), ``step``, ``rank``, ``world_size``."""

    def on_batch_end(self, step: int, logs: Optional[dict[str, Any]] = None) -> None:
        """After each step (``logs``: ``loss`` of the global batch, ``rank``,
        ``world_size``)."""


class LoggerCallback:
    """WMLA's driver logger: where metrics go. Called on rank 0 only."""

    def on_train_begin(self) -> None:
        pass

    def on_train_end(self) -> None:
        pass

    def log_train_metrics(self, metrics: dict[str, float], iteration: int, epoch: int,
                          workers: int) -> None:
        """Training metrics (means since the last call) at global step ``iteration``."""

    def log_test_metrics(self, metrics: dict[str, float], iteration: int,
                         epoch: int) -> None:
        """Validation metrics after epoch ``epoch`` (counted from 1)."""


class KilnLogger(LoggerCallback):
    """The default logger: prints a line, reports through ``kiln.report`` (native API)
    and appends to the emetrics file (``$LOG_DIR/evaluation-metrics.txt``)."""

    def __init__(self, epochs: int = 0) -> None:
        self.epochs = epochs
        self._emetrics: Optional[EMetrics] = None

    def _em(self) -> EMetrics:
        if self._emetrics is None:
            self._emetrics = EMetrics.open(os.environ.get("SUBID") or None,
                                           write_val_dict_list=False)
        return self._emetrics

    def log_train_metrics(self, metrics: dict[str, float], iteration: int, epoch: int,
                          workers: int) -> None:
        text = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"epoch {epoch}/{self.epochs} step {iteration} {text} (workers {workers})",
              flush=True)
        kiln.report(iteration, metrics, group="train")
        self._em().record(EMetrics.TRAIN_GROUP, iteration, metrics)

    def log_test_metrics(self, metrics: dict[str, float], iteration: int,
                         epoch: int) -> None:
        text = " ".join(f"test_{k} {v:.4f}" for k, v in metrics.items())
        print(f"epoch {epoch}/{self.epochs} {text}", flush=True)
        kiln.report(epoch, metrics, group="test")
        self._em().record(EMetrics.TEST_GROUP, epoch, metrics)

    def on_train_end(self) -> None:
        if self._emetrics is not None:
            self._emetrics.close()
            self._emetrics = None


Dataset = Any  # map-style: __len__ and __getitem__ -> (input, target)


class FabricModel:
    """Elastic data-parallel training of a PyTorch model, WMLA's EDT user API.

    Parameters
    ----------
    model : torch.nn.Module
    datasets_function : callable
        ``() -> (train_dataset, test_dataset)``, map-style datasets whose items are
        ``(input, target)``; ``test_dataset`` may be None. Called once per process.
    loss_function : callable
        ``(output, target) -> loss``, the MEAN over the batch (PyTorch's default
        reduction, e.g. ``F.nll_loss``).
    optimizer : torch.optim.Optimizer
        Over ``model.parameters()``. Its learning rate is the one for the full global
        batch (see `train`).
    lr_scheduler : optional
        A torch LR scheduler, stepped once per epoch.
    user_callback : Callback or list of Callback, optional
        Hooks run on every rank (WMLA's name; `train` also takes ``callbacks``).
    driver_logger : LoggerCallback, optional
        Replaces the default `KilnLogger` (rank 0 only), as in WMLA.
    fn_batch_collate : callable, optional
        ``(list of items) -> (inputs, targets)``; by default torch's ``default_collate``
        (a ``TensorDataset`` is indexed directly, much faster).
    device : torch.device, optional
        Default: CUDA when torch sees a GPU and ``CUDA_VISIBLE_DEVICES`` is set, else CPU.
    seed : int, optional
        Seed of the data order (same on every worker).
    """

    def __init__(self, model: torch.nn.Module, datasets_function: Callable[[], Any],
                 loss_function: Callable[..., torch.Tensor], optimizer: torch.optim.Optimizer,
                 *, lr_scheduler: Any = None,
                 user_callback: Union[Callback, Sequence[Callback], None] = None,
                 driver_logger: Optional[LoggerCallback] = None,
                 fn_batch_collate: Optional[Callable[[list[Any]], Any]] = None,
                 device: Optional[torch.device] = None, seed: int = 0) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(datasets_function):
            raise TypeError("datasets_function must be callable: () -> (train, test)")
        if not callable(loss_function):
            raise TypeError("loss_function must be callable: (output, target) -> loss")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.model = model
        self.datasets_function = datasets_function
        self.loss_function = loss_function
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.user_callbacks = _as_list(user_callback)
        self.driver_logger = driver_logger
        self.fn_batch_collate = fn_batch_collate
        self.device = device
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        self.runtime: Optional[ElasticRuntime] = None
        self.state: Optional[State] = None

    def train(self, epochs: int, batch_size: int, engines_number: Optional[int] = None, *,
              callbacks: Union[Callback, Sequence[Callback], None] = None,
              checkpoint_freq: int = 1, validation_freq: int = 1,
              global_batch_size: Optional[int] = None, scale_lr: bool = False,
              log_every: int = 100, commit_every: int = 1, eval_batch_size: int = 1000,
              shuffle: bool = True, drop_last: bool = False,
              num_dataloader_threads: Optional[int] = None) -> list[dict[str, Any]]:
        """Trains for ``epochs`` epochs over whatever workers Kiln gives the job.

        Parameters
        ----------
        epochs : int
        batch_size : int
            Samples per device per step at ``engines_number`` workers.
        engines_number : int, optional
            The most workers (WMLA's name); default ``KILN_MAX_WORKERS``, else the
            static ``WORLD_SIZE``, else 1.
        callbacks : Callback or list, optional
            Added to the constructor's ``user_callback``.
        checkpoint_freq : int, optional
            Rank 0 writes ``$CHECKPOINT_DIR/elastic-checkpoint.pt`` every N epochs (1);
            0 never. A job started again (all workers lost) resumes from it.
        validation_freq : int, optional
            Validate every N epochs and after the last (1).
        global_batch_size : int, optional
            Samples per step over all workers; default ``batch_size * engines_number``,
            kept constant whatever the number of workers, so a run's optimisation does not
            depend on how many workers it had.
        scale_lr : bool, optional
            Instead keep ``batch_size`` per worker and scale the learning rate linearly:
            at W workers each param group uses ``lr * W / engines_number``.
        log_every : int, optional
            Report the training loss every N steps (100).
        commit_every : int, optional
            In-memory commit every N steps (1): a failure loses at most N steps.
        eval_batch_size : int, optional
            Batch size of validation (1000).
        shuffle, drop_last : bool, optional
            See `ElasticSampler`.
        num_dataloader_threads : int, optional
            Accepted for WMLA scripts; data is read in the training thread.

        Returns
        -------
        list of dict
            Validation history ``[{"steps": epoch, "loss", "accuracy"}]`` (as in
            ``val_dict_list.json``).

        Raises
        ------
        ValueError
            On a bad argument (the message names it).
        SystemExit
            With code 0 when Kiln scales this worker away.
        """
        for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                   ("checkpoint_freq", checkpoint_freq, 0),
                                   ("validation_freq", validation_freq, 1),
                                   ("log_every", log_every, 1),
                                   ("eval_batch_size", eval_batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        max_workers = engines_number if engines_number is not None else _default_max_workers()
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"engines_number must be a positive int, got {max_workers!r}")
        if scale_lr and global_batch_size is not None:
            raise ValueError("scale_lr=True keeps the batch per worker fixed; it cannot be "
                             "combined with global_batch_size")
        del num_dataloader_threads

        train_ds, test_ds = self._datasets()
        if scale_lr:
            sampler = ElasticSampler(len(train_ds), batch_size_per_device=batch_size,
                                     seed=self.seed, shuffle=shuffle, drop_last=drop_last)
        else:
            sampler = ElasticSampler(len(train_ds),
                                     global_batch_size=global_batch_size or
                                     batch_size * max_workers,
                                     seed=self.seed, shuffle=shuffle, drop_last=drop_last)
        state = State(self.model, self.optimizer, sampler, lr_scheduler=self.lr_scheduler,
                      history=[], epochs_begun=0, window_loss=0.0, window_steps=0,
                      epoch_loss=0.0, epoch_correct=0.0, epoch_samples=0, epoch_steps=0)
        runtime = ElasticRuntime(state, commit_every=commit_every, device=self.device)
        self.state, self.runtime = state, runtime
        self.model.to(runtime.device)
        self._resume_from_checkpoint(state)

        all_callbacks = self.user_callbacks + _as_list(callbacks)
        params = {"optimizer": self.optimizer, "epochs": epochs, "batch_size": batch_size,
                  "global_batch_size": sampler.global_batch_size, "max_workers": max_workers}
        for cb in all_callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(self)
            if hasattr(cb, "set_params"):
                cb.set_params(params)
        logger = self.driver_logger or KilnLogger(epochs)
        started = time.monotonic()
        runtime.start()
        logger_started = False
        for cb in all_callbacks:
            cb.on_train_begin({"rank": runtime.rank, "world_size": runtime.world_size})
        last_logs: dict[str, Any] = {}
        try:
            while sampler.epoch < epochs:
                with runtime.step():
                    if runtime.is_reporter and not logger_started:
                        logger.on_train_begin()
                        logger_started = True
                    logs = self._train_step(state, runtime, all_callbacks, logger, test_ds,
                                            epochs, validation_freq, checkpoint_freq,
                                            log_every, scale_lr, max_workers,
                                            eval_batch_size, train_ds)
                    if logs is not None:
                        last_logs = logs
            self.history = list(state.history)
            for cb in all_callbacks:
                cb.on_train_end(last_logs)
            if runtime.is_reporter:
                self._write_results(state)
                if not logger_started:
                    logger.on_train_begin()
                logger.on_train_end()
                if not kiln.flush(timeout=30):
                    log("warning: some metrics were not delivered to the Kiln master")
            log(f"training done: {epochs} epochs, {state.step} steps in "
                f"{time.monotonic() - started:.1f} s ({runtime.generations_seen} "
                f"generation(s) seen by this worker)")
        finally:
            runtime.close()
        return self.history

    # ---- one step -----------------------------------------------------------------------

    def _train_step(self, state: State, runtime: ElasticRuntime, callbacks: list[Callback],
                    logger: LoggerCallback, test_ds: Optional[Dataset], epochs: int,
                    validation_freq: int, checkpoint_freq: int, log_every: int,
                    scale_lr: bool, max_workers: int, eval_batch_size: int,
                    train_ds: Dataset) -> Optional[dict[str, Any]]:
        """Runs one step; on the epoch's last step also its validation, callbacks and
        checkpoint. Returns the epoch's logs when an epoch ended, else None."""
        sampler: ElasticSampler = state.sampler
        rank, world = runtime.rank, runtime.world_size
        if sampler.consumed == 0 and state.epochs_begun <= sampler.epoch:
            for cb in callbacks:
                cb.on_epoch_begin(sampler.epoch, {"rank": rank, "world_size": world})
            state.epochs_begun = sampler.epoch + 1
        batch = sampler.batch(rank, world)
        model, optimizer = self.model, self.optimizer
        model.train()
        optimizer.zero_grad(set_to_none=False)
        loss_share, correct = 0.0, 0.0
        if batch.indices:
            inputs, targets = self._fetch(train_ds, batch.indices)
            output = model(inputs)
            share = len(batch.indices) / batch.global_size
            loss = self.loss_function(output, targets) * share
            loss.backward()
            loss_share = float(loss.detach())
            correct = _correct(output, targets)
        global_loss, global_correct = runtime.allreduce_gradients(model.parameters(),
                                                                  [loss_share, correct])
        if scale_lr:
            factor = world / max_workers
            base = [g["lr"] for g in optimizer.param_groups]
            for g, lr in zip(optimizer.param_groups, base):
                g["lr"] = lr * factor
            optimizer.step()
            for g, lr in zip(optimizer.param_groups, base):
                g["lr"] = lr
        else:
            optimizer.step()
        step = state.step + 1  # the runtime counts the step when this block succeeds
        state.window_loss += global_loss
        state.window_steps += 1
        state.epoch_loss += global_loss * batch.global_size
        state.epoch_correct += global_correct
        state.epoch_samples += batch.global_size
        state.epoch_steps += 1
        epoch_of_step = sampler.epoch + 1
        ended = sampler.advance(world)
        if runtime.is_reporter and (step % log_every == 0 or ended):
            logger.log_train_metrics({"loss": state.window_loss / state.window_steps}, step,
                                     epoch_of_step, world)
        if step % log_every == 0 or ended:
            state.window_loss, state.window_steps = 0.0, 0
        for cb in callbacks:
            cb.on_batch_end(step, {"loss": global_loss, "rank": rank, "world_size": world})
        if not ended:
            return None

        logs: dict[str, Any] = {
            "loss": state.epoch_loss / max(state.epoch_samples, 1),
            "accuracy": state.epoch_correct / max(state.epoch_samples, 1),
            "step": step, "rank": rank, "world_size": world}
        state.epoch_loss, state.epoch_correct = 0.0, 0.0
        state.epoch_samples, state.epoch_steps = 0, 0
        done = sampler.epoch  # epochs completed, counted from 1
        if test_ds is not None and (done % validation_freq == 0 or done == epochs):
            val_loss, val_accuracy = self._evaluate(runtime, test_ds, eval_batch_size)
            logs.update(val_loss=val_loss, val_accuracy=val_accuracy)
            row = {"steps": done, "loss": val_loss}
            if not math.isnan(val_accuracy):
                row["accuracy"] = val_accuracy
            state.history.append(row)
            if runtime.is_reporter:
                logger.log_test_metrics({k: v for k, v in row.items() if k != "steps"},
                                        step, done)
                result_dir = os.environ.get("RESULT_DIR")
                if result_dir:
                    write_val_dict_list(state.history, result_dir)
        for cb in callbacks:
            cb.on_epoch_end(done - 1, logs)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        if runtime.is_reporter and checkpoint_freq and done % checkpoint_freq == 0:
            self._save_checkpoint(state, step)
        return logs

    def _fetch(self, dataset: Dataset, indices: list[int]) -> tuple[Any, Any]:
        if isinstance(dataset, torch.utils.data.TensorDataset) and self.fn_batch_collate is None:
            index = torch.tensor(indices, dtype=torch.long)
            tensors = [t[index] for t in dataset.tensors]
            inputs, targets = tensors[0], tensors[1]
        else:
            items = [dataset[i] for i in indices]
            collate = self.fn_batch_collate or torch.utils.data.default_collate
            inputs, targets = collate(items)[:2]
        device = self.runtime.device if self.runtime else torch.device("cpu")
        return _to(inputs, device), _to(targets, device)

    @torch.no_grad()
    def _evaluate(self, runtime: ElasticRuntime, dataset: Dataset,
                  batch_size: int) -> tuple[float, float]:
        """Validates on this rank's contiguous shard; sums over the ranks. Returns
        (mean loss, accuracy; NaN when the output is not a classification)."""
        n, rank, world = len(dataset), runtime.rank, runtime.world_size
        begin, end = rank * n // world, (rank + 1) * n // world
        loss_sum, correct, classified = 0.0, 0.0, 0.0
        self.model.eval()
        try:
            for i in range(begin, end, batch_size):
                inputs, targets = self._fetch(dataset, list(range(i, min(i + batch_size, end))))
                output = self.model(inputs)
                count = len(targets)
                loss_sum += float(self.loss_function(output, targets)) * count
                if _is_classification(output, targets):
                    correct += _correct(output, targets)
                    classified += count
        finally:
            self.model.train()
        loss_sum, correct, classified = runtime.all_reduce([loss_sum, correct, classified])
        accuracy = correct / classified if classified == n else float("nan")
        return loss_sum / n, accuracy

    # ---- files --------------------------------------------------------------------------

    def _datasets(self) -> tuple[Dataset, Optional[Dataset]]:
        got = self.datasets_function()
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ValueError("datasets_function must return (train_dataset, test_dataset); "
                             f"got {type(got).__name__}")
        train_ds, test_ds = got
        for name, ds in (("train", train_ds), ("test", test_ds)):
            if ds is not None and not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
                raise ValueError(f"the {name} dataset must be map-style (__len__ and "
                                 f"__getitem__), got {type(ds).__name__}")
        if len(train_ds) == 0:
            raise ValueError("the train dataset is empty")
        if test_ds is not None and len(test_ds) == 0:
            test_ds = None
        return train_ds, test_ds

    def _checkpoint_path(self) -> Optional[str]:
        folder = os.environ.get("CHECKPOINT_DIR")
        return os.path.join(folder, CHECKPOINT_NAME) if folder else None

    def _resume_from_checkpoint(self, state: State) -> None:
        path = self._checkpoint_path()
        if not path or not os.path.exists(path):
            return
        state.commit()  # to roll back to if the checkpoint does not fit
        try:
            saved = torch.load(path, map_location="cpu")
            state.load_state_dict(saved)
        except (ValueError, RuntimeError, KeyError, OSError) as e:
            state.restore()
            log(f"checkpoint {path} does not fit this run ({str(e).splitlines()[0]}); "
                "starting from scratch")
            return
        log(f"resumed from checkpoint {path} at {state.describe()}")

    def _save_checkpoint(self, state: State, step: int) -> None:
        path = self._checkpoint_path()
        if not path:
            return
        saved = state.state_dict()
        saved["step"] = step  # the step being finished, counted once the block succeeds
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(saved, tmp)
        os.replace(tmp, path)

    def _write_results(self, state: State) -> None:
        result_dir = os.environ.get("RESULT_DIR")
        if not result_dir:
            return
        if state.history:
            write_val_dict_list(state.history, result_dir)
        model_dir = os.path.join(result_dir, "model")
        os.makedirs(model_dir, exist_ok=True)
        path = os.path.join(model_dir, "model.pt")
        self.model.eval()
        try:
            scripted = torch.jit.script(self.model)
        except Exception as e:  # noqa: BLE001 - any scripting failure: fall back
            fallback = os.path.join(model_dir, "model_state_dict.pt")
            torch.save(self.model.state_dict(), fallback)
            log(f"the model is not scriptable ({str(e).splitlines()[0]}); saved its "
                f"state_dict to {fallback}")
            return
        scripted.save(path + ".tmp")
        os.replace(path + ".tmp", path)
        log(f"model saved to {path}")


def _as_list(value: Union[Callback, Sequence[Callback], None]) -> list[Callback]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _default_max_workers() -> int:
    for name in ("KILN_MAX_WORKERS", "WORLD_SIZE"):
        text = os.environ.get(name)
        if text:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"{name} must be a positive integer, got {text!r}") from None
            if value >= 1:
                return value
    return 1


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _is_classification(output: Any, targets: Any) -> bool:
    return (isinstance(output, torch.Tensor) and isinstance(targets, torch.Tensor)
            and output.dim() == 2 and targets.dim() == 1
            and not targets.is_floating_point() and len(output) == len(targets))


def _correct(output: Any, targets: Any) -> float:
    if not _is_classification(output, targets):
        return 0.0
    return float((output.argmax(1) == targets).sum())
