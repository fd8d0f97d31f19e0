"""BentoML service for the water-potability model: seed-compatible `POST /predict`, a batch API, metadata.

The model comes from the BentoML model store, where packaging (tasks/packaging.py) imported it from the
MLflow registry with its version, run, data hash, commit and decision threshold as labels. This module
knows the model store only (never the flows), so a Bento is self-contained.
"""

from __future__ import annotations

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
from fastapi.responses import HTMLResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

# Repeated from potable.settings on purpose: a Bento carries service.py alone and must not import the platform.
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
MODEL_TAG = os.environ.get("POTABLE_BENTO_MODEL_TAG", "water-potability:latest")
PROTECTED_PATHS = ("/predict", "/predict_batch")  # health, metrics, docs and metadata stay open

PREDICTIONS = Counter(
    "potable_predictions",
    "Predictions served, by predicted class and model version",
    ["predicted_class", "model_version"],
)


def prediction_log() -> logging.Logger:
    """JSON lines under POTABLE_HOME/predictions, rotated by size so the log stays bounded (drift monitor input)."""
    logger = logging.getLogger("potable.predictions")
    if not logger.handlers:
        folder = Path(os.environ.get("POTABLE_HOME", ".potable")).expanduser() / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        max_bytes = int(os.environ.get("POTABLE_PREDICTION_LOG_MAX_BYTES", str(20 * 1024 * 1024)))
        handler = RotatingFileHandler(folder / "predictions.jsonl", maxBytes=max_bytes, backupCount=5)
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


def _frame(samples: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{f: s.get(f) for f in FEATURES} for s in samples], columns=FEATURES, dtype="float64")


metadata_app = FastAPI(title="model metadata")


@metadata_app.get("/")
def metadata() -> dict[str, Any]:
    """What is being served: version, alias, threshold, data hash, commit, test metrics."""
    service = bentoml.get_current_service()
    return {"model_tag": str(service.bento_model.tag), **service.labels}


frontend_app = FastAPI(title="lab frontend")
FRONTEND_HTML = Path(__file__).with_name("static") / "frontend.html"


@frontend_app.get("/", response_class=HTMLResponse)
def frontend() -> str:
    """A one-page form for lab technicians (no build step): measurements in, verdict out."""
    return FRONTEND_HTML.read_text(encoding="utf-8")


@bentoml.service(traffic={"timeout": 30})
@bentoml.asgi_app(metadata_app, path="/metadata")
@bentoml.asgi_app(frontend_app, path="/frontend")
class WaterPotability:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        # The sklearn Pipeline itself: pyfunc's per-call schema checks cost more than a small prediction.
        self.model = bentoml.mlflow.load_model(self.bento_model).get_raw_model()
        # Trained to use every core for fitting; per request a thread pool would only add latency.
        self.model.set_params(**{k: 1 for k in self.model.get_params() if k.endswith("n_jobs")})
        self.labels = dict(self.bento_model.info.labels)
        self.threshold = float(self.labels.get("threshold", 0.5))

    def _answer(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        proba = np.asarray(self.model.predict_proba(_frame(samples)), dtype=float)[:, 1]
        predictions = (proba >= self.threshold).astype(int)
        self._record(samples, predictions, proba)
        return {
            "predictions": predictions.tolist(),
            "probabilities": [[round(1 - p, 6), round(p, 6)] for p in proba.tolist()],
            "model_version": self.labels.get("model_version", "unknown"),
            "message": f"{int(predictions.sum())} of {len(predictions)} sample(s) predicted potable "
            f"(threshold {self.threshold:.3f})",
        }

    def _record(self, samples: list[dict[str, Any]], predictions: np.ndarray, proba: np.ndarray) -> None:
        version = self.labels.get("model_version", "unknown")
        now = datetime.now(UTC).isoformat()
        log = prediction_log()
        for sample, predicted, p in zip(samples, predictions.tolist(), proba.tolist(), strict=True):
            PREDICTIONS.labels(predicted_class=str(predicted), model_version=version).inc()
            log.info(
                json.dumps(
                    {
                        "timestamp": now,
                        "model_version": version,
                        "inputs": sample,
                        "prediction": predicted,
                        "probability": round(p, 6),
                    }
                )
            )

    @bentoml.api(input_spec=Sample)
    def predict(self, **sample: Any) -> dict[str, Any]:
        """One sample → the seed's response shape plus the model version."""
        return self._answer([sample])

    @bentoml.api(input_spec=Batch)
    def predict_batch(self, samples: list[Sample]) -> dict[str, Any]:
        """Up to 10,000 samples in one call."""
        return self._answer([s.model_dump() for s in samples])


if os.environ.get("POTABLE_API_TOKEN"):
    WaterPotability.add_asgi_middleware(BearerTokenMiddleware, token=os.environ["POTABLE_API_TOKEN"])
if os.environ.get("POTABLE_CORS_ORIGINS"):
    WaterPotability.add_asgi_middleware(
        CORSMiddleware,
        allow_origins=os.environ["POTABLE_CORS_ORIGINS"].split(","),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
