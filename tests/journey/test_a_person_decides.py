"""What a person meets, in headless Chromium: `potable up` without auto-approve, a dropped CSV becomes a paused
promotion whose form shows the evidence; the person reads the version and its ROC-AUC there, rejects it, and
the runs list says Rejected. A batch that the (tightened) policy refuses ends as GateFailed, alerted. The model
card and the Data Docs open from the artifacts' links with every host but loopback unreachable.
Screenshots are kept under test-artifacts/journey/ (POTABLE_TEST_ARTIFACTS), for CI to keep."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from core.settings import BUNDLED_DATA, CONFIG_DIR, MODEL_NAME, PROJECT_ROOT
from tests.batches import remeasured
from tests.conftest import free_port
from tests.e2e.browser import NETWORK_CUT, chromium
from tests.journey.conftest import User, release_config, user_environment

pytestmark = pytest.mark.journey
SCREENSHOTS = Path(os.environ.get("POTABLE_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts")) / "journey"


def _wait(condition, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (httpx.HTTPError, AssertionError, OSError, KeyError, ValueError):
            found = None
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _runs(api: str, flow: str) -> list[dict]:
    body = {"flows": {"name": {"any_": [flow]}}, "sort": "START_TIME_DESC"}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def _artifact_link(api: str, key: str) -> str:
    """The first http link of the newest artifact under `key`: what a person clicks in the run's Artifacts tab."""
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    (artifact,) = httpx.post(f"{api}/artifacts/filter", json=body, timeout=10).json()
    return re.search(r"\]\((http://127\.0\.0\.1:\d+/[^)\s]+)\)", artifact["data"]).group(1)


def _shot(browser, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    print(f"screenshot: {SCREENSHOTS / name}.png")


@pytest.fixture
def platform(fresh_home, tmp_path):
    training = yaml.safe_load((CONFIG_DIR / "training.yaml").read_text())
    training["tuning"]["n_trials"] = 2
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(training))
    policy = tmp_path / "policy.yaml"
    shutil.copy(CONFIG_DIR / "policy.yaml", policy)
    ports = {name: str(free_port()) for name in ("prefect", "mlflow", "reports")}
    env = user_environment(
        POTABLE_HOME=str(fresh_home),
        POTABLE_RELEASE_CONFIG=str(release_config(tmp_path)),
        POTABLE_TRAINING_CONFIG=str(tmp_path / "training.yaml"),
        POTABLE_POLICY_CONFIG=str(policy),  # the operator's copy of the policy, tightened below
        POTABLE_PREFECT_PORT=ports["prefect"],
        POTABLE_MLFLOW_PORT=ports["mlflow"],
        POTABLE_REPORTS_PORT=ports["reports"],
        POTABLE_WATCH_INTERVAL_SECONDS="1",
        POTABLE_WORKER_POLL_SECONDS="1",
        POTABLE_START_TIMEOUT_SECONDS="300",
    )
    user = User(env)
    up = user.run("potable", "up")
    try:
        yield {
            "user": user,
            "up": up,
            "home": fresh_home,
            "policy": policy,
            "ui": f"http://127.0.0.1:{ports['prefect']}",
            "api": f"http://127.0.0.1:{ports['prefect']}/api",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
        }
    finally:
        user.run("potable", "down")


def _tested_roc_auc(mlflow: str, version: str) -> float:
    """The version's held-out ROC-AUC as MLflow recorded it (not through our code)."""
    found = httpx.get(
        f"{mlflow}/api/2.0/mlflow/model-versions/get", params={"name": MODEL_NAME, "version": version}, timeout=10
    ).json()["model_version"]
    run = httpx.get(f"{mlflow}/api/2.0/mlflow/runs/get", params={"run_id": found["run_id"]}, timeout=10).json()
    return next(m["value"] for m in run["run"]["data"]["metrics"] if m["key"] == "test_roc_auc")


