"""Drift between live traffic (the service's prediction log) and the training data, per feature.

PSI says how much a distribution moved, the two-sample KS test says whether it is more than sampling
noise; a feature drifts when both say so. Missing values are compared as their own share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, ks_2samp

from core.settings import FEATURES

EPSILON = 1e-4  # floor for empty bins: PSI is a log ratio
PREDICTION_TABLE = "potable_predictions"  # written by bentos/prediction_log.py (the Bento cannot import this)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    reference_mean: float
    live_mean: float
    drifted: bool


@dataclass
class DriftReport:
    live_rows: int
    reference_rows: int
    clients: int = 0
    features: list[FeatureDrift] = field(default_factory=list)
    reference_positive_rate: float | None = None
    live_positive_rate: float | None = None
    positive_rate_drifted: bool = False
    enough_traffic: bool = True

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) or self.positive_rate_drifted


def read_prediction_log(folder: Path, since: datetime | None = None) -> pd.DataFrame:
    """Every logged prediction (all workers' files, rotated ones too, container slots' folders below) at or
    after `since`."""
    records = []
    for path in sorted(folder.glob("**/predictions-*.jsonl*")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    records.append(json.loads(line))
    return _prediction_frame(records, since)


def read_prediction_table(url: str, since: datetime | None = None) -> pd.DataFrame:
    """Every prediction the service workers shipped to Postgres (bentos/prediction_log.py), from any
    machine, at or after `since`: the same frame as the files give."""
    from core.postgres import table_exists, transaction

    with transaction(url, "potable-drift") as cur:
        if not table_exists(cur, PREDICTION_TABLE):
            return _prediction_frame([], since)
        cur.execute(
            f"SELECT record FROM {PREDICTION_TABLE} WHERE logged_at >= %s ORDER BY logged_at",  # nosec B608
            (since or datetime(1970, 1, 1, tzinfo=UTC),),
        )
        return _prediction_frame([row[0] for row in cur.fetchall()], since)


def _prediction_frame(records: list[dict[str, Any]], since: datetime | None) -> pd.DataFrame:
    if not records:
        return pd.DataFrame(columns=[*FEATURES, "prediction", "probability", "model_version", "timestamp", "client"])
    frame = pd.json_normalize(records).rename(columns=lambda c: c.removeprefix("inputs."))
    if "client" not in frame:
        frame["client"] = None
    frame["client"] = frame["client"].fillna("unknown")  # lines written before clients were recorded
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    if since is not None:
        frame = frame[frame["timestamp"] >= since]
    return frame.reset_index(drop=True)


def sample_per_client(live: pd.DataFrame, max_rows_per_client: int, seed: int = 0) -> pd.DataFrame:
    """No client contributes more rows than the median client does (nor more than `max_rows_per_client`),
    sampled at random: one caller looping extreme but valid batches weighs as one client among many,
    however much it sends. With a single client this is that client's traffic, up to the cap."""
    if live.empty:
        return live
    counts = live.groupby("client").size()
    cap = min(max_rows_per_client, max(1, int(np.ceil(counts.median()))))
    parts = [rows.sample(n=min(len(rows), cap), random_state=seed) for _, rows in live.groupby("client", sort=True)]
    return pd.concat(parts).sort_values("timestamp").reset_index(drop=True)


def window_start(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def psi(reference: np.ndarray, live: np.ndarray, bins: int) -> float:
    """Population stability index over reference quantile bins, plus one bin for missing values."""
    ref, cur = reference[~np.isnan(reference)], live[~np.isnan(live)]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    ref_counts = np.append(np.histogram(ref, edges)[0], np.isnan(reference).sum())
    cur_counts = np.append(np.histogram(cur, edges)[0], np.isnan(live).sum())
    p = np.maximum(ref_counts / max(len(reference), 1), EPSILON)
    q = np.maximum(cur_counts / max(len(live), 1), EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def missing_share_pvalue(reference: np.ndarray, live: np.ndarray) -> float:
    """Chi-square test that both samples miss the feature equally often (1.0 when neither misses it)."""
    table = np.array([[np.isnan(x).sum(), (~np.isnan(x)).sum()] for x in (reference, live)])
    if table[:, 0].sum() == 0:
        return 1.0
    return float(chi2_contingency(table).pvalue)


def feature_drift(name: str, reference: np.ndarray, live: np.ndarray, rules: dict[str, Any]) -> FeatureDrift:
    """Drifted = PSI says the shift is large AND a test says it is not noise (values by KS, missingness by chi²)."""
    value = psi(reference, live, int(rules["bins"]))
    ref, cur = reference[~np.isnan(reference)], live[~np.isnan(live)]
    ks = ks_2samp(ref, cur) if len(cur) and len(ref) else None
    statistic, pvalue = (float(ks.statistic), float(ks.pvalue)) if ks else (0.0, 1.0)
    pvalue = min(pvalue, missing_share_pvalue(reference, live))
    drifted = value >= rules["psi_threshold"] and pvalue < rules["ks_alpha"]
    return FeatureDrift(name, value, statistic, pvalue, float(np.nanmean(reference)), float(np.nanmean(live)), drifted)


def compare(
    reference: pd.DataFrame, live: pd.DataFrame, rules: dict[str, Any], reference_positive_rate: float | None = None
) -> DriftReport:
    """Judge every feature (and the predicted-potable share) of `live` against `reference`."""
    clients = int(live["client"].nunique()) if "client" in live else 0
    report = DriftReport(live_rows=len(live), reference_rows=len(reference), clients=clients)
    if len(live) < int(rules["min_samples"]) or reference.empty:
        report.enough_traffic = False
        return report
    for name in FEATURES:
        ref = pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=float)
        cur = pd.to_numeric(live[name], errors="coerce").to_numpy(dtype=float)
        report.features.append(feature_drift(name, ref, cur, rules))
    if reference_positive_rate is not None and "prediction" in live:
        report.reference_positive_rate = reference_positive_rate
        report.live_positive_rate = float(live["prediction"].astype(float).mean())
        gap = abs(report.live_positive_rate - reference_positive_rate)
        report.positive_rate_drifted = gap > rules["positive_rate_tolerance"]
    return report
