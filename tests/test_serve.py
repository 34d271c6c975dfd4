"""`sweep-serve` as users run it: a real server process on a free loopback port, driven by a real
HTTP client (httpx). Its labels are predict.py's; each bad input is a 4xx with one JSON line and
the server answers afterwards; SIGTERM ends it with exit code 0."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from formats import write_colours
from helpers import REPO, train

httpx = pytest.importorskip("httpx")

FOLDER = ("data=folder", "data.channels=3", "data.size=[8,8]", "epochs=2", "model=mlp")


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    write_colours(root / "photos", per_class=12, side=12)
    train(root / "run", *FOLDER, f"data.root={root / 'photos'}")
    return root / "run", root / "photos"


def _png(size=(12, 12), colour=(200, 40, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_a_served_model_answers_as_predict_does_and_survives_bad_input(served_run, tmp_path):
    from sweep.predict import predict

    run, photos = served_run
    cmd = [sys.executable, str(REPO / "sweep" / "serve.py"), str(run), "--port", "0",
           "--max-bytes", "4000", "--max-pixels", "10000", "--request-timeout", "2"]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    serving = server.stderr.readline()  # bound first, then said: the port any free port became
    port = int(re.search(r"on http://127\.0\.0\.1:(\d+) ", serving).group(1))
    assert port != 0, serving
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).json() == {"status": "ok"}:
                    break
            except httpx.TransportError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read()
                time.sleep(0.2)
        files = sorted(photos.rglob("*.png"))[::5]
        sent = [("image", (f.name, f.read_bytes(), "image/png")) for f in files]
        answer = httpx.post(f"{url}/predict", files=sent, params={"top_k": 2}, timeout=30)
        assert answer.status_code == 200
        served = answer.json()["predictions"]
        expected = predict(run, files, top_k=2)
        assert [p["label"] for p in served] == [top[0][0] for _, top in expected]
        assert [len(p["top_k"]) for p in served] == [2] * len(files)
        assert all(abs(p["probability"] - top[0][1]) < 1e-5 for p, (_, top) in zip(served, expected))

        bad = {
            "not an image": ([("image", ("notes.txt", b"hello", "text/plain"))], {}, 400, "notes.txt: not an image"),
            "empty": ([("image", ("e.png", b"", "image/png"))], {}, 400, "e.png: empty"),
            "too many bytes": ([("image", ("big.png", _png((12, 12)) + b"\0" * 5000, "image/png"))], {}, 413,
                               "big.png: over 4000 bytes"),
            "too many pixels": ([("image", ("wide.png", _png((200, 100)), "image/png"))], {}, 413,
                                "wide.png: 200x100 pixels; at most 10000"),
            "no image field": ([("picture", ("a.png", _png(), "image/png"))], {}, 400, "body.image: Field required"),
            "top_k of 0": ([("image", ("a.png", _png(), "image/png"))], {"top_k": 0}, 422, "query.top_k:"),
        }  # fmt: skip
        for case, (sent, params, status, start) in bad.items():
            r = httpx.post(f"{url}/predict", files=sent, params=params, timeout=30)
            assert r.status_code == status, (case, r.text)
            assert r.json()["error"].startswith(start) and "\n" not in r.text and "Traceback" not in r.text, case
        for method, path, status in (("get", "/nowhere", 404), ("get", "/predict", 405)):
            r = getattr(httpx, method)(f"{url}{path}", timeout=5)  # Starlette's own refusals: the same JSON line
            assert r.status_code == status and set(r.json()) == {"error"}, r.text
        garbage = httpx.post(f"{url}/predict", files=[("image", ("x.png", b"\x89PNG garbage", "image/png"))])
        assert "the file" not in garbage.json()["error"] and garbage.json()["error"].startswith("x.png: not an image")
        many = httpx.post(f"{url}/predict", files=[("image", ("a.png", _png(), "image/png"))], params={"top_k": 10})
        assert (
            many.json()["note"] == "top_k=10: the model has 3 classes"
            and len(many.json()["predictions"][0]["top_k"]) == 3
        )
        assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}  # still up
        assert httpx.head(f"{url}/health", timeout=5).status_code == 200
        opened = time.time()  # connections that never finish a request: each is closed at its deadline
        lingering = {kind: socket.create_connection(("127.0.0.1", port)) for kind in ("silent", "head", "body")}
        lingering["head"].sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        lingering["body"].sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        )
        for kind, s in lingering.items():
            s.settimeout(60)
            assert s.recv(1000) == b"", kind  # the server hung up
        assert time.time() - opened < 30
        started = time.time()

        def endless():  # a chunked upload with no length, far past the cap: one image that never ends
            yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
            for _ in range(2000):
                yield b"x" * 2**20

        flood = httpx.post(f"{url}/predict", content=endless(), timeout=30,
                           headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
        assert flood.status_code == 413 and flood.json()["error"].startswith("a request body past")
        assert time.time() - started < 20  # refused as it arrived, not after 2 GB
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")  # then silence
        info = httpx.get(f"{url}/info", timeout=5).json()
        assert str(run) not in json.dumps(info) and info["run"] == run.name  # no path of the server's
        assert info["classes"] == ["blue", "green", "red"] and info["input_shape"] == [3, 8, 8]
        assert info["model"]["kind"] == "mlp" and "model=mlp" in info["overrides"]
    finally:
        stopping = time.time()
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert time.time() - stopping < 15  # the stalled upload does not hold the stop up
    assert server.returncode == 0, err
    assert "Traceback" not in err
    assert re.search(rf"POST /predict 200 [\d.]+ ms {len(files)} images", err)  # one line a request
    assert re.search(r"GET /nowhere 404 [\d.]+ ms 0 images", err)


@pytest.mark.slow
def test_serve_refuses_what_it_cannot_serve_in_one_line(tmp_path):
    from helpers import call

    from sweep import serve

    p = call(lambda: serve.main([str(tmp_path)]), ["sweep-serve"], tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: {tmp_path}: neither a run dir (with best.pt) nor a sweep dir (with run dirs)"
    ]


def test_serve_refuses_a_host_or_port_it_cannot_listen_on_before_saying_it_serves(tmp_path, served_run):

    from helpers import call

    from sweep import serve

    run, _ = served_run
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cases = {
            "": "error: --host '': an empty host listens on every interface",
            "127.0.0.1": f"error: --host 127.0.0.1 --port {port}: cannot listen there (in use)",
            "no.such.host.invalid": "error: --host no.such.host.invalid: not a host name or address",
        }
        huge = call(lambda: serve.main([str(run), "--max-bytes", str(10**20)]), ["sweep-serve"], tmp_path)
        assert huge.returncode == 2 and huge.stderr.strip().splitlines()[-1] == (
            f"error: --max-bytes {10**20}: must be in [1, 1073741824]"
        )
        for host, line in cases.items():
            p = call(lambda h=host: serve.main([str(run), "--host", h, "--port", str(port)]), ["sweep-serve"], tmp_path)
            assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith(line), p.stderr
            assert "Serving" not in p.stderr


def _png_rgba16(width: int, height: int) -> bytes:
    """A 16-bit RGBA PNG of one colour, written by hand (PIL writes none): small as a file, large
    decoded, as an adversary's upload is."""
    import struct
    import zlib

    pack = zlib.compressobj(9)
    body = b"".join(pack.compress(b"\x00" + b"\x12\x34" * 4 * width) for _ in range(height)) + pack.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_an_image_larger_decoded_than_the_servers_decode_budget_is_413_naming_its_bytes(served_run):
    from fastapi.testclient import TestClient

    from sweep.serve import Limits, create_app

    run, _ = served_run
    client = TestClient(create_app(run, Limits(max_decoding=20 * 2**20)))
    big = _png_rgba16(2000, 2000)  # 4 million pixels, under --max-pixels; 28 MB decoded and converted
    r = client.post("/predict", files=[("image", ("big.png", big, "image/png"))])
    assert r.status_code == 413, r.text
    assert r.json() == {
        "error": "big.png: 2000x2000 RGBA takes 28 MB to decode; the server decodes at most 20 MB at once"
    }
    assert client.post("/predict", files=[("image", ("ok.png", _png(), "image/png"))]).status_code == 200


