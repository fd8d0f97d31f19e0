"""A new home's MLflow store starts from a blank, migrated copy instead of running MLflow's migrations.

Opening a new SQLite store runs every MLflow migration (~4.2 s here, against ~1.9 s to open a migrated
one) on the first command's critical path. Set-up (`./dev`, `python -m core.mlflow_store`) migrates one
blank store per installed MLflow version inside the venv; a home with no store gets a copy of it. Only
the default store (sqlite:///<home>/mlflow.db); a configured tracking URI is left to MLflow.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from core.blank_sqlite import blank_path, copy_blank, keep_as_blank
from core.settings import Settings

DEFAULT_EXPERIMENT_ID = 0


def blank_store() -> Path:
    return blank_path("mlflow", "mlflow.db")


def seed_blank_store(settings: Settings) -> bool:
    """Give the home's default store a copy of the blank one if it has none; True when copied."""
    target = settings.home_dir / "mlflow.db"
    if settings.tracking_uri != f"sqlite:///{target}":
        return False

    def relocate_default_experiment(staged: Path) -> None:
        # MLflow's own Default experiment keeps its artifacts where a new store would have put them.
        location = (settings.artifact_root / str(DEFAULT_EXPERIMENT_ID)).as_uri()
        with closing(sqlite3.connect(staged)) as db, db:
            db.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (location, DEFAULT_EXPERIMENT_ID),
            )

    return copy_blank(blank_store(), target, relocate_default_experiment)


def make_blank_store() -> Path:
    """Migrate an empty store once (MLflow's own code path) and keep it as the blank one."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="potable-blank-mlflow-") as scratch:
        live = Path(scratch) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{live}").search_experiments()
        return keep_as_blank(live, blank_store())


if __name__ == "__main__":  # set-up: ./dev runs this once per installed MLflow version
    if not blank_store().is_file():
        print(f"blank MLflow store made: {make_blank_store()}", file=sys.stderr)
