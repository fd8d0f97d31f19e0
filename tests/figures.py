"""Figures the tests measure (recovery times, latencies), repeated in the run's summary (tests/conftest.py)."""

from __future__ import annotations

MEASURED: list[str] = []


def figure(text: str) -> None:
    """Print a measured figure now, and again in the summary so that CI's log shows it without -s."""
    MEASURED.append(text.strip())
    print(f"\n{text.strip()}")
