"""The seed design's serving style, kept as the serving benchmark's baseline: Flask, flat JSON in,
predict_proba of one row per request, under gunicorn. Serves the same registered model version as
the BentoML service it is compared with (POTABLE_BASELINE_MODEL_URI, e.g. models:/water-potability/3).

    gunicorn -w 2 -b 127.0.0.1:5001 benchmarks.seed_flask_app:app
"""

from __future__ import annotations

import os

import mlflow
import pandas as pd
from flask import Flask, jsonify, request

from core.settings import FEATURES

mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
model = mlflow.sklearn.load_model(os.environ["POTABLE_BASELINE_MODEL_URI"])
threshold = float(os.environ.get("POTABLE_BASELINE_THRESHOLD", "0.5"))
app = Flask(__name__)


@app.post("/predict")
def predict():
    payload = request.get_json(force=True)
    row = pd.DataFrame([{f: payload.get(f) for f in FEATURES}], columns=list(FEATURES), dtype="float64")
    proba = model.predict_proba(row)
    return jsonify({"predictions": [int(proba[0, 1] >= threshold)], "probabilities": proba.tolist(), "message": "ok"})
