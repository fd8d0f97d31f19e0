"""Rollout parts: the router's view of a window, the model-level canary, served intervals, router config.

Hostile and careless clients are part of every check here: nginx's own answers to malformed requests, a
client looping one sample, a client sending thousands of crafted inputs, a slow client."""

from __future__ import annotations

import json

import pytest

from deployments.canary import Canary, Evidence, verdict
from deployments.checks import latency_limit
from deployments.health import RouterLog, Window
from deployments.history import served_intervals, serving_at
from deployments.router import NginxRouter, RouterError

SLOTS = {"blue": 3101, "green": 3102}
CANARY = {
    "min_inputs": 50,
    "min_clients": 2,
    "max_inputs_per_client": 50,
    "max_share_difference": 0.25,
    "max_disagreement_increase": 0.2,
}


def log_lines(path, entries, at: float = 1.0) -> None:
    """Lines as nginx writes them: no upstream (and no upstream status) when nginx answered alone."""
    with open(path, "a", encoding="utf-8") as fh:
        for uri, status, upstream, seconds in entries:
            alone = upstream in ("", "-")
            entry = {
                "time": at,
                "uri": uri,
                "status": status,
                "upstream": upstream,
                "upstream_status": "" if alone else str(status),
                "upstream_time": "" if alone else str(seconds),
                "request_time": seconds,
            }
            fh.write(json.dumps(entry) + "\n")


