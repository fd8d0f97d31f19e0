"""The `potable` CLI as a user runs it: its own private Prefect server, exit codes, JSON last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from core.settings import BUNDLED_DATA, MODEL_NAME, PROJECT_ROOT

pytestmark = pytest.mark.e2e
POTABLE = str(Path(sys.executable).with_name("potable"))


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "POTABLE_HOME": str(home)}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(name, None)
    return subprocess.run(
        [POTABLE, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_validate_good_batch_prints_one_line(tmp_path) -> None:
    done = run_cli("validate", str(BUNDLED_DATA), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batch valid: 3276 rows")


def test_validate_bad_batch_exits_1_with_a_readable_report(tmp_path, reference_frame) -> None:
    bad = tmp_path / "bad.csv"
    reference_frame.assign(Chloramines=-3.0).to_csv(bad, index=False)
    done = run_cli("validate", str(bad), home=tmp_path / "home")
    assert done.returncode == 1
    assert "expect_column_values_to_be_between [Chloramines]" in done.stderr and "-3.0" in done.stderr
    assert "Traceback" not in done.stderr
    assert bad.exists()  # validate alone does not quarantine unless asked


def test_train_prints_a_json_summary_as_last_line(tmp_path) -> None:
    home = tmp_path / "home"
    done = run_cli("train", "--trials", "2", "--seed", "7", home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("model_name", "model_version", "mlflow_run_id", "data_sha256", "threshold", "metrics"):
        assert key in summary
    assert summary["model_name"] == MODEL_NAME and "roc_auc" in summary["metrics"]
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias(MODEL_NAME, "candidate").version) == summary["model_version"]
    assert (home / "prefect" / "prefect.db").exists()  # the runs stay inspectable in the Prefect UI


def test_train_on_a_bad_batch_exits_1_quarantines_and_registers_nothing(tmp_path, reference_frame) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad.csv"
    reference_frame.assign(Potability=reference_frame["Potability"] * 3).to_csv(bad, index=False)
    done = run_cli("train", "--data", str(bad), "--trials", "1", home=home)
    assert done.returncode == 1
    assert "nothing registered" in done.stderr and "expect_column_values_to_be_in_set [Potability]" in done.stderr
    assert bad.exists() and list((home / "quarantine").glob("*/bad.csv"))  # a named file is copied, never moved
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert client.search_registered_models() == []


def test_train_on_a_missing_file_exits_1(tmp_path) -> None:
    done = run_cli("train", "--data", str(tmp_path / "absent.csv"), home=tmp_path / "home")
    assert done.returncode == 1 and "input file not found" in done.stderr


def test_promote_waits_for_potable_approve_then_reports(tmp_path) -> None:
    home = tmp_path / "home"
    trained = run_cli("train", "--trials", "1", home=home)
    assert trained.returncode == 0, trained.stderr[-3000:]
    version = json.loads(trained.stdout.strip().splitlines()[-1])["model_version"]

    env = {**os.environ, "POTABLE_HOME": str(home)}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(name, None)
    waiting = subprocess.Popen(
        [POTABLE, "promote", "--version", version],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listed = None
        for _ in range(120):  # until the promotion is paused and waiting
            listed = run_cli("approvals", home=home)
            if listed.returncode == 0 and f"v{version} " in listed.stdout:
                break
            time.sleep(1)
        assert f"v{version} " in listed.stdout and "/runs/flow-run/" in listed.stdout, listed.stderr
        answered = None
        for _ in range(30):
            answered = run_cli("approve", "--version", version, "--approver", "carol", "--comment", "ok", home=home)
            if answered.returncode == 0:
                break
            time.sleep(1)
        assert answered.returncode == 0, answered.stderr
        out, err = waiting.communicate(timeout=180)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["champion"] == version

    lineage = run_cli("audit", "lineage", "--version", version, home=home)
    assert lineage.returncode == 0
    for action in ("batch_validated", "model_registered", "gate_passed", "promotion_approved", "alias_moved"):
        assert action in lineage.stdout
    assert "carol" in lineage.stdout
    assert run_cli("audit", "verify", home=home).returncode == 0
    report = run_cli("governance", "report", "--version", version, home=home)
    assert report.returncode == 0 and Path(report.stdout.strip()).read_text().startswith("<!doctype html>")


def test_up_on_a_public_address_without_auth_starts_nothing(tmp_path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "POTABLE_HOME": str(home), "POTABLE_BIND_HOST": "0.0.0.0"}  # nosec B104 - under test
    for name in ("PREFECT_API_URL", "PREFECT_SERVER_API_AUTH_STRING", "POTABLE_MLFLOW_AUTH_CONFIG"):
        env.pop(name, None)
    done = subprocess.run([POTABLE, "up"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "without authentication" in done.stderr and "Traceback" not in done.stderr
    assert not (home / "logs" / "prefect-server.log").exists()  # refused before the first service started


def test_an_expected_error_is_one_line_and_debug_adds_the_traceback(tmp_path) -> None:
    missing = str(tmp_path / "absent.csv")
    plain = run_cli("validate", missing, home=tmp_path / "home")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [f"validation failed: input file not found: {missing}"]
    debug = run_cli("--debug", "validate", missing, home=tmp_path / "home")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "BatchError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == f"validation failed: input file not found: {missing}"
