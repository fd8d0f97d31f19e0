"""The seed design's training job, reproduced as the speed reference for benchmarks/train_speed.py.

20 Optuna trials of RandomForest (n_estimators 50-300, max_depth 5-30, min_samples_split 2-10,
min_samples_leaf 1-5), each scored by 5-fold CV accuracy with n_jobs=-1, median imputation, then the
best configuration refit on the training split. Run as its own process so imports are timed too.
"""

from __future__ import annotations

import sys
import time

started = time.perf_counter()

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.model_selection import cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402


def main(csv_path: str, trials: int = 20) -> None:
    frame = pd.read_csv(csv_path)
    X, y = frame.drop(columns="Potability"), frame["Potability"]
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=42)

    def objective(trial: optuna.Trial) -> float:
        model = make_pipeline(
            SimpleImputer(strategy="median"),
            RandomForestClassifier(
                n_estimators=trial.suggest_int("n_estimators", 50, 300),
                max_depth=trial.suggest_int("max_depth", 5, 30),
                min_samples_split=trial.suggest_int("min_samples_split", 2, 10),
                min_samples_leaf=trial.suggest_int("min_samples_leaf", 1, 5),
                random_state=42,
                n_jobs=-1,
            ),
        )
        return cross_val_score(model, X_train, y_train, cv=5, scoring="accuracy", n_jobs=-1).mean()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(objective, n_trials=trials)
    best = study.best_params
    make_pipeline(SimpleImputer(strategy="median"), RandomForestClassifier(**best, random_state=42, n_jobs=-1)).fit(
        X_train, y_train
    )
    print(f"seed-equivalent: best CV accuracy {study.best_value:.4f} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
