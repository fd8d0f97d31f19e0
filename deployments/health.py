"""Release health as the router saw it: which answers each slot produced, and which nginx made alone.

The watch window (deployments/checks.py) charges a slot only with answers it produced itself; the
model-level canary is deployments/canary.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PREDICTION_ENDPOINTS = ("/predict", "/predict_batch")


@dataclass(frozen=True)
class Window:
    """What the slot itself answered to prediction requests in an interval, and what the router answered alone.

    `requests`: prediction answers the slot produced (an upstream address and status in the log line);
    `error_rate`: the 5xx share of those; `p99_ms`: the slot's own time on single predictions (nginx's
    upstream response time: a slow client or a big batch a client chose to send is not the slot's latency);
    `router_answers`: answers nginx made without the slot (malformed requests, body limits, rate limits),
    counted apart: they say what clients sent, not how the version behaves.
    """

    requests: int
    error_rate: float
    router_answers: int = 0
    took: tuple[float, ...] = ()  # the slot's time (ms) on each single prediction

    @property
    def timed(self) -> int:
        return len(self.took)

    @property
    def p99_ms(self) -> float:
        return p99(self.took)


def p99(took_ms: tuple[float, ...] | list[float]) -> float:
    return float(np.percentile(took_ms, 99)) if len(took_ms) else 0.0


def _last(entry: dict[str, Any], field: str) -> str:
    """The last value of an upstream field: nginx lists one per upstream tried (", ") and per internal
    redirect (" : "), and the last one tried is the one that answered."""
    return str(entry.get(field, "")).split(",")[-1].split(" : ")[-1].strip()


def _answered_by(entry: dict[str, Any]) -> str | None:
    """The upstream address that produced this answer, or None when nginx answered alone."""
    upstream, status = _last(entry, "upstream"), _last(entry, "upstream_status")
    return None if upstream in ("", "-") or status in ("", "-") else upstream


def _upstream_ms(entry: dict[str, Any]) -> float | None:
    try:
        return float(_last(entry, "upstream_time")) * 1000
    except ValueError:
        return None


def window(entries: list[dict[str, Any]], upstream_port: int) -> Window:
    """The window of one slot over parsed access-log lines (see Window)."""
    answered, errors, router, took = 0, 0, 0, []
    for entry in entries:
        path = str(entry.get("uri", "")).split("?", 1)[0].rstrip("/")  # the request's own URI, as the client sent it
        if path not in PREDICTION_ENDPOINTS:
            continue
        by = _answered_by(entry)
        if by is None:
            router += 1
            continue
        if not by.endswith(f":{upstream_port}"):
            continue  # an in-flight request finishing on the other slot
        answered += 1
        errors += int(_last(entry, "upstream_status").startswith("5"))
        ms = _upstream_ms(entry)
        if ms is not None and path == "/predict":
            took.append(ms)
    return Window(answered, errors / answered if answered else 0.0, router, tuple(took))


def _parsed(chunk: bytes) -> list[dict[str, Any]]:
    entries = []
    for line in chunk.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class RouterLog:
    """What clients saw: the router's JSON access log (status, upstream, its status and time), read incrementally.

    nginx writes one JSON object per request (infra/nginx/router.conf.template). A dead slot shows here as
    502s with its address as the upstream before its own /metrics could say anything; a request nginx
    refused itself has no upstream and is never charged to a slot.
    """

    TAIL_BYTES = 8 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self, upstream_port: int) -> Window:
        if not self.path.exists():
            return Window(0, 0.0)
        if self.path.stat().st_size < self.offset:  # truncated between releases
            self.offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        return window(_parsed(chunk[:complete]), upstream_port)

    def recent(self, upstream_port: int, seconds: float, now: float) -> Window:
        """The slot's window over the last `seconds` before `now` (epoch): the old slot's figures on the
        traffic of the moment, to judge the new one against (same machine, same clients, same load)."""
        if not self.path.exists():
            return Window(0, 0.0)
        with open(self.path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - self.TAIL_BYTES))
            chunk = fh.read()
        entries = [e for e in _parsed(chunk) if now - seconds <= float(e.get("time") or 0) <= now]
        return window(entries, upstream_port)
