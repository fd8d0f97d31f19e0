"""Figures the tests measure (recovery times, latencies), repeated in the run's summary (tests/conftest.py).

A figure rides on the test's report (`user_properties`), so with the suite spread over processes
(pytest-xdist) the controller's summary still lists every worker's figures.
"""

from __future__ import annotations

from typing import Any

MEASURED: list[str] = []  # filled from the reports, in the process that prints the summary
CURRENT: Any = None  # the running test item (set by an autouse fixture in tests/conftest.py)


def figure(text: str) -> None:
    """Print a measured figure now, and again in the summary so that CI's log shows it without -s."""
    if CURRENT is not None:
        CURRENT.user_properties.append(("figure", text.strip()))
    else:
        MEASURED.append(text.strip())
    print(f"\n{text.strip()}")


def collect(report) -> None:
    """The figures of a finished test (its teardown report carries all it recorded)."""
    if report.when == "teardown":
        MEASURED.extend(value for name, value in report.user_properties if name == "figure")
