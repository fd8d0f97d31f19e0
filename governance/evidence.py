"""What an approver must see to decide: the evidence on the approval form, as markdown.

Pure: takes the version's record and its governance verdict (as recorded at the gate) and renders the
decision's context — data, gate rules with value/limit/verdict and why, the champion comparison on
the same evaluation rows with its interval, the slices, and links to the model card, the governance
report and the MLflow run. The Prefect UI shows it above the form; `potable approvals` prints it.
"""

from __future__ import annotations

from typing import Any

from core.versions import VersionRecord


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _count(value: Any) -> str:
    """Confusion counts are whole samples (the registry keeps every figure as a float)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else _num(value)


def comparison_line(comparison: dict[str, Any]) -> str:
    if comparison.get("champion_version") is None:
        return f"No champion yet: judged by the policy alone ({comparison.get('rows', 0)} evaluation rows)."
    interval = comparison.get("interval")
    confidence = comparison.get("confidence", 0.95)
    band = f", {confidence:.0%} interval [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else ""
    verdict = "**pass**" if comparison["passed"] else "**FAIL**"
    return (
        f"{comparison['metric']}: this version {comparison['challenger_value']:.4f} vs champion "
        f"v{comparison['champion_version']} {comparison['champion_value']:.4f} on the same {comparison.get('rows', 0)} "
        f"evaluation rows of table v{comparison.get('dataset_version')} (neither trained on them): difference "
        f"{comparison['challenger_value'] - comparison['champion_value']:+.4f}{band}; passes when the lower end "
        f"is at least -{comparison['margin']:.4f} → {verdict}"
    )


def approval_evidence(record: VersionRecord, verdict: dict[str, Any], links: dict[str, str]) -> str:
    """Markdown for the approval form of `record` (a version that passed the gate)."""
    m = record.metrics
    rules = "\n".join(
        f"| {r['name']} | {_num(r['measured'])} | {r['op']} {_num(r['limit'])} | "
        f"{'pass' if r['passed'] else '**FAIL**'} | {r.get('why', '')} |"
        for r in verdict["policy"]["rules"]
    )
    slices = "\n".join(
        f"| {s['dimension']} | {s['slice']} | {s['support']} | {_num(s['roc_auc'])} | "
        f"{_num(s['false_potable_rate'])} | {'yes' if s['judged'] else 'no (too few)'} |"
        for s in verdict.get("slices", [])
    )
    data = (
        f"training table `{record.table_uri}` **v{record.dataset_version}**"
        if record.dataset_version is not None
        else "a batch (trained before the training table existed)"
    )
    link_lines = "\n".join(f"- {name}: {url}" for name, url in links.items())
    return f"""### Approve v{record.version} as champion?

**Version** v{record.version} ({record.model_family}), threshold {_num(record.threshold)}, trained on {data};
rows sha256 `{(record.data_sha256 or "")[:12]}`, code `{(record.git_commit or "")[:12]}`.

**On evaluation rows** (never trained on by any version): ROC-AUC **{_num(m.get("roc_auc"))}**,
false-potable rate **{_num(m.get("false_potable_rate"))}**, precision {_num(m.get("precision"))},
recall {_num(m.get("recall"))}, Brier {_num(m.get("brier"))}; TP {_count(m.get("tp"))}, FP {_count(m.get("fp"))},
TN {_count(m.get("tn"))}, FN {_count(m.get("fn"))}.

**Champion vs this version:** {comparison_line(verdict["champion_comparison"])}

**Policy gate: {"PASSED" if verdict["passed"] else "FAILED"}**

| rule | measured | limit | result | why |
|---|---|---|---|---|
{rules}

**Slices** (evaluation rows)

| factor | slice | samples | ROC-AUC | false-potable | judged |
|---|---|---|---|---|---|
{slices}

{link_lines}
"""
