"""FabricModel: the WMLA-style trainer in one process (callbacks, the global-batch
gradient, scale_lr, argument checks) with real files. The Fashion-MNIST example on it
(examples/fashion_mnist/elastic/train_elastic.py) runs as real Kiln jobs in
tests/integration/test_elastic_runtime.py and test_elastic_python.py."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from kiln.elastic import Callback, FabricModel  # noqa: E402


def toy_datasets():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return (torch.utils.data.TensorDataset(x[:100], y[:100]),
            torch.utils.data.TensorDataset(x[100:], y[100:]))


def toy_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, step, logs=None):
        self.calls.append(("batch_end", step))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_callbacks_run_in_order_with_validation_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULT_DIR", str(tmp_path / "result"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "log"))
    model, optimizer = toy_model()
    recorder = Recorder()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer,
                         user_callback=recorder)
    history = fabric.train(2, 25, 2)  # global batch 50: 2 steps per epoch
    assert recorder.calls == [
        ("train_begin",), ("epoch_begin", 0), ("batch_end", 1), ("batch_end", 2),
        ("epoch_end", 0, ["accuracy", "loss", "rank", "step", "val_accuracy", "val_loss",
                          "world_size"]),
        ("epoch_begin", 1), ("batch_end", 3), ("batch_end", 4),
        ("epoch_end", 1, ["accuracy", "loss", "rank", "step", "val_accuracy", "val_loss",
                          "world_size"]),
        ("train_end",)]
    assert [row["steps"] for row in history] == [1, 2]
    assert history[-1]["accuracy"] > 0.8  # a linearly separable toy problem
    assert json.loads((tmp_path / "result" / "val_dict_list.json").read_text()) == history
    scripted = torch.jit.load(str(tmp_path / "result" / "model" / "model.pt"))
    x = toy_datasets()[1].tensors[0]
    torch.testing.assert_close(scripted(x), model.eval()(x))


def test_global_batch_gradient_matches_one_plain_sgd_step():
    model, optimizer = toy_model()
    plain, plain_opt = toy_model()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer)
    fabric.train(1, 100, 1, shuffle=False, checkpoint_freq=0)  # one step: the whole set
    x, y = toy_datasets()[0].tensors
    plain_opt.zero_grad()
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    plain_opt.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


def test_scale_lr_scales_the_step_not_the_optimizers_setting():
    model, optimizer = toy_model()
    plain, plain_opt = toy_model()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer)
    # batch 100 per device, 4 engines, world of 1: lr x 1/4 for the one step.
    fabric.train(1, 100, 4, scale_lr=True, shuffle=False, checkpoint_freq=0)
    assert optimizer.param_groups[0]["lr"] == 0.5
    for g in plain_opt.param_groups:
        g["lr"] = 0.125
    x, y = toy_datasets()[0].tensors
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    plain_opt.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0, "batch_size": 4}, "epochs must be an int >= 1"),
    ({"epochs": 1, "batch_size": 4, "engines_number": 0}, "engines_number must be a positive"),
    ({"epochs": 1, "batch_size": 4, "validation_freq": 0}, "validation_freq must be"),
    ({"epochs": 1, "batch_size": 4, "scale_lr": True, "global_batch_size": 8},
     "cannot be combined with global_batch_size"),
])
def test_bad_arguments_name_the_field(kwargs, message):
    model, optimizer = toy_model()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer)
    with pytest.raises(ValueError, match=message):
        fabric.train(**kwargs)


def test_datasets_function_must_return_two_map_style_datasets():
    model, optimizer = toy_model()
    fabric = FabricModel(model, lambda: [1, 2, 3], torch.nn.functional.cross_entropy,
                         optimizer)
    with pytest.raises(ValueError, match=r"must return \(train_dataset, test_dataset\)"):
        fabric.train(1, 4)
