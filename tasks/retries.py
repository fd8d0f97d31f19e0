"""When a task is tried again: a fault of the network or of a store may pass, a refusal never will.

Used as Prefect's `retry_condition_fn`, so a bad batch or an unknown version fails at once while a cut
connection to S3, the tracking store or the image registry gets `retries` more attempts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RETRIES = 2
RETRY_DELAY_SECONDS = [2, 8]


def retry_unless(*refusals: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A retry condition: retry any failure except the given refusal types (and programming errors);
    an exception class with `transient = True` is retried even when it subclasses a refusal."""
    final = (*refusals, TypeError, ValueError, KeyError, AttributeError)

    def transient(task: Any, task_run: Any, state: Any) -> bool:
        error = state.data
        return getattr(error, "transient", False) or not isinstance(error, final)

    transient.__name__ = f"retry_unless_{'_'.join(r.__name__ for r in refusals) or 'refused'}"
    return transient


def io_retries(*refusals: type[BaseException]) -> dict[str, Any]:
    """`@task(**io_retries(...))`: the platform's one retry policy for I/O tasks."""
    return {
        "retries": RETRIES,
        "retry_delay_seconds": RETRY_DELAY_SECONDS,
        "retry_condition_fn": retry_unless(*refusals),
    }
