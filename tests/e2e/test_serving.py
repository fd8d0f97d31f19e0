"""A packaged Bento served by a real BentoML server answers like the registered model it was built from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import hypothesis
import mlflow
import numpy as np
import pytest
import schemathesis

from core.lineage import training_batch
from core.settings import BUNDLED_DATA, FEATURES, MODEL_NAME, get_settings
from core.versions import ModelRegistry
from deployments.slots import slot_bentoml_home
from flows.training import train
from tasks.data import read_batch, split_batch
from tasks.onnx_export import BackgroundExport
from tasks.packaging import package_version
from tests.e2e.browser import chromium
from tests.figures import figure
from tests.postgres import postgres_databases

pytestmark = pytest.mark.e2e
TOKEN = "test-token-not-a-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RATE, BUDGET = 200, 200  # per-client requests per second (per worker), logged rows per minute
LOW_RATE = 5  # the rate-limit test's own server: a rate any client goes past
REQUEST_TIMEOUT = 5  # seconds from a request's headers to the start of its answer


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(prefect_api, tmp_path_factory):
    """One trained, governed, packaged version and its Bento served for the whole module."""
    home = tmp_path_factory.mktemp("serving") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POTABLE_HOME", str(home))
        for name in ("MLFLOW_TRACKING_URI", "POTABLE_OPTUNA_STORAGE", "POTABLE_S3_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        with postgres_databases() as create:  # the slot also ships its prediction log there
            mp.setenv("POTABLE_PREDICTION_LOG_DATABASE_URL", create())
            mp.setenv("POTABLE_PREDICTION_LOG_SHIP_SECONDS", "0.5")
            yield from _serve_new_version()


def _serve_new_version():
    summary = train(trials=1)
    assert summary["bento_tag"], summary["gate_failures"]
    with bento_server(summary["bento_tag"], _slot_env(RATE)) as base:
        yield base, summary


def _side_server_env(home: Path, rate: float) -> dict[str, str]:
    """A second server beside the module's: its own POTABLE_HOME (prediction log) and BENTOML_HOME (the stores
    linked), since a starting BentoML server wipes its home's Prometheus folder, which would reset the
    module's server's /metrics."""
    env = _slot_env(rate) | {"POTABLE_HOME": str(home)}
    env["BENTOML_HOME"] = str(slot_bentoml_home(home, "side", Path(os.environ["BENTOML_HOME"])))
    env.pop("POTABLE_PREDICTION_LOG_DATABASE_URL", None)
    return env


def _slot_env(rate: float) -> dict[str, str]:
    env = {**os.environ, "BENTOML_HOME": os.environ["BENTOML_HOME"], "POTABLE_API_TOKEN": TOKEN}
    env |= {"POTABLE_RATE_LIMIT_PER_SECOND": str(rate), "POTABLE_PREDICTION_LOG_CLIENT_ROWS_PER_MINUTE": str(BUDGET)}
    return env | {"POTABLE_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT)}


@contextmanager
def bento_server(bento_tag: str, env: dict[str, str]) -> Iterator[str]:
    """`bentoml serve <bento_tag>` on a free port until /readyz answers; stopped (group) on exit."""
    port = _free_port()
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    server = subprocess.Popen(
        [bentoml_cli, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "bentoml serve exited"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def golden_rows(rows: int = 20):
    golden = split_batch(read_batch(BUNDLED_DATA), 0.2, 42).X_test.head(rows)
    return golden, [{k: (None if np.isnan(v) else float(v)) for k, v in r.items()} for r in golden.to_dict("records")]


def test_bento_answers_like_the_registered_model(served) -> None:
    base, summary = served
    from core.settings import Settings

    mlflow.set_tracking_uri(Settings().tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{summary['model_version']}")
    golden, records = golden_rows()
    expected = model.predict_proba(golden)[:, 1]

    for i, body in enumerate(records):
        answer = httpx.post(f"{base}/predict", json=body, headers=AUTH, timeout=30).json()
        assert answer["model_version"] == summary["model_version"]
        assert answer["probabilities"][0][1] == pytest.approx(expected[i], abs=1e-5)  # ONNX parity bound
        assert answer["predictions"] == [int(expected[i] >= summary["threshold"])]

    batch = httpx.post(f"{base}/predict_batch", json={"samples": records}, headers=AUTH, timeout=30).json()
    assert np.allclose([p[1] for p in batch["probabilities"]], expected, atol=1e-5)

    meta = httpx.get(f"{base}/metadata", headers=AUTH, timeout=10).json()
    assert meta["model_version"] == summary["model_version"] and meta["data_sha256"] == summary["data_sha256"]
    assert meta["runtime"] == "onnx"
    public = httpx.get(f"{base}/metadata", timeout=10).json()  # without the token: no lineage
    assert public == {"model_version": summary["model_version"], "runtime": "onnx", "threshold": meta["threshold"]}


def test_a_version_without_onnx_is_served_by_its_sklearn_pipeline(served, tmp_path) -> None:
    """The fallback when the ONNX export fails (here a real fault: the converting process is killed): the
    Bento serves the registered sklearn Pipeline, answering like it (the only path that imports pandas)."""
    _, summary = served
    settings = get_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    version = summary["model_version"]
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    export = BackgroundExport().convert(model, training_batch(summary["mlflow_run_id"]).features)
    os.kill(export._process.pid, signal.SIGKILL)
    packaged = package_version(version, settings, actor="test", onnx_export=export, rebuild=True)
    assert packaged.runtime == "sklearn" and packaged.bento_tag != summary["bento_tag"]
    golden, records = golden_rows()
    expected = model.predict_proba(golden)[:, 1]
    with bento_server(packaged.bento_tag, _side_server_env(tmp_path, RATE)) as base:
        batch = httpx.post(f"{base}/predict_batch", json={"samples": records}, headers=AUTH, timeout=60).json()
        one = httpx.post(f"{base}/predict", json=records[0], headers=AUTH, timeout=60).json()
        meta = httpx.get(f"{base}/metadata", timeout=10).json()
    assert meta == {"model_version": version, "runtime": "sklearn", "threshold": meta["threshold"]}
    assert np.allclose([p[1] for p in batch["probabilities"]], expected, atol=1e-6)
    assert one["probabilities"][0][1] == pytest.approx(expected[0], abs=1e-6)
    assert ModelRegistry(settings).get(version).bento_tag == summary["bento_tag"]  # a rebuild records nothing


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ph": 15.0}, "ph"),
        ({"Sulfate": -1.0}, "Sulfate"),
        ({"Turbidity": "cloudy"}, "Turbidity"),
        ({"Turbidity": "4.0"}, "Turbidity"),  # a numeric string is not a number
        ({"Solids": "1_0"}, "Solids"),
        ({"Chloramines": True}, "Chloramines"),
        ({"colour": 3}, "colour"),
        ({"Hardness": None}, "Hardness"),
    ],
)
def test_bad_input_is_a_field_level_400(served, change, field) -> None:
    base, _ = served
    good = dict.fromkeys(FEATURES, 1.0)
    response = httpx.post(f"{base}/predict", json={**good, **change}, headers=AUTH, timeout=30)
    assert response.status_code == 400 and field in response.text
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200  # still serving


def test_hostile_bodies_get_the_one_error_shape_and_nothing_echoed(served) -> None:
    base, _ = served
    post = {"headers": AUTH | {"Content-Type": "application/json"}, "timeout": 30}
    good = {f: 1.0 for f in FEATURES if f != "ph"}
    pairs = json.dumps(good).encode()[1:-1]
    answers = {
        "malformed": httpx.post(f"{base}/predict", content=b'{"ph": 7,', **post),
        "long key": httpx.post(f"{base}/predict", content=b'{"' + b"k" * 10_000 + b'": 1}', **post),
        "unknown path": httpx.get(f"{base}/no/such/path", timeout=10),
        "huge batch": httpx.post(f"{base}/predict_batch", content=b" " * (8 * 1024 * 1024), **post),
        # A cross-origin page can POST text/plain without a preflight: the service itself refuses it too
        # (`potable serve` runs without the router).
        "text/plain": httpx.post(
            f"{base}/predict", content=json.dumps(good).encode(), headers=AUTH | {"Content-Type": "text/plain"}
        ),
        "no content type": httpx.post(f"{base}/predict", content=json.dumps(good).encode(), headers=AUTH),
        "key twice": httpx.post(f"{base}/predict", content=b'{"ph": 1.0, ' + pairs + b', "ph": 9.0}', **post),
        "NaN literal": httpx.post(f"{base}/predict", content=b'{"ph": NaN, ' + pairs + b"}", **post),
    }
    assert {k: r.status_code for k, r in answers.items()} == {
        "malformed": 400,
        "long key": 400,
        "unknown path": 404,
        "huge batch": 413,  # over the 4 MB limit: refused while reading, not parsed
        "text/plain": 415,
        "no content type": 415,
        "key twice": 400,
        "NaN literal": 400,
    }
    assert "given twice" in answers["key twice"].text and "NaN" in answers["NaN literal"].text
    for name, answer in answers.items():
        body = answer.json()
        assert set(body) == {"error", "detail"} and len(answer.content) < 1_000, name


def test_unknown_paths_do_not_grow_the_metrics(served) -> None:
    base, _ = served
    for i in range(200):
        httpx.get(f"{base}/invented-{i}", timeout=10)
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "invented-" not in metrics and 'endpoint="/unknown"' in metrics


def test_no_page_loads_third_party_scripts(served) -> None:
    base, _ = served
    for path in ("/", "/frontend"):
        page = httpx.get(f"{base}{path}", follow_redirects=True, timeout=10).text
        assert "googletagmanager" not in page and "cdn." not in page and "https://" not in page, path
    assert httpx.get(f"{base}/docs", timeout=10).status_code == 404  # FastAPI's page would load a CDN


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_every_answer_conforms_to_the_schema(served, mode) -> None:
    """Property-based (schemathesis): valid and invalid inputs for every operation, each response checked
    against the schema (status code documented, content type, body shape) and never a server error."""
    base, _ = served
    api = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/predict_batch", "/metadata"}
    for operation in operations:
        if mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # a GET without parameters has no invalid input to generate

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
        )
        def conforms(case) -> None:
            case.call_and_validate(headers=AUTH, timeout=30)

        conforms()


def test_oversized_batch_is_refused(served) -> None:
    base, _ = served
    sample = dict.fromkeys(FEATURES, 1.0)
    response = httpx.post(f"{base}/predict_batch", json={"samples": [sample] * 10_001}, headers=AUTH, timeout=60)
    assert response.status_code == 400 and "samples" in response.text


def test_token_guards_predictions_but_not_health_metrics_or_docs(served) -> None:
    base, _ = served
    sample = dict.fromkeys(FEATURES, 1.0)
    assert httpx.post(f"{base}/predict", json=sample, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{base}/predict", json=sample, headers=wrong, timeout=30).status_code == 401
    for path in ("/readyz", "/livez", "/metrics", "/openapi.json", "/metadata", "/frontend"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
    assert {"/predict", "/predict_batch"} <= set(httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"])


def test_metrics_count_predictions_and_the_log_records_them(served) -> None:
    base, summary = served
    sample = dict.fromkeys(FEATURES, 1.0)
    assert httpx.post(f"{base}/predict", json=sample, headers=AUTH, timeout=30).status_code == 200
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "potable_predictions_total" in metrics and f'model_version="{summary["model_version"]}"' in metrics
    from core.settings import Settings

    records = sorted(_logged(Settings().home_dir), key=lambda r: r["timestamp"])
    assert records and records[-1]["model_version"] == summary["model_version"]
    assert set(records[-1]["inputs"]) == set(FEATURES) and 0.0 <= records[-1]["probability"] <= 1.0
    # ...and shipped to Postgres, where a drift run on another machine reads the same rows
    from tasks.drift import read_prediction_table

    url, deadline = Settings().prediction_log_database_url.get_secret_value(), time.monotonic() + 15
    while len(shipped := read_prediction_table(url)) < len(records) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert len(shipped) >= len(records) and records[-1]["timestamp"] in set(shipped["timestamp"].map(_iso))


def _iso(stamp) -> str:
    return stamp.isoformat()


def _logged(home: Path) -> list[dict]:
    logs = (home / "predictions").glob("predictions-*.jsonl")  # one per server worker and hour
    return [json.loads(line) for log in logs for line in log.read_text().splitlines()]


def test_one_client_cannot_flood_the_prediction_log(served) -> None:
    """A caller sending 3 x 1,000 valid rows gets every answer, but only its per-minute budget reaches the
    drift monitor's log (a random sample); another caller's prediction is logged beside it."""
    from core.settings import Settings

    base, _ = served
    flooder, other = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "198.51.100.8"}
    batch = {"samples": [dict.fromkeys(FEATURES, 1.0) | {"ph": 13.9}] * 1000}
    for _ in range(3):
        answer = httpx.post(f"{base}/predict_batch", json=batch, headers=AUTH | flooder, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1000
    assert httpx.post(f"{base}/predict", json=dict.fromkeys(FEATURES, 2.0), headers=AUTH | other).status_code == 200
    by_client = {}
    for record in _logged(Settings().home_dir):
        by_client.setdefault(record["client"], []).append(record)
    flood = [rows for rows in by_client.values() if rows[0]["inputs"]["ph"] == 13.9]
    assert len(flood) == 1 and BUDGET <= len(flood[0]) <= 2 * BUDGET  # one budget (two if a minute turned)
    assert any(rows[-1]["inputs"]["Hardness"] == 2.0 for rows in by_client.values())
    assert not any("198.51.100" in json.dumps(rows) for rows in by_client.values())  # pseudonymous ids only


def test_a_client_over_its_rate_gets_429_and_others_are_served(served, tmp_path) -> None:
    """Its own server with a low rate (5/s per worker): a loaded CI machine's Python client could not send
    faster than the module's 200/s per worker for 20 s, so the limit was never reached there."""
    import asyncio

    _, summary = served
    sample = dict.fromkeys(FEATURES, 1.0)

    async def loop(client: httpx.AsyncClient, base: str, until: float) -> list[httpx.Response]:
        answers = []
        while time.monotonic() < until:
            answers.append(await client.post(f"{base}/predict", json=sample))
        return answers

    async def hammer(base: str) -> list[httpx.Response]:  # 8 connections looping for 2 s, all one client
        async with httpx.AsyncClient(headers=AUTH | {"X-Forwarded-For": "198.51.100.9"}, timeout=30) as client:
            until = time.monotonic() + 2
            return [r for rs in await asyncio.gather(*(loop(client, base, until) for _ in range(8))) for r in rs]

    with bento_server(summary["bento_tag"], _side_server_env(tmp_path, LOW_RATE)) as base:
        answers = asyncio.run(hammer(base))
        polite = {"X-Forwarded-For": "198.51.100.10"}
        assert httpx.post(f"{base}/predict", json=sample, headers=AUTH | polite, timeout=30).status_code == 200
    limited = [r for r in answers if r.status_code == 429]
    assert limited and {r.status_code for r in answers} == {200, 429}
    assert limited[0].headers["Retry-After"] == "1" and limited[0].json()["error"] == "too many requests"
    figure(f"\nrate limit: {len(limited)} of {len(answers)} requests from one client answered 429")


