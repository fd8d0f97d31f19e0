"""`potable up` on real processes: Prefect server (UI, scheduler, triggers), worker, MLflow UI, watcher.

moto (S3, SNS, SQS) on 127.0.0.1 and a local Slack receiver stand in for AWS and Slack. The module runs
against SQLite and, for the Prefect server's database, against Postgres on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
import yaml

from core.settings import CONFIG_DIR
from tests.conftest import AlertReceiver, free_port
from tests.figures import figure

pytestmark = pytest.mark.e2e
POTABLE = str(Path(sys.executable).with_name("potable"))
DEPLOYMENTS = {"train", "train-scheduled", "train-on-arrival", "promote", "release", "monitor-drift", "tune-share"}


def _postgres_url() -> str | None:
    """A fresh database on the machine's Postgres (trust auth), or None when there is none."""
    try:
        import psycopg2
    except ImportError:
        return None
    name = f"potable_prefect_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        return None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(request, tmp_path_factory, moto_endpoint, reference_frame):
    """`potable up` with the landing area on a moto bucket; `potable down` in teardown."""
    home = tmp_path_factory.mktemp(f"ops-{request.param}") / "home"
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys(aws))
    s3.create_bucket(Bucket=bucket)
    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys(aws))
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys(aws))
    topic = sns.create_topic(Name=f"alerts-{bucket}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"inbox-{bucket}")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
    training = yaml.safe_load((CONFIG_DIR / "training.yaml").read_text())
    training["tuning"]["n_trials"] = 1  # (was a top-level `n_trials`, silently ignored until configs were typed)
    (home.parent / "training.yaml").write_text(yaml.safe_dump(training))
    alerts = AlertReceiver()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "POTABLE_", "MLFLOW_"))},
        **aws,
        "POTABLE_HOME": str(home),
        "POTABLE_PREFECT_PORT": str(free_port()),
        "POTABLE_MLFLOW_PORT": str(free_port()),
        "POTABLE_REPORTS_PORT": str(free_port()),
        "POTABLE_WATCH": f"s3://{bucket}/incoming/",
        "POTABLE_WATCH_INTERVAL_SECONDS": "1",
        "POTABLE_S3_ENDPOINT_URL": moto_endpoint,
        "POTABLE_SNS_ENDPOINT_URL": moto_endpoint,
        "POTABLE_SNS_TOPIC_ARN": topic,
        "POTABLE_ALERT_URLS": alerts.url,
        "POTABLE_TRAINING_CONFIG": str(home.parent / "training.yaml"),
        "POTABLE_WORKER_POLL_SECONDS": "1",
        "POTABLE_START_TIMEOUT_SECONDS": "300",  # a loaded CI machine: MLflow alone has taken over 2 min
    }
    if request.param == "postgres":
        url = _postgres_url()
        if url is None:
            pytest.skip("no Postgres on 127.0.0.1:5432")
        env["POTABLE_PREFECT_DATABASE_URL"] = url
    up = subprocess.run([POTABLE, "up"], env=env, capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        api = f"http://127.0.0.1:{env['POTABLE_PREFECT_PORT']}/api"
        yield {
            "env": env,
            "api": api,
            "s3": s3,
            "bucket": bucket,
            "alerts": alerts,
            "sqs": sqs,
            "inbox": inbox,
            "up": up,
        }
    finally:
        subprocess.run([POTABLE, "down"], env=env, capture_output=True, timeout=120)
        alerts.stop()


def _keys(aws: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": aws["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"]}


def _runs(api: str, deployment: str) -> list[dict]:
    deployments = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": [deployment]}}})
    ids = [d["id"] for d in deployments.json()]
    body = {"flow_runs": {"deployment_id": {"any_": ids}}, "sort": "EXPECTED_START_TIME_ASC"}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def _wait_final(api: str, deployment: str, count: int, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in _runs(api, deployment) if r["state_type"] != "SCHEDULED"]
        if len(runs) >= count and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs):
            return runs
        time.sleep(1)
    raise AssertionError(f"{deployment}: {[(r['name'], r['state_type']) for r in _runs(api, deployment)]}")


def test_up_shows_progress_then_one_screen_and_status_adds_the_router_and_health(platform) -> None:
    up, env = platform["up"], platform["env"]
    steps = [line for line in up.stderr.splitlines() if re.search(r"\s\d+\.\d s$", line)]
    assert [s for s in steps if "prefect-server answering" in s] and [s for s in steps if "reports answering" in s]
    screen = up.stdout
    for shown in (
        f"http://127.0.0.1:{env['POTABLE_PREFECT_PORT']}",
        f"http://127.0.0.1:{env['POTABLE_MLFLOW_PORT']}",
        f"http://127.0.0.1:{env['POTABLE_REPORTS_PORT']}",
        "Landing folder",
        "Alerts go to",
        "alerts.jsonl",
        "; json",  # the configured Apprise URL, named by its kind, never with its address (it may hold a token)
        "Router",
        "./dev potable down",
    ):
        assert shown in screen, shown
    assert platform["alerts"].url.split("//")[1] not in screen
    status = subprocess.run([POTABLE, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert " ok " in rows["prefect-server"] and " ok " in rows["mlflow"] and " ok " in rows["reports"]
    assert "router" in rows and "live" in rows and "alerts" in rows and "POTABLE_REPORTS_PORT" in rows["ports"]


def test_deployments_are_registered_and_cron_ones_get_scheduled_runs(platform) -> None:
    api = platform["api"]
    names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()}
    assert names == DEPLOYMENTS
    for cron_deployment in ("train-scheduled", "monitor-drift"):
        scheduled = [r for r in _runs(api, cron_deployment) if r["state_type"] == "SCHEDULED"]
        assert scheduled, f"the scheduler made no runs for {cron_deployment}"


def test_good_upload_trains_exactly_once_and_the_alert_webhook_hears(platform) -> None:
    api, s3, bucket, alerts = platform["api"], platform["s3"], platform["bucket"], platform["alerts"]
    data = (Path(__file__).resolve().parents[2] / "data" / "water_potability.csv").read_bytes()
    uploaded = time.time()
    s3.put_object(Bucket=bucket, Key="incoming/good.csv", Body=data)
    (run,) = _wait_final(api, "train-on-arrival", 1)
    assert run["state_type"] == "COMPLETED" and run["parameters"]["data"] == f"s3://{bucket}/incoming/good.csv"
    created, started, finished = (_epoch(run[k]) - uploaded for k in ("created", "start_time", "end_time"))
    figure(f"\nupload → run created {created:.1f} s, → flow code running {started:.1f} s, → completed {finished:.1f} s")
    time.sleep(3)  # the completion hook posts as the run ends
    assert [t for t in alerts.texts() if "train completed" in t and "good.csv" in t]
    assert len(_runs(api, "train-on-arrival")) == 1  # one object, one run


def test_bad_upload_fails_in_validation_and_alerts_a_webhook_and_sns(platform, reference_frame) -> None:
    api, s3, bucket, alerts = platform["api"], platform["s3"], platform["bucket"], platform["alerts"]
    bad = reference_frame.copy()
    bad.loc[7, "Chloramines"] = -4.0
    s3.put_object(Bucket=bucket, Key="incoming/bad.csv", Body=bad.to_csv(index=False).encode())
    runs = _wait_final(api, "train-on-arrival", 2)
    failed = [r for r in runs if r["parameters"]["data"].endswith("incoming/bad.csv")]
    assert len(failed) == 1 and failed[0]["state_type"] == "FAILED"
    time.sleep(3)
    failed_alerts = [t for t in alerts.texts() if "train BatchRejected" in t]
    assert failed_alerts and "Chloramines" in failed_alerts[-1] and "batch rejected by validation" in failed_alerts[-1]
    messages = platform["sqs"].receive_message(QueueUrl=platform["inbox"], MaxNumberOfMessages=10, WaitTimeSeconds=2)
    bodies = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    subject = "[potable] failed: train BatchRejected"
    assert [b for b in bodies if b["Subject"] == subject and "Chloramines" in b["Message"]]


def test_prefect_ui_shows_the_deployments_and_the_last_run(platform, tmp_path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.e2e.browser import chromium

    ui = platform["api"].removesuffix("/api")
    last = _runs(platform["api"], "train-on-arrival")[-1]["name"]
    with chromium() as browser:
        browser.get(f"{ui}/deployments")
        WebDriverWait(browser, 60).until(lambda b: "train-on-arrival" in b.page_source)
        assert all(name in browser.page_source for name in DEPLOYMENTS)
        browser.save_screenshot(str(tmp_path / "prefect-deployments.png"))
        browser.get(f"{ui}/runs")
        WebDriverWait(browser, 60).until(lambda b: last in b.page_source)
        browser.save_screenshot(str(tmp_path / "prefect-runs.png"))
    assert (tmp_path / "prefect-runs.png").stat().st_size > 10_000


def test_down_leaves_no_process_running(platform) -> None:
    env = platform["env"]
    home = Path(env["POTABLE_HOME"])
    services = ("prefect-server", "worker", "mlflow", "reports", "watcher")
    pids = [json.loads((home / "run" / f"{name}.json").read_text())["pid"] for name in services]
    done = subprocess.run([POTABLE, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "prefect-server" in done.stdout
    import psutil

    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert subprocess.run([POTABLE, "status"], env=env, capture_output=True, timeout=60).returncode == 1


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()
