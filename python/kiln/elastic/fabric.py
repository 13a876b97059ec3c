"""Defines `FabricModel`, the WMLA-style elastic trainer, and its `Callback` hooks.

``FabricModel(model, datasets_fn, loss_fn, optimizer).train(epochs, batch_size_per_device)``
runs the whole loop on `ElasticRuntime`: the `ElasticSampler` shares each global batch
among the current workers, gradients are summed in one all-reduce, a failure rolls back
one step and re-forms the group, rank 0 reports metrics (``kiln.report`` and the
emetrics file), writes ``$CHECKPOINT_DIR`` checkpoints, ``val_dict_list.json`` and the
final TorchScript model. The same script runs as a single process outside Kiln.

Each training step runs one gradient all-reduce and applies the optimizer's update only
after it, so the runtime commits at step boundaries without copying the model
(`kiln.elastic.runtime`); validation runs in its own block after the epoch's last step.
``train(commit_every=N)`` copies the model and optimizer every N steps instead (needed
only by an ``fn_step_train`` that updates the model itself).

WMLA keyword arguments Kiln has no use for are accepted with one printed note (never a
TypeError): see `FabricModel`.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from typing import Any, Callable, Iterator, Optional, Sequence, Union

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
    """WMLA's driver logger: where metrics go. Called on rank 0 only.

    A subclass overrides the methods of the metrics it takes over: Kiln's own reporting
    (`KilnLogger`) goes on for any ``log_*_metrics`` method not overridden, so a bare
    ``LoggerCallback()`` changes nothing. WMLA 1.2.x's older form
    ``log_train_metrics(loss, acc, completed_batch, worker=0)`` (and the same for
    ``log_test_metrics``) is recognised by its parameter names and called with the
    accuracy in percent, as that API did.
    """

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
    driver_logger_callback : LoggerCallback, optional
        WMLA 4.x's name for ``driver_logger``.
    worker_logger_callback : LoggerCallback, optional
        Called on EVERY rank after each step: ``log_train_metrics({"loss": ...}, step,
        epoch, workers)`` (the global batch's loss).
    metrics : list, optional
        Training metrics besides the loss: ``"accuracy"`` / ``"acc"`` (always computed
        for classification) or callables ``(output, target) -> float`` (a batch mean),
        averaged over each epoch's samples and passed to ``on_epoch_end`` and the logger
        under the callable's ``__name__``. Other names are ignored with a note.
    fn_step_train : callable, optional
        WMLA 1.2.x custom step: ``fn_step_train(model, data, eva, train_loader,
        fn_args) -> (accuracy, loss)``. ``model`` is callable (the forward pass) and has
        ``get_optimizer()``, ``get_loss_function()``, ``get_model()``; ``data`` is
        ``(inputs, targets)`` on the device; ``eva(output, targets)`` gives the fraction
        correct. It must zero the gradients, run forward and ``loss.backward()`` with the
        loss a mean over ``data``, and NOT call ``optimizer.step()`` (Kiln sums the
        gradients over the workers, then steps).
    fn_test : callable, optional
        WMLA 1.2.x custom validation: ``fn_test(model, test_iter, fn_args) -> loss`` or
        ``(loss, accuracy)``, run on each rank's share of the test set (``test_iter``
        yields ``(inputs, targets)`` batches); Kiln averages over the ranks.
    fn_args : optional
        Passed to ``fn_step_train`` and ``fn_test`` as is.
    enable_onnx, save_to_onnx : bool, optional
        WMLA 1.2.x / 4.x: rank 0 also exports the final model to
        ``$RESULT_DIR/model/trained_model.onnx`` (``torch.onnx.export`` with one training
        sample as the example input; a model that cannot be exported gets a note, not
        an error).
    keras_custom_objects : optional
        TensorFlow only: ignored with a note.
    """

    def __init__(self, model: torch.nn.Module, datasets_function: Callable[[], Any],
                 loss_function: Callable[..., torch.Tensor], optimizer: torch.optim.Optimizer,
                 *, lr_scheduler: Any = None,
                 user_callback: Union[Callback, Sequence[Callback], None] = None,
                 driver_logger: Optional[LoggerCallback] = None,
                 fn_batch_collate: Optional[Callable[[list[Any]], Any]] = None,
                 device: Optional[torch.device] = None, seed: int = 0,
                 driver_logger_callback: Optional[LoggerCallback] = None,
                 worker_logger_callback: Optional[LoggerCallback] = None,
                 metrics: Optional[Sequence[Any]] = None,
                 fn_step_train: Optional[Callable[..., Any]] = None,
                 fn_test: Optional[Callable[..., Any]] = None, fn_args: Any = None,
                 enable_onnx: bool = False, save_to_onnx: bool = False,
                 keras_custom_objects: Any = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(datasets_function):
            raise TypeError("datasets_function must be callable: () -> (train, test)")
        if not callable(loss_function):
            raise TypeError("loss_function must be callable: (output, target) -> loss")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        if driver_logger is not None and driver_logger_callback is not None:
            raise ValueError("pass driver_logger or driver_logger_callback (its WMLA 4.x "
                             "name), not both")
        for name, fn in (("fn_step_train", fn_step_train), ("fn_test", fn_test)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.model = model
        self.datasets_function = datasets_function
        self.loss_function = loss_function
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.user_callbacks = _as_list(user_callback)
        self.driver_logger = driver_logger or driver_logger_callback
        self.worker_logger = worker_logger_callback
        self.metric_functions = _metric_functions(metrics)
        self.fn_step_train = fn_step_train
        self.fn_test = fn_test
        self.fn_args = fn_args
        self.export_onnx = bool(enable_onnx or save_to_onnx)
        if keras_custom_objects is not None:
            log("note: keras_custom_objects is ignored: it is for TensorFlow/Keras models "
                "and this is a PyTorch FabricModel")
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
              log_every: int = 100, commit_every: Optional[int] = None,
              eval_batch_size: int = 1000,
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
            None (default): commit at each step boundary without copying the model (a
            failure costs the step in flight). N: copy the model and optimizer every N
            steps (a failure loses at most N steps); needed only when ``fn_step_train``
            changes the model itself.
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
                      epoch_loss=0.0, epoch_correct=0.0, epoch_samples=0, epoch_steps=0,
                      epoch_metrics=[0.0] * len(self.metric_functions), epoch_logs=None)
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
        logger = _DriverLoggers(KilnLogger(epochs), self.driver_logger)
        started = time.monotonic()
        runtime.start()
        logger_started = False
        for cb in all_callbacks:
            cb.on_train_begin({"rank": runtime.rank, "world_size": runtime.world_size})
        last_logs: dict[str, Any] = {}
        try:
            # An epoch's last step leaves its logs in state.epoch_logs; its validation,
            # callbacks and checkpoint then run in a block of their own, so each block
            # has one collective and a failure never has a model update to undo.
            while sampler.epoch < epochs or state.fields.get("epoch_logs") is not None:
                if state.fields.get("epoch_logs") is not None:
                    with runtime.step(counts_as_step=False):
                        logs = self._end_epoch(state, runtime, all_callbacks, logger,
                                               test_ds, epochs, validation_freq,
                                               checkpoint_freq, eval_batch_size)
                        last_logs = logs
                    continue
                with runtime.step():
                    if runtime.is_reporter and not logger_started:
                        logger.on_train_begin()
                        logger_started = True
                    self._train_step(state, runtime, all_callbacks, logger, log_every,
                                     scale_lr, max_workers, train_ds)
            self.history = list(state.history)
            for cb in all_callbacks:
                cb.on_train_end(last_logs)
            if runtime.is_reporter:
                self._write_results(state, train_ds)
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
                    logger: "_DriverLoggers", log_every: int, scale_lr: bool,
                    max_workers: int, train_ds: Dataset) -> None:
        """Runs one training step: forward and backward, the one gradient all-reduce,
        then (only then) the optimizer's update. On the epoch's last step it leaves the
        epoch's logs in ``state.epoch_logs`` for `_end_epoch`."""
        sampler: ElasticSampler = state.sampler
        rank, world = runtime.rank, runtime.world_size
        if sampler.consumed == 0 and state.epochs_begun <= sampler.epoch:
            for cb in callbacks:
                cb.on_epoch_begin(sampler.epoch, {"rank": rank, "world_size": world})
            state.epochs_begun = sampler.epoch + 1
        batch = sampler.batch(rank, world)
        model, optimizer = self.model, self.optimizer
        model.train()
        n_metrics = len(self.metric_functions)
        loss_share, correct, metric_shares = 0.0, 0.0, [0.0] * n_metrics
        if self.fn_step_train is not None:
            if batch.indices:
                loss_share, correct = self._custom_step(train_ds, batch)
            else:
                optimizer.zero_grad(set_to_none=False)
        else:
            optimizer.zero_grad(set_to_none=False)
            if batch.indices:
                inputs, targets = self._fetch(train_ds, batch.indices)
                output = model(inputs)
                share = len(batch.indices) / batch.global_size
                loss = self.loss_function(output, targets) * share
                loss.backward()
                loss_share = float(loss.detach())
                correct = _correct(output, targets)
                if n_metrics:
                    with torch.no_grad():
                        metric_shares = [_as_float(fn(output, targets)) * share
                                         for _, fn in self.metric_functions]
        reduced = runtime.allreduce_gradients(model.parameters(),
                                              [loss_share, correct, *metric_shares])
        global_loss, global_correct, global_metrics = reduced[0], reduced[1], reduced[2:]
        # Nothing above changed the model or the optimizer: a failed all-reduce leaves
        # them as they were at the step boundary.
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
        if n_metrics:
            state.epoch_metrics = [m + v * batch.global_size
                                   for m, v in zip(state.epoch_metrics, global_metrics)]
        epoch_of_step = sampler.epoch + 1
        ended = sampler.advance(world)
        if runtime.is_reporter and (step % log_every == 0 or ended):
            logger.log_train_metrics({"loss": state.window_loss / state.window_steps}, step,
                                     epoch_of_step, world,
                                     accuracy=state.epoch_correct / max(state.epoch_samples, 1))
        if step % log_every == 0 or ended:
            state.window_loss, state.window_steps = 0.0, 0
        if self.worker_logger is not None:
            _call_logger(self.worker_logger.log_train_metrics, {"loss": global_loss}, step,
                         epoch_of_step, world,
                         accuracy=global_correct / max(batch.global_size, 1))
        for cb in callbacks:
            cb.on_batch_end(step, {"loss": global_loss, "rank": rank, "world_size": world})
        if not ended:
            return
        samples = max(state.epoch_samples, 1)
        logs: dict[str, Any] = {
            "loss": state.epoch_loss / samples, "accuracy": state.epoch_correct / samples,
            "step": step}
        for (name, _), total in zip(self.metric_functions, state.epoch_metrics):
            logs[name] = total / samples
        state.epoch_loss, state.epoch_correct = 0.0, 0.0
        state.epoch_samples, state.epoch_steps = 0, 0
        state.epoch_metrics = [0.0] * n_metrics
        state.epoch_logs = logs

    def _end_epoch(self, state: State, runtime: ElasticRuntime, callbacks: list[Callback],
                   logger: "_DriverLoggers", test_ds: Optional[Dataset], epochs: int,
                   validation_freq: int, checkpoint_freq: int,
                   eval_batch_size: int) -> dict[str, Any]:
        """The end of an epoch, in a block of its own after its last step: validation
        (the block's one collective), then the history, callbacks, LR scheduler and
        checkpoint. Returns the epoch's logs."""
        sampler: ElasticSampler = state.sampler
        logs = dict(state.epoch_logs)
        logs.update(rank=runtime.rank, world_size=runtime.world_size)
        done = sampler.epoch  # epochs completed, counted from 1
        step = state.step
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
        state.epoch_logs = None
        for cb in callbacks:
            cb.on_epoch_end(done - 1, logs)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        if runtime.is_reporter and checkpoint_freq and done % checkpoint_freq == 0:
            self._save_checkpoint(state, step)
        return logs

    def _custom_step(self, train_ds: Dataset, batch: Any) -> tuple[float, float]:
        """Runs the user's ``fn_step_train`` on this rank's share; returns (its loss
        times its share of the global batch, samples it got right)."""
        inputs, targets = self._fetch(train_ds, batch.indices)
        self.optimizer.zero_grad(set_to_none=False)
        got = self.fn_step_train(_StepModel(self), (inputs, targets), _fraction_correct,
                                 None, self.fn_args)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ValueError("fn_step_train must return (accuracy, loss), got "
                             f"{type(got).__name__}")
        accuracy, loss = got
        share = len(batch.indices) / batch.global_size
        # The user's loss is the mean over its share: scaled like the built-in step so
        # the summed gradients are the global batch's.
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(share)
        return _as_float(loss) * share, _as_float(accuracy) * len(batch.indices)

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
        if self.fn_test is not None:
            return self._custom_evaluate(runtime, dataset, begin, end, batch_size)
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

    @torch.no_grad()
    def _custom_evaluate(self, runtime: ElasticRuntime, dataset: Dataset, begin: int,
                         end: int, batch_size: int) -> tuple[float, float]:
        """Validation by the user's ``fn_test`` on this rank's shard, weighted by the
        shard's size over the ranks."""
        count = end - begin

        def batches() -> Iterator[tuple[Any, Any]]:
            for i in range(begin, end, batch_size):
                yield self._fetch(dataset, list(range(i, min(i + batch_size, end))))

        loss, accuracy = 0.0, float("nan")
        self.model.eval()
        try:
            if count:
                got = self.fn_test(_StepModel(self), batches(), self.fn_args)
                if isinstance(got, (tuple, list)):
                    loss = _as_float(got[0])
                    accuracy = _as_float(got[1]) if len(got) > 1 else float("nan")
                else:
                    loss = _as_float(got)
        finally:
            self.model.train()
        has_accuracy = 0.0 if math.isnan(accuracy) else 1.0
        loss_sum, accuracy_sum, with_accuracy = runtime.all_reduce(
            [loss * count, (accuracy * count) if has_accuracy else 0.0,
             count * has_accuracy])
        n = len(dataset)
        return loss_sum / n, (accuracy_sum / n if with_accuracy == n else float("nan"))

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
        state.commit()  # a full copy, to roll back to if the checkpoint does not fit
        defaults = dict(state.fields)
        try:
            saved = torch.load(path, map_location="cpu")
            state.load_state_dict(saved)
        except (ValueError, RuntimeError, KeyError, OSError) as e:
            state.restore()
            log(f"checkpoint {path} does not fit this run ({str(e).splitlines()[0]}); "
                "starting from scratch")
            return
        for name, value in defaults.items():  # fields a checkpoint of an older Kiln lacks
            state.fields.setdefault(name, value)
        log(f"resumed from checkpoint {path} at {state.describe()}")

    def _save_checkpoint(self, state: State, step: int) -> None:
        path = self._checkpoint_path()
        if not path:
            return
        saved = state.state_dict()
        saved["step"] = step
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(saved, tmp)
        os.replace(tmp, path)

    def _write_results(self, state: State, train_ds: Dataset) -> None:
        result_dir = os.environ.get("RESULT_DIR")
        if not result_dir:
            if self.export_onnx:
                log("note: enable_onnx/save_to_onnx: no ONNX export, RESULT_DIR is not set "
                    "(Kiln sets it for jobs)")
            return
        if state.history:
            write_val_dict_list(state.history, result_dir)
        model_dir = os.path.join(result_dir, "model")
        os.makedirs(model_dir, exist_ok=True)
        if self.export_onnx:
            self._export_onnx(model_dir, train_ds)
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

    def _export_onnx(self, model_dir: str, train_ds: Dataset) -> None:
        """``enable_onnx``/``save_to_onnx``: ``trained_model.onnx`` with one training
        sample as the example input; a failure is a note (the TorchScript model stays)."""
        path = os.path.join(model_dir, "trained_model.onnx")
        try:
            inputs, _ = self._fetch(train_ds, [0])
            self.model.eval()
            with torch.no_grad():
                torch.onnx.export(self.model, (inputs,), path + ".tmp")
            os.replace(path + ".tmp", path)
        except Exception as e:  # noqa: BLE001 - any export failure is only a note
            log(f"note: enable_onnx/save_to_onnx: the model could not be exported to ONNX "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); the "
                "TorchScript model.pt is the result")
            return
        log(f"ONNX model saved to {path}")


