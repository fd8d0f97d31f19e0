"""Model cards (Mitchell et al. 2019) in Markdown and HTML, filled from a real training run."""

from __future__ import annotations

from typing import Any

import markdown as md


def _metrics_table(metrics: dict[str, float]) -> str:
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items() if name not in ("tn", "fp", "fn", "tp")]
    return "\n".join(["| metric (test split) | value |", "|---|---|", *rows])


def build_model_card(facts: dict[str, Any]) -> str:
    """The card as Markdown; `facts` holds what the run measured (see tasks/governance.py)."""
    m = facts["metrics"]
    cm = f"TN {m['tn']:.0f}, FP {m['fp']:.0f} (not potable called potable), FN {m['fn']:.0f}, TP {m['tp']:.0f}"
    return f"""# Model card: {facts["model_name"]} v{facts["model_version"]}

## Model details
- Family: **{facts["model_family"]}**, parameters `{facts["params"]}`; one scikit-learn Pipeline
  (imputation{" and scaling" if facts["scaled"] else ""} inside), trained {facts["trained_at"]}
  from commit `{facts["git_commit"]}`.
- Selected by Optuna study `{facts["optuna_study"]}` on stratified CV ROC-AUC of the train split
  ({facts["cv_roc_auc"]:.4f}).
- Decision threshold {facts["threshold"]:.4f}, chosen on out-of-fold train predictions by rule
  `{facts["threshold_rule"]}`.
- MLflow run `{facts["run_id"]}`; licence of the training data: CC0.

## Intended use
- Screening of routine laboratory measurements of drinking-water samples (the nine features below) to
  prioritise samples for confirmatory testing by a water utility's laboratory staff.
- Out of scope: certifying water as safe to drink; samples from sources or instruments unlike the
  training data; microbiological safety (no microbial measurements are used); any decision without a
  qualified person reviewing the measurements.

## Factors
Groups of samples that matter for drinking water and are assessed below: WHO pH band (below 6.5,
6.5–8.5, above 8.5), turbidity against the WHO 5 NTU guideline, trihalomethanes against 80 µg/L, sulfate measured
vs missing, hardness bands. Missing measurements (ph, Sulfate, Trihalomethanes) are imputed.

## Metrics
Threshold-free: ROC-AUC (primary), PR-AUC, Brier score, log loss. At the threshold: accuracy, precision,
recall, F1 and the **false-potable rate** (share of not-potable samples called potable, the costly
error). Confusion matrix: {cm}.

{_metrics_table(m)}

## Evaluation data
The evaluation rows of training table version {facts["dataset_version"]} (`{facts["data_uri"]}`):
{facts["test_rows"]} rows, {facts["test_positive_share"]:.1%} potable. Each row of the table is assigned once, by
a hash of its measurements, to training or evaluation; no version of this model has ever been fitted on an
evaluation row, so the figures below (and the comparison with the champion) are on unseen samples.

## Training data
{facts["train_rows"]} train rows of table version {facts["dataset_version"]} ({facts["train_positive_share"]:.1%}
potable; rows sha256 `{facts["data_sha256"]}`); every batch in it passed the Great Expectations suite and
the label check ({facts["validation_summary"]}).

## Quantitative analyses
Per-slice results on the test split (slices under {facts["min_support"]} samples are reported, not judged).
Largest ROC-AUC gap between judged slices of one factor: {facts["slice_gap"]:.4f}.

{facts["slice_table"]}

## Ethical considerations
A false "potable" verdict can expose people to unsafe water; the threshold favours fewer such errors at
the cost of recall, and the model is a screening aid, not a certificate. The labels of the public data
set are close to noise (ROC-AUC about 0.70 is the practical ceiling), so individual predictions are weak
evidence.

## Caveats and recommendations
- Re-validate and retrain when instruments, sources or treatment change; watch for drift.
- Review slices with small support before relying on the model for those waters.
- Keep the decision threshold and the policy in configuration under review with the utility's
  water-quality officer.
"""


def model_card_html(card_markdown: str, title: str) -> str:
    body = md.markdown(card_markdown, extensions=["tables"])
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.45}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem}"
    )
    head = f"<meta charset='utf-8'><title>{title}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"
