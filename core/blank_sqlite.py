"""Blank, migrated SQLite databases made once at set-up and copied into new homes (Prefect's and MLflow's).

A new home's first command would otherwise run every migration of the tool's schema on its critical path
(Prefect ~8 s, MLflow ~2 s here). The result is the same for every home on one installed version of the
tool, so set-up (`./dev`) keeps one inside the venv and a home without a database gets a copy.
Standard library only: the private Prefect server's start-up imports this before anything else.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from importlib.metadata import version as installed_version
from pathlib import Path


def blank_path(distribution: str, filename: str) -> Path:
    """Where set-up keeps the blank database of the installed version of `distribution`."""
    folder = f"{distribution}-{installed_version(distribution)}-blank"
    return Path(sys.prefix) / "share" / "potable" / folder / filename


def keep_as_blank(live: Path, blank: Path) -> Path:
    """A consistent copy of `live` (SQLite's backup API, whatever the journal mode) put in place whole."""
    blank.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkstemp(prefix=".blank-", dir=blank.parent)[1])
    with closing(sqlite3.connect(live)) as source, closing(sqlite3.connect(staged)) as copy:
        source.backup(copy)
    staged.chmod(0o644)  # readable by whoever else runs this venv
    staged.replace(blank)
    return blank


def copy_blank(blank: Path, target: Path, prepare: Callable[[Path], None] | None = None) -> bool:
    """Copy `blank` to `target` when set-up made it and `target` does not exist; True when copied.

    Staged beside the target (`prepare` may adjust the staged copy) and hard-linked into place: a reader
    never opens half a file, and a database that appeared meanwhile is never replaced.
    """
    if target.exists() or not blank.is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.copyfile(blank, staged)
    try:
        if prepare is not None:
            prepare(staged)
        os.link(staged, target)
    except FileExistsError:
        return False
    finally:
        staged.unlink()
    return True
