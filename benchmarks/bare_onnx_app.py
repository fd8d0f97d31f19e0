"""The serving benchmark's limit anchor: the thinnest Python path to the same ONNX graph the service runs.

A raw ASGI app, no framework: JSON body in → one float64 row → onnxruntime (one thread, as the service) →
JSON out. No validation, no logging, no metrics, no auth: whatever the service does beyond this is the
cost of serving a user well, and the benchmark prints how much of this limit the service keeps.

    POTABLE_BARE_ONNX_PATH=.../model.onnx uvicorn benchmarks.bare_onnx_app:app --workers 2 \
        --http httptools --loop uvloop --no-access-log
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort

from core.settings import FEATURES

THRESHOLD = float(os.environ.get("POTABLE_BASELINE_THRESHOLD", "0.5"))

_options = ort.SessionOptions()
_options.intra_op_num_threads = _options.inter_op_num_threads = 1
_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the service
_session = ort.InferenceSession(os.environ["POTABLE_BARE_ONNX_PATH"], _options, providers=["CPUExecutionProvider"])
_HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    sample = json.loads(body)
    row = np.array([[sample.get(f) for f in FEATURES]], dtype=np.float64)
    p = float(np.asarray(_session.run(None, {"X": row})[-1])[0, 1])
    answer = {"predictions": [int(p >= THRESHOLD)], "probabilities": [[1 - p, p]]}
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
