"""Tensors on the wire: JSON data or the binary tensor extension, to numpy and back.

Binary data is little-endian and row-major; a BYTES element is a 4-byte little-endian length followed
by its bytes. Both encodings are validated against the declared shape before anything reaches a model.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from services.errors import InvalidInput
from services.ingress.oip.types import RequestInput

# Open Inference Protocol datatype -> numpy dtype (little-endian, as the binary extension requires).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}


def element_count(tensor: RequestInput) -> int:
    if any(dim < 0 for dim in tensor.shape):
        raise InvalidInput(f"Input {tensor.name!r} has shape {tensor.shape}; dimensions must not be negative.", tensor.name)
    return math.prod(tensor.shape)


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def decode_bytes_elements(raw: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"Binary data of BYTES input {name!r} ends inside a length prefix.", name)
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(f"Binary data of BYTES input {name!r} ends inside an element.", name)
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def encode_bytes_elements(elements) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def decode_input(tensor: RequestInput, raw: bytes | None) -> np.ndarray:
    """One request input as an array of its declared shape (BYTES: an object array of ``bytes``)."""
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"Input {tensor.name!r} has unknown datatype {tensor.datatype!r}. "
                           f"Known: {', '.join(DTYPES)}.", tensor.name)
    count = element_count(tensor)
    if raw is not None:
        if tensor.data is not None:
            raise InvalidInput(f"Input {tensor.name!r} has both JSON data and binary_data_size; send one.", tensor.name)
        if tensor.datatype == "BYTES":
            elements = decode_bytes_elements(raw, tensor.name)
        else:
            if len(raw) != count * dtype.itemsize:
                raise InvalidInput(f"Input {tensor.name!r}: shape {tensor.shape} of {tensor.datatype} needs "
                                   f"{count * dtype.itemsize} bytes, got {len(raw)}.", tensor.name)
            return np.frombuffer(raw, dtype=dtype).reshape(tensor.shape)
    else:
        if tensor.data is None:
            raise InvalidInput(f"Input {tensor.name!r} has no data. Send 'data', or binary data with "
                               "parameters.binary_data_size.", tensor.name)
        elements = _flatten(tensor.data)
        if tensor.datatype == "BYTES":
            if not all(isinstance(e, str) for e in elements):
                raise InvalidInput(f"Input {tensor.name!r} is BYTES: its JSON data must be strings.", tensor.name)
            elements = [e.encode() for e in elements]
    if len(elements) != count:
        raise InvalidInput(f"Input {tensor.name!r} has {len(elements)} elements; shape {tensor.shape} needs {count}.",
                           tensor.name)
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = elements
        return array.reshape(tensor.shape)
    if any(isinstance(e, (str, dict, type(None))) for e in elements):
        raise InvalidInput(f"Input {tensor.name!r} is {tensor.datatype}: its data must be numbers.", tensor.name)
    try:
        return np.asarray(elements, dtype=dtype).reshape(tensor.shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"Input {tensor.name!r} does not fit {tensor.datatype}: {exc}.", tensor.name) from exc


def split_binary(inputs: list[RequestInput], tail: bytes) -> list[bytes | None]:
    """Cut the bytes after the JSON header into each input's binary data, in the order of ``inputs``."""
    chunks: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            chunks.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"Input {tensor.name!r}: binary_data_size must be a non-negative integer.", tensor.name)
        if offset + size > len(tail):
            raise InvalidInput(f"Input {tensor.name!r} declares {size} bytes of binary data, but the body holds only "
                               f"{len(tail) - offset} more.", tensor.name)
        chunks.append(tail[offset:offset + size])
        offset += size
    if offset != len(tail):
        raise InvalidInput(f"The body has {len(tail) - offset} bytes after the tensors' binary data; "
                           "check Inference-Header-Content-Length and binary_data_size.")
    return chunks


def encode_output(name: str, datatype: str, array: np.ndarray, binary: bool) -> tuple[dict, bytes | None]:
    """A response output as its JSON part and, for binary outputs, the bytes that follow the header."""
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if datatype == "BYTES":
        elements = [e if isinstance(e, bytes) else str(e).encode() for e in array.reshape(-1)]
        if binary:
            raw = encode_bytes_elements(elements)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            return tensor, raw
        tensor["data"] = [e.decode("utf-8", errors="replace") for e in elements]
        return tensor, None
    array = np.ascontiguousarray(array, dtype=DTYPES[datatype])
    if binary:
        raw = array.tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        return tensor, raw
    tensor["data"] = array.reshape(-1).tolist()
    return tensor, None
