"""BentoML service for the water-potability model: seed-compatible `POST /predict`, a batch API, metadata.

The model comes from the BentoML model store, where packaging (tasks/packaging.py) imported it from the
MLflow registry with its version, run, data hash, commit and decision threshold as labels. This module
knows the model store only (never the flows), so a Bento is self-contained.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, RedirectResponse

# A sibling module in the Bento (and in bentos/ when served from the source tree), not a package import.
from prediction_log import PredictionLog, env_number, shipper_from_env
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

# Repeated from core.settings on purpose: a Bento carries service.py alone and must not import the platform.
FEATURES = [
    "ph",
    "Hardness",
    "Solids",
    "Chloramines",
    "Sulfate",
    "Conductivity",
    "Organic_carbon",
    "Trihalomethanes",
    "Turbidity",
]
MAX_BATCH = 10_000
# Request body limits, enforced before a body is read whole (413 beyond): one sample is ~250 bytes of JSON.
BODY_LIMITS = {"/predict": 16 * 1024, "/predict_batch": 4 * 1024 * 1024}
DEFAULT_BODY_LIMIT = 64 * 1024
RATE_LIMIT_DEFAULT = 5000  # per client per worker per second, for `potable serve`; the router's is tighter
ECHO_LIMIT = 64  # characters of a client's own input (e.g. an unknown key) ever repeated in an error
REQUEST_TIMEOUT = env_number("POTABLE_REQUEST_TIMEOUT_SECONDS", 30)
# A release slot sits behind the router (deployments/router.py), which owns the edge: it buffers each body
# whole before passing it on (a slow body never reaches a slot), bounds bodies per route, and limits each
# client's rate. There the slot leaves those three to nginx instead of paying for them twice per request
# (~35 µs of ~450 here, measured in benchmarks/edge_bench.py); `potable serve`, which has no router, keeps them.
EDGE_BY_ROUTER = os.environ.get("POTABLE_EDGE_BY_ROUTER") == "1"


def _served_models() -> dict[str, str]:
    """The model tags packaging wrote into the Bento; the environment only when run from the source tree."""
    packaged = Path(__file__).with_name("served_models.json")
    if packaged.is_file():
        return json.loads(packaged.read_text(encoding="utf-8"))
    return {k: os.environ.get(k, "") for k in ("POTABLE_BENTO_MODEL_TAG", "POTABLE_BENTO_ONNX_TAG")}


SERVED = _served_models()
MODEL_TAG = SERVED.get("POTABLE_BENTO_MODEL_TAG") or "water-potability:latest"
ONNX_TAG = SERVED.get("POTABLE_BENTO_ONNX_TAG", "")
WORKERS = os.environ.get("POTABLE_SERVE_WORKERS", "cpu_count")
FRONTEND_HTML = Path(__file__).with_name("static") / "frontend.html"
PROTECTED_PATHS = ("/predict", "/predict_batch")  # health, metrics, schema and the public metadata stay open
# Not traced: a span per prediction would cost more than the prediction. Regexes searched in the full URL
# (OpenTelemetry's exclusion rule): a path one matches is excluded whatever the host.
TRACING_EXCLUDED_URLS = ["predict"]
# Every path the service answers; RequestMetrics labels by path, so any other path is counted under one
# label (UNKNOWN_PATH) instead of growing /metrics by one series per URL a client invents.
KNOWN_PATHS = frozenset(
    {"/", "/predict", "/predict_batch", "/metadata", "/frontend", "/openapi.json", "/schema.json"}
    | {"/livez", "/readyz", "/healthz", "/metrics"}
)
UNKNOWN_PATH = "/unknown"


def predictions_counter():
    """The predictions counter, made in the worker: prometheus_client must be imported only after BentoML set
    PROMETHEUS_MULTIPROC_DIR, or each worker counts alone and /metrics shows whichever worker answers.

    Not registered in the process's default registry (`registry=None`): in multiprocess mode the counter's
    values live in the worker's metric files, which BentoML's /metrics collects from every worker; so a
    second import of this module (the Bento's `service` and the source tree's `bentos.service`) makes a
    second handle on the same series instead of a duplicate-registration error."""
    from prometheus_client import Counter

    return Counter(
        "potable_predictions",
        "Predictions served, by predicted class and model version",
        ["predicted_class", "model_version"],
        registry=None,
    )


def client_of(scope) -> str:
    """A pseudonymous client id: the peer address, or behind the local router the address nginx forwarded
    (trusted only from loopback, where the router is). Hashed so the log holds no addresses. Kept in the
    request's scope: the rate limit and the prediction log both ask."""
    client = scope.get("potable.client")
    if client is None:
        client = scope["potable.client"] = _client_of(scope)
    return client


