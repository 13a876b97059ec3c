"""Saving a trained model for Kiln's model registry: `save_model`.

A registered model version is a TorchScript file plus its signature (the name, dtype and
per-sample shape of each input and output). `save_model` writes both where the agent
collects them, ``$RESULT_DIR/model/``: ``model.pt`` and ``signature.json``. After the
job finishes, ``kiln model register NAME --job ID`` (or `kiln.Client.register_model`)
turns them into a model version that a deployment can serve.

``torch`` is imported when `save_model` is called, not when ``kiln`` is.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

__all__ = ["save_model", "MODEL_FILE", "SIGNATURE_FILE"]

MODEL_FILE = "model.pt"
SIGNATURE_FILE = "signature.json"

# torch dtype name -> the signature's spelling (the dtypes kiln-serve accepts).
_DTYPES = {"torch.float32": "float32", "torch.float64": "float64", "torch.int64": "int64",
           "torch.int32": "int32", "torch.bool": "bool"}


def save_model(model: Any, example_input: Any, path: Optional[str] = None,
               input_names: Optional[Sequence[str]] = None,
               output_names: Optional[Sequence[str]] = None) -> str:
    """Saves ``model`` as TorchScript with its signature, ready to register and serve.

    The model is compiled with ``torch.jit.script``; a model that cannot be scripted is
    traced with ``example_input`` instead. The example is run once, in eval mode and
    without gradients, to learn the output shapes; the saved file is then loaded back
    and must give the same output, so a file that would fail to serve fails here.

    A model trained on a GPU is saved from a CPU copy (the model itself is not moved):
    a TorchScript file keeps the device of its weights, and of any device a trace saw,
    and replicas serve on CPUs.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (a ``torch.jit.ScriptModule`` is saved as it is). Its forward
        takes one ``[batch, *shape]`` tensor per input and returns a tensor, or a tuple of
        tensors, with the batch as dimension 0.
    example_input : torch.Tensor or tuple of torch.Tensor
        A small batch (dimension 0 is the batch; one sample is enough): the per-sample
        shapes and dtypes of the signature are read from it.
    path : str, optional
        The folder to write (created if needed). Defaults to ``$RESULT_DIR/model``.
    input_names, output_names : sequence of str, optional
        Names of the inputs and outputs, in order (clients send and receive tensors by
        these names). Default ``input`` / ``output`` (``input_0``, ``input_1``, ... when
        there are several).

    Returns
    -------
    str
        The path of the saved ``model.pt``; ``signature.json`` lies beside it and is
        saved inside it too (``torch.jit.load(path, _extra_files={"signature.json": ""})``
        reads it back), so the file alone can be uploaded to Kiln.

    Raises
    ------
    ValueError
        Without ``path`` outside Kiln (no ``RESULT_DIR``), for an example without a batch
        dimension, names that do not match the inputs or outputs, or a dtype Kiln cannot
        serve (float32, float64, int64, int32 and bool can be served).
    TypeError
        When the model does not return a tensor or a tuple of tensors.
    RuntimeError
        When the saved file, loaded back, does not give the model's output.

    Examples
    --------
    >>> kiln.save_model(model, torch.zeros(1, 1, 28, 28), input_names=["image"],
    ...                 output_names=["logits"])
    '/.../result/model/model.pt'
    """
    import torch  # the registry side of kiln is stdlib-only; torch only here

    if path is None:
        result_dir = os.environ.get("RESULT_DIR")
        if not result_dir:
            raise ValueError("save_model needs path= outside Kiln ($RESULT_DIR is not set); "
                             "under Kiln it writes to $RESULT_DIR/model")
        path = os.path.join(result_dir, "model")
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) \
        else (example_input,)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ValueError("example_input must be a tensor or a tuple of tensors (a batch)")
    for i, t in enumerate(inputs):
        if t.dim() < 1 or t.shape[0] < 1:
            raise ValueError(f"example input {i} has shape {list(t.shape)}: dimension 0 "
                             "must be the batch (e.g. torch.zeros(1, 1, 28, 28) for one "
                             "28x28 image)")
    in_names = _names(input_names, len(inputs), "input")

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        model, inputs = _on_cpu(model, inputs, torch)
        compiled = _compile(model, inputs, torch)
        with torch.no_grad():
            expected = compiled(*inputs)
        outputs = _as_tuple(expected, torch)
        out_names = _names(output_names, len(outputs), "output")
        signature = {
            "inputs": [_spec(n, t, f"input {n!r}") for n, t in zip(in_names, inputs)],
            "outputs": [_spec(n, t, f"output {n!r}") for n, t in zip(out_names, outputs)],
        }
        os.makedirs(path, exist_ok=True)
        model_path = os.path.join(path, MODEL_FILE)
        tmp = model_path + ".tmp"
        # The signature also goes inside the file (extra/signature.json), so model.pt
        # alone describes itself: uploads need no separate signature.
        torch.jit.save(compiled, tmp,
                       _extra_files={SIGNATURE_FILE: json.dumps(signature, indent=2)})
        os.replace(tmp, model_path)
        # The file, not the in-memory module, is what a replica serves: check it.
        loaded = torch.jit.load(model_path)
        loaded.eval()
        with torch.no_grad():
            again = _as_tuple(loaded(*inputs), torch)
        for name, a, b in zip(out_names, outputs, again):
            if a.shape != b.shape or not torch.allclose(a.double(), b.double(), rtol=1e-5,
                                                        atol=1e-6, equal_nan=True):
                raise RuntimeError(f"the saved model gives another {name!r} than the model "
                                   f"(shape {list(b.shape)} vs {list(a.shape)}); "
                                   "the model may not be deterministic in eval mode")
        signature_path = os.path.join(path, SIGNATURE_FILE)
        with open(signature_path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(signature, f, indent=2)
            f.write("\n")
        os.replace(signature_path + ".tmp", signature_path)
        return model_path
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def _on_cpu(model: Any, inputs: tuple, torch: Any) -> tuple[Any, tuple]:
    """``model`` and ``inputs`` as they are when all on the CPU, else CPU copies."""
    tensors = list(inputs)
    if isinstance(model, torch.nn.Module):
        tensors += list(model.parameters()) + list(model.buffers())
    if all(t.device.type == "cpu" for t in tensors):
        return model, inputs
    import copy
    return copy.deepcopy(model).cpu(), tuple(t.cpu() for t in inputs)


def _compile(model: Any, inputs: tuple, torch: Any) -> Any:
    """TorchScript of ``model``: scripted if possible (keeps control flow), else traced."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        return torch.jit.script(model)
    except Exception as script_error:  # TorchScript raises many kinds
        try:
            with torch.no_grad():
                return torch.jit.trace(model, inputs if len(inputs) > 1 else inputs[0])
        except Exception as trace_error:
            raise RuntimeError(f"cannot convert the model to TorchScript: "
                               f"torch.jit.script failed ({script_error}) and "
                               f"torch.jit.trace failed ({trace_error})") from trace_error