def test_a_body_that_stops_coming_gets_504_and_is_counted(served) -> None:
    """A client that sends headers and part of its body, then nothing: answered 504 in the error shape once
    REQUEST_TIMEOUT has passed (not held for ever), counted in /metrics under its path and status, and a
    normal client is answered meanwhile."""
    import socket

    base, _ = served
    port = int(base.rsplit(":", 1)[1])
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n"
    stalled = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT + 10)
    stalled.sendall(head + b"Authorization: Bearer " + TOKEN.encode() + b'\r\n\r\n{"ph": 7')
    began = time.monotonic()
    sample = dict.fromkeys(FEATURES, 1.0)
    assert httpx.post(f"{base}/predict", json=sample, headers=AUTH, timeout=10).status_code == 200
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = stalled.recv(4096)
        if not chunk:
            break
        answer += chunk
    waited = time.monotonic() - began
    stalled.close()
    status_line, _, rest = answer.partition(b"\r\n")
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert status_line.split()[1] == b"504" and body["error"] == "request timed out", answer[:300]
    assert REQUEST_TIMEOUT - 0.5 <= waited <= REQUEST_TIMEOUT + 5
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    counted = [line for line in metrics.splitlines() if line.startswith("potable_http_requests_total{")]
    assert any('endpoint="/predict"' in line and 'status="504"' in line for line in counted), counted
    assert any('endpoint="/predict"' in line and 'status="200"' in line for line in counted), counted


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def _fill(driver, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = driver.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.ID, "check").click()


def test_frontend_shows_verdict_probability_and_version(served, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, summary = served
    browser.get(f"{base}/frontend/")
    assert "pH, 0–14" in browser.find_element(By.ID, "ph-hint").text
    sample = {
        "ph": "7.08",
        "Hardness": "204.9",
        "Solids": "20791.3",
        "Chloramines": "7.3",
        "Sulfate": "",
        "Conductivity": "564.3",
        "Organic_carbon": "10.4",
        "Trihalomethanes": "87.0",
        "Turbidity": "2.96",
        "token": TOKEN,
    }
    _fill(browser, sample)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "verdict-text")))
    verdict = browser.find_element(By.ID, "verdict-text").text
    assert verdict in ("Likely potable", "Likely NOT potable")
    assert browser.find_element(By.ID, "model-version").text == summary["model_version"]
    assert browser.find_element(By.ID, "probability").text.endswith("%")
    shot = tmp_path / "frontend-verdict.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"

    # A value outside its range: the service's message appears next to that field, no verdict.
    _fill(browser, {"ph": "15"})
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "ph-error").text != "")
    assert "less than or equal to 14" in browser.find_element(By.ID, "ph-error").text
    assert not browser.find_elements(By.ID, "verdict-text")
