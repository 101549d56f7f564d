"""Tensor models: a TorchScript file run against the signature its catalogue entry declares.

TorchScript stores no tensor names, so the signature (names, datatypes, shapes) comes from the config, the way
Triton's ``config.pbtxt`` does for ``pytorch_libtorch``. ``dry_run`` calls the model once on zeros of the
declared shapes, so a signature the model does not accept fails at load time with a message, not on the first
request.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from services.config import TensorArgs, TorchScriptModelArgs
from services.models.device import resolve_device

TORCH_DTYPES = {
    "BOOL": torch.bool, "UINT8": torch.uint8, "UINT16": torch.uint16, "UINT32": torch.uint32, "UINT64": torch.uint64,
    "INT8": torch.int8, "INT16": torch.int16, "INT32": torch.int32, "INT64": torch.int64,
    "FP16": torch.float16, "FP32": torch.float32, "FP64": torch.float64,
}


class SignatureMismatch(ValueError):
    """The model does not take or return what its catalogue entry declares."""


class TensorModel:
    def __init__(self, path: Path, spec: TorchScriptModelArgs, device: str = "auto") -> None:
        self.path = Path(path)
        self.spec = spec
        self.device = resolve_device(device)
        self._module = None

    def load(self) -> TensorModel:
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, yet widely shipped
                warnings.simplefilter("ignore", DeprecationWarning)
                self._module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except RuntimeError as exc:
            raise SignatureMismatch(f"{self.path} is not a TorchScript file torch.jit.load can read: "
                                    f"{str(exc).splitlines()[0]}") from exc
        self.dry_run()
        return self

    @property
    def ready(self) -> bool:
        return self._module is not None

    @torch.inference_mode()
    def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One array per declared input (batch first) → one array per declared output."""
        tensors = [torch.as_tensor(np.ascontiguousarray(array), dtype=TORCH_DTYPES[spec.datatype], device=self.device)
                   for array, spec in zip(inputs, self.spec.signature.inputs, strict=True)]
        result = self._module(*tensors)
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(outputs) != len(self.spec.signature.outputs):
            raise SignatureMismatch(f"The model returned {len(outputs)} tensor(s); the signature declares "
                                    f"{len(self.spec.signature.outputs)}: {[o.name for o in self.spec.signature.outputs]}.")
        if self.spec.postprocess == "softmax":
            outputs[0] = torch.softmax(outputs[0].float(), dim=-1)
        return [out.detach().to("cpu").numpy() for out in outputs]

    def dry_run(self) -> None:
        """Run a batch of two zero rows of the declared shapes; check what comes back against the declared outputs."""
        zeros = [np.zeros(_example_shape(spec), dtype=numpy_dtype(spec.datatype)) for spec in self.spec.signature.inputs]
        try:
            outputs = self.predict(zeros)
        except SignatureMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the model raised, reported against the signature
            shapes = ", ".join(f"{s.name} {s.datatype} {list(_example_shape(s))}" for s in self.spec.signature.inputs)
            raise SignatureMismatch(f"The model does not accept its declared inputs ({shapes}): "
                                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
        for array, spec in zip(outputs, self.spec.signature.outputs, strict=True):
            if len(array.shape) != len(spec.shape) or any(d not in (-1, a) for d, a in zip(spec.shape[1:], array.shape[1:], strict=False)):
                raise SignatureMismatch(f"Output {spec.name!r} came back with shape {list(array.shape)} for a batch of 2; "
                                        f"the signature declares {list(spec.shape)}.")


def _example_shape(spec: TensorArgs) -> tuple[int, ...]:
    return (2, *(1 if dim == -1 else dim for dim in spec.shape[1:]))


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype (BYTES excepted)."""
    return np.dtype({"BOOL": "?", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}.get(datatype) or datatype.lower())