@pytest.mark.parametrize(("budget_mb", "together"), [(40, 1), (60, 2)])
def test_images_decode_together_only_within_the_decode_budget(served_run, monkeypatch, budget_mb, together):
    """Two requests of a 28 MB image each: within a 40 MB budget one waits for the other (memory
    stays bounded whatever the number of clients); within 60 MB they decode at once."""
    import threading

    from fastapi.testclient import TestClient

    import sweep.images
    from sweep.serve import Limits, create_app

    # a decode waits for the other to join it: for long when they should meet, briefly when not
    real, running, most = sweep.images.read_image, [0], [0]
    both_in = threading.Barrier(2, timeout=60 if together == 2 else 0.5)

    def read_image(*args, **kwargs):
        running[0] += 1
        most[0] = max(most[0], running[0])
        with contextlib.suppress(threading.BrokenBarrierError):
            both_in.wait()  # passes only when both decode at once
        running[0] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep.images, "read_image", read_image)
    run, _ = served_run
    big = _png_rgba16(2000, 2000)
    with TestClient(create_app(run, Limits(max_decoding=budget_mb * 2**20))) as client:
        answers = []
        post = lambda: answers.append(client.post("/predict", files=[("image", ("big.png", big, "image/png"))]))  # noqa: E731
        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [a.status_code for a in answers] == [200, 200] and most[0] == together


