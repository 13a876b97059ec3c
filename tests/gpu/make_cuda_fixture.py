"""Writes src/kiln/torch/testdata/cuda_linear.pt on a machine with a CUDA GPU: a scripted
module saved while its weight was on the GPU, as a user's torch.jit.save of a trained model
would be. jit_engine_test loads it on the CPU. Usage: python3 make_cuda_fixture.py OUT_DIR"""
import os
import sys

import torch


class Linear(torch.nn.Module):
    """y = x @ w with w = [[0, 1, 2], [3, 4, 5]] (the tests' LinearSignature: x [2] -> y [3])."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.matmul(self.w)


module = torch.jit.script(Linear().cuda())
assert module.w.device.type == "cuda"
path = os.path.join(sys.argv[1], "cuda_linear.pt")
torch.jit.save(module, path)
print(path, os.path.getsize(path), "bytes")
