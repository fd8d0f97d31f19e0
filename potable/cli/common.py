"""What every command shares: its process's environment, one-line failures, and running a flow on the API."""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer

from potable.prefect_api import prefect_api, running_api_url

Loader = Callable[[], tuple[Callable[..., Any], tuple[type[Exception], ...]]]


def prepare_environment() -> Path:
    """This command's process gets the environment derived from the settings (core/environment.py)."""
    from core.environment import apply
    from core.settings import get_settings

    return apply(get_settings()).home_dir


def debugging() -> bool:
    return os.environ.get("POTABLE_DEBUG", "").lower() in ("1", "true", "yes")


def fail(message: str) -> NoReturn:
    """One readable line and exit 1; with --debug, the traceback of the error being handled first."""
    if debugging() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


def actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


class _NoTraceback(logging.Formatter):
    """Formats a record as the wrapped formatter would, minus the traceback (the record itself is untouched,
    so the run's logs in the Prefect UI keep it)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text:
            record = copy.copy(record)
            record.exc_info, record.exc_text = None, None
        return self.inner.format(record)


def quiet_tracebacks() -> None:
    """The terminal shows one line per problem; POTABLE_DEBUG=1 keeps Prefect's tracebacks on stderr."""
    if debugging():
        return
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if not isinstance(handler.formatter, _NoTraceback):
                    handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))


def use_running_api(missing: str) -> None:
    """Talk to the Prefect API that already runs for this home (never start one: there is nothing to ask)."""
    api = running_api_url(prepare_environment())
    if not api:
        fail(missing)
    os.environ["PREFECT_API_URL"] = api


def run_flow(what: str, load: Loader, **params: Any) -> Any:
    """Run a flow against the Prefect API from a command: the API starts (or is found) first, the flow's
    imports run while it starts, and a refusal the flow raises on purpose becomes one readable line.

    Ctrl-C or SIGTERM stops the command within seconds: the runs it started are marked Cancelled (found by a
    tag only this command's runs carry), then the private server stops. Without this, a waiting promotion
    stayed Running and was listed as waiting forever."""
    home = prepare_environment()
    previous_sigterm = signal.signal(signal.SIGTERM, interrupt)
    try:
        with prefect_api(home) as server:
            flow_fn, expected = load()
            quiet_tracebacks()
            if server is not None:
                server.wait_healthy()
            from prefect import tags
            from prefect.exceptions import ExternalSignal

            mark = f"potable-command-{uuid.uuid4().hex[:12]}"
            try:
                with tags(mark):
                    return flow_fn(**params)
            except expected as exc:
                fail(f"{what}: {exc}")
            except (KeyboardInterrupt, ExternalSignal):
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
                cancelled = cancel_runs_tagged(mark)
                typer.secho(f"{what}: interrupted; {cancelled} run(s) marked Cancelled", err=True, fg=typer.colors.RED)
                raise typer.Exit(code=130) from None
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cancel_runs_tagged(mark: str) -> int:
    """Mark every run of this command that has not ended well Cancelled (Prefect's engine may have called it
    Crashed already: an interrupt is a person's decision, not a crash)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.states import Cancelled

    done = 0
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[mark])))
            for run in runs:
                if run.state is not None and run.state.type.value in ("COMPLETED", "FAILED", "CANCELLED"):
                    continue
                message = "stopped from the terminal (Ctrl-C or SIGTERM on the command)"
                client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
                done += 1
    except Exception as exc:  # noqa: BLE001 - the command still stops; the run is named for the operator
        typer.secho(f"could not mark the run Cancelled ({type(exc).__name__}: {exc})", err=True)
    return done
