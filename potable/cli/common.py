"""What every command shares: its process's environment, one-line failures, and running a flow on the API."""

from __future__ import annotations

import copy
import logging
import os
import sys
import traceback
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
    imports run while it starts, and a refusal the flow raises on purpose becomes one readable line."""
    home = prepare_environment()
    with prefect_api(home) as server:
        flow_fn, expected = load()
        quiet_tracebacks()
        if server is not None:
            server.wait_healthy()
        try:
            return flow_fn(**params)
        except expected as exc:
            fail(f"{what}: {exc}")
