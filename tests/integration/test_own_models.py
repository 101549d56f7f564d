"""A user's own models, declared in YAML only (tests/integration/conftest.py: own_models_config), through every face:
a PyTorch module traced to TorchScript, and a second sentence-embedding entry under another name."""

from __future__ import annotations

import json

import numpy as np
import openai
import pytest
import torch
import tritonclient.http as triton
from gradio_client import Client

from tests.integration.conftest import FLOWER_LABELS, flower_module
from tests.integration.test_protocols import mcp_session

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [0.0, -1.0, 2.5, 9.0]], dtype=np.float32)


def expected_probabilities(rows: np.ndarray) -> np.ndarray:
    """What the module computes in this process, for comparison with what the served TorchScript file returns."""
    with torch.inference_mode():
        return torch.softmax(flower_module()(torch.from_numpy(rows)), dim=1).numpy()


def test_the_traced_module_through_tritonclient(triton_client):
    metadata = triton_client.get_model_metadata("flowers")
    assert metadata["inputs"] == [{"name": "measurements", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["scores", "label"]
    tensor = triton.InferInput("measurements", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = triton_client.infer("flowers", [tensor], outputs=[triton.InferRequestedOutput("scores"),
                                                                triton.InferRequestedOutput("label")])
    np.testing.assert_allclose(result.as_numpy("scores"), expected_probabilities(ROWS), atol=1e-5)
    assert result.as_numpy("label").tolist() == expected_probabilities(ROWS).argmax(1).tolist()
    top = triton_client.infer("flowers", [tensor], outputs=[triton.InferRequestedOutput("scores", class_count=1)])
    assert top.as_numpy("scores")[0, 0].decode().endswith(FLOWER_LABELS[int(expected_probabilities(ROWS)[0].argmax())])


def test_the_traced_module_through_rest(http):
    predicted = http.post("/v1/models/flowers:predict", json={"instances": ROWS.tolist()})
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_allclose(predicted.json()["predictions"], expected_probabilities(ROWS), atol=1e-5)
    classified = http.post("/v1/flowers/classify", json={"inputs": ROWS[1].tolist()}).json()
    best = int(expected_probabilities(ROWS[1:2])[0].argmax())
    assert classified["predictions"][0]["class_name"] == FLOWER_LABELS[best]
    wrong = http.post("/v1/models/flowers:predict", json={"instances": [[1.0, 2.0]]})
    assert wrong.status_code == 400 and "measurements" in wrong.json()["error"]["message"]
    unknown = http.post("/v1/models/chat:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]]})
    assert unknown.status_code == 404 and "digits, flowers" in unknown.json()["error"]["message"]


async def test_the_traced_module_through_mcp(base_url, auth_headers):
    async with mcp_session(f"{base_url}/mcp/", auth_headers) as client:
        predicted = await client.call_tool("predict", {"model": "flowers", "inputs": {"measurements": ROWS.tolist()}})
        assert not predicted.is_error, predicted.content
        np.testing.assert_allclose(predicted.structured_content["outputs"]["scores"], expected_probabilities(ROWS), atol=1e-5)
        classified = await client.call_tool("classify", {"model": "flowers", "inputs": ROWS[0].tolist()})
        assert classified.structured_content["predictions"][0]["class_name"] in FLOWER_LABELS


def test_the_traced_module_through_gradio_client(base_url, auth_headers):
    client = Client(f"{base_url}/ui/flowers/", verbose=False, headers=auth_headers)
    label, outputs = client.predict(json.dumps(ROWS[:2].tolist()), api_name="/predict")
    best = int(expected_probabilities(ROWS[:1])[0].argmax())
    assert label["label"] == FLOWER_LABELS[best]
    assert [p["class_name"] for p in outputs["predictions"]] == [FLOWER_LABELS[i] for i in expected_probabilities(ROWS[:2]).argmax(1)]


def test_the_second_embedding_entry_through_the_openai_client(base_url, admin_key):
    oai = openai.OpenAI(base_url=f"{base_url}/v1", api_key=admin_key, max_retries=0, timeout=60)
    texts = ["hello world", "a cat sits on the mat"]
    second = oai.embeddings.create(model="minilm-second", input=texts)
    assert second.model == "minilm-second"  # answered by its own deployment, named in the answer
    first = np.array([d.embedding for d in oai.embeddings.create(model="embedder", input=texts).data])
    np.testing.assert_allclose([d.embedding for d in second.data], first, atol=1e-4)  # the same weights
    listed = {m.id for m in oai.models.list().data}
    assert {"embedder", "minilm-second", "flowers", "digits", "chat"} <= listed
    with pytest.raises(openai.NotFoundError, match="Models for embeddings: embedder, minilm-second"):
        oai.embeddings.create(model="flowers", input="x")
