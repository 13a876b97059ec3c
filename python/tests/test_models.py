"""Tests of `kiln.save_model` (real TorchScript, saved and loaded back) and of the
registry methods of `kiln.Client` (the requests they send). The master's side runs
against a real kilnd in tests/integration/test_registry.py."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import kiln  # noqa: E402
from kiln import Client  # noqa: E402


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(x.shape[0], 784))


class TwoHeads(nn.Module):
    """Two inputs and two outputs; TorchScript cannot compile the lambda, so this model
    is traced."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, a, b):
        double = lambda t: t * 2  # noqa: E731
        return double(self.fc(a)), (b > 0)


def test_save_model_writes_torchscript_and_a_per_sample_signature(tmp_path):
    torch.manual_seed(0)
    model = Mlp()
    example = torch.rand(2, 1, 28, 28)
    path = kiln.save_model(model, example, path=str(tmp_path / "m"),
                           input_names=["image"], output_names=["logits"])
    assert path == str(tmp_path / "m" / "model.pt")
    signature = json.loads((tmp_path / "m" / "signature.json").read_text())
    assert signature == {"inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
                         "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]}
    loaded = torch.jit.load(path)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    assert not (tmp_path / "m" / "model.pt.tmp").exists()


def test_save_model_defaults_to_result_dir_model(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULT_DIR", str(tmp_path))
    path = kiln.save_model(Mlp(), torch.zeros(1, 784))
    assert path == str(tmp_path / "model" / "model.pt")
    signature = json.loads((tmp_path / "model" / "signature.json").read_text())
    assert signature["inputs"] == [{"name": "input", "dtype": "float32", "shape": [784]}]
    assert signature["outputs"] == [{"name": "output", "dtype": "float32", "shape": [10]}]


def test_save_model_traces_what_it_cannot_script_and_keeps_several_outputs(tmp_path):
    model = TwoHeads()
    path = kiln.save_model(model, (torch.rand(3, 4), torch.rand(3, 2, 5)),
                           path=str(tmp_path), input_names=["a", "b"],
                           output_names=["score", "positive"])
    signature = json.loads((tmp_path / "signature.json").read_text())
    assert signature["inputs"] == [{"name": "a", "dtype": "float32", "shape": [4]},
                                   {"name": "b", "dtype": "float32", "shape": [2, 5]}]
    assert signature["outputs"] == [{"name": "score", "dtype": "float32", "shape": [3]},
                                    {"name": "positive", "dtype": "bool", "shape": [2, 5]}]
    loaded = torch.jit.load(path)
    a, b = torch.rand(2, 4), torch.rand(2, 2, 5)
    assert torch.allclose(loaded(a, b)[0], model(a, b)[0])


def test_save_model_restores_training_mode(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.train()
    kiln.save_model(model, torch.rand(4, 3), path=str(tmp_path))
    assert model.training


def test_save_model_refuses_bad_examples_and_names(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="dimension 0 must be the batch"):
        kiln.save_model(Mlp(), torch.tensor(1.0), path=str(tmp_path))
    with pytest.raises(ValueError, match="2 input_names for 1 inputs"):
        kiln.save_model(Mlp(), torch.zeros(1, 784), path=str(tmp_path), input_names=["a", "b"])
    with pytest.raises(ValueError, match="float16"):
        kiln.save_model(nn.Identity(), torch.zeros(1, 3, dtype=torch.float16),
                        path=str(tmp_path))
    monkeypatch.delenv("RESULT_DIR", raising=False)
    with pytest.raises(ValueError, match="needs path="):
        kiln.save_model(Mlp(), torch.zeros(1, 784))


def test_register_model_from_a_job_posts_json(server):
    server.canned["/api/v1/models"] = (201, {"model": "fm", "version": 1})
    version = Client(server.url, token="t").register_model("fm", job_id=12,
                                                          description="mlp")
    assert version == {"model": "fm", "version": 1}
    (post,) = server.requests
    assert post.path == "/api/v1/models"
    assert post.json() == {"name": "fm", "job_id": 12, "description": "mlp"}


def test_register_model_uploads_a_file_as_a_form(server, tmp_path):
    server.canned["/api/v1/models"] = (201, {"model": "fm", "version": 2})
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04binary\r\n--x")
    (tmp_path / "sig.json").write_text(json.dumps({"inputs": [], "outputs": []}))
    Client(server.url).register_model("fm", file=tmp_path / "model.pt",
                                      signature=tmp_path / "sig.json")
    (post,) = server.requests
    content_type = post.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=")[1].encode()
    parts = post.body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    data = [p for p in parts if b'name="data"' in p][0]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1][:-2]) == {
        "name": "fm", "signature": {"inputs": [], "outputs": []}}
    file = [p for p in parts if b'name="file"' in p][0]
    assert b'filename="model.pt"' in file
    assert file.split(b"\r\n\r\n", 1)[1][:-2] == b"PK\x03\x04binary\r\n--x"


def test_register_model_needs_exactly_one_source(server, tmp_path):
    with pytest.raises(ValueError, match="either job_id"):
        Client(server.url).register_model("fm")
    with pytest.raises(ValueError, match="either job_id"):
        Client(server.url).register_model("fm", job_id=1, file=tmp_path / "m.pt")
    assert server.requests == []


def test_model_reads_quote_the_name_and_pick_the_version(server):
    server.canned["/api/v1/models"] = (200, {"models": [{"name": "fm"}]})
    server.canned["/api/v1/models/a%20b/versions/2"] = (200, {"version": 2})
    client = Client(server.url)
    assert client.models() == [{"name": "fm"}]
    assert client.model("a b", version=2) == {"version": 2}
    assert [urlparse(r.path).path for r in server.requests] == [
        "/api/v1/models", "/api/v1/models/a%20b/versions/2"]
