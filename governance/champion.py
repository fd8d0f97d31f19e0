"""Champion vs challenger on the same rows neither has trained on, decided on an interval, not a point.

Both versions are scored on the evaluation rows of the table version being judged (core/table.py: no
version ever fits on them). The difference of the primary metric gets a 95 % paired-bootstrap interval
(the same resampled rows for both, so what they share cancels out); the challenger passes when the
interval's lower end is above -margin: not worse beyond the margin, with that confidence. On ~650 rows
two equally good models differ by up to ~±0.04 ROC-AUC by chance, so the margin sits above that noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Comparison:
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None
    margin: float
    passed: bool
    reason: str
    rows: int = 0
    difference: float | None = None
    interval: tuple[float, float] | None = None
    confidence: float = 0.95
    dataset_version: int | None = None
    champion_dataset_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval else None
        return out


def _auc_rows(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of `proba` (resamples x rows) against the matching row of `y`, by ranks."""
    from scipy.stats import rankdata

    ranks = rankdata(proba, axis=1)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def paired_bootstrap(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    metric,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, low, high) of metric(challenger) - metric(champion) over the same resampled rows.
    `metric` is "roc_auc" (vectorised) or a function (y, proba) -> float."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y), size=(resamples, len(y)))
    if metric == "roc_auc":
        yy = y[index]
        diffs = _auc_rows(yy, challenger[index]) - _auc_rows(yy, champion[index])
        point = float(_auc_rows(y[None, :], challenger[None, :])[0] - _auc_rows(y[None, :], champion[None, :])[0])
    else:
        diffs = np.array([metric(y[i], challenger[i]) - metric(y[i], champion[i]) for i in index])
        point = float(metric(y, challenger) - metric(y, champion))
    diffs = diffs[np.isfinite(diffs)]  # a resample with one class has no ROC-AUC
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return point, float(low), float(high)


def compare_with_champion(
    metric: str,
    margin: float,
    challenger_version: str,
    challenger_value: float,
    champion_version: str | None,
    champion_value: float | None,
    interval: tuple[float, float] | None = None,
    rows: int = 0,
    confidence: float = 0.95,
    dataset_version: int | None = None,
    champion_dataset_version: int | None = None,
) -> Comparison:
    """Pass when there is no champion yet, or the interval of (challenger - champion) lies above -margin.
    Without an interval (no rows to resample) the point difference decides."""
    if champion_version is None or champion_value is None:
        return Comparison(
            metric,
            challenger_version,
            challenger_value,
            None,
            None,
            margin,
            True,
            "no champion yet: judged by the policy alone",
            rows,
            dataset_version=dataset_version,
        )
    delta = challenger_value - champion_value
    low = interval[0] if interval else delta
    passed = low >= -margin
    where = f" on the same {rows} evaluation rows of table v{dataset_version}" if rows else ""
    band = f", {confidence:.0%} interval [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else ""
    reason = (
        f"challenger {metric} {challenger_value:.4f} vs champion v{champion_version} {champion_value:.4f}{where} "
        f"(difference {delta:+.4f}{band}; passes when the lower end is at least -{margin:.4f})"
    )
    return Comparison(
        metric,
        challenger_version,
        challenger_value,
        champion_version,
        champion_value,
        margin,
        passed,
        reason,
        rows,
        delta,
        interval,
        confidence,
        dataset_version,
        champion_dataset_version,
    )