def test_the_listening_socket_hands_asyncio_connections_it_sets_tcp_nodelay_on():
    """asyncio sets TCP_NODELAY only on sockets whose protocol says TCP; a socket made with protocol 0
    left Nagle on, and every response waited ~40 ms for the client's delayed ACK (23 requests/s)."""
    import asyncio

    from sweep.serve import _bind

    sock = _bind("127.0.0.1", 0)
    got = {}

    async def main():
        async def handle(reader, writer):
            s = writer.get_extra_info("socket")
            got["nodelay"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())
    assert got["nodelay"] != 0


def test_kserve_and_triton_clients_get_the_open_inference_protocol(served_run, monkeypatch):
    """The v2 REST paths: metadata, liveness, readiness, and infer answering exactly what the model
    gives for the same raw pixels, through the same batcher; bad tensors are one JSON line each."""
    import torch
    from fastapi.testclient import TestClient

    import sweep.inference_protocol as oip
    from sweep.checkpoint import load_checkpoint
    from sweep.serve import create_app

    run, _ = served_run
    ckpt = load_checkpoint(run)
    x = torch.randint(0, 256, (2, *ckpt.in_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "UINT8", "data": x.flatten().tolist()}
    with TestClient(create_app(run)) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/sweep/ready").json() == {"name": "sweep", "ready": True}
        meta = client.get("/v2/models/sweep").json()
        assert meta["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, *ckpt.in_shape]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, ckpt.classes]}]
        answer = client.post("/v2/models/sweep/infer", json={"id": "r1", "inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        [out] = answer.json()["outputs"]
        assert answer.json()["id"] == "r1" and out["shape"] == [2, ckpt.classes] and out["datatype"] == "FP32"
        with torch.inference_mode():
            expected = ckpt.model().probabilities(x)
        assert torch.allclose(torch.tensor(out["data"]).reshape(2, -1), expected.float(), atol=1e-6)
        counted = 'sweep_serve_requests_total{route="/v2/models/sweep/infer",status_code="200"} 1.0'
        assert counted in client.get("/metrics").text  # counted as /predict's are

        bad = {
            "another model": ("/v2/models/resnet/infer", {"inputs": [tensor]}, 404, "no model 'resnet'"),
            "two tensors": (None, {"inputs": [tensor, tensor]}, 400, "inputs: must be a list of one tensor"),
            "a wrong shape": (None, {"inputs": [tensor | {"shape": [2, 1, 8, 8]}]}, 400, "inputs[0].shape=[2, 1, 8"),
            "too many images": (None, {"inputs": [tensor | {"shape": [65, *ckpt.in_shape]}]}, 400, "inputs[0].shape"),
            "floats": (None, {"inputs": [tensor | {"datatype": "FP32"}]}, 400, "inputs[0].datatype=FP32: must be"),
            "short data": (None, {"inputs": [tensor | {"data": [1, 2]}]}, 400, "inputs[0].data: must be a flat list"),
            "past 255": (None, {"inputs": [tensor | {"data": [256] * x.numel()}]}, 400, "inputs[0].data: must hold"),
            "text": (None, {"inputs": [tensor | {"data": ["1"] * x.numel()}]}, 400, "inputs[0].data: must hold"),
        }  # fmt: skip
        for case, (path, body, status, start) in bad.items():
            r = client.post(path or "/v2/models/sweep/infer", json=body)
            assert r.status_code == status and r.json()["error"].startswith(start), (case, r.text)
        assert client.post("/v2/models/sweep/infer", content=b"{not json").json()["error"] == "the body is not JSON"
        monkeypatch.setattr(oip, "MAX_JSON_BYTES", 1000)
        r = client.post("/v2/models/sweep/infer", json={"inputs": [tensor]})
        assert r.status_code == 413 and r.json()["error"].startswith("a JSON request past 1000 bytes")
