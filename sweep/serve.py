"""Serve a trained model over HTTP: `sweep-serve RUN_DIR_or_SWEEP_DIR [--port 8000]` (or
`python sweep/serve.py`); a sweep dir serves its best run by the validation objective.

    POST /predict   multipart images (field `image`, repeated for several; `?top_k=N`) -> JSON per image
    GET  /health    {"status": "ok"}: the process is up
    GET  /ready     200 once the model is loaded and warmed, 503 before
    GET  /metrics   Prometheus text: requests, their duration, batch sizes, images in flight
    GET  /info      the run: dir, model kind, classes, input shape, accuracies, overrides

Built on FastAPI and uvicorn (`pip install -e ".[serve]"`); binds 127.0.0.1 unless told otherwise.
Each image is read as predict.py reads it, so both give the same labels. Bad input is a 4xx with
one JSON line naming what was wrong, never a traceback, and the server goes on; requests that
arrive together run through the model as one batch (`sweep.batching`), and a full queue is a 503
with Retry-After. SIGTERM or Ctrl-C stops it cleanly.
"""

import argparse
import asyncio
import contextlib
import errno
import io
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # as in run.py

from sweep.errors import UserError, exit_with  # noqa: E402
from sweep.outcomes import add_pick_options  # noqa: E402

MAX_BYTES = 8 * 2**20  # an upload's size, default
MAX_PIXELS = 40_000_000  # an image's pixel count, default: refused from its header, before decoding
MAX_IMAGES = 64  # images a request may hold
REQUEST_TIMEOUT = 30.0  # seconds to receive a whole request (headers and body), default
BOUNDS = {
    "port": (0, 65535),
    "max-bytes": (1, 2**30),
    "max-pixels": (1, 10**9),
    "request-timeout": (0.1, 3600),
    "max-batch-size": (1, 4096),
    "max-wait-ms": (0, 10_000),
    "max-queue": (1, 1_000_000),
}
MAX_BATCH_SIZE = 64  # images a call of the model runs at most, default
MAX_WAIT_MS = 0.0  # how long a batch's first request waits for others, default: not at all
MAX_QUEUE = 256  # images that may wait for the model, default; past them a request is answered 503
MAX_DECODING = 512 * 2**20  # bytes of images being decoded at once, server-wide, default
log = logging.getLogger("sweep.serve")


