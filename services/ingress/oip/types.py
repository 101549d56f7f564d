"""Open Inference Protocol documents (REST), as pydantic models for validation and for the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Parameters = dict[str, Any]


class RequestInput(BaseModel):
    name: str = Field(description="Input tensor name, as listed in the model's metadata.", examples=["pixels"])
    shape: list[int] = Field(description="Shape of the tensor; the data holds prod(shape) elements.", examples=[[1, 8, 8]])
    datatype: str = Field(description="Element type: FP32, INT64, BYTES, ...", examples=["FP32"])
    parameters: Parameters | None = Field(
        None, description="`binary_data_size` when the data follows the JSON header as binary (binary tensor extension).")
    data: Any = Field(None, description="Elements in row-major order, flat or nested; strings for BYTES. "
                                        "Omitted when the tensor is sent as binary data.")


class RequestOutput(BaseModel):
    name: str = Field(description="Output tensor name.", examples=["probabilities"])
    parameters: Parameters | None = Field(
        None, description="`binary_data: true` for binary output; `classification: k` for the top-k classes as BYTES.")


class InferenceRequest(BaseModel):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: Parameters | None = Field(None, description="`binary_data_output: true` returns every output as binary.")
    inputs: list[RequestInput] = Field(min_length=1, description="Every input the model declares, once.")
    outputs: list[RequestOutput] | None = Field(None, description="Outputs to return, in this order; all when omitted.")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "42", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hello", "world"]}]},
        {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
         "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]},
    ]})


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description="`binary_data_size` when the data follows the JSON header.")
    data: list[Any] | None = Field(None, description="Elements in row-major order, flat; absent for binary outputs.")


class InferenceResponse(BaseModel):
    model_name: str = Field(examples=["digits"])
    model_version: str | None = Field(None, examples=["1"])
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class ModelMetadata(BaseModel):
    name: str = Field(examples=["digits"])
    versions: list[str] = Field(examples=[["1"]])
    platform: str = Field(examples=["pytorch"])
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = Field(None, description="raydio extras: a description of each tensor and the model id.")


class ServerMetadata(BaseModel):
    name: str = Field(examples=["raydio"])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[["binary_tensor_data", "classification"]])


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class V2Error(BaseModel):
    error: str = Field(description="What was wrong, in words a client can show.")


V2_SERVER_ERROR: dict[int | str, dict[str, Any]] = {
    500: {"model": V2Error, "description": "Unexpected failure. It is logged; the body reveals nothing internal."},
}
V2_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": V2Error, "description": "Missing, invalid, expired or revoked credentials."},
    403: {"model": V2Error, "description": "The key lacks the inference scope."},
    429: {"model": V2Error, "description": "The key's rate limit is exhausted; see Retry-After."},
    400: {"model": V2Error, "description": "Malformed request: bad JSON, unknown or missing tensors, wrong datatype or shape."},
    404: {"model": V2Error, "description": "Unknown model or version, or a model without a tensor interface."},
    413: {"model": V2Error, "description": "Request body larger than the configured limit."},
    503: {"model": V2Error, "description": "Model not ready, at capacity, or its replica failed; see Retry-After."},
    504: {"model": V2Error, "description": "The model did not answer in time."},
    **V2_SERVER_ERROR,
}
