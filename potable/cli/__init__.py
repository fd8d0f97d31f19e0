"""`potable`: one CLI whose commands call the flows, grouped by what a person does.

model.py (train, validate, package, serve, promote, approve, approvals), release.py (release, image,
rollout …, rollback), data.py (data init, log, show, diff), operations.py (up, down, status, watch,
monitor), records.py (audit, governance).
"""

from __future__ import annotations

import atexit
import gc
import signal

import typer

from potable.cli import data, model, operations, records, release  # noqa: F401 - importing registers the commands
from potable.cli.app import app
from potable.cli.common import debugging, interrupt

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    """The console entry point: an error a user can meet is one readable line (--debug: the traceback)."""
    # The heap is torn down when the command ends: freezing it first skips the collection passes over
    # it at interpreter exit, which took ~3 s after a `train` (nothing is written then; files are closed).
    atexit.register(gc.freeze)
    # SIGTERM (a process manager's stop, `kill`) ends a command the way Ctrl-C does: its clean-up runs.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg="red")
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence between a user and a traceback
        if debugging():
            raise
        typer.secho(f"error: {exc} ({type(exc).__name__}; --debug shows the traceback)", err=True, fg="red")
        raise SystemExit(1) from None
