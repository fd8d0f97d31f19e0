"""A new home's MLflow store starts from a blank, migrated copy instead of running MLflow's migrations.

Opening a new SQLite store runs every MLflow migration (~4.2 s here, against ~1.9 s to open a migrated
one) on the first command's critical path. Set-up (`./dev`, `python -m core.mlflow_store`) migrates one
blank store per installed MLflow version inside the venv; a home with no store gets a copy of it. Only
the default store (sqlite:///<home>/mlflow.db); a configured tracking URI is left to MLflow.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from importlib.metadata import version as installed_version
from pathlib import Path

from core.settings import Settings

DEFAULT_EXPERIMENT_ID = 0


def blank_store() -> Path:
    return Path(sys.prefix) / "share" / "potable" / f"mlflow-{installed_version('mlflow')}-blank" / "mlflow.db"


def seed_blank_store(settings: Settings) -> bool:
    """Give the home's default store a copy of the blank one if it has none; True when copied.

    The copy is staged and hard-linked into place, which fails if a store appeared meanwhile (another
    command's MLflow created one): a store that exists is never replaced.
    """
    target = settings.home_dir / "mlflow.db"
    if settings.tracking_uri != f"sqlite:///{target}" or target.exists() or not blank_store().is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".mlflow.db.{os.getpid()}.partial")
    shutil.copyfile(blank_store(), staged)
    with closing(sqlite3.connect(staged)) as db, db:
        # MLflow's own Default experiment keeps its artifacts where a new store would have put them.
        location = (settings.artifact_root / str(DEFAULT_EXPERIMENT_ID)).as_uri()
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (location, DEFAULT_EXPERIMENT_ID)
        )
    try:
        os.link(staged, target)
    except FileExistsError:
        return False
    finally:
        staged.unlink()
    return True


def make_blank_store() -> Path:
    """Migrate an empty store once (MLflow's own code path) and keep it as the blank one."""
    from mlflow.tracking import MlflowClient

    target = blank_store()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="potable-blank-mlflow-") as scratch:
        MlflowClient(tracking_uri=f"sqlite:///{Path(scratch) / 'mlflow.db'}").search_experiments()
        staged = Path(tempfile.mkstemp(prefix=".blank-", dir=target.parent)[1])
        with closing(sqlite3.connect(Path(scratch) / "mlflow.db")) as live, closing(sqlite3.connect(staged)) as copy:
            live.backup(copy)  # a consistent copy whatever the journal mode
    staged.chmod(0o644)  # readable by whoever else runs this venv
    staged.replace(target)
    return target


if __name__ == "__main__":  # set-up: ./dev runs this once per installed MLflow version
    if not blank_store().is_file():
        print(f"blank MLflow store made: {make_blank_store()}", file=sys.stderr)