def _client_of(scope) -> str:
    host = (scope.get("client") or ("unknown", 0))[0]
    if host in ("127.0.0.1", "::1"):
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                host = value.split(b",")[-1].strip().decode("latin-1")[:64]
                break
    return _pseudonym(host)


@functools.lru_cache(maxsize=4096)
def _pseudonym(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:12]


def error_body(error: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The one error shape of every 4xx: `{"error": text, "detail": [{"loc": [...], "msg": text}]}`."""
    return {"error": error, "detail": detail or []}


def _clip(text: str) -> str:
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}… ({len(text)} characters)"


def authorized(scope) -> bool:
    """True when no token is configured, or the request carries it (compared in constant time)."""
    token = os.environ.get("POTABLE_API_TOKEN")
    if not token:
        return True
    given = dict(scope.get("headers") or []).get(b"authorization", b"")
    return hmac.compare_digest(given, f"Bearer {token}".encode())


class BearerTokenMiddleware:
    """Optional auth: when POTABLE_API_TOKEN is set, prediction endpoints need `Authorization: Bearer <token>`.

    CORS preflights (OPTIONS) pass: a browser sends them without credentials, and the CORS middleware
    answers them; the POST that follows is checked.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        protected = scope["type"] == "http" and scope["path"].rstrip("/") in PROTECTED_PATHS
        if protected and scope["method"] != "OPTIONS" and not authorized(scope):
            response = JSONResponse(error_body("missing or invalid bearer token"), status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ClientRateLimitMiddleware:
    """Per-client token bucket on the prediction endpoints (POTABLE_RATE_LIMIT_PER_SECOND, burst as many):
    one client looping requests gets 429 with Retry-After instead of the others' latency. The router in
    front of release slots limits per address too; this holds for `potable serve` and direct slot access."""

    def __init__(self, app) -> None:
        self.app = app
        self.rate = env_number("POTABLE_RATE_LIMIT_PER_SECOND", RATE_LIMIT_DEFAULT)
        self.buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in PROTECTED_PATHS and not self._take(scope):
            detail = [{"loc": ["client"], "msg": f"over {self.rate:g} requests per second; retry after 1 s"}]
            response = JSONResponse(error_body("too many requests", detail), 429, headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _take(self, scope) -> bool:
        client, now = client_of(scope), time.monotonic()
        tokens, when = self.buckets.get(client, (self.rate, now))
        tokens = min(self.rate, tokens + (now - when) * self.rate)
        if len(self.buckets) > 10_000:  # forget clients idle long enough to have a full bucket again
            self.buckets = {c: (t, w) for c, (t, w) in self.buckets.items() if now - w < 1.0}
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - 1, now)
        return True


async def read_bounded(scope, receive, send, limit: int) -> bytes | None:
    """The request body, or None once it has been refused (413, decided from Content-Length or while
    reading, never after reading a huge body whole) or the client has gone."""
    declared = dict(scope.get("headers") or []).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        await _too_large(scope, receive, send, limit)
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > limit:
            await _too_large(scope, receive, send, limit)
            return None
    return b"".join(chunks)


async def _too_large(scope, receive, send, limit: int) -> None:
    detail = [{"loc": ["body"], "msg": f"request body over {limit} bytes for {scope['path']}"}]
    await JSONResponse(error_body("request body too large", detail), status_code=413)(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over the path's limit, decided from Content-Length or while reading — never after
    reading a huge body whole. The accepted body is handed on to the app unchanged."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] in BODY_LIMITS:  # PredictRoute bounds it while reading
            await self.app(scope, receive, send)
            return
        body = await read_bounded(scope, receive, send, BODY_LIMITS.get(scope["path"].rstrip("/"), DEFAULT_BODY_LIMIT))
        if body is None:
            return
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


class RequestMetrics:
    """Requests, their duration and those in progress, by path and status, on /metrics.

    Ours instead of BentoML's request metrics (switched off in the service config): BentoML labels by
    whatever path a client sends, one new series per invented URL, so a client could grow /metrics without
    bound. Here any path the service does not answer counts under one label (UNKNOWN_PATH). Outermost of our
    middleware, so every answer is counted, 401/413/415/429 and 504 included. Each labelled child is
    resolved once: looking one up costs more than the prediction itself."""

    def __init__(self, app) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.app = app
        self.total = Counter(
            "potable_http_requests", "Requests answered, by path and status", ["endpoint", "status"], registry=None
        )
        self.duration = Histogram(
            "potable_http_request_duration_seconds",
            "Time to answer, by path",
            ["endpoint"],
            registry=None,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_progress = Gauge(
            "potable_http_requests_in_progress",
            "Requests being answered",
            ["endpoint"],
            registry=None,
            multiprocess_mode="livesum",
        )
        self.counted: dict[tuple[str, int], Any] = {}
        self.per_path: dict[str, tuple[Any, Any]] = {}

    def _counted(self, endpoint: str, status: int):
        if (endpoint, status) not in self.counted:
            self.counted[endpoint, status] = self.total.labels(endpoint=endpoint, status=str(status))
        return self.counted[endpoint, status]

    def _timed(self, endpoint: str) -> tuple[Any, Any]:
        """(duration histogram, in-progress gauge) of a path, looked up once."""
        if endpoint not in self.per_path:
            self.per_path[endpoint] = (
                self.duration.labels(endpoint=endpoint),
                self.in_progress.labels(endpoint=endpoint),
            )
        return self.per_path[endpoint]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS or path.startswith("/static_content/") else UNKNOWN_PATH
        duration, gauge = self._timed(endpoint)
        started, status = time.perf_counter(), 0

        async def counted_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self._counted(endpoint, status).inc()
                duration.observe(time.perf_counter() - started)
            await send(message)

        gauge.inc()
        try:
            await self.app(scope, receive, counted_send)
        finally:
            gauge.dec()


class RequestTimeout:
    """504 in the error shape when no answer has begun within POTABLE_REQUEST_TIMEOUT_SECONDS of the request
    (e.g. a body that stops coming); an answer that has begun is never cut off. BentoML's own timeout
    (`traffic.timeout`, set a few seconds longer) stays as the backstop; it answers in its own shape."""

    def __init__(self, app) -> None:
        self.app, self.timeout = app, REQUEST_TIMEOUT

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answering = False

        async def answer_send(message) -> None:
            nonlocal answering
            if not answering:
                answering = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, answer_send)
        except TimeoutError:
            if answering:
                raise
            detail = [{"loc": ["request"], "msg": f"no complete request within {self.timeout:g} seconds"}]
            await JSONResponse(error_body("request timed out", detail), 504)(scope, receive, send)


class Sample(BaseModel):
    """One lab sample, the seed API's flat JSON. Bounds are physical; NaN/inf and unknown fields are refused."""

    # strict: a feature is a JSON number or null; "7.0", "1_0" or true are refused, never coerced.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    ph: float | None = Field(default=None, ge=0, le=14, description="pH, 0-14 (may be missing)")
    Hardness: float = Field(ge=0, le=1000, description="mg/L")
    Solids: float = Field(ge=0, le=100_000, description="total dissolved solids, ppm")
    Chloramines: float = Field(ge=0, le=30, description="ppm")
    Sulfate: float | None = Field(default=None, ge=0, le=1000, description="mg/L (may be missing)")
    Conductivity: float = Field(ge=0, le=2000, description="µS/cm")
    Organic_carbon: float = Field(ge=0, le=60, description="ppm")
    Trihalomethanes: float | None = Field(default=None, ge=0, le=250, description="µg/L (may be missing)")
    Turbidity: float = Field(ge=0, le=20, description="NTU")


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH, description=f"at most {MAX_BATCH} samples")


class ErrorDetail(BaseModel):
    loc: list[str]
    msg: str


class ErrorResponse(BaseModel):
    """Every 4xx answer has this shape."""

    error: str
    detail: list[ErrorDetail]


ERRORS = {
    400: {"model": ErrorResponse, "description": "Invalid input: one entry per bad field"},
    401: {"model": ErrorResponse, "description": "Missing or invalid bearer token (when POTABLE_API_TOKEN is set)"},
    413: {"model": ErrorResponse, "description": "Request body over the endpoint's limit"},
    415: {"model": ErrorResponse, "description": "Request body not sent as application/json"},
    429: {"model": ErrorResponse, "description": "Over the per-client rate limit (see the Retry-After header)"},
    504: {"model": ErrorResponse, "description": "No answer begun within POTABLE_REQUEST_TIMEOUT_SECONDS (30)"},
}

# No /docs or /redoc: FastAPI's pages load scripts from a public CDN. The schema is at /openapi.json.
api = FastAPI(
    title="water potability",
    description="Seed-compatible prediction API, metadata and lab form",
    docs_url=None,
    redoc_url=None,
)


def _rows(samples: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[s.get(f) for f in FEATURES] for s in samples], dtype=np.float64)  # None → NaN


class Scorer:
    """P(potable) from the ONNX graph packaging verified against the sklearn Pipeline, else the Pipeline."""

    def __init__(self, mlflow_model: bentoml.Model, onnx_model: bentoml.Model | None) -> None:
        if onnx_model is not None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1  # one worker process per core
            options.log_severity_level = 3
            # As packaging's parity check (tasks/onnx_export.session): no graph rewrites, a faster load.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            path = onnx_model.path_of("model.onnx")
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self.runtime, self.pipeline = "onnx", None
        else:
            # pyfunc's per-call schema checks cost more than a small prediction: use the Pipeline itself.
            self.pipeline = bentoml.mlflow.load_model(mlflow_model).get_raw_model()
            # Trained to use every core for fitting; per request a thread pool would only add latency.
            self.pipeline.set_params(**{k: 1 for k in self.pipeline.get_params() if k.endswith("n_jobs")})
            self.runtime, self.session = "sklearn", None

    def positive(self, rows: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return np.asarray(self.session.run(None, {"X": rows})[-1], dtype=np.float64)[:, 1]
        import pandas as pd  # only this fallback needs it: importing pandas cost every slot start ~0.5 s

        frame = pd.DataFrame(rows, columns=FEATURES)
        return np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)[:, 1]

    @property
    def slow(self) -> bool:
        """sklearn takes ~100 ms per call: keep it off the event loop."""
        return self.session is None


@bentoml.service(
    workers=int(WORKERS) if WORKERS.isdigit() else WORKERS,
    traffic={"timeout": REQUEST_TIMEOUT + 5},  # a backstop: RequestTimeout answers first, in the error shape
    metrics={"enabled": False},  # RequestMetrics instead: bounded labels (see there); /metrics is ours too
    tracing={"excluded_urls": TRACING_EXCLUDED_URLS},
    logging={"access": {"enabled": os.environ.get("POTABLE_ACCESS_LOG", "0") == "1"}},
)
class WaterPotability:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)
    onnx_model = bentoml.models.BentoModel(ONNX_TAG) if ONNX_TAG else None

    def __init__(self) -> None:
        self.scorer = Scorer(self.bento_model, self.onnx_model)
        self.labels = dict(self.bento_model.info.labels) | {"runtime": self.scorer.runtime}
        self.threshold = float(self.labels.get("threshold", 0.5))
        self.version = self.labels.get("model_version", "unknown")
        # Resolved once: looking up a labelled child costs more than the prediction itself.
        self.counted = {
            c: predictions_counter().labels(predicted_class=str(c), model_version=self.version) for c in (0, 1)
        }
        self.scorer.positive(_rows([{}]))  # first call allocates; pay it before traffic, not on a request
        home = Path(os.environ.get("POTABLE_HOME", ".potable")).expanduser()
        worker = bentoml.server_context.worker_index or 1
        self.log = PredictionLog(home / "predictions", worker, shipper_from_env(worker))
        # Objects alive now live as long as the server: keep them out of the cyclic GC, whose full
        # passes over BentoML's and the model's heap were the 200-300 ms tail under load.
        gc.freeze()

    def answer(self, samples: list[dict[str, Any]], client: str) -> dict[str, Any]:
        # Plain Python lists from here: numpy per-call overhead outweighs the work for a handful of samples.
        proba = self.scorer.positive(_rows(samples)).tolist()
        predictions = [int(p >= self.threshold) for p in proba]
        self._record(samples, predictions, proba, client)
        return {
            "predictions": predictions,
            "probabilities": [[round(1 - p, 6), round(p, 6)] for p in proba],
            "model_version": self.version,
            "message": f"{sum(predictions)} of {len(predictions)} sample(s) predicted potable "
            f"(threshold {self.threshold:.3f})",
        }

    def _record(self, samples: list[dict[str, Any]], predictions: list[int], proba: list[float], client: str) -> None:
        records = []
        for sample, predicted, p in zip(samples, predictions, proba, strict=True):
            self.counted[predicted].inc()
            records.append(
                {"model_version": self.version, "inputs": sample, "prediction": predicted, "probability": round(p, 6)}
            )
        self.log.record(client, records)


