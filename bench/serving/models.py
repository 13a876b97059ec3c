#!/usr/bin/python3
"""The three models the serving benchmark scores, and the one request every server gets.

Writes into OUT_DIR, for each model NAME in (mlp, cnn, wide):
  NAME/model.pt         TorchScript (torch.jit.script of the module below, eval mode)
  NAME/signature.json   Kiln's signature (spec: shape is per sample, no batch dimension)
and once:
  payload.json          {"input_data":[{"values":[[784 floats]]}]}: one Fashion-MNIST test
                        image as a Python client would send it (float32 -> tolist -> json)

  mlp  784-256-10 (ReLU), the model of examples/fashion_mnist: input "image" float32[784].
       Tiny (0.2 MFLOP per sample): HTTP and JSON cost dominate serving it.
  cnn  conv 1->16 5x5 (pad 2), ReLU, maxpool 2, conv 16->32 5x5 (pad 2), ReLU, maxpool 2,
       fc 1568->10: input "image" float32[1,28,28] (the same flat 784 values; spec: a sample
       may be sent flat). About 10 MFLOP per sample: the model dominates.
  wide 784-1024-1024-10 (ReLU): input "image" float32[784]. 1.9 M weights (7.4 MB), more
       than this machine's per-core cache, so a forward on one sample is bound by reading
       the weights and a batch reads them once for all its samples: the kind of model
       dynamic batching is for (in-process, about 940 us per sample at batch 1 and 50 at
       batch 64 here).

Weights are seeded random (accuracy does not matter for throughput; the work per sample is
the same as a trained model's). Standard library + torch only.

    /usr/bin/python3 bench/serving/models.py OUT_DIR
"""

from __future__ import annotations

import gzip
import json
import os
import random
import sys

DATASET = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
PIXELS = 784



def _modules():
    import torch
    from torch import nn

    class MlpNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(PIXELS, 256)
            self.fc2 = nn.Linear(256, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(image)))

    class CnnNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
            self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
            self.fc = nn.Linear(32 * 7 * 7, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = torch.max_pool2d(torch.relu(self.conv1(image)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    class WideNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(PIXELS, 1024)
            self.fc2 = nn.Linear(1024, 1024)
            self.fc3 = nn.Linear(1024, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(image)))))

    return {"mlp": (MlpNet, [PIXELS]), "cnn": (CnnNet, [1, 28, 28]),
            "wide": (WideNet, [PIXELS])}


MODEL_NAMES = ("mlp", "cnn", "wide")


def signature(shape: list[int]) -> dict:
    return {"inputs": [{"name": "image", "dtype": "float32", "shape": shape}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]}


def first_test_image() -> list[float]:
    """The first Fashion-MNIST test image scaled to [0, 1] as float32 values (seeded random
    pixels when the dataset is not installed)."""
    try:
        with gzip.open(DATASET, "rb") as f:
            raw = f.read(16 + PIXELS)[16:]
        pixels = [b / 255.0 for b in raw]
    except OSError:
        rng = random.Random(5)
        pixels = [rng.random() if rng.random() < 0.5 else 0.0 for _ in range(PIXELS)]
    import torch
    return torch.tensor(pixels, dtype=torch.float32).tolist()


def write_all(out_dir: str) -> None:
    import torch
    torch.manual_seed(5)
    for name, (cls, shape) in _modules().items():
        model_dir = os.path.join(out_dir, name)
        os.makedirs(model_dir, exist_ok=True)
        module = torch.jit.script(cls().eval())
        with torch.no_grad():
            out = module(torch.zeros([2, *shape]))
        assert list(out.shape) == [2, 10], out.shape
        module.save(os.path.join(model_dir, "model.pt"))
        with open(os.path.join(model_dir, "signature.json"), "w") as f:
            json.dump(signature(shape), f)
    payload = {"input_data": [{"values": [first_test_image()]}]}
    with open(os.path.join(out_dir, "payload.json"), "w") as f:
        json.dump(payload, f, separators=(",", ":"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    write_all(sys.argv[1])
