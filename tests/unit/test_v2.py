"""Open Inference Protocol routes over the real deployment classes. Request bodies are built, and responses
parsed, by tritonclient's own codec (``generate_request_body`` / ``parse_response_body``)."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from tests.unit.conftest import LocalHandle, make_client


def _post(client, model: str, inputs, outputs=None, headers=None, **kwargs):
    body, header_length = InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)
    headers = dict(headers or {})
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return client.post(f"/v2/models/{model}/infer", content=body, headers=headers)


def _result(response):
    assert response.status_code == 200, response.text
    length = response.headers.get("Inference-Header-Content-Length")
    return InferenceServerClient.parse_response_body(response.content, header_length=int(length) if length else None)


def _v2_error(response, status: int, needle: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str), body  # the protocol's shape, not OpenAI's
    assert needle in body["error"], body["error"]
    return body["error"]


def _pixels(images: np.ndarray, binary: bool, shape=None) -> InferInput:
    array = np.asarray(images, dtype=np.float32)
    array = array.reshape(shape) if shape else array
    return InferInput("pixels", list(array.shape), "FP32").set_data_from_numpy(array, binary_data=binary)


def _text(texts: list[str], binary: bool, shape=None) -> InferInput:
    array = np.array([t.encode() for t in texts], dtype=np.object_)
    array = array.reshape(shape) if shape else array
    return InferInput("text", list(array.shape), "BYTES").set_data_from_numpy(array, binary_data=binary)


# --- health and metadata ---------------------------------------------------------------------------

def test_server_metadata_and_health(client):
    assert client.get("/v2").json() == {"name": "raydio", "version": "0.1.0",
                                        "extensions": ["binary_tensor_data", "classification"]}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/embedder/versions/1/ready").status_code == 200


def test_model_metadata_declares_tensors_with_variable_batch(client):
    digits = client.get("/v2/models/digits").json()
    assert digits["versions"] == ["1"] and digits["platform"] == "pytorch"
    assert digits["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert digits["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                                 {"name": "label", "datatype": "INT64", "shape": [-1]}]
    embedder = client.get("/v2/models/embedder/versions/1").json()
    assert embedder["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert embedder["outputs"][0] == {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}
    assert "0 (background) to 16" in digits["parameters"]["descriptions"]["pixels"]


@pytest.mark.parametrize(("path", "needle"), [
    ("/v2/models/resnet", "'resnet' is unknown"),
    ("/v2/models/chat", "no tensor interface; use the /v1 API"),
    ("/v2/models/digits/versions/2", "no version '2'"),
    ("/v2/models/resnet/ready", "unknown"),
    ("/v2/no/such/route", "Not Found"),
])
def test_unknown_models_and_routes_are_404_in_the_protocol_shape(client, path, needle):
    _v2_error(client.get(path), 404, needle)


def test_not_ready_is_503(unit_settings):
    from ray.exceptions import RayActorError

    class Broken:
        async def info(self):
            raise RayActorError()

    with make_client({"digits": LocalHandle(Broken()), "embedder": LocalHandle(Broken())}, unit_settings) as client:
        _v2_error(client.get("/v2/models/digits/ready"), 503, "digits")
        _v2_error(client.get("/v2/health/ready"), 503, "Not ready")
        assert client.get("/v2/health/live").status_code == 200


# --- inference -------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_digits_infer(client, sklearn_digits, binary):
    images = sklearn_digits.images[:4]
    outputs = [InferRequestedOutput("label", binary_data=binary), InferRequestedOutput("probabilities", binary_data=binary)]
    response = _post(client, "digits", [_pixels(images, binary)], outputs, request_id="req-7")
    assert ("Inference-Header-Content-Length" in response.headers) is binary
    result = _result(response)
    assert result.get_response()["id"] == "req-7" and result.get_response()["model_name"] == "digits"
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "probabilities"]
    assert result.as_numpy("label").tolist() == sklearn_digits.target[:4].tolist()
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    rest = client.post("/v1/digits/classify", json={"pixels": images.tolist()}).json()["predictions"]
    np.testing.assert_allclose(probabilities, [p["probabilities"] for p in rest], atol=1e-6)


def test_default_outputs_are_all_outputs_in_binary(client, sklearn_digits):
    # tritonclient asks for binary_data_output when no outputs are named; flat [-1, 64] rows are accepted too.
    result = _result(_post(client, "digits", [_pixels(sklearn_digits.images[:2], True, shape=(2, 64))]))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities", "label"]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert result.as_numpy("label").tolist() == sklearn_digits.target[:2].tolist()


def test_classification_extension(client, sklearn_digits):
    outputs = [InferRequestedOutput("probabilities", binary_data=False, class_count=3)]
    result = _result(_post(client, "digits", [_pixels(sklearn_digits.images[:2], False)], outputs))
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    for row, target in zip(top, sklearn_digits.target[:2], strict=True):
        value, index, label = row[0].split(":")  # JSON output: strings
        assert int(index) == target and label == str(target) and 0.5 < float(value) <= 1
        assert float(row[1].split(":")[0]) <= float(value)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_embedder_infer(client, binary):
    texts = ["A man is playing a guitar.", "Someone makes music.", "Tax rates rose.", "naïve café ✓"]
    result = _result(_post(client, "embedder", [_text(texts, binary)],
                           [InferRequestedOutput("embedding", binary_data=binary), InferRequestedOutput("tokens")]))
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    rest = client.post("/v1/embeddings", json={"input": texts}).json()
    np.testing.assert_allclose(vectors, [d["embedding"] for d in rest["data"]], atol=1e-5)
    assert int(result.as_numpy("tokens").sum()) == rest["usage"]["prompt_tokens"]


def test_embedder_takes_a_column_of_strings(client):
    result = _result(_post(client, "embedder", [_text(["one", "two"], True, shape=(2, 1))]))
    assert result.as_numpy("embedding").shape == (2, 384)


def test_plain_json_without_tritonclient(client, sklearn_digits):
    body = {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": sklearn_digits.images[9].tolist()}]}
    response = client.post("/v2/models/digits/infer", json=body)
    assert response.headers["content-type"] == "application/json"
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"] == {"name": "label", "datatype": "INT64", "shape": [1], "data": [int(sklearn_digits.target[9])]}


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(client, sklearn_digits, algorithm):
    body, length = InferenceServerClient.generate_request_body([_pixels(sklearn_digits.images[:3], True)])
    compressed = gzip.compress(body) if algorithm == "gzip" else zlib.compress(body)
    response = client.post("/v2/models/digits/infer", content=compressed, headers={
        "Content-Encoding": algorithm, "Accept-Encoding": algorithm, "Inference-Header-Content-Length": str(length)})
    assert response.status_code == 200, response.text
    # httpx undoes the Content-Encoding itself; the header says the server compressed
    assert response.headers["content-encoding"] == algorithm
    result = _result(response)
    assert result.as_numpy("label").tolist() == sklearn_digits.target[:3].tolist()


# --- bad requests ----------------------------------------------------------------------------------

def _digits_json(**tensor) -> dict:
    return {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [0.0] * 64, **tensor}]}


@pytest.mark.parametrize(("body", "status", "needle"), [
    (_digits_json(datatype="INT32"), 400, "must be FP32, got INT32"),
    (_digits_json(datatype="FLOAT"), 400, "must be FP32"),
    (_digits_json(shape=[1, 7, 9]), 400, "expected [-1, 8, 8] or [-1, 64]"),
    (_digits_json(shape=[2, 8, 8]), 400, "has 64 elements; shape [2, 8, 8] needs 128"),
    (_digits_json(shape=[0, 8, 8], data=[]), 400, "send at least one row"),
    (_digits_json(data=["x"] * 64), 400, "must be numbers"),
    (_digits_json(data=None), 400, "has no data"),
    (_digits_json(data=[99.0] * 64), 400, "between 0 and 16"),
    (_digits_json(shape=[5, 64], data=[0.0] * 320), 400, "At most 4"),
    (_digits_json(name="image"), 400, "takes inputs ['pixels']"),
    (_digits_json(parameters={"shared_memory_region": "r0"}), 400, "shared memory"),
    ({**_digits_json(), "outputs": [{"name": "logits"}]}, 400, "no output 'logits'"),
    ({**_digits_json(), "outputs": [{"name": "label", "parameters": {"classification": 2}}]}, 400, "not a class score"),
    ({**_digits_json(), "outputs": [{"name": "probabilities", "parameters": {"classification": 11}}]}, 400, "1 to 10"),
    ({**_digits_json(), "parameters": {"sequence_id": 7}}, 400, "stateless"),
    ({"inputs": []}, 400, "inputs"),
    ({}, 400, "inputs: Field required"),
])
def test_bad_inference_requests_are_4xx_with_the_protocol_shape(client, body, status, needle):
    _v2_error(client.post("/v2/models/digits/infer", json=body), status, needle)


def test_bad_bodies(client):
    _v2_error(client.post("/v2/models/digits/infer", content=b"{not json"), 400, "Invalid inference request")
    header = json.dumps(_digits_json(data=None, parameters={"binary_data_size": 256})).encode()
    framing = {"Inference-Header-Content-Length": str(len(header))}
    _v2_error(client.post("/v2/models/digits/infer", content=header + b"\0" * 100, headers=framing), 400,
              "declares 256 bytes")
    _v2_error(client.post("/v2/models/digits/infer", content=header + b"\0" * 300, headers=framing), 400,
              "44 bytes after")
    _v2_error(client.post("/v2/models/digits/infer", content=header, headers={"Inference-Header-Content-Length": "99999"}),
              400, "Inference-Header-Content-Length")
    _v2_error(client.post("/v2/models/digits/infer", content=b"x", headers={"Content-Encoding": "br"}), 415, "br")
    _v2_error(client.post("/v2/models/digits/infer", content=b"xx", headers={"Content-Encoding": "gzip"}), 400, "gzip")
    bomb = gzip.compress(b"0" * (128 * 1024))  # the unit limits allow 64 KiB
    _v2_error(client.post("/v2/models/digits/infer", content=bomb, headers={"Content-Encoding": "gzip"}), 413,
              "decompressed")
    _v2_error(client.post("/v2/models/digits/infer", content=b"x" * 70_000), 413, "exceeds the limit")


def test_bad_text(client):
    raw = b"\x02\x00\x00\x00\xff\xfe"
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    response = client.post("/v2/models/embedder/infer", content=header + raw,
                           headers={"Inference-Header-Content-Length": str(len(header))})
    _v2_error(response, 400, "not valid UTF-8")
    _v2_error(_post(client, "embedder", [_text(["ok", " "], False)]), 400, "Element 1 of input 'text' is empty")
    _v2_error(_post(client, "embedder", [_text(["word " * 400], True)]), 400, "at most 256")
    _v2_error(_post(client, "embedder", [_text(["x"] * 9, True)]), 400, "At most 8")