# Bound once: `bentoml.<name>` is a module __getattr__ that imports the module on every access.
current_service = bentoml.get_current_service


async def _answer(samples: list[dict[str, Any]], client: str) -> dict[str, Any]:
    service = current_service()
    if service.scorer.slow or len(samples) > 64:
        return await run_in_threadpool(service.answer, samples, client)
    return service.answer(samples, client)  # ~0.1 ms in ONNX Runtime: a thread hop would cost more


class Prediction(BaseModel):
    """The seed's response shape plus the model version."""

    predictions: list[int] = Field(description="1 = potable, one per sample, at the model's threshold")
    probabilities: list[list[float]] = Field(description="[P(not potable), P(potable)] per sample")
    model_version: str
    message: str


ANSWERS = {200: {"model": Prediction, "description": "One prediction per sample"}} | ERRORS
# The prediction routes (PredictRoute below: one implementation each), as the schema documents them.
PREDICTION_ROUTES = {
    "/predict": (Sample, "One sample (the seed API's flat JSON) → the seed's response shape plus the model version."),
    "/predict_batch": (Batch, "Up to 10,000 samples in one call."),
}


def _json(content: dict[str, Any]) -> Response:
    """The answer serialised once, directly: FastAPI's encoder for a returned dict walks it twice."""
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


