"""The Open Inference Protocol (KServe's and Triton's v2 REST API) beside `sweep-serve`'s own routes,
so that their clients work unchanged: server and model metadata, liveness and readiness, and
`infer` with the image batch as a JSON tensor of raw pixels (`UINT8`, shape `[N, C, H, W]`, the
model's input shape), answered with the class probabilities (`FP32`, `[N, classes]`). The batch
goes through the same batcher, queue and limits as `/predict`. Binary tensor data (an extension)
is not offered: a JSON tensor is at most MAX_JSON_BYTES."""

import json  # no `from __future__ import annotations`: FastAPI reads the routes' annotations at definition
import math
from typing import Any

MODEL_NAME = "sweep"  # the one model a server serves, as /v2/models/{name} names it
MAX_JSON_BYTES = 16 * 2**20  # an infer request's JSON: about 4 million pixels (64 images of 3x128x128)
INPUT, OUTPUT = "input", "probabilities"


def parse_infer(body: bytes, in_shape: tuple[int, ...], max_images: int) -> Any:
    """The request's one input tensor as the model's uint8 batch and the request's id, or a str
    saying why it is not one."""
    import numpy as np

    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return "the body is not JSON"
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        return f"inputs: must be a list of one tensor, {INPUT}"
    tensor = inputs[0]
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    want = f"[N, {', '.join(map(str, in_shape))}] with N in [1, {max_images}]"
    dims = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    if not (dims and tuple(shape[1:]) == tuple(in_shape) and len(shape) == len(in_shape) + 1
            and 1 <= shape[0] <= max_images):  # fmt: skip
        return f"inputs[0].shape={shape}: must be {want}"
    if datatype != "UINT8":
        return f"inputs[0].datatype={datatype}: must be UINT8 (raw pixels, 0..255)"
    if not isinstance(data, list) or len(data) != math.prod(shape):
        return f"inputs[0].data: must be a flat list of {math.prod(shape)} numbers (row-major, as shape says)"
    try:
        values = np.asarray(data)
    except (TypeError, ValueError):  # ragged nesting
        values = np.asarray([], dtype=object)
    if (
        values.ndim != 1
        or values.dtype.kind not in "iuf"
        or not np.all((values >= 0) & (values <= 255) & (values == np.floor(values)))
    ):
        return "inputs[0].data: must hold integers in [0, 255], flat"
    request_id = request.get("id")
    return values.astype(np.uint8).reshape(shape), request_id if isinstance(request_id, str) else None


def infer_response(probs: Any, request_id: str | None) -> dict:
    """The probabilities as the protocol's one output tensor."""
    p = probs.float().cpu()
    answer = {"model_name": MODEL_NAME, "outputs": [
        {"name": OUTPUT, "datatype": "FP32", "shape": list(p.shape), "data": p.flatten().tolist()}]}  # fmt: skip
    return answer | ({"id": request_id} if request_id is not None else {})


async def _body(request: Any, cap: int) -> bytes | None:
    """The request's body, read as it arrives; None once it passes `cap` bytes (nothing more is read)."""
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def routes(app: Any, ckpt: Any, ready: Any, predict: Any, refuse: Any, max_images: int) -> None:
    """Add the protocol's routes to `app`: `ready()` says whether the model is warmed, `predict(x)`
    runs a batch as `/predict` does (a response when it refuses), `refuse(status, why)` answers an error."""
    import torch
    from fastapi import Request

    @app.get("/v2")
    async def server() -> dict:
        return {"name": "sweep-serve", "extensions": []}

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def server_ready() -> Any:
        return {"ready": True} if ready() else refuse(503, "the model is warming up")

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> Any:
        if name != MODEL_NAME:
            return refuse(404, f"no model {name[:100]!r}; this server serves {MODEL_NAME!r}")
        return {
            "name": MODEL_NAME,
            "platform": "pytorch",
            "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": [-1, *ckpt.in_shape]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, ckpt.classes]}],
        }

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Any:
        if name != MODEL_NAME:
            return refuse(404, f"no model {name[:100]!r}; this server serves {MODEL_NAME!r}")
        return {"name": MODEL_NAME, "ready": ready()}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Any:
        if name != MODEL_NAME:
            return refuse(404, f"no model {name[:100]!r}; this server serves {MODEL_NAME!r}")
        body = await _body(request, MAX_JSON_BYTES)
        if body is None:
            return refuse(413, f"a JSON request past {MAX_JSON_BYTES} bytes (binary tensor data is not offered)")
        parsed = parse_infer(body, tuple(ckpt.in_shape), max_images)
        if isinstance(parsed, str):
            return refuse(400, parsed)
        x, request_id = parsed
        request.state.images = x.shape[0]
        probs = await predict(torch.from_numpy(x))
        if not isinstance(probs, torch.Tensor):
            return probs  # the refusal
        return infer_response(probs, request_id)