def test_router_window_charges_the_slot_only_with_answers_it_produced(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    log_lines(path, [("/predict", 200, "127.0.0.1:3101", 0.001)])  # before the window: not counted
    view = RouterLog(path)
    log_lines(path, [("/predict", 200, "127.0.0.1:3102", 0.002)] * 97)
    log_lines(path, [("/predict", 502, "127.0.0.1:3102", 0.0), ("/predict_batch", 504, "127.0.0.1:3102", 2.0)])
    log_lines(path, [("/predict", 200, "127.0.0.1:3101", 9.0)])  # in flight on the old slot
    log_lines(path, [("/readyz", 500, "127.0.0.1:3102", 0.0)])  # not a prediction
    # What nginx answered alone: a malformed Transfer-Encoding (501), a body over the limit (413), the
    # rate limit (429). A hostile client's doing, never the slot's.
    log_lines(path, [("/predict", 501, "", 0.0), ("/predict", 413, "-", 0.0), ("/predict", 429, "", 0.0)] * 20)
    w = view.read(3102)
    assert w.requests == 99 and w.error_rate == pytest.approx(2 / 99) and w.router_answers == 60
    assert w.timed == 98 and w.p99_ms < 10  # the 2 s batch is not a single prediction's time
    assert view.read(3102).requests == 0  # each line is read once


def test_a_slow_client_is_not_the_slots_latency(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    path.write_text("")
    view = RouterLog(path)
    with open(path, "a", encoding="utf-8") as fh:  # 30 s on the wire, 2 ms in the slot
        entry = {"uri": "/predict", "status": 200, "upstream": "127.0.0.1:3102", "upstream_status": "200"}
        fh.write(json.dumps(entry | {"upstream_time": "0.002", "request_time": 30.0}) + "\n")
    assert view.read(3102).p99_ms == pytest.approx(2.0)


def test_the_old_slots_recent_figures_are_its_last_seconds_only(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    log_lines(path, [("/predict", 200, "127.0.0.1:3101", 0.5)] * 10, at=100.0)  # long before
    log_lines(path, [("/predict", 200, "127.0.0.1:3101", 0.004)] * 30, at=195.0)
    log_lines(path, [("/predict", 200, "127.0.0.1:3102", 0.9)] * 30, at=196.0)  # the other slot
    recent = RouterLog(path).recent(3101, seconds=10, now=200.0)
    assert recent.timed == 30 and recent.p99_ms == pytest.approx(4.0)


def test_latency_is_judged_against_the_old_slot_when_there_is_one() -> None:
    rules = {"max_p99_ms": 500, "max_p99_ratio": 3.0, "p99_slack_ms": 20, "min_latency_requests": 50}
    old = Window(100, 0.0, took=(10.0,) * 100)
    assert latency_limit(old, rules)[0] == pytest.approx(50.0)
    assert latency_limit(Window(3, 0.0, took=(10.0,) * 3), rules)[0] == 500  # too few to compare
    assert latency_limit(None, rules)[0] == 500


def test_a_half_written_line_waits_for_the_next_read(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    path.write_text("")
    view = RouterLog(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"uri": "/predict", "status": 500, "upstream": "127.0.0.1:3102", "upstream_status": "500", "re')
    assert view.read(3102).requests == 0
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('quest_time": 0.1}\n')
    assert view.read(3102).error_rate == 1.0


def test_a_truncated_log_is_read_from_the_start(tmp_path) -> None:
    path = tmp_path / "router-access.log"
    log_lines(path, [("/predict", 200, "127.0.0.1:3102", 0.001)] * 10)
    view = RouterLog(path)
    path.write_text("")
    log_lines(path, [("/predict", 500, "127.0.0.1:3102", 0.001)])
    assert view.read(3102).requests == 1


def _honest_clients(evidence: Evidence, clients: int, inputs: int, potable_every: int, start: int = 0) -> None:
    for c in range(clients):
        for i in range(inputs):
            evidence.add(f"lab-{c}", {"ph": float(start + c * 1000 + i)}, int(i % potable_every == 0))


def test_the_canary_calls_potable_share_far_from_the_hold_out_from_several_honest_clients() -> None:
    evidence = Evidence(cap=50)
    _honest_clients(evidence, clients=3, inputs=40, potable_every=1)  # every answer "potable"
    reason, figures = verdict(evidence, 0.35, None, CANARY)
    assert "hold-out" in reason and "120 distinct inputs from 3 clients" in reason
    assert figures["potable_share"] == 1.0


def test_one_sample_looped_is_one_input_and_one_client_is_never_enough() -> None:
    evidence = Evidence(cap=50)
    for _ in range(3669):  # the looping client: one input, answered "potable" each time
        evidence.add("looper", {"ph": 7.0}, 1)
    assert evidence.figures()["inputs"] == 1
    assert verdict(evidence, 0.35, None, CANARY)[0] is None
    lone = Evidence(cap=500)
    _honest_clients(lone, clients=1, inputs=400, potable_every=1)
    assert verdict(lone, 0.35, None, CANARY)[0] is None  # 400 distinct inputs, but one witness


def test_a_client_with_thousands_of_crafted_inputs_cannot_roll_back_alone() -> None:
    """The hostile client chooses inputs the new version calls potable; the lab's traffic is ordinary."""
    evidence = Evidence(cap=50)
    for i in range(5000):
        evidence.add("crafty", {"Solids": float(i)}, 1)
    _honest_clients(evidence, clients=1, inputs=60, potable_every=3)  # ~33 % potable, as on the hold-out
    figures = evidence.figures()
    assert figures["inputs"] == 100  # each client capped at 50 distinct inputs
    reason, figures = verdict(evidence, 0.33, None, CANARY)
    assert reason is None and figures.get("decided_by_one_client") == 1.0
    _honest_clients(evidence, clients=2, inputs=60, potable_every=1, start=10_000)  # two labs see it too
    assert verdict(evidence, 0.33, None, CANARY)[0] is not None


def test_the_canary_compares_both_versions_on_the_same_live_inputs() -> None:
    def old_model(rows):  # the replaced version: potable when ph >= 7
        return (rows["ph"].to_numpy() >= 7).astype(int)

    agreeing, flipped = Evidence(cap=50), Evidence(cap=50)
    for c in range(3):
        for i in range(30):
            ph = 4 + i / 10 + c / 100
            agreeing.add(f"lab-{c}", {"ph": ph}, int(ph >= 7))
            flipped.add(f"lab-{c}", {"ph": ph}, int(ph < 7))  # the new version answers every input the other way
    for evidence in (agreeing, flipped):
        evidence.score_previous(old_model, ["ph"])
    shares = {"max_share_difference": 1.0}
    assert verdict(agreeing, None, 0.1, CANARY | shares)[0] is None
    reason, figures = verdict(flipped, None, 0.1, CANARY | shares)
    assert "disagrees with the previous version on 100.0%" in reason and figures["disagreement"] == 1.0


def test_the_canary_reads_only_the_versions_new_log_lines(tmp_path) -> None:
    folder = tmp_path / "predictions"
    folder.mkdir()
    log = folder / "predictions-1-20261204T15.jsonl"

    def write(version: str, client: str, ph: float, prediction: int) -> None:
        row = {"client": client, "model_version": version, "inputs": {"ph": ph}, "prediction": prediction}
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    write("2", "lab-0", 1.0, 1)  # the smoke test, before the switch
    canary = Canary(folder, "2", CANARY | {"min_inputs": 1}, ["ph"], expected_share=0.0)
    write("1", "lab-0", 2.0, 1)  # the old slot, in flight
    for client in ("lab-0", "lab-1"):
        write("2", client, 3.0 if client == "lab-0" else 4.0, 1)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write('{"client": "lab-2", "model_vers')  # half written: read next time
    reason, figures = canary.check()
    assert figures["inputs"] == 2 and figures["clients"] == 2 and "hold-out" in reason


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
    router = NginxRouter(tmp_path, {"listen": 18080, "rate_limit_per_second": 100, "burst": 10}, SLOTS)
    assert router._write_checked() and not router._write_checked()  # unchanged: nothing to replace
    live = router.conf.read_text()
    assert "server 127.0.0.1:3101" in live and "server 127.0.0.1:3102" in live
    assert "rate=100r/s" in live and "burst=10" in live
    assert "router-access.log potable_json" in live
    router.rules = router.rules | {"rate_limit_per_second": "not-a-rate"}
    with pytest.raises(RouterError, match="rejected"):
        router._write_checked()
    assert router.conf.read_text() == live  # the refused config never replaced the live one


def test_the_shipped_router_config_is_valid_nginx_and_binds_loopback_only(tmp_path, settings) -> None:
    from core import configs

    rules = configs.release(settings).rules()["router"]
    router = NginxRouter(tmp_path, rules, SLOTS)
    router._write_checked()  # `nginx -t` passes
    live = router.conf.read_text()
    assert f"listen 127.0.0.1:{rules['listen']};" in live and "client_max_body_size 16k;" in live
    assert "client_max_body_size 4096k;" in live and "limit_req_status 429;" in live
    with pytest.raises(RouterError, match="without a bearer token"):
        NginxRouter(tmp_path, rules | {"address": "0.0.0.0"}, SLOTS)  # nosec B104 # refused, never bound
    exposed = NginxRouter(tmp_path, rules | {"address": "0.0.0.0"}, SLOTS, token_set=True)  # nosec B104
    assert exposed.url.startswith("http://127.0.0.1:")


def test_a_switch_is_one_marker_file_and_no_reload(tmp_path) -> None:
    router = NginxRouter(tmp_path, {"listen": 18080, "rate_limit_per_second": 100, "burst": 10}, SLOTS)
    assert router.live() == "blue"
    router.switch("green")  # nginx not running: only the marker (a running nginx reads it per request)
    assert router.live() == "green" and router.marker.exists()
    router.switch("blue")
    assert router.live() == "blue" and not router.marker.exists()
    with pytest.raises(RouterError, match="no slot named"):
        router.switch("purple")


def test_a_second_release_on_the_same_target_is_refused_while_one_runs(tmp_path) -> None:
    from deployments.rollout import BlueGreen, RolloutFailed

    config = {"router": {"listen": 18081, "rate_limit_per_second": 10, "burst": 1}, "slots": SLOTS}
    first = BlueGreen(tmp_path, config, lambda *_: None, {})
    second = BlueGreen(tmp_path, config, lambda *_: None, {})
    with first.holding():
        with pytest.raises(RolloutFailed, match="another release is running"):
            second.release("2", "bento:2", None, None)
        assert second.repair() is None  # the supervisor keeps its hands off a release in progress
    with second.holding():  # released again once the first is done
        pass


def test_the_router_serves_https_with_the_operators_certificate(tmp_path) -> None:
    """router.tls: nginx terminates TLS with the given certificate; the watch's probes trust exactly it."""
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    from tests.conftest import free_port

    cert, key = tmp_path / "router.crt", tmp_path / "router.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=potable.example"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )

    class Slot(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's handler name
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_) -> None:
            pass

    slot = ThreadingHTTPServer(("127.0.0.1", 0), Slot)
    threading.Thread(target=slot.serve_forever, daemon=True).start()
    rules = {"listen": free_port(), "rate_limit_per_second": 10, "burst": 10}
    router = NginxRouter(
        tmp_path,
        rules | {"tls": {"certificate": str(cert), "key": str(key)}},
        {"blue": slot.server_address[1], "green": free_port()},
    )
    router.start("blue")
    try:
        assert router.url.startswith("https://127.0.0.1:")
        answer = httpx.get(f"{router.url}/readyz", verify=router.verify, timeout=10)
        assert answer.status_code == 200 and answer.headers["X-Potable-Slot"] == "blue"
        with pytest.raises(httpx.HTTPError):  # an untrusting client refuses the self-signed certificate
            httpx.get(f"{router.url}/readyz", timeout=10)
    finally:
        router.stop()
        slot.shutdown()
