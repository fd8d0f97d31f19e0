"""Release health: what clients see through the router, and what the new slot itself reports.

The watch window judges the router's access log (status codes and response times of the prediction
requests answered by the new slot), the slot's own /metrics, and the model-level canary (the share of
"potable" answers); see deployments/rollout.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

PREDICTION_ENDPOINTS = ("/predict", "/predict_batch")


@dataclass(frozen=True)
class Window:
    """Prediction requests clients sent in an interval, the share answered 5xx, and their p99 (ms)."""

    requests: float
    error_rate: float
    p99_ms: float


PREDICTIONS_COUNTER = "potable_predictions"


def predicted_classes(metrics_text: str, version: str) -> dict[int, float]:
    """Cumulative predictions by class of one model version, from the slot's `potable_predictions_total`."""
    counts = {0: 0.0, 1: 0.0}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in (PREDICTIONS_COUNTER, f"{PREDICTIONS_COUNTER}_total"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("model_version") == version:
                counts[int(sample.labels["predicted_class"])] += sample.value
    return counts


def read_classes(base_url: str, version: str, timeout: float = 2.0) -> dict[int, float]:
    return predicted_classes(httpx.get(f"{base_url}/metrics", timeout=timeout).text, version)


def potable_share(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(answers, share called potable) between two counter readings."""
    zero, one = after[0] - before[0], after[1] - before[1]
    total = zero + one
    return total, (one / total if total > 0 else 0.0)


class RouterLog:
    """What clients saw: the router's JSON access log (status, upstream, request time), read incrementally.

    nginx writes one JSON object per request (infra/nginx/router.conf.template). A window counts the
    prediction requests answered through `upstream_port` (or that reached no upstream at all): a dead
    slot shows here as 502s before its own /metrics could say anything.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self, upstream_port: int) -> Window:
        if not self.path.exists():
            return Window(0, 0.0, 0.0)
        if self.path.stat().st_size < self.offset:  # truncated between releases
            self.offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        took, errors = [], 0
        for line in chunk[:complete].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("uri", "").rstrip("/") not in PREDICTION_ENDPOINTS:
                continue
            upstream = str(entry.get("upstream", ""))
            if upstream not in ("", "-") and not upstream.endswith(f":{upstream_port}"):
                continue  # an in-flight request finishing on the old slot
            took.append(float(entry.get("request_time") or 0) * 1000)
            errors += int(str(entry.get("status", "0")).startswith("5"))
        if not took:
            return Window(0, 0.0, 0.0)
        return Window(len(took), errors / len(took), float(np.percentile(took, 99)))
