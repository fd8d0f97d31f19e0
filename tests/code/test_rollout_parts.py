"""Rollout parts: health windows from BentoML's metrics text, router config rendering and refusal."""

from __future__ import annotations

import pytest

from deployments.health import snapshot, window
from deployments.rollout import breached
from deployments.router import NginxRouter, RouterError

LABELS = 'runner_name="WaterPotability",service_name="s",service_version="v"'


def metrics(ok: int, errors: int, ok_fast: int) -> str:
    """BentoML-shaped histogram text: `ok` 200s (`ok_fast` of them under 5 ms, the rest under 1 s)."""
    lines = []
    for endpoint, code, count, fast in (("/predict", "200", ok, ok_fast), ("/predict", "500", errors, errors)):
        for le, value in (("0.005", fast), ("1.0", count), ("+Inf", count)):
            lines.append(
                f'bentoml_service_request_duration_seconds_bucket{{endpoint="{endpoint}",'
                f'http_response_code="{code}",le="{le}",{LABELS}}} {value}'
            )
        count_labels = f'endpoint="{endpoint}",http_response_code="{code}",{LABELS}'
        lines.append(f"bentoml_service_request_duration_seconds_count{{{count_labels}}} {count}")
    health = f'endpoint="/readyz",http_response_code="200",{LABELS}'  # not a prediction: never counted
    lines.append(f"bentoml_service_request_duration_seconds_count{{{health}}} 99")
    return "# TYPE bentoml_service_request_duration_seconds histogram\n" + "\n".join(lines) + "\n"


RULES = {"min_requests": 1, "max_error_rate": 0.01, "max_p99_ms": 500}


def test_window_counts_only_prediction_requests_between_snapshots() -> None:
    before, after = snapshot(metrics(100, 0, 100)), snapshot(metrics(300, 0, 300))
    w = window(before, after)
    assert w.requests == 200 and w.error_rate == 0.0 and w.p99_ms == 5.0
    assert not breached(w, RULES)


def test_errors_and_slow_requests_breach() -> None:
    errors = window(snapshot(metrics(100, 0, 100)), snapshot(metrics(150, 50, 150)))
    assert errors.error_rate == pytest.approx(0.5) and breached(errors, RULES)
    slow = window(snapshot(metrics(100, 0, 100)), snapshot(metrics(200, 0, 100)))
    assert slow.p99_ms == 1000.0 and breached(slow, RULES)


def test_no_traffic_judges_nothing() -> None:
    quiet = window(snapshot(metrics(100, 0, 100)), snapshot(metrics(100, 0, 100)))
    assert quiet.requests == 0 and not breached(quiet, RULES)


def test_router_config_is_checked_before_it_replaces_the_live_one(tmp_path) -> None:
    router = NginxRouter(tmp_path, listen=18080, rate_limit_per_second=100, burst=10)
    router._write_checked("blue", 3101)
    live = router.conf.read_text()
    assert "server 127.0.0.1:3101" in live and "rate=100r/s" in live and "burst=10" in live
    router.rate = "not-a-rate"
    with pytest.raises(RouterError, match="rejected"):
        router._write_checked("green", 3102)
    assert router.conf.read_text() == live  # the refused config never replaced the live one
