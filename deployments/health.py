"""Slot health from its own Prometheus /metrics: prediction error rate and p99 over an interval."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

PREDICTION_ENDPOINTS = ("/predict", "/predict_batch")
HISTOGRAM = "bentoml_service_request_duration_seconds"


@dataclass(frozen=True)
class Snapshot:
    """Cumulative request counts by status class, and the duration histogram (le → count)."""

    total: float
    errors: float
    buckets: dict[float, float]


@dataclass(frozen=True)
class Window:
    requests: float
    error_rate: float
    p99_ms: float


def snapshot(metrics_text: str) -> Snapshot:
    total = errors = 0.0
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(metrics_text):
        if family.name != HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.labels.get("endpoint", "").rstrip("/") not in PREDICTION_ENDPOINTS:
                continue
            if sample.name == f"{HISTOGRAM}_count":
                total += sample.value
                errors += sample.value if sample.labels.get("http_response_code", "").startswith("5") else 0
            elif sample.name == f"{HISTOGRAM}_bucket":
                buckets[float(sample.labels["le"])] += sample.value
    return Snapshot(total, errors, dict(buckets))


def read_snapshot(base_url: str) -> Snapshot:
    return snapshot(httpx.get(f"{base_url}/metrics", timeout=5).text)


def window(before: Snapshot, after: Snapshot) -> Window:
    """What happened between two snapshots; p99 is the upper bound of the bucket holding the 99th request."""
    requests = after.total - before.total
    if requests <= 0:
        return Window(0, 0.0, 0.0)
    rate = (after.errors - before.errors) / requests
    p99 = float("inf")
    for le in sorted(after.buckets):
        if after.buckets[le] - before.buckets.get(le, 0.0) >= 0.99 * requests:
            p99 = le
            break
    return Window(requests, rate, p99 * 1000)
