"""Chaos: real faults (a cut connection, a corrupted file, two runs at once) and what the platform does.

Each scenario asserts the behaviour and prints its recovery figure; none may lose or move data.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from core.settings import BUNDLED_DATA, MODEL_NAME, PROJECT_ROOT
from flows.promotion import promote
from flows.training import train
from governance.audit import BrokenChain, audit_log
from tasks.data import BatchUnreachable
from tests.chaos.proxy import CuttableProxy
from tests.figures import figure

pytestmark = pytest.mark.e2e
POTABLE = str(PROJECT_ROOT / ".venv" / "bin" / "potable")


def test_s3_down_while_loading_retries_then_fails_clearly_and_keeps_the_object(
    prefect_api, settings, s3_bucket_name, moto_endpoint, alert_receiver, monkeypatch
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.upload_file(str(BUNDLED_DATA), s3_bucket_name, "incoming/water.csv")
    proxy = CuttableProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    monkeypatch.setenv("POTABLE_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("POTABLE_WATCH", f"s3://{s3_bucket_name}/incoming/")
    proxy.cut()  # the S3 endpoint is down
    started = time.monotonic()
    with pytest.raises(BatchUnreachable, match=rf"cannot read s3://{s3_bucket_name}/incoming/water.csv"):
        train(data=f"s3://{s3_bucket_name}/incoming/water.csv", trials=1)
    failed_after = time.monotonic() - started
    assert failed_after >= 10  # three attempts, 2 s and 8 s apart: the retries happened
    time.sleep(2)
    assert [t for t in alert_receiver.texts() if "train failed" in t and "cannot read" in t]
    proxy.restore()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket_name)["Contents"]}
    assert keys == {"incoming/water.csv"}  # not lost, not moved, nothing quarantined
    assert MlflowClient(tracking_uri=settings.tracking_uri).search_registered_models() == []
    figure(f"\nS3 down: 3 attempts, clear failure after {failed_after:.1f} s, alert sent, object kept")
    proxy.cut()


def test_mlflow_store_cut_during_registration_retries_then_fails_naming_it_and_writes_nothing_half(
    prefect_api, settings, postgres_db, alert_receiver, monkeypatch
) -> None:
    """MLflow on Postgres behind a TCP proxy; the proxy is cut the moment the register-model task starts."""
    import threading

    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from tasks.registry import StoreUnreachable

    database = postgres_db()
    proxy = CuttableProxy(5432)
    monkeypatch.setenv("POTABLE_MLFLOW_TRACKING_URI", database.replace(":5432/", f":{proxy.port}/"))
    cut_at: list[float] = []

    def cut_when_registration_starts() -> None:
        named = TaskRunFilter(name=TaskRunFilterName(like_="register-model"))
        with get_client(sync_client=True) as client:
            while not cut_at:
                if any(
                    r.state_type and r.state_type.value == "RUNNING"
                    for r in client.read_task_runs(task_run_filter=named)
                ):
                    proxy.cut()
                    cut_at.append(time.monotonic())
                time.sleep(0.05)

    watcher = threading.Thread(target=cut_when_registration_starts, daemon=True)
    watcher.start()
    with pytest.raises(
        StoreUnreachable, match=r"registering in the MLflow store postgresql\+psycopg2://postgres@127.0.0.1"
    ):
        train(trials=1)
    failed_after = time.monotonic() - cut_at[0]
    assert failed_after >= 10  # three attempts, 2 s and 8 s apart
    time.sleep(2)
    assert [t for t in alert_receiver.texts() if "train failed" in t and "MLflow store" in t]
    proxy.restore()
    store = MlflowClient(tracking_uri=database)
    assert store.search_model_versions() == []  # no version, whole or half
    assert not [e for e in audit_log(settings).entries() if e["action"] == "model_registered"]
    figure(
        f"\nMLflow store cut during registration: 3 attempts, clear failure {failed_after:.1f} s after the cut, "
        "nothing registered"
    )
    proxy.cut()


def test_a_corrupted_audit_trail_is_named_and_never_extended(prefect_api, settings, alert_receiver) -> None:
    audit = audit_log(settings)
    for n in range(3):
        audit.append("chaos", "note", {"model_version": str(n)})
    lines = audit.path.read_text().splitlines()
    lines[1] = lines[1].replace('"note"', '"edited"')  # someone edits history
    audit.path.write_text("\n".join(lines) + "\n")
    verify = subprocess.run(
        [POTABLE, "audit", "verify"],
        env={**os.environ, "POTABLE_HOME": str(settings.home_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 1 and "broken at line 2" in verify.stderr and "Traceback" not in verify.stderr
    before = audit.path.read_bytes()
    with pytest.raises(BrokenChain, match="broken at line 2"):
        audit.append("chaos", "note", {"model_version": "3"})
    # A flow that audits fails on it, and its failure alert names the broken trail.
    with pytest.raises(BrokenChain):
        promote(version="42")
    time.sleep(2)
    assert [t for t in alert_receiver.texts() if "promote failed" in t and "broken at line 2" in t]
    assert audit.path.read_bytes() == before  # nothing appended behind the break
    figure("\naudit trail edited at line 2: verify names it; 2 appends refused; alert sent")


def test_two_batches_at_once_on_the_default_sqlite_stores_both_complete(tmp_path) -> None:
    """Two `potable train` processes on one POTABLE_HOME (SQLite MLflow, Optuna and Prefect): no
    'database is locked', two versions, one intact audit chain."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POTABLE_", "PREFECT_", "MLFLOW_", "BENTOML_"))}
    env |= {"POTABLE_HOME": str(home)}
    shifted = tmp_path / "second.csv"
    shifted.write_bytes(BUNDLED_DATA.read_bytes().replace(b"\n0.", b"\n1.", 1))  # another batch, same shape
    started = time.monotonic()
    runs = [
        subprocess.Popen(  # nosec B603 - our own CLI
            [POTABLE, "train", "--data", str(batch), "--trials", "1"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in (BUNDLED_DATA, shifted)
    ]
    outputs = [r.communicate(timeout=900) for r in runs]
    took = time.monotonic() - started
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-2000:]
        assert "database is locked" not in err
    versions = sorted(json.loads(out.strip().splitlines()[-1])["model_version"] for out, _ in outputs)
    assert versions == ["1", "2"]
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 2
    verify = subprocess.run(
        [POTABLE, "audit", "verify"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert verify.returncode == 0, verify.stderr
    figure(f"\ntwo trains at once on SQLite: both completed in {took:.0f} s; {verify.stdout.strip()}")


def test_the_suite_names_its_scenarios() -> None:
    """The README's reliability table lists each scenario this suite and the loop tests run."""
    readme = (Path(PROJECT_ROOT) / "docs" / "reliability.md").read_text(encoding="utf-8")
    for scenario in (
        "S3 endpoint down",
        "audit trail",
        "two batches at once",
        "live slot killed",
        "worker killed",
        "MLflow store",
    ):
        assert scenario in readme