PUBLIC_METADATA = ("model_version", "runtime", "threshold")


@api.get("/metadata")
def metadata(request: Request) -> dict[str, Any]:
    """What is being served. Public: version, runtime and threshold (what a client needs to read an answer).
    Lineage (run, data hash, commit, study, test metrics) only with the token when one is configured."""
    service = current_service()
    labels = {"model_tag": str(service.bento_model.tag), **service.labels}
    if authorized(request.scope):
        return labels
    return {k: labels[k] for k in PUBLIC_METADATA if k in labels}


@api.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus metrics of every worker of this server (prometheus_client's multiprocess collector over the
    folder BentoML gives its workers in PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@api.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    """The lab form; BentoML's own index page loads a third-party tag manager."""
    return RedirectResponse("/frontend")


@api.get("/frontend", response_class=HTMLResponse)
def frontend() -> str:
    """A one-page form for lab technicians (no build step): measurements in, verdict out."""
    return FRONTEND_HTML.read_text(encoding="utf-8")


@api.api_route(
    "/{unknown:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False, response_model=None
)
def not_found(unknown: str) -> JSONResponse | RedirectResponse:
    """Last route: any other path gets the error shape too (BentoML's own routes match before this app);
    a known path with a trailing slash is redirected (307 keeps the method), as FastAPI would."""
    if unknown.endswith("/") and f"/{unknown.rstrip('/')}" in KNOWN_PATHS:
        return RedirectResponse(f"/{unknown.rstrip('/')}", status_code=307)
    detail = [{"loc": ["path"], "msg": f"no such endpoint: /{_clip(unknown)}"}]
    return JSONResponse(error_body("not found", detail), status_code=404)


@api.exception_handler(RequestValidationError)
async def invalid_input(_request, exc: RequestValidationError) -> JSONResponse:
    """400 with one entry per bad field (loc starts with the field name, as the frontend expects);
    malformed JSON is one entry at `body`. Nothing long the client sent is repeated back."""
    return JSONResponse(error_body("invalid input", field_errors(exc.errors())), status_code=400)


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as the error shape's `detail` (at most 50, clipped)."""
    detail = []
    for error in errors:
        if error.get("type") == "json_invalid":
            detail.append({"loc": ["body"], "msg": "not valid JSON"})
            continue
        loc = [_clip(str(part)) for part in error["loc"] if part != "body"] or ["body"]
        detail.append({"loc": loc, "msg": _clip(error["msg"]) if len(error["msg"]) > 200 else error["msg"]})
    return detail[:50]


class NotStrictJson(ValueError):
    """The body is not one plain JSON document: malformed, NaN/Infinity literals, or a key given twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise NotStrictJson(f"key {_clip(key)!r} given twice")
            seen.add(key)
    return found


def _no_constants(name: str) -> None:
    raise NotStrictJson(f"{name} is not a JSON number")


def strict_json(body: bytes) -> Any:
    """The body parsed as strict JSON: a key given twice is refused, not silently "last one wins" (which
    lets two readers of the same request see different samples), and so are NaN/Infinity literals."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except NotStrictJson:
        raise
    except (ValueError, RecursionError):  # malformed, not UTF-8, nested beyond Python's stack
        raise NotStrictJson("not valid JSON") from None


def is_json(scope) -> bool:
    """Content-Type application/json (parameters such as charset allowed). Anything else is refused (415):
    a cross-origin page can POST text/plain or a form without a CORS preflight, never application/json."""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return False


class PredictRoute:
    """The prediction endpoints, their one implementation, as plain ASGI: FastAPI's and Starlette's
    per-request layers were about half of a prediction's CPU here (profiled with py-spy under wrk), so the
    routes are documented in the schema from their models (`_openapi`) rather than served by FastAPI.
    Innermost of our middleware, so the metrics, CORS, the rate limit, the timeout, the body limit and the
    token check run first, and BentoML's tracing around all of it."""

    MODELS: dict[str, type[BaseModel]] = {path: model for path, (model, _) in PREDICTION_ROUTES.items()}

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        model = self.MODELS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if model is None:
            await self.app(scope, receive, send)
            return
        if not is_json(scope):
            detail = [{"loc": ["headers", "content-type"], "msg": "send the request body as application/json"}]
            await JSONResponse(error_body("unsupported media type", detail), status_code=415)(scope, receive, send)
            return
        body = await read_bounded(scope, receive, send, BODY_LIMITS[scope["path"]])
        if body is None:
            return
        try:
            parsed = model.model_validate(strict_json(body))
        except NotStrictJson as exc:
            response = JSONResponse(error_body("invalid input", [{"loc": ["body"], "msg": str(exc)}]), status_code=400)
        except ValidationError as exc:
            response = JSONResponse(error_body("invalid input", field_errors(exc.errors())), status_code=400)
        else:
            samples = [parsed.model_dump()] if model is Sample else [s.model_dump() for s in parsed.samples]
            response = _json(await _answer(samples, client_of(scope)))
        await response(scope, receive, send)


@api.exception_handler(StarletteHTTPException)
async def http_error(_request, exc: StarletteHTTPException) -> JSONResponse:
    """404, 405 and the rest in the same shape as validation errors."""
    return JSONResponse(error_body(_clip(str(exc.detail))), status_code=exc.status_code, headers=exc.headers)


def _prediction_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the prediction routes, from the models PredictRoute validates with."""
    models = [(m, "validation") for m, _ in PREDICTION_ROUTES.values()]
    models += [(Prediction, "serialization"), (ErrorResponse, "serialization")]
    refs, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")

    def content(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return {"application/json": {"schema": refs[(model, mode)]}}

    paths = {}
    for path, (model, description) in PREDICTION_ROUTES.items():
        responses = {
            str(code): {"description": answer["description"], "content": content(answer["model"], "serialization")}
            for code, answer in ANSWERS.items()
        }
        paths[path] = {
            "post": {
                "summary": path.strip("/").replace("_", " ").capitalize(),
                "description": description,
                "operationId": path.strip("/"),
                "requestBody": {"required": True, "content": content(model, "validation")},
                "responses": responses,
            }
        }
    return paths, definitions.get("$defs", {})


def _openapi() -> dict[str, Any]:
    """The FastAPI routes' schema plus the prediction routes', documenting the 400 the service answers
    (never FastAPI's default 422)."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version="1", description=api.description, routes=api.routes)
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        paths, definitions = _prediction_paths()
        schema["paths"] = paths | schema["paths"]
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions)
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi


# Mounted at the root: BentoML's own routes (/livez, /readyz) match first, and its middleware (tracing,
# its backstop timeout) wraps these routes and ours below. Plain FastAPI routes instead of
# @bentoml.api because BentoML's per-call dispatch costs about twice a FastAPI route here (measured).
WaterPotability = bentoml.asgi_app(api, path="/")(WaterPotability)

# Starlette runs the first-added middleware outermost (all inside BentoML's own): the metrics count every
# answer; CORS answers preflights and labels every answer (401, 413 and 429 included); then, without a
# router in front, the rate limit (before any body is read), the timeout (a body that stops coming) and the
# body limit; the token. The prediction routes bound their own body whatever is in front (PredictRoute).
WaterPotability.add_asgi_middleware(RequestMetrics)
if os.environ.get("POTABLE_CORS_ORIGINS"):
    WaterPotability.add_asgi_middleware(
        CORSMiddleware,
        allow_origins=os.environ["POTABLE_CORS_ORIGINS"].split(","),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
if not EDGE_BY_ROUTER and env_number("POTABLE_RATE_LIMIT_PER_SECOND", RATE_LIMIT_DEFAULT) > 0:
    WaterPotability.add_asgi_middleware(ClientRateLimitMiddleware)
if not EDGE_BY_ROUTER:
    WaterPotability.add_asgi_middleware(RequestTimeout)
    WaterPotability.add_asgi_middleware(BodyLimitMiddleware)
if os.environ.get("POTABLE_API_TOKEN"):
    WaterPotability.add_asgi_middleware(BearerTokenMiddleware)
WaterPotability.add_asgi_middleware(PredictRoute)
