"""`potable governance report`: model card, policy verdict, slices and audit lineage on one HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from core.settings import MODEL_NAME, Settings
from core.versions import ModelRegistry, UnknownVersion
from governance.audit import audit_log
from governance.model_card import model_card_html


def _verdict(run_id: str) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="governance/verdict.json")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_governance_report(version: str, settings: Settings, out: Path | None = None) -> Path:
    try:
        verdict = _verdict(ModelRegistry(settings).get(version).run_id)
    except (UnknownVersion, MlflowException, OSError) as exc:
        raise LookupError(f"no governance verdict for {MODEL_NAME} v{version}: {exc}") from exc
    card = settings.reports_dir / "model_cards" / f"model_card_v{version}.md"
    card_md = card.read_text(encoding="utf-8") if card.exists() else "_model card not found locally_"
    rules = "\n".join(
        f"| {r['name']} | {r['measured']} | {r['op']} {r['limit']} | {'pass' if r['passed'] else '**FAIL**'} |"
        for r in verdict["policy"]["rules"]
    )
    lineage = "\n".join(
        f"| {e['timestamp']} | {e['action']} | {html.escape(json.dumps(e['subject']))} | {e['actor']} |"
        for e in audit_log(settings).lineage(str(version))
    )
    comparison = verdict["champion_comparison"]
    page = f"""# Governance report: {MODEL_NAME} v{version}

**Verdict: {"PASSED" if verdict["passed"] else "FAILED"}** — champion comparison: {comparison["reason"]}

## Policy

| rule | measured | limit | result |
|---|---|---|---|
{rules}

## Audit lineage

| time | action | subject | actor |
|---|---|---|---|
{lineage}

---

{card_md}
"""
    target = out or settings.reports_dir / f"governance_v{version}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(model_card_html(page, f"Governance {MODEL_NAME} v{version}"), encoding="utf-8")
    return target
