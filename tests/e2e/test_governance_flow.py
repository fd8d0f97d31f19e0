"""Governance end to end: gate verdict, model card, audit trail and approval on a real Prefect server."""

from __future__ import annotations

import contextvars
import threading
import time

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from core import configs
from core.settings import MODEL_NAME
from flows.promotion import PromotionRefused, promote
from flows.training import train
from governance.audit import audit_log
from governance.report import write_governance_report
from potable.approvals import answer_promotion, pending_approvals, waiting_promotion
from tasks.packaging import PackagingRefused, package_version

pytestmark = pytest.mark.e2e


def _promote_in_background(version: str) -> tuple[threading.Thread, dict]:
    """Run the promote flow in a thread (it pauses for input) with this test's Prefect settings."""
    outcome: dict = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome["result"] = context.run(promote, version=version)
        except Exception as exc:  # surfaced by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_paused(version: str):
    deadline = time.monotonic() + 90
    while True:
        try:
            return waiting_promotion(version)
        except LookupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_any_run(version: str):
    """The newest `promote` run of this version, whatever its state."""
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])))
    return max((r for r in runs if str(r.parameters.get("version")) == str(version)), key=lambda r: r.created).id


def _form_description(version: str) -> str:
    from prefect.input.actions import read_flow_run_input

    return read_flow_run_input(f"paused-approval-v{version}-description", flow_run_id=_wait_paused(version))


def _answer_when_waiting(version: str, approver: str, decision: str, comment: str) -> None:
    _wait_paused(version)
    answer_promotion(version, approver, decision, comment)


def test_verdict_card_audit_and_approval(prefect_api, settings) -> None:
    first = train(trials=1)
    assert first["gate_passed"], first["gate_failures"]
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    tags = client.get_model_version(MODEL_NAME, "1").tags
    assert tags["gate_passed"] == "true" and tags["gate_failed_rules"] == "none"
    assert "no champion yet" in tags["champion_comparison"]

    card = (settings.reports_dir / "model_cards" / "model_card_v1.md").read_text()
    for section in (
        "Model details",
        "Intended use",
        "Factors",
        "Metrics",
        "Evaluation data",
        "Training data",
        "Quantitative analyses",
        "Ethical considerations",
        "Caveats and recommendations",
    ):
        assert f"## {section}" in card
    assert first["data_sha256"] in card and f"{first['threshold']:.4f}" in card and "WHO range" in card
    # Only a governed version is packaged; the Bento carries its lineage as labels.
    assert first["bento_tag"]
    assert client.get_model_version(MODEL_NAME, "1").tags["bento_tag"] == first["bento_tag"]
    import bentoml

    bento = bentoml.get(first["bento_tag"])
    assert bento.info.labels["model_version"] == "1" and bento.info.labels["data_sha256"] == first["data_sha256"]
    # Served through ONNX Runtime only because it answered like the sklearn model on every row.
    assert bento.info.labels["runtime"] == "onnx"
    assert client.get_model_version(MODEL_NAME, "1").tags["serving_runtime"].startswith("onnx (parity ")
    artifacts = {a.path for a in client.list_artifacts(first["mlflow_run_id"], "governance")}
    assert {"governance/verdict.json", "governance/model_card_v1.md", "governance/model_card_v1.html"} <= artifacts

    # Approval through the same input the Prefect UI form sends (resume_flow_run with run_input).
    thread, outcome = _promote_in_background("1")
    _answer_when_waiting("1", "alice", "approve", "checked the slices")
    thread.join(timeout=120)
    assert outcome.get("result", {}).get("champion") == "1", outcome
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"

    # A second version is compared with the champion on the same rows; rejecting it moves nothing.
    second = train(trials=1)
    assert "champion v1" in client.get_model_version(MODEL_NAME, second["model_version"]).tags["champion_comparison"]
    if second["gate_passed"]:
        thread, outcome = _promote_in_background(second["model_version"])
        _wait_paused(second["model_version"])
        # The form shows the decision's evidence (what the UI fetches as the input's description).
        evidence = _form_description(second["model_version"])
        for shown in (
            f"### Approve v{second['model_version']} as champion?",
            "training table",
            f"champion v1 {second['champion_comparison']['champion_value']:.4f} on the same",
            "95% interval [",
            "| max_false_potable_rate |",
            "| ph_band |",
            "MLflow run: http://127.0.0.1:",
        ):
            assert shown in evidence, (shown, evidence)
        pending = [p for p in pending_approvals() if p["version"] == second["model_version"]]
        assert pending and pending[0]["evidence"] == evidence  # `potable approvals` prints the same
        _answer_when_waiting(second["model_version"], "bob", "reject", "not convinced")
        thread.join(timeout=120)
        assert outcome["result"]["decision"] == "reject"
        with get_client(sync_client=True) as prefect:
            rejected = prefect.read_flow_run(_wait_any_run(second["model_version"]))
        assert rejected.state.name == "Rejected" and "rejected by bob" in rejected.state.message
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"

    log = audit_log(settings)
    assert log.verify().ok
    actions = [e["action"] for e in log.lineage("1")]
    for action in (
        "batch_validated",
        "model_registered",
        "gate_passed",
        "bento_packaged",
        "promotion_approved",
        "alias_moved",
    ):
        assert action in actions
    approved = next(e for e in log.entries() if e["action"] == "promotion_approved")
    assert approved["actor"] == "alice" and approved["details"]["comment"] == "checked the slices"
    if second["gate_passed"]:
        assert any(e["action"] == "promotion_rejected" and e["actor"] == "bob" for e in log.entries())

    page = write_governance_report("1", settings).read_text()
    assert "Policy" in page and "Audit lineage" in page and "Model card" in page and "alias_moved" in page


def test_failing_gate_blocks_promotion(prefect_api, settings, tmp_path, monkeypatch) -> None:
    strict = configs.policy(settings).rules()
    strict["rules"][0]["limit"] = 0.99  # min_test_roc_auc no model here can meet
    path = tmp_path / "strict-policy.yaml"
    path.write_text(yaml.safe_dump(strict))
    monkeypatch.setenv("POTABLE_POLICY_CONFIG", str(path))
    state = train(trials=1, return_state=True)
    summary = state.result()
    assert state.name == "GateFailed" and "failed the policy gate: FAIL min_test_roc_auc" in state.message
    assert not summary["gate_passed"] and "min_test_roc_auc" in summary["gate_failures"][0]
    assert summary["bento_tag"] is None  # a failing gate prevents packaging
    with pytest.raises(PackagingRefused, match="did not pass the policy gate"):
        package_version(summary["model_version"], settings)
    refused = promote(version=summary["model_version"], return_state=True)
    assert refused.name == "PromotionRefused" and refused.is_failed()
    with pytest.raises(PromotionRefused, match="did not pass the policy gate"):
        refused.result()
    mlflow.set_tracking_uri(settings.tracking_uri)
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
    assert [e["action"] for e in audit_log(settings).entries()][-2:] == ["gate_failed", "promotion_refused"]


def test_auto_approval_is_a_dev_setting_and_audited(prefect_api, settings, monkeypatch) -> None:
    monkeypatch.setenv("POTABLE_AUTO_APPROVE", "1")
    summary = train(trials=1)
    assert summary["gate_passed"] and summary["promotion"]["decision"] == "approve"
    approved = next(e for e in audit_log(settings).entries() if e["action"] == "promotion_approved")
    assert approved["actor"].startswith("auto-approve")
