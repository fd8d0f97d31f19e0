"""BentoML service for the water-potability model: seed-compatible `POST /predict`, a batch API, metadata.

The model comes from the BentoML model store, where packaging (tasks/packaging.py) imported it from the
MLflow registry with its version, run, data hash, commit and decision threshold as labels. This module
knows the model store only (never the flows), so a Bento is self-contained.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

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
PROTECTED_PATHS = ("/predict", "/predict_batch")  # health, metrics, docs and metadata stay open


def predictions_counter():
    """The predictions counter, made in the worker: prometheus_client must be imported only after BentoML set
    PROMETHEUS_MULTIPROC_DIR, or each worker counts alone and /metrics shows whichever worker answers."""
    from prometheus_client import REGISTRY, Counter

    try:
        return Counter(
            "potable_predictions",
            "Predictions served, by predicted class and model version",
            ["predicted_class", "model_version"],
        )
    except ValueError:  # registered by an earlier import in this process
        return REGISTRY._names_to_collectors["potable_predictions_total"]  # noqa: SLF001


def prediction_log() -> logging.Logger:
    """JSON lines under POTABLE_HOME/predictions, rotated by size so the log stays bounded (drift monitor input).

    One file per server worker: size rotation is only safe with a single writer per file.
    """
    logger = logging.getLogger("potable.predictions")
    if not logger.handlers:
        folder = Path(os.environ.get("POTABLE_HOME", ".potable")).expanduser() / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        max_bytes = int(os.environ.get("POTABLE_PREDICTION_LOG_MAX_BYTES", str(20 * 1024 * 1024)))
        worker = bentoml.server_context.worker_index or 1
        handler = RotatingFileHandler(folder / f"predictions-{worker}.jsonl", maxBytes=max_bytes, backupCount=5)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class BearerTokenMiddleware:
    """Optional auth: when POTABLE_API_TOKEN is set, prediction endpoints need `Authorization: Bearer <token>`."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in PROTECTED_PATHS:
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse({"error": "missing or invalid bearer token"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Sample(BaseModel):
    """One lab sample, the seed API's flat JSON. Bounds are physical; NaN/inf and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    model_config = ConfigDict(extra="forbid")

    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH, description=f"at most {MAX_BATCH} samples")


api = FastAPI(title="water potability", description="Seed-compatible prediction API, metadata and lab form")


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
        frame = pd.DataFrame(rows, columns=FEATURES)
        return np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)[:, 1]

    @property
    def slow(self) -> bool:
        """sklearn takes ~100 ms per call: keep it off the event loop."""
        return self.session is None


@bentoml.service(
    workers=int(WORKERS) if WORKERS.isdigit() else WORKERS,
    traffic={"timeout": 30},
    tracing={"excluded_urls": ["predict"]},
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
        prediction_log()
        # Objects alive now live as long as the server: keep them out of the cyclic GC, whose full
        # passes over BentoML's and the model's heap were the 200-300 ms tail under load.
        gc.freeze()

    def answer(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        proba = self.scorer.positive(_rows(samples))
        predictions = (proba >= self.threshold).astype(int)
        self._record(samples, predictions, proba)
        return {
            "predictions": predictions.tolist(),
            "probabilities": [[round(1 - p, 6), round(p, 6)] for p in proba.tolist()],
            "model_version": self.version,
            "message": f"{int(predictions.sum())} of {len(predictions)} sample(s) predicted potable "
            f"(threshold {self.threshold:.3f})",
        }

    def _record(self, samples: list[dict[str, Any]], predictions: np.ndarray, proba: np.ndarray) -> None:
        now = datetime.now(UTC).isoformat()
        log = prediction_log()
        for sample, predicted, p in zip(samples, predictions.tolist(), proba.tolist(), strict=True):
            self.counted[predicted].inc()
            record = {"timestamp": now, "model_version": self.version, "inputs": sample, "prediction": predicted}
            log.info(json.dumps(record | {"probability": round(p, 6)}))


async def _answer(samples: list[dict[str, Any]]) -> dict[str, Any]:
    service = bentoml.get_current_service()
    if service.scorer.slow or len(samples) > 64:
        return await run_in_threadpool(service.answer, samples)
    return service.answer(samples)  # ~0.1 ms in ONNX Runtime: a thread hop would cost more


@api.post("/predict")
async def predict(sample: Sample) -> dict[str, Any]:
    """One sample (the seed API's flat JSON) → the seed's response shape plus the model version."""
    return await _answer([sample.model_dump()])


@api.post("/predict_batch")
async def predict_batch(batch: Batch) -> dict[str, Any]:
    """Up to 10,000 samples in one call."""
    return await _answer([s.model_dump() for s in batch.samples])


@api.get("/metadata")
def metadata() -> dict[str, Any]:
    """What is being served: version, alias, threshold, data hash, commit, test metrics, runtime."""
    service = bentoml.get_current_service()
    return {"model_tag": str(service.bento_model.tag), **service.labels}


@api.get("/frontend", response_class=HTMLResponse)
def frontend() -> str:
    """A one-page form for lab technicians (no build step): measurements in, verdict out."""
    return FRONTEND_HTML.read_text(encoding="utf-8")


@api.exception_handler(RequestValidationError)
async def invalid_input(_request, exc: RequestValidationError) -> JSONResponse:
    """400 with one entry per bad field (loc starts with the field name, as the frontend expects)."""
    detail = [
        {"loc": [str(part) for part in error["loc"] if part != "body"] or ["body"], "msg": error["msg"]}
        for error in exc.errors()
    ]
    return JSONResponse({"error": "invalid input", "detail": detail}, status_code=400)


# Mounted at the root: BentoML's own routes (/livez, /readyz, /metrics) match first, and its middleware
# (metrics, tracing, the token and CORS below) wraps these routes too. Plain FastAPI routes instead of
# @bentoml.api because BentoML's per-call dispatch costs about twice a FastAPI route here (measured).
WaterPotability = bentoml.asgi_app(api, path="/")(WaterPotability)

if os.environ.get("POTABLE_API_TOKEN"):
    WaterPotability.add_asgi_middleware(BearerTokenMiddleware, token=os.environ["POTABLE_API_TOKEN"])
if os.environ.get("POTABLE_CORS_ORIGINS"):
    WaterPotability.add_asgi_middleware(
        CORSMiddleware,
        allow_origins=os.environ["POTABLE_CORS_ORIGINS"].split(","),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