class DecodeBudget:
    """Bytes of images the server decodes at once, at most `limit` whatever the number of clients:
    an image waits until the others' decodes leave it room."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self._room = limit, 0, asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> Any:
        async with self._room:
            await self._room.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            async with self._room:
                self.used -= n
                self._room.notify_all()


def _decode(data: bytes, in_shape: tuple[int, ...], max_pixels: int, name: str, need: int) -> Any:
    from sweep.images import read_image

    try:
        return read_image(io.BytesIO(data), in_shape[0], in_shape[1:], max_pixels, name)
    finally:
        if need > 64 * 2**20:
            _give_back_memory()


def _give_back_memory() -> None:
    """Hand freed heap back to the system (glibc keeps a large decode's pages otherwise, and the
    server's memory would stay at its peak); elsewhere, nothing."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _refuse(status: int, why: str, headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": " ".join(why.split())[:500]}, status_code=status, headers=headers)


def body_cap(max_bytes: int) -> int:
    """The most a request's body may hold: MAX_IMAGES uploads, and a MiB of form framing."""
    return MAX_IMAGES * max_bytes + 2**20


class _TooLarge(Exception):
    """A request body past its cap, found while it arrives."""


class BodyLimit:
    """An ASGI middleware counting a request's body as it arrives and refusing it (413) past `limit`
    bytes, with a Content-Length or without one (chunked): nothing past the cap is read or spooled."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen, over, answered = 0, False, False

        async def counted() -> dict:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                raise _TooLarge
            return message

        async def sending(message: dict) -> None:
            nonlocal answered
            if over:  # the app's own answer to the cut body (FastAPI says 400, parsing failed): ours instead
                if not answered:
                    answered = True
                    await _refuse(413, f"a request body past {self.limit} bytes")(scope, receive, send)
                return
            answered = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if not answered:
                await _refuse(413, f"a request body past {self.limit} bytes")(scope, receive, send)


def _guard(app: Any, max_bytes: int, metrics: Any) -> None:
    """Refusals before a route runs, each one JSON line: a body too large (before it is read and
    spooled), a request the routes cannot parse, and a failure (logged by uvicorn, never sent)."""
    import time

    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.middleware("http")
    async def _too_large(request: Request, call_next: Any) -> Any:
        started, length = time.perf_counter(), request.headers.get("content-length", "")
        if length.isdigit() and int(length) > body_cap(max_bytes):
            response = _refuse(413, f"a request of {length} bytes; at most {MAX_IMAGES} images of {max_bytes} bytes")
        else:
            response = await call_next(request)
        images = getattr(request.state, "images", 0)  # one line a request, as an access log has it
        metrics.answered(request.url.path, response.status_code, time.perf_counter() - started)
        log.info("%s %s %d %.1f ms %d image%s", request.method, request.url.path, response.status_code,
                 1000 * (time.perf_counter() - started), images, "" if images == 1 else "s")  # fmt: skip
        return response

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> Any:  # 404, 405: the same JSON line as every error
        return _refuse(e.status_code, f"{request.method} {request.url.path}: {e.detail}")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, e: RequestValidationError) -> Any:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        hint = "; send images as multipart form fields named `image`" if where.startswith("body") else ""
        return _refuse(400 if where.startswith("body") else 422, f"{where}: {first.get('msg', 'not understood')}{hint}")

    @app.exception_handler(Exception)
    async def _failed(request: Request, e: Exception) -> Any:
        return _refuse(500, f"the server failed on this request ({type(e).__name__})")


async def decode_request(uploads: list[Any], in_shape: tuple[int, ...], max_bytes: int, max_pixels: int,
                         budget: DecodeBudget) -> Any:  # fmt: skip
    """The uploads as one batch of images the model reads (read as predict.py reads them), or the
    refusal naming the first that is not one. Each is decoded within the server's budget."""
    import numpy as np
    import torch

    from sweep.images import decoding_cost

    if len(uploads) > MAX_IMAGES:
        return _refuse(413, f"{len(uploads)} images; at most {MAX_IMAGES} a request")
    arrays = []
    for upload in uploads:
        name = upload.filename or "image"
        data = await upload.read(max_bytes + 1)
        if not data:
            return _refuse(400, f"{name}: empty")
        if len(data) > max_bytes:
            return _refuse(413, f"{name}: over {max_bytes} bytes")
        try:  # decoded in a worker thread: a large image does not hold up the other requests
            need, what = decoding_cost(io.BytesIO(data), in_shape[0], name)
            if need > budget.limit:
                return _refuse(413, f"{name}: {what} takes {need / 1e6:.0f} MB to decode; "
                                    f"the server decodes at most {budget.limit / 2**20:.0f} MB at once")  # fmt: skip
            async with budget.hold(need):
                arrays.append(await asyncio.to_thread(_decode, data, in_shape, max_pixels, name, need))
        except UserError as e:
            return _refuse(413 if "pixels; at most" in str(e) else 400, str(e))
    return torch.as_tensor(np.stack(arrays))


def encode_response(ckpt: Any, uploads: list[Any], probs: Any, top_k: int) -> dict:
    """Each image's most probable label (and, with `top_k` > 1, its `top_k` labels; at most the
    model's classes, with a note when fewer than asked)."""
    answers = []
    for upload, top in zip(uploads, ckpt.top(probs, top_k)):
        ranked = [{"label": label, "index": index, "probability": p} for label, index, p in top]
        answers.append({"file": upload.filename, **ranked[0], **({"top_k": ranked} if top_k > 1 else {})})
    note = {"note": f"top_k={top_k}: the model has {ckpt.classes} classes"} if top_k > ckpt.classes else {}
    return {"predictions": answers, **note}


@dataclass(frozen=True)
class Limits:
    """What a server takes: an upload's bytes, an image's pixels, the bytes it decodes at once, the
    images a model call runs, how long a batch waits to fill, the images that may wait."""

    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_decoding: int = MAX_DECODING
    max_batch_size: int = MAX_BATCH_SIZE
    max_wait_ms: float = MAX_WAIT_MS
    max_queue: int = MAX_QUEUE


def create_app(run_dir: Path, limits: Limits = Limits()) -> Any:  # noqa: B008 - a frozen default
    """The FastAPI app serving the run's best.pt: a request is decoded, batched with the others
    waiting, predicted and encoded; /health says the process is up, /ready that the model is loaded
    and warmed, /metrics what it has done."""
    import torch
    from fastapi import FastAPI, File, Query, Request, UploadFile

    from sweep import inference_protocol
    from sweep.batching import Batcher, Overloaded
    from sweep.checkpoint import load_checkpoint
    from sweep.server_metrics import ServerMetrics

    ckpt = load_checkpoint(run_dir)
    model = ckpt.model()

    def run(x: Any) -> Any:
        with torch.inference_mode():
            return model.probabilities(x)

    metrics = ServerMetrics(lambda: batcher.queued + batcher.running)
    batcher = Batcher(run, limits.max_batch_size, limits.max_wait_ms, limits.max_queue, metrics.batch.observe)
    budget = DecodeBudget(limits.max_decoding)
    warmed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await asyncio.to_thread(run, torch.zeros((1, *ckpt.in_shape), dtype=torch.uint8))  # the first call is slow
        warmed.set()
        yield

    app = FastAPI(title="sweep-serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    _guard(app, limits.max_bytes, metrics)
    app.add_middleware(BodyLimit, limit=body_cap(limits.max_bytes))

    _status_routes(app, run_dir, ckpt, warmed, metrics)

    async def batch(x: Any) -> Any:
        """A decoded batch's probabilities, batched with the others waiting; a 503 when the queue is full."""
        try:
            return await batcher.probabilities(x)
        except Overloaded as e:  # a bounded queue: the client tries again, the server's memory stays bounded
            return _refuse(503, f"overloaded: {e}; try again shortly", {"Retry-After": "1"})

    @app.post("/predict")
    async def predict(
        request: Request, image: Annotated[list[UploadFile], File()], top_k: Annotated[int, Query(ge=1)] = 1
    ) -> Any:
        request.state.images = len(image)
        x = await decode_request(image, ckpt.in_shape, limits.max_bytes, limits.max_pixels, budget)
        if not isinstance(x, torch.Tensor):
            return x  # the refusal
        probs = await batch(x)
        return encode_response(ckpt, image, probs, top_k) if isinstance(probs, torch.Tensor) else probs

    inference_protocol.routes(app, ckpt, warmed.is_set, batch, _refuse, MAX_IMAGES)  # KServe's and Triton's v2
    return app


def _status_routes(app: Any, run_dir: Path, ckpt: Any, warmed: asyncio.Event, metrics: Any) -> None:
    """What operations and clients ask of a server besides predictions: is it up, is it ready,
    what has it done, what does it serve."""
    from fastapi import Response

    from sweep.results import RunResult

    result = RunResult.read(run_dir)

    @app.api_route("/health", methods=["GET", "HEAD"])  # load balancers ask with HEAD
    async def health() -> dict:
        return {"status": "ok"}

    @app.api_route("/ready", methods=["GET", "HEAD"])
    async def ready() -> Any:
        return {"status": "ready"} if warmed.is_set() else _refuse(503, "the model is warming up", {"Retry-After": "1"})

    @app.get("/metrics")
    async def exposition() -> Any:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/info")
    async def info() -> dict:
        return {
            "run": run_dir.name,  # its folder's name: where it lives on the server is not the client's business
            "model": ckpt.spec.to_dict(),
            "classes": [ckpt.label(i) for i in range(ckpt.classes)],
            "input_shape": list(ckpt.in_shape),
            "best_val_acc": _number(result.best_val_acc),
            "test_acc": _number(result.test_acc),
            "overrides": list(result.record.overrides),
        }


def _number(v: float) -> float | None:
    return v if v == v else None  # NaN is not JSON


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweep-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, metavar="RUN_DIR_or_SWEEP_DIR")
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    add_pick_options(parser)
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help=f"an upload's size limit ({MAX_BYTES})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help=f"an image's pixel limit ({MAX_PIXELS})")
    parser.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE,
                        help=f"images one call of the model runs at most ({MAX_BATCH_SIZE})")  # fmt: skip
    parser.add_argument("--max-wait-ms", type=float, default=MAX_WAIT_MS,
                        help="how long a batch's first request waits for others to join (0: not at all)")  # fmt: skip
    parser.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        help=f"images that may wait for the model, past which a request is 503 ({MAX_QUEUE})",
    )
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT, metavar="SECONDS",
                        help=f"to receive a whole request, headers and body ({REQUEST_TIMEOUT:g})")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        try:
            import uvicorn
        except ImportError:
            raise UserError('sweep-serve needs FastAPI and uvicorn: pip install -e ".[serve]"') from None
        for option, (low, high) in BOUNDS.items():
            if not low <= getattr(args, option.replace("-", "_")) <= high:  # NaN is not within either
                raise UserError(f"--{option} {getattr(args, option.replace('-', '_'))}: must be in [{low}, {high}]")
        if not args.host.strip():
            raise UserError("--host '': an empty host listens on every interface; leave --host out (127.0.0.1, this "
                            "machine only), or say --host 0.0.0.0 if every interface is meant")  # fmt: skip
        from sweep.summary import best_run_dir

        run_dir, note = best_run_dir(args.source, args.storage, args.max_latency_ms, args.max_model_bytes)
        if note:
            print(note, file=sys.stderr)
        limits = Limits(args.max_bytes, args.max_pixels, MAX_DECODING, args.max_batch_size, args.max_wait_ms,
                        args.max_queue)  # fmt: skip
        app = create_app(run_dir, limits)
        sock = _bind(args.host, args.port)  # before saying where: the address printed is the one bound
    except UserError as e:
        exit_with(e)
    host, port = sock.getsockname()[:2]
    print(f"Serving {run_dir} on http://{host}:{port} (POST /predict, GET /info, /health, /ready, /metrics)",
          file=sys.stderr, flush=True)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the request lines, on stderr
    # a client stalled mid-upload may not hold a stop up for more than a few seconds, nor may more
    # connections than this be open at once (the ones past it are answered 503 at once)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, timeout_keep_alive=5,
                            limit_concurrency=256, http=_deadline_protocol(args.request_timeout))  # fmt: skip
    server = _server_class()(config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, server.handle_exit)  # finish the requests in flight, then exit 0
    server.run(sockets=[sock])
    return 0


