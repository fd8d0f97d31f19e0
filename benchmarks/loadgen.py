"""A small closed-loop load generator (threads, keep-alive clients) that records every request's outcome.

Used by benchmarks/rollout_bench.py and the release tests: start() before a rollout, stop() after, then
count failures in any time range (e.g. after a rollback completed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadGenerator:
    url: str
    payload: dict | list[dict]  # one body, or several sent in turn (varied traffic for the model-level canary)
    connections: int = 32
    # Client addresses: connection i speaks from 127.0.0.(2 + i % sources) (all reach a loopback listener):
    # by default each connection is its own client, as many labs are; sources=1: all from 127.0.0.1.
    sources: int | None = None
    results: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, status; 0 = error)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _live: list[list[tuple[float, float, int]]] = field(default_factory=list)

    def sent(self) -> int:
        """Requests finished so far, while the load runs too."""
        return sum(len(local) for local in list(self._live))

    def _run(self, index: int) -> None:
        local: list[tuple[float, float, int]] = []
        self._live.append(local)  # counted while running (list appends are atomic); results gets it at the end
        bodies = self.payload if isinstance(self.payload, list) else [self.payload]
        sent = index * len(bodies) // self.connections  # each connection starts elsewhere in the bodies
        sources = self.sources or self.connections
        address = f"127.0.0.{2 + index % sources}" if sources > 1 else None
        transport = httpx.HTTPTransport(local_address=address) if address else None
        with httpx.Client(timeout=10, transport=transport) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                body, sent = bodies[sent % len(bodies)], sent + 1
                try:
                    status = client.post(self.url, json=body).status_code
                except httpx.HTTPError:
                    status = 0
                local.append((began, time.monotonic(), status))
        self.results.extend(local)

    def start(self) -> LoadGenerator:
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.connections)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Requests that started in [since, until) and did not get a 2xx."""
        return sum(1 for began, _, status in self.results if since <= began < until and not 200 <= status < 300)

    def failure_kinds(self, since: float = 0.0) -> dict[int, int]:
        """Failures by status (0 = connection error or timeout), for messages."""
        kinds: dict[int, int] = {}
        for began, _, status in self.results:
            if began >= since and not 200 <= status < 300:
                kinds[status] = kinds.get(status, 0) + 1
        return kinds

    def served(self) -> int:
        return sum(1 for *_, status in self.results if 200 <= status < 300)