class _StepModel:
    """What WMLA's ``fn_step_train`` and ``fn_test`` get as ``model``: the forward pass
    when called, and the FabricModel's parts through getters."""

    def __init__(self, fabric: FabricModel) -> None:
        self._fabric = fabric

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fabric.model(*args, **kwargs)

    def get_model(self) -> torch.nn.Module:
        return self._fabric.model

    def get_optimizer(self) -> torch.optim.Optimizer:
        return self._fabric.optimizer

    def get_loss_function(self) -> Callable[..., torch.Tensor]:
        return self._fabric.loss_function

    def get_device(self) -> torch.device:
        return self._fabric.runtime.device if self._fabric.runtime else torch.device("cpu")

    def train(self, mode: bool = True) -> Any:
        return self._fabric.model.train(mode)

    def eval(self) -> Any:
        return self._fabric.model.eval()


class _DriverLoggers:
    """Rank 0's loggers: Kiln's own (`KilnLogger`) and the user's driver logger. Each
    ``log_*_metrics`` goes to the user's logger when it overrides that method, else to
    Kiln's, so a bare ``LoggerCallback()`` (or one that only hooks train begin/end) keeps
    Kiln's reporting on."""

    def __init__(self, kiln_logger: KilnLogger, user: Optional[Any]) -> None:
        self.kiln = kiln_logger
        self.user = user
        self.train_logger = _owner(user, "log_train_metrics") or kiln_logger
        self.test_logger = _owner(user, "log_test_metrics") or kiln_logger

    def on_train_begin(self) -> None:
        self.kiln.on_train_begin()
        if self.user is not None and hasattr(self.user, "on_train_begin"):
            self.user.on_train_begin()

    def on_train_end(self) -> None:
        if self.user is not None and hasattr(self.user, "on_train_end"):
            self.user.on_train_end()
        self.kiln.on_train_end()

    def log_train_metrics(self, metrics: dict[str, float], iteration: int, epoch: int,
                          workers: int, *, accuracy: float) -> None:
        _call_logger(self.train_logger.log_train_metrics, metrics, iteration, epoch,
                     workers, accuracy=accuracy)

    def log_test_metrics(self, metrics: dict[str, float], iteration: int,
                         epoch: int) -> None:
        method = self.test_logger.log_test_metrics
        if _is_old_logger_form(method):
            accuracy = metrics.get("accuracy", float("nan"))
            method(metrics.get("loss", float("nan")), accuracy * 100, iteration, 0)
        else:
            method(metrics, iteration, epoch)


