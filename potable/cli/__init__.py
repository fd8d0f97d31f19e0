"""`potable`: one CLI whose commands call the flows, grouped by what a person does.

model.py (train, validate, package, serve, promote, approve, approvals), release.py (release, image,
rollout …, rollback), operations.py (up, down, status, watch, monitor), records.py (audit, governance).
"""

from __future__ import annotations

import os

import typer

from potable.cli import model, operations, records, release  # noqa: F401 - importing registers the commands
from potable.cli.app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    """The console entry point: an error a user can meet is one readable line (POTABLE_DEBUG=1: traceback)."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the last line of defence between a user and a traceback
        if os.environ.get("POTABLE_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        typer.secho(f"error: {exc} ({type(exc).__name__}; POTABLE_DEBUG=1 shows the traceback)", err=True, fg="red")
        raise SystemExit(1) from None