def _as_tuple(output: Any, torch: Any) -> tuple:
    if isinstance(output, torch.Tensor):
        return (output,)
    if isinstance(output, (tuple, list)) and output and \
            all(isinstance(t, torch.Tensor) for t in output):
        return tuple(output)
    raise TypeError(f"the model returned {type(output).__name__}: Kiln serves models that "
                    "return a tensor or a tuple of tensors (batch first)")


def _names(given: Optional[Sequence[str]], count: int, kind: str) -> list[str]:
    if given is None:
        return [kind] if count == 1 else [f"{kind}_{i}" for i in range(count)]
    names = [given] if isinstance(given, str) else list(given)
    if len(names) != count:
        raise ValueError(f"{len(names)} {kind}_names for {count} {kind}s: give one name "
                         f"per {kind}")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{kind}_names must be distinct non-empty strings, got {names!r}")
    return names


def _spec(name: str, tensor: Any, what: str) -> dict[str, Any]:
    dtype = _DTYPES.get(str(tensor.dtype))
    if dtype is None:
        raise ValueError(f"{what} is {tensor.dtype}; Kiln serves float32, float64, int64, "
                         "int32 and bool (convert it in the model's forward)")
    if tensor.dim() < 1:
        raise ValueError(f"{what} is a scalar: outputs must have the batch as dimension 0")
    return {"name": name, "dtype": dtype, "shape": [int(d) for d in tensor.shape[1:]]}
