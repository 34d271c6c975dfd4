"""The server's batches and its bounded queue (`sweep.batching`), driven as the server drives them,
and what it tells operations: /ready, /metrics read by the Prometheus client's own parser."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from sweep.batching import Batcher, Overloaded


def _images(n: int, first: int = 0) -> torch.Tensor:
    return torch.arange(first, first + n, dtype=torch.float32)[:, None]  # an image is its own number


def test_a_batch_never_exceeds_its_maximum_and_every_request_gets_its_own_answers():
    sizes, release = [], threading.Event()

    def run(x):
        release.wait(5)  # the first call holds the model while the others queue
        return x * 10

    async def main():
        b = Batcher(run, max_batch_size=8, max_wait_ms=0, max_queue=1000, on_batch=sizes.append)
        requests = [_images(n, 100 * i) for i, n in enumerate([3, 5, 20, 1, 7, 2])]
        tasks = [asyncio.create_task(b.probabilities(x)) for x in requests]
        await asyncio.sleep(0.05)
        release.set()
        answers = await asyncio.gather(*tasks)
        return requests, answers

    requests, answers = asyncio.run(main())
    assert all(torch.equal(a, x * 10) for x, a in zip(requests, answers))  # nothing mixed up
    assert max(sizes) <= 8 and sum(sizes) == 38  # the 20-image request ran in calls of 8, 8 and 4


def test_the_first_request_waits_for_others_to_join_within_max_wait_ms():
    sizes = []

    async def main(wait_ms):
        b = Batcher(lambda x: x, max_batch_size=64, max_wait_ms=wait_ms, max_queue=1000, on_batch=sizes.append)
        first = asyncio.create_task(b.probabilities(_images(1)))
        await asyncio.sleep(0.01)  # a second request arrives 10 ms later
        await asyncio.gather(first, b.probabilities(_images(1)))

    asyncio.run(main(wait_ms=300))
    assert sizes == [2]  # one call for both
    sizes.clear()
    asyncio.run(main(wait_ms=0))
    assert sizes == [1, 1]  # a lone request waits for nothing


def test_a_flood_beyond_the_queue_is_refused_at_once_and_nothing_admitted_is_lost():
    release = threading.Event()

    def run(x):
        release.wait(5)
        return x + 0.5

    async def main():
        b = Batcher(run, max_batch_size=4, max_wait_ms=0, max_queue=10, on_batch=lambda n: None)
        tasks = [asyncio.create_task(b.probabilities(_images(2, 10 * i))) for i in range(40)]
        await asyncio.sleep(0.05)  # every request has arrived: the first batch holds the model
        refused = [t for t in tasks if t.done() and isinstance(t.exception(), Overloaded)]
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return tasks, refused, results

    tasks, refused, results = asyncio.run(main())
    admitted = [(i, r) for i, r in enumerate(results) if not isinstance(r, Overloaded)]
    assert refused and len(refused) == 40 - len(admitted)  # refused at once, while the model was busy
    assert len(admitted) >= 5 and all(torch.equal(r, _images(2, 10 * i) + 0.5) for i, r in admitted)


# ----------------------------------------------------------------------------- the server's own routes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from formats import write_colours
    from helpers import train

    root = tmp_path_factory.mktemp("batching")
    write_colours(root / "photos", per_class=6, side=8)
    train(root / "run", "data=folder", "data.channels=3", "data.size=[8,8]", "epochs=1", "model=mlp",
          f"data.root={root / 'photos'}")  # fmt: skip
    return root / "run"


def test_ready_only_once_the_model_is_warmed_and_metrics_count_what_was_done(run_dir):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image
    from prometheus_client.parser import text_string_to_metric_families

    from sweep.serve import create_app

    app = create_app(run_dir)
    assert TestClient(app).get("/ready").status_code == 503  # its start-up (the warm-up) has not run
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, format="PNG")
    with TestClient(app) as client:
        assert client.get("/ready").json() == {"status": "ready"} and client.get("/health").status_code == 200
        for _ in range(3):
            assert (
                client.post("/predict", files=[("image", ("a.png", buf.getvalue(), "image/png"))] * 2).status_code
                == 200
            )
        assert client.post("/predict", files=[("image", ("x.png", b"junk", "image/png"))]).status_code == 400
        client.get("/nowhere/" + "x" * 50)
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["route"], s.labels["status_code"]): s.value
                for s in families["sweep_serve_requests"].samples if s.name.endswith("_total")}  # fmt: skip
    assert requests[("/predict", "200")] == 3 and requests[("/predict", "400")] == 1
    assert requests[("other", "404")] == 1  # a scanner's path is not a label of its own
    batch = {s.name: s.value for s in families["sweep_serve_batch_size"].samples if not s.labels.get("le")}
    assert batch["sweep_serve_batch_size_count"] == 3 and batch["sweep_serve_batch_size_sum"] == 6
    assert [s.value for s in families["sweep_serve_images_in_flight"].samples] == [0]
