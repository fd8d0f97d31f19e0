"""Rollout parts: the router's view of a window, the model-level canary, served intervals, router config."""

from __future__ import annotations

import json

import pytest

from deployments.health import RouterLog, potable_share, predicted_classes
from deployments.history import served_intervals, serving_at
from deployments.rollout import canary_breach
from deployments.router import NginxRouter, RouterError

CANARY = {"min_requests": 50, "max_share_difference": 0.25}


def log_lines(path, entries) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for uri, status, upstream, seconds in entries:
            fh.write(
                json.dumps(
                    {
                        "time": 1.0,
                        "uri": uri,
                        "status": status,
                        "upstream": upstream,
                        "upstream_status": str(status),
                        "request_time": seconds,
                    }
                )
                + "\n"
            )


def test_router_window_counts_what_clients_got_from_the_new_slot_only(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    log_lines(path, [("/predict", 200, "127.0.0.1:3101", 0.001)])  # before the window: not counted
    view = RouterLog(path)
    log_lines(path, [("/predict", 200, "127.0.0.1:3102", 0.002)] * 97)
    log_lines(path, [("/predict", 502, "127.0.0.1:3102", 0.0), ("/predict_batch", 504, "-", 2.0)])
    log_lines(path, [("/predict", 200, "127.0.0.1:3101", 9.0)])  # in flight on the old slot
    log_lines(path, [("/readyz", 500, "127.0.0.1:3102", 0.0)])  # not a prediction
    w = view.read(3102)
    assert w.requests == 99 and w.error_rate == pytest.approx(2 / 99) and w.p99_ms >= 2.0
    assert view.read(3102).requests == 0  # each line is read once


def test_a_half_written_line_waits_for_the_next_read(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    path.write_text("")
    view = RouterLog(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"uri": "/predict", "status": 500, "upstream": "127.0.0.1:3102", "request_ti')
    assert view.read(3102).requests == 0
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('me": 0.1}\n')
    assert view.read(3102).error_rate == 1.0


def test_a_truncated_log_is_read_from_the_start(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    log_lines(path, [("/predict", 200, "127.0.0.1:3102", 0.001)] * 10)
    view = RouterLog(path)
    path.write_text("")
    log_lines(path, [("/predict", 500, "127.0.0.1:3102", 0.001)])
    assert view.read(3102).requests == 1


def test_predicted_classes_come_from_the_slots_counter_for_its_version() -> None:
    text = "\n".join(
        [
            "# HELP potable_predictions_total Predictions by class and version",
            "# TYPE potable_predictions_total counter",
            'potable_predictions_total{model_version="3",predicted_class="0"} 60.0',
            'potable_predictions_total{model_version="3",predicted_class="1"} 40.0',
            'potable_predictions_total{model_version="2",predicted_class="1"} 999.0',
        ]
    )
    counts = predicted_classes(text + "\n", "3")
    assert counts == {0: 60.0, 1: 40.0}
    assert potable_share({0: 10.0, 1: 0.0}, counts) == (90.0, pytest.approx(40 / 90))


def test_the_canary_rolls_back_a_share_far_from_the_hold_out_or_the_previous_version() -> None:
    assert canary_breach(49, 0.99, 0.35, None, CANARY) is None  # too few answers to judge
    assert "hold-out" in canary_breach(200, 0.95, 0.35, None, CANARY)
    assert canary_breach(200, 0.45, 0.35, None, CANARY) is None
    assert "previous version" in canary_breach(200, 0.45, None, (500, 0.05), CANARY)
    assert canary_breach(200, 0.45, 0.40, (10, 0.05), CANARY) is None  # the old share from too few answers


def test_served_intervals_answer_which_version_served_at_a_time() -> None:
    def entry(ts: str, action: str, **details) -> dict:
        return {"timestamp": ts, "action": action, "subject": {}, "details": details}

    entries = [
        entry("2026-01-01T00:00:00", "switched", version="1", slot="blue", bento_tag="b:1", digest=None),
        entry("2026-01-01T01:00:00", "model_registered"),
        entry("2026-01-01T02:00:00", "switched", version="2", slot="green", bento_tag="b:2", digest="sha256:x"),
        entry("2026-01-01T02:00:10", "rolled_back", version="1", slot="blue", reason="slot green process exited"),
        entry("2026-01-01T03:00:00", "stopped", slot="blue"),
    ]
    intervals = served_intervals(entries)
    assert [(i["version"], i["from"], i["to"]) for i in intervals] == [
        ("1", "2026-01-01T00:00:00", "2026-01-01T02:00:00"),
        ("2", "2026-01-01T02:00:00", "2026-01-01T02:00:10"),
        ("1", "2026-01-01T02:00:10", "2026-01-01T03:00:00"),
    ]
    assert serving_at(intervals, "2026-01-01T02:00:05")["version"] == "2"
    assert serving_at(intervals, "2026-01-01T04:00:00") is None


def test_router_config_is_checked_before_it_replaces_the_live_one(tmp_path) -> None:
    router = NginxRouter(tmp_path, listen=18080, rate_limit_per_second=100, burst=10)
    router._write_checked("blue", 3101)
    live = router.conf.read_text()
    assert "server 127.0.0.1:3101" in live and "rate=100r/s" in live and "burst=10" in live
    assert "router-access.log potable_json" in live
    router.rate = "not-a-rate"
    with pytest.raises(RouterError, match="rejected"):
        router._write_checked("green", 3102)
    assert router.conf.read_text() == live  # the refused config never replaced the live one


def test_a_second_release_on_the_same_target_is_refused_while_one_runs(tmp_path) -> None:
    from deployments.rollout import BlueGreen, RolloutFailed

    config = {"router": {"listen": 18081, "rate_limit_per_second": 10, "burst": 1}}
    first = BlueGreen(tmp_path, config, lambda *_: None, {})
    second = BlueGreen(tmp_path, config, lambda *_: None, {})
    with first.holding():
        with pytest.raises(RolloutFailed, match="another release is running"):
            second.release("2", "bento:2", None, None)
        assert second.repair() is None  # the supervisor keeps its hands off a release in progress
    with second.holding():  # released again once the first is done
        pass
