"""What a release judges a version against: its own evaluation rows, and the version it replaces.

Computed in the flow (the registry is here, not in the slot): the registered model's answers on its
evaluation rows (the smoke test's golden rows, its expected potable share) and, when a version is live,
that version's model as a function and how often the two disagree on those rows: the canary's reference
for "the new version answers live inputs differently from the old one" (deployments/canary.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.lineage import LineageMissing, training_batch
from core.settings import FEATURES, Settings
from core.versions import ModelRegistry, UnknownVersion, VersionRecord
from tasks.dataset import split_rows
from tasks.retries import io_retries


@dataclass
class ReplacedVersion:
    """The live version's answers as a function of rows, and its disagreement with the new one on judging rows."""

    version: str
    model: object
    threshold: float
    disagreement: float

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        return answers_at(self.model, rows, self.threshold)


def answers_at(model, rows: pd.DataFrame, threshold: float) -> np.ndarray:
    """0/1 answers of a registered model on rows, at its decision threshold."""
    return (model.predict_proba(rows[list(FEATURES)])[:, 1] >= threshold).astype(int)


@dataclass
class Judging:
    golden: pd.DataFrame
    expected: np.ndarray
    expected_share: float
    replaced: ReplacedVersion | None


@task(cache_policy=NO_CACHE, **io_retries(LineageMissing, UnknownVersion))
def judging_evidence(record: VersionRecord, rows: int, live_version: str | None, settings: Settings) -> Judging:
    """The version's own evaluation rows (as logged with its run: rows it never trained on), the registered
    model's answers on them, its share called potable, and the replaced version (when one is live)."""
    registry = ModelRegistry(settings)
    hold_out = split_rows(training_batch(record.run_id).frame).X_test
    proba = registry.load_model(record.version).predict_proba(hold_out)[:, 1]
    answers = (proba >= record.decision_threshold).astype(int)
    replaced = None
    if live_version is not None and live_version != record.version:
        live = registry.get(live_version)
        model = registry.load_model(live.version)
        old_answers = answers_at(model, hold_out, live.decision_threshold)
        replaced = ReplacedVersion(live.version, model, live.decision_threshold, float(np.mean(old_answers != answers)))
    return Judging(hold_out.head(rows), proba[:rows], float(np.mean(answers)), replaced)