def _owner(logger: Any, method: str) -> Any:
    """``logger`` when it has its own ``method`` (not LoggerCallback's no-op)."""
    if logger is None or not hasattr(logger, method):
        return None
    base = getattr(LoggerCallback, method)
    if getattr(type(logger), method, None) is base:
        return None
    return logger


def _is_old_logger_form(method: Callable[..., Any]) -> bool:
    """WMLA 1.2.x's ``log_*_metrics(loss, acc, completed_batch, worker=0)``."""
    try:
        names = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False
    return "completed_batch" in names or (bool(names) and names[0] == "loss")


def _call_logger(method: Callable[..., Any], metrics: dict[str, float], iteration: int,
                 epoch: int, workers: int, *, accuracy: float) -> None:
    if _is_old_logger_form(method):
        # The old API took the accuracy in percent (WMLA's samples divide it by 100).
        method(metrics.get("loss", float("nan")), accuracy * 100, iteration, 0)
    else:
        method(metrics, iteration, epoch, workers)


def _metric_functions(metrics: Optional[Sequence[Any]]) -> list[tuple[str, Any]]:
    """The callables of WMLA's ``metrics`` list, named; the accuracy is always computed,
    other names are not known to Kiln and are ignored with a note."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, bytes)) or callable(metrics):
        metrics = [metrics]
    out: list[tuple[str, Any]] = []
    for m in metrics:
        if callable(m):
            out.append((getattr(m, "__name__", None) or f"metric_{len(out)}", m))
        elif isinstance(m, str) and m.lower() in ("accuracy", "acc"):
            continue
        else:
            log(f"note: metric {m!r} is ignored: Kiln computes the loss and accuracy; pass "
                "a callable (output, target) -> float for another metric")
    return out


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


def _fraction_correct(output: Any, targets: Any) -> float:
    """``eva`` of WMLA's ``fn_step_train``: the fraction of ``targets`` predicted."""
    if not _is_classification(output, targets):
        return 0.0
    return _correct(output, targets) / len(targets)


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
