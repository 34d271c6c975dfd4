"""Requests per second of `sweep-serve` for 1 client and for 16 concurrent clients, against
calling the model in-process one image at a time and in batches of 16; the 99th percentile of a
request's latency from 1 client against an image's in-process; and the latency the run recorded
(result.json's `latency_ms`) against the model's measured here. Measured in one run; with `--busy`,
a busy-loop process runs beside it on one core.

    python tests/benchmarks/bench_serve.py [--requests 200] [--model mlp|cnn|resnet18] [--busy]

A model is trained briefly on a folder of 32x32 RGB images the script writes, then served on a
free loopback port. Each request sends one PNG. The in-process baseline reads the same PNG and
runs the model on it, one at a time: what a caller without a server gets. With 16 clients the
server runs the requests that arrive together as one batch; the line says how many images a
batch held on average (from the throughput of the model alone, not the server's own count).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
MODELS = {"mlp": ["model=mlp"], "cnn": ["model=cnn"], "resnet18": ["model=torchvision", "model.name=resnet18"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    parser.add_argument("--model", choices=MODELS, default="cnn")
    parser.add_argument("--busy", action="store_true", help="a busy-loop process beside it")
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        measure(args)
    finally:
        if busy is not None:
            busy.kill()


def measure(args: argparse.Namespace) -> None:
    import httpx
    import numpy as np
    import torch
    from formats import write_colours

    from sweep.checkpoint import load_checkpoint
    from sweep.images import read_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_colours(tmp / "photos", per_class=40, side=32)
        run = tmp / "run"
        subprocess.run([sys.executable, str(REPO / "sweep" / "run.py"), "data=folder", f"data.root={tmp / 'photos'}",
                        "data.channels=3", "data.size=[32,32]", "epochs=1", *MODELS[args.model],
                        f"hydra.run.dir={run}"], check=True, capture_output=True)  # fmt: skip
        png = sorted((tmp / "photos" / "red").glob("*.png"))[0].read_bytes()

        ckpt = load_checkpoint(run)
        model = ckpt.model()
        one = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            x = torch.as_tensor(np.stack([read_image(io.BytesIO(png), 3, (32, 32))]))
            with torch.inference_mode():
                model.probabilities(x)
            one.append(time.perf_counter() - t0)
        alone = len(one) / sum(one)
        t0 = time.perf_counter()
        for _ in range(max(1, args.requests // 16)):
            x = torch.as_tensor(np.stack([read_image(io.BytesIO(png), 3, (32, 32)) for _ in range(16)]))
            with torch.inference_mode():
                model.probabilities(x)
        batched = 16 * max(1, args.requests // 16) / (time.perf_counter() - t0)
        recorded = json.loads((run / "result.json").read_text())["latency_ms"]
        from sweep.cost import latency_ms

        now = latency_ms(model, ckpt.in_shape, 1)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, str(REPO / "sweep" / "serve.py"), str(run), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            rates, waits = {}, []
            for clients in (1, 16):
                per_client = max(1, args.requests // clients)

                def work(_: int, n: int = per_client, clients: int = clients) -> None:
                    with httpx.Client(timeout=60) as client:
                        for _ in range(n):
                            started = time.perf_counter()
                            r = client.post(f"{url}/predict", files=[("image", ("x.png", png, "image/png"))])
                            r.raise_for_status()
                            if clients == 1:
                                waits.append(time.perf_counter() - started)

                work(0)  # warm
                if clients == 1:
                    waits.clear()
                t0 = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    list(pool.map(work, range(clients)))
                rates[clients] = clients * per_client / (time.perf_counter() - t0)
        finally:
            server.terminate()
            server.wait(timeout=30)
    beside = " (a busy loop beside)" if args.busy else ""
    print(f"model {args.model}, {args.requests} requests of one 32x32 PNG each{beside}")
    print(f"  in-process, one image at a time: {alone:8.1f} images/s; in batches of 16: {batched:8.1f} images/s")
    for clients, rate in rates.items():
        print(f"  sweep-serve, {clients:2d} client{'s' if clients > 1 else ' '}:          {rate:8.1f} requests/s "
              f"({rate / alone:.2f}x in-process one at a time, {rate / batched:.2f}x batched)")  # fmt: skip
    print(f"  16 clients / 1 client: {rates[16] / rates[1]:.2f}x")
    p99 = lambda xs: float(np.quantile(xs, 0.99)) * 1000  # noqa: E731
    print(f"  1 client p99: {p99(waits):.2f} ms a request against {p99(one):.2f} ms an image in-process "
          f"({p99(waits) / p99(one):.2f}x)")  # fmt: skip
    print(f"  latency the run recorded: {recorded:.3f} ms an image (batch 1); measured here: {now:.3f} ms "
          f"({recorded / now:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
