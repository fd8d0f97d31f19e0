"""Quality bar: the registered `candidate` configuration vs the seed design's model, same CV protocol.

Clones the candidate Pipeline (configuration only, no fitted state) and scores it with
RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=0) ROC-AUC on all 3,276 bundled rows,
next to RandomForestClassifier(n_estimators=288, max_depth=27, min_samples_split=7, random_state=42)
behind a median imputer. Bar: candidate >= 0.70.

    POTABLE_HOME=.potable python benchmarks/model_quality.py [--alias candidate]
"""

from __future__ import annotations

import argparse
import time

import mlflow
import numpy as np
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from core.settings import BUNDLED_DATA, FEATURES, LABEL, MODEL_NAME, get_settings
from tasks.data import read_batch

BAR = 0.70


def score(model, X, y) -> tuple[float, float, float]:
    cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=0)
    started = time.perf_counter()
    scores = cross_val_score(model, X, y, cv=cv, scoring="roc_auc", n_jobs=1)
    return float(np.mean(scores)), float(np.std(scores)), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default="candidate")
    args = parser.parse_args()
    mlflow.set_tracking_uri(get_settings().tracking_uri)
    uri = f"models:/{MODEL_NAME}@{args.alias}"
    candidate = clone(mlflow.sklearn.load_model(uri))
    frame = read_batch(BUNDLED_DATA)
    X, y = frame[list(FEATURES)], frame[LABEL]
    seed_model = make_pipeline(
        SimpleImputer(strategy="median"),
        RandomForestClassifier(n_estimators=288, max_depth=27, min_samples_split=7, random_state=42, n_jobs=-1),
    )
    ours = score(candidate, X, y)
    seed = score(seed_model, X, y)
    print("5-fold x 3-repeat stratified CV ROC-AUC on all rows (RepeatedStratifiedKFold random_state=0)")
    print(f"{'model':<44}{'ROC-AUC':>9}{'std':>8}{'seconds':>9}")
    print(f"{'candidate ' + uri:<44}{ours[0]:>9.4f}{ours[1]:>8.4f}{ours[2]:>9.1f}")
    print(f"{'seed RandomForest(288, depth 27, split 7)':<44}{seed[0]:>9.4f}{seed[1]:>8.4f}{seed[2]:>9.1f}")
    print(f"difference {ours[0] - seed[0]:+.4f}; bar candidate >= {BAR:.2f}: {'MET' if ours[0] >= BAR else 'NOT MET'}")
    return 0 if ours[0] >= BAR else 1


if __name__ == "__main__":
    raise SystemExit(main())
