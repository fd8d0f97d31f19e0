"""The `govern` stage: slices, champion vs challenger, model card, policy gate, audit — for one version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from core import configs
from core.settings import MODEL_NAME, Settings
from core.versions import ModelRegistry
from governance.audit import audit_log
from governance.champion import Comparison, compare_with_champion, paired_bootstrap
from governance.model_card import build_model_card, model_card_html
from governance.policy import PolicyReport, evaluate_policy
from governance.slices import SliceReport, assess_slices
from tasks.evaluation import classification_metrics
from tasks.registry import RegisteredVersion
from tasks.reports import keep_report, report_links, report_url


@dataclass
class GovernanceVerdict:
    version: str
    policy: PolicyReport
    slices: SliceReport
    comparison: Comparison
    model_card: Path

    @property
    def passed(self) -> bool:
        return self.policy.passed and self.comparison.passed

    def reasons(self) -> list[str]:
        lines = [r.line() for r in self.policy.failed]
        if not self.comparison.passed:
            lines.append(f"FAIL champion comparison: {self.comparison.reason}")
        return lines


def judge_against_champion(
    registry: ModelRegistry,
    X: pd.DataFrame,
    y: np.ndarray,
    proba: np.ndarray,
    registered_version: str,
    run: dict[str, Any],
    policy: dict[str, Any],
) -> Comparison:
    """Champion and challenger on the same evaluation rows (which neither trained on), with a paired
    bootstrap interval of the difference."""
    metric = policy["primary_metric"]
    champion = registry.champion()
    common = {"rows": len(y), "confidence": policy["champion_confidence"], "dataset_version": run["dataset_version"]}
    if champion is None or champion.version == str(registered_version):
        return compare_with_champion(
            metric, policy["champion_margin"], registered_version, run["metrics"][metric], None, None, **common
        )
    champion_proba = registry.load_model(champion.version).predict_proba(X)[:, 1]
    champion_value = float(classification_metrics(y, champion_proba, champion.decision_threshold)[metric])

    def score(y_true: np.ndarray, p: np.ndarray) -> float:
        return float(classification_metrics(y_true, p, run["threshold"])[metric])

    _, low, high = paired_bootstrap(
        y,
        proba,
        champion_proba,
        "roc_auc" if metric == "roc_auc" else score,
        policy["champion_resamples"],
        policy["champion_confidence"],
    )
    return compare_with_champion(
        metric,
        policy["champion_margin"],
        registered_version,
        run["metrics"][metric],
        champion.version,
        champion_value,
        interval=(low, high),
        champion_dataset_version=champion.dataset_version,
        **common,
    )


def card_facts(run: dict[str, Any], slices: SliceReport, min_support: int) -> dict[str, Any]:
    """Everything the model card states, taken from the run (see flows/training.py)."""
    y_train, y_test = run["y_train"], run["y_test"]
    return {
        **{
            k: run[k]
            for k in (
                "model_name",
                "model_version",
                "model_family",
                "params",
                "git_commit",
                "optuna_study",
                "cv_roc_auc",
                "threshold",
                "threshold_rule",
                "run_id",
                "metrics",
                "data_uri",
                "data_sha256",
                "dataset_version",
                "validation_summary",
            )
        },
        "scaled": run["model_family"] in ("svc", "logistic_regression", "soft_vote"),
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "train_rows": len(y_train),
        "test_rows": len(y_test),
        "train_positive_share": float(np.mean(y_train)),
        "test_positive_share": float(np.mean(y_test)),
        "slice_gap": slices.gap(),
        "slice_table": slices.markdown(),
        "min_support": min_support,
    }


def write_model_card(facts: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    card = build_model_card(facts)
    path = out_dir / f"model_card_v{facts['model_version']}.md"
    path.write_text(card, encoding="utf-8")
    path.with_suffix(".html").write_text(model_card_html(card, f"{MODEL_NAME} v{facts['model_version']}"), "utf-8")
    return path


def govern(
    model: Pipeline,
    registered: RegisteredVersion,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    run: dict[str, Any],
    settings: Settings,
) -> GovernanceVerdict:
    """Assess one registered version against the policy; record the verdict on the version and in the audit."""
    policy = configs.policy(settings).rules()
    y = y_test.to_numpy()
    proba = model.predict_proba(X_test)[:, 1]
    slices = assess_slices(X_test, y, proba, run["threshold"], policy["slices"])

    registry = ModelRegistry(settings)
    comparison = judge_against_champion(registry, X_test, y, proba, registered.version, run, policy)

    card = write_model_card(
        card_facts(run, slices, policy["slices"]["min_support"]), settings.reports_dir / "model_cards"
    )
    measured = {
        **run["metrics"],
        "slice_roc_auc_gap": slices.gap(),
        "data_validation_passed": run["validated"],
        "model_card_present": card.exists() and card.stat().st_size > 0,
    }
    verdict = GovernanceVerdict(registered.version, evaluate_policy(policy, measured), slices, comparison, card)
    record_verdict(verdict, registered, registry, run, settings)
    return verdict


def record_verdict(
    verdict: GovernanceVerdict,
    registered: RegisteredVersion,
    registry: ModelRegistry,
    run: dict[str, Any],
    settings: Settings,
) -> None:
    """The verdict travels with the version (tags + artifacts), the run page (Prefect) and the audit trail."""
    report = {
        "version": verdict.version,
        "passed": verdict.passed,
        "policy": verdict.policy.as_dict(),
        "champion_comparison": verdict.comparison.as_dict(),
        "slices": verdict.slices.table.to_dict("records"),
    }
    with mlflow.start_run(run_id=registered.run_id):
        mlflow.log_text(json.dumps(report, indent=2, default=str), "governance/verdict.json")
        mlflow.log_artifact(str(verdict.model_card), "governance")
        mlflow.log_artifact(str(verdict.model_card.with_suffix(".html")), "governance")
    page = verdict.model_card.with_suffix(".html")
    kept = {card.suffix: keep_report(card, settings) for card in (verdict.model_card, page)}
    registry.record(
        registered.version,
        gate_passed=verdict.passed,
        gate_failed_rules=",".join(r.name for r in verdict.policy.failed) or "none",
        champion_comparison=verdict.comparison.reason,
        slice_roc_auc_gap=float(verdict.slices.gap()),
        model_card=f"runs:/{registered.run_id}/governance/{verdict.model_card.name}",
    )
    audit_log(settings).append(
        actor="train-flow",
        action="gate_passed" if verdict.passed else "gate_failed",
        subject={
            "model_version": registered.version,
            "run_id": registered.run_id,
            "dataset_version": str(run["dataset_version"]),
        },
        details={"failed": verdict.reasons(), "comparison": verdict.comparison.reason},
    )
    create_markdown_artifact(
        key="governance-verdict",
        markdown=f"## Governance v{verdict.version}: {'PASSED' if verdict.passed else 'FAILED'}\n\n"
        f"{verdict.policy.markdown()}\n\n**Champion vs challenger:** {verdict.comparison.reason} "
        f"({'pass' if verdict.comparison.passed else 'FAIL'})\n\n### Slices\n\n{verdict.slices.markdown()}",
        description="Policy gate, champion comparison and slice assessment",
    )
    create_markdown_artifact(
        key="model-card",
        markdown=f"Model card as a page: {report_links(page, settings, kept['.html'])}"
        f"\n\n{verdict.model_card.read_text(encoding='utf-8')}",
        description=f"Model card of {MODEL_NAME} v{verdict.version}",
    )


@task(name="govern-version", cache_policy=NO_CACHE)
def govern_task(
    model: Pipeline,
    registered: RegisteredVersion,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    run: dict[str, Any],
    settings: Settings,
) -> GovernanceVerdict:
    return govern(model, registered, X_test, y_test, run, settings)


def evidence_links(record, settings: Settings) -> dict[str, str]:
    """Where the approver reads more: the MLflow run (UI of `potable up`), model card, governance report."""
    experiment = mlflow.get_run(record.run_id).info.experiment_id
    ui = f"http://127.0.0.1:{settings.mlflow_port}"
    return {
        "MLflow run": f"{ui}/#/experiments/{experiment}/runs/{record.run_id}",
        "model card": report_url(settings.reports_dir / "model_cards" / f"model_card_v{record.version}.html", settings),
        "model card in MLflow": f"{ui}/#/experiments/{experiment}/runs/{record.run_id}/artifacts/governance",
        "governance report": f"`potable governance report --version {record.version}`",
    }


def approval_description(version: str, settings: Settings) -> str:
    """The evidence for the approval form of `version`, from what the gate recorded with the version."""
    from governance.evidence import approval_evidence
    from tasks.registry import setup_mlflow

    setup_mlflow(settings)
    record = ModelRegistry(settings).get(version)
    verdict = mlflow.artifacts.load_dict(f"runs:/{record.run_id}/governance/verdict.json")
    return approval_evidence(record, verdict, evidence_links(record, settings))