def _bind(host: str, port: int) -> Any:
    """A listening socket on `host`:`port` (0: any free port), or the one line saying why not."""
    import socket

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: not a host name or address ({e})") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # protocol TCP, not 0: asyncio sets TCP_NODELAY only on such sockets' connections, and with Nagle
    # on, every response waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        return sock
    except OSError as e:
        sock.close()
        why = {errno.EADDRINUSE: "in use", errno.EADDRNOTAVAIL: "not an address of this machine"}.get(e.errno)
        raise UserError(f"--host {host} --port {port}: cannot listen there ({why or e.strerror})") from None


def _deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a deadline for receiving each request whole, headers and body: a
    connection that sends nothing, or trickles its request, is closed at the deadline (uvicorn's own
    keep-alive timeout starts only after a response and restarts with every byte, so a slow
    client would hold its connection for ever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    received = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)

    class DeadlineProtocol(H11Protocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state in received:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state not in received:
                self._arm()  # the next request on this connection has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            if not self.transport.is_closing():
                log.info("closed a connection from %s: no whole request within %g s", _peer(self.client), seconds)
                self.transport.close()

    return DeadlineProtocol


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        def capture_signals(self) -> contextlib.AbstractContextManager:
            # uvicorn re-raises the stop signal once it has shut down (exit 143); a stop asked for
            # is not a failure, so the handlers installed in main stand and the exit code is 0
            return contextlib.nullcontext()

    return Server


if __name__ == "__main__":
    sys.exit(main())