def _reject_in_the_form(browser, ui: str, run_id: str, approver: str) -> tuple[str, float]:
    """Open the paused run, press Resume, read the form's evidence, reject. Returns (version, ROC-AUC) read."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def button(scope, label: str):
        return next((b for b in scope.find_elements(By.TAG_NAME, "button") if b.text.strip() == label), None)

    browser.get(f"{ui}/runs/flow-run/{run_id}")
    WebDriverWait(browser, 60).until(lambda b: button(b, "Resume"))
    button(browser, "Resume").click()
    WebDriverWait(browser, 60).until(
        lambda b: [d for d in b.find_elements(By.CSS_SELECTOR, "[role=dialog]") if "as champion?" in d.text]
    )
    dialog = browser.find_element(By.CSS_SELECTOR, "[role=dialog]")
    text = dialog.text
    version = re.search(r"Approve v(\d+) as champion\?", text).group(1)
    roc_auc = float(re.search(r"ROC-\s*AUC\s+(\d\.\d{4})", text).group(1))
    assert "Policy gate: PASSED" in text and "min_test_roc_auc" in text, text
    approver_box, comment_box = dialog.find_elements(By.TAG_NAME, "textarea")
    approver_box.send_keys(approver)
    comment_box.send_keys("false-potable rate too high for our plant")
    decision = next(s for s in dialog.find_elements(By.TAG_NAME, "select") if "reject" in s.text)
    Select(decision).select_by_visible_text("reject")
    _shot(browser, "1-approval-form-filled")
    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in console if "description" in m and "404" in m], console  # the form found its evidence
    button(dialog, "Submit").click()
    return version, roc_auc


def test_a_person_reads_the_evidence_rejects_and_sees_every_no_named(platform) -> None:
    user, home, ui, api = platform["user"], platform["home"], platform["ui"], platform["api"]
    assert "Needs a person" in platform["up"].stdout and "alerts.jsonl" in platform["up"].stdout
    shutil.copy(BUNDLED_DATA, home / "landing" / "lab-batch-1.csv")
    paused = _wait(
        lambda: [r for r in _runs(api, "promote") if r["state_type"] == "PAUSED"], 600, "the promotion to wait"
    )[0]

    with chromium() as browser:
        version, roc_auc = _reject_in_the_form(browser, ui, paused["id"], "dana")
        assert version == "1" and roc_auc == pytest.approx(_tested_roc_auc(platform["mlflow"], version), abs=5e-5)
        _wait(lambda: httpx.get(f"{api}/flow_runs/{paused['id']}").json()["state_name"] == "Rejected", 60, "Rejected")
        browser.get(f"{ui}/runs")
        _wait(lambda: "Rejected" in browser.page_source and paused["name"] in browser.page_source, 60, "the list")
        _shot(browser, "2-runs-list-rejected")

        # The operator tightens the policy; the next batch trains a version the gate refuses.
        policy = yaml.safe_load(platform["policy"].read_text())
        policy["rules"][0]["limit"] = 0.99  # min_test_roc_auc: no model on this data can meet it
        platform["policy"].write_text(yaml.safe_dump(policy))
        batch = remeasured(pd.read_csv(BUNDLED_DATA).sample(400, random_state=7), seed=7)
        batch.to_csv(home / "landing" / "lab-batch-2.csv", index=False)
        gated = _wait(
            lambda: [r for r in _runs(api, "train") if r["state_name"] == "GateFailed"], 600, "the gate to refuse"
        )[0]
        browser.get(f"{ui}/runs?" + "&".join(f"state={s}" for s in ("Paused", "GateFailed", "RolledBack", "Failed")))
        _wait(lambda: gated["name"] in browser.page_source and "GateFailed" in browser.page_source, 60, "filter")
        assert paused["name"] not in browser.page_source  # decided: no longer waiting for anyone
        _shot(browser, "3-needs-a-person-gate-failed")
    alerts = _wait(lambda: "train GateFailed" in (a := user.run("potable", "alerts").stdout) and a, 60, "alert")
    assert [line for line in alerts.splitlines() if "WARNING" in line and "train GateFailed" in line], alerts
    assert [line for line in alerts.splitlines() if "promote Rejected" in line], alerts

    # The model card and the batch's Data Docs, from the links in the artifacts, with no network but loopback.
    with chromium(NETWORK_CUT) as browser:
        for key, shot, shown in (
            ("model-card", "4-model-card-offline", "Model card"),
            ("batch-validation", "5-data-docs-offline", "Expectation Validation Result"),
        ):
            browser.get(_artifact_link(api, key))
            _wait(lambda shown=shown: shown.lower() in browser.page_source.lower(), 30, f"{key} to render")
            styled = browser.execute_script(
                "const c = document.querySelector('td'); return c && getComputedStyle(c).borderTopStyle;"
            )
            assert styled == "solid", key  # its stylesheet loaded, from this machine
            fetched = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);"
            )
            assert all(url.startswith("http://127.0.0.1:") for url in fetched), fetched
            _shot(browser, shot)
