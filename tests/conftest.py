"""Shared fixtures: an isolated POTABLE_HOME per test, a real Prefect server, a moto S3 server."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from core.settings import BUNDLED_DATA, Settings
from tests.postgres import postgres_databases

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_configure(config: pytest.Config) -> None:
    """One BentoML store per test process, set before any test module is imported: BentoML reads
    BENTOML_HOME once, when it is first imported, and packaging refuses to switch it afterwards
    (tasks/packaging.py), so every home a test process uses shares the process's store, as every real
    process has one. Processes the tests start get their home's own store (core/environment.py)."""
    if not os.environ.get("BENTOML_HOME"):
        config.potable_bentoml_home = tempfile.mkdtemp(prefix="potable-bentoml-")
        os.environ["BENTOML_HOME"] = config.potable_bentoml_home


def pytest_unconfigure(config: pytest.Config) -> None:
    store = getattr(config, "potable_bentoml_home", None)
    if store:
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def potable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh POTABLE_HOME with the default (SQLite) MLflow and Optuna stores inside it."""
    home = tmp_path / "potable-home"
    monkeypatch.setenv("POTABLE_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "POTABLE_OPTUNA_STORAGE", "POTABLE_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def settings(potable_home: Path) -> Settings:
    s = Settings()
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def reference_frame() -> pd.DataFrame:
    return pd.read_csv(BUNDLED_DATA)


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write a DataFrame (or raw text/bytes) to a CSV file in tmp_path and return its path."""

    def _write(content, name: str = "batch.csv") -> Path:
        path = tmp_path / name
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server in server mode on 127.0.0.1: the S3 API our production code path talks to."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_name(moto_endpoint: str, potable_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the moto server; the settings point at it through POTABLE_S3_ENDPOINT_URL."""
    import uuid

    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POTABLE_S3_ENDPOINT_URL": moto_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    name = f"landing-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect server for in-process flow runs (Prefect's own test harness)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class AlertReceiver:
    """A local webhook that records alerts Apprise posts to a `json://` URL (title, message, type), in order."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []
        self.status = 200

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        receiver = self
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [f"{message['title']}\n{message['message']}" for message in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def alert_receiver(monkeypatch: pytest.MonkeyPatch):
    receiver = AlertReceiver()
    monkeypatch.setenv("POTABLE_ALERT_URLS", receiver.url)
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def sns_inbox(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """An SNS topic on moto (POTABLE_SNS_TOPIC_ARN) with an SQS queue subscribed; returns a reader of it."""
    import json
    import uuid

    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POTABLE_SNS_ENDPOINT_URL": moto_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"inbox-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("POTABLE_SNS_TOPIC_ARN", topic)

    def read() -> list[dict]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]  # SNS envelope: Subject, Message

    return read


@pytest.fixture
def postgres_db():
    with postgres_databases() as create:
        yield create


@pytest.fixture(autouse=True)
def _figures_go_on_the_report(request):
    from tests import figures

    figures.CURRENT = request.node
    yield
    figures.CURRENT = None


def pytest_runtest_logreport(report) -> None:
    from tests.figures import collect

    collect(report)


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.figures import MEASURED  # one module for every importer (conftest itself is imported twice)

    if MEASURED:
        terminalreporter.section("measured figures")
        for line in MEASURED:
            terminalreporter.write_line(line)
