"""BentoML service for the water-potability model: seed-compatible `POST /predict`, a batch API, metadata.

The model comes from the BentoML model store, where packaging (tasks/packaging.py) imported it from the
MLflow registry with its version, run, data hash, commit and decision threshold as labels. This module
knows the model store only (never the flows), so a Bento is self-contained.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

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


@bentoml.service(traffic={"timeout": 30})
@bentoml.asgi_app(metadata_app, path="/metadata")
class WaterPotability:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.model = bentoml.mlflow.load_model(self.bento_model)
        self.labels = dict(self.bento_model.info.labels)
        self.threshold = float(self.labels.get("threshold", 0.5))

    def _answer(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        proba = np.asarray(self.model.predict(_frame(samples)), dtype=float)[:, 1]
        predictions = (proba >= self.threshold).astype(int)
        return {
            "predictions": predictions.tolist(),
            "probabilities": [[round(1 - p, 6), round(p, 6)] for p in proba.tolist()],
            "model_version": self.labels.get("model_version", "unknown"),
            "message": f"{int(predictions.sum())} of {len(predictions)} sample(s) predicted potable "
            f"(threshold {self.threshold:.3f})",
        }

    @bentoml.api(input_spec=Sample)
    def predict(self, **sample: Any) -> dict[str, Any]:
        """One sample → the seed's response shape plus the model version."""
        return self._answer([sample])

    @bentoml.api(input_spec=Batch)
    def predict_batch(self, samples: list[Sample]) -> dict[str, Any]:
        """Up to 10,000 samples in one call."""
        return self._answer([s.model_dump() for s in samples])
