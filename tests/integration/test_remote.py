"""Remote Gradio backends: a real Gradio app on 127.0.0.1 called through raydio's REST route."""

from __future__ import annotations

import base64
import io

from PIL import Image


def test_a_remote_gradio_app_is_a_rest_backend(http):
    response = http.post("/v1/remote/shout", json={"inputs": ["hello raydio"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"backend": "shout", "output": "HELLO RAYDIO"}
    index = http.get("/", headers={"Accept": "application/json"}).json()
    assert {r["name"] for r in index["remotes"]} == {"shout", "measure", "offline"}


def test_files_go_to_the_remote_through_handle_file(http):
    buffer = io.BytesIO()
    Image.new("RGB", (37, 21), "red").save(buffer, format="PNG")
    body = {"inputs": [{"data": base64.b64encode(buffer.getvalue()).decode(), "name": "red.png"}]}
    response = http.post("/v1/remote/measure", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "37x21"


def test_a_remote_that_is_down_is_a_502_naming_it(http):
    response = http.post("/v1/remote/offline", json={"inputs": ["x"]})
    assert response.status_code == 502
    assert "'offline'" in response.json()["error"]["message"]
    assert http.get("/health/ready").status_code == 200  # an outside outage does not make raydio unready
    assert http.post("/v1/remote/nope", json={"inputs": []}).status_code == 404
    assert http.post("/v1/remote/measure", json={"inputs": [{"data": "%%%", "name": "x.png"}]}).status_code == 400
