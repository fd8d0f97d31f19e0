"""The checks a new slot must pass on the local target: before the switch (smoke, latency) and after it (the watch).

Kept apart from the rollout's steps (deployments/rollout.py) so each check can be read and unit-tested
on its own; the rollout decides what a failed check does (refuse the switch, or switch back).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pandas as pd

from deployments import health
from deployments.canary import Canary
from deployments.health import RouterLog, Window
from deployments.router import NginxRouter
from deployments.slots import SlotProcess


class RolloutFailed(RuntimeError):
    """A pre-switch check failed, or another release holds the target: the live path was never touched."""


def records(golden: pd.DataFrame) -> list[dict[str, float | None]]:
    return [{k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for row in golden.to_dict("records")]


def smoke_test(slot: SlotProcess, golden: pd.DataFrame, expected: np.ndarray, tolerance: float) -> float:
    """The slot answers the golden rows as the registered model does; returns the largest difference."""
    response = httpx.post(f"{slot.url}/predict_batch", json={"samples": records(golden)}, timeout=30)
    if response.status_code != 200:
        raise RolloutFailed(f"smoke test: slot {slot.name} answered {response.status_code}: {response.text[:300]}")
    got = np.array([p[1] for p in response.json()["probabilities"]])
    worst = float(np.max(np.abs(got - expected)))
    if worst > tolerance:
        raise RolloutFailed(f"smoke test: slot {slot.name} differs from the registered model by {worst:.2e}")
    return worst


def latency_check(slot: SlotProcess, sample: dict[str, Any], requests: int, max_p99_ms: float) -> float:
    """p99 of sequential single predictions on the idle slot (no other traffic) must stay under the limit."""
    took = []
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            began = time.perf_counter()
            client.post(f"{slot.url}/predict", json=sample).raise_for_status()
            took.append((time.perf_counter() - began) * 1000)
    p99 = float(np.percentile(took, 99))
    if p99 > max_p99_ms:
        raise RolloutFailed(f"latency check: slot {slot.name} p99 {p99:.0f} ms > {max_p99_ms} ms")
    return p99


def latency_limit(old: Window | None, rules: dict[str, Any]) -> tuple[float, str]:
    """The new slot's p99 limit: a multiple of the old slot's on the traffic just before the switch (same
    machine, same clients, same load), or the fixed limit when there is no old slot to compare with."""
    if old is not None and old.timed >= rules["min_latency_requests"]:
        limit = old.p99_ms * rules["max_p99_ratio"] + rules["p99_slack_ms"]
        words = f"{rules['max_p99_ratio']:g}× the previous slot's {old.p99_ms:.0f} ms + {rules['p99_slack_ms']:g} ms"
        return limit, words
    return rules["max_p99_ms"], f"{rules['max_p99_ms']:g} ms"


class Watch:
    """One watch window over a just-switched slot; `check()` returns the reason to roll back, or None.

    Charged to the slot: its process dying, probes through the router failing, 5xx it produced itself and
    its own time on single predictions (over the window so far, against the old slot's just before). Not
    charged: anything nginx answered alone (counted as `router_answers`). The model-level canary
    (deployments/canary.py) judges the version's answers as evidence from distinct inputs and clients.
    """

    def __init__(
        self, slot: SlotProcess, router: NginxRouter, rules: dict, canary: Canary, old: Window | None = None
    ) -> None:
        self.slot, self.router, self.rules, self.canary = slot, router, rules, canary
        self.log = RouterLog(router.access_log)
        self.limit_ms, self.limit_words = latency_limit(old, rules)
        self.took: list[float] = []  # over the window so far: one slow interval of few requests is not a p99
        self.failed_probes = 0
        self.seen: list[dict[str, float]] = []

    def probe(self) -> bool:
        """/readyz through the router: the path a client takes, to the slot that is live now."""
        try:
            answer = httpx.get(
                f"{self.router.url}/readyz", timeout=self.rules["probe_timeout_seconds"], verify=self.router.verify
            )
            return answer.status_code == 200
        except httpx.HTTPError:
            return False

    def check(self) -> str | None:
        if not self.slot.alive():
            return f"slot {self.slot.name} process exited"
        self.failed_probes = 0 if self.probe() else self.failed_probes + 1
        w = self.log.read(self.slot.port)
        self.took.extend(w.took)
        p99 = health.p99(self.took)
        self.seen.append(
            {"requests": w.requests, "error_rate": w.error_rate, "p99_ms": p99, "router_answers": w.router_answers}
        )
        if self.failed_probes >= self.rules["probe_failures"]:
            return f"{self.failed_probes} probes through the router failed"
        if self.failed_probes:
            return None  # not answering right now: the rest would only cost another timeout
        if w.requests >= self.rules["min_requests"] and w.error_rate > self.rules["max_error_rate"]:
            return f"slot {self.slot.name} answered 5xx to {w.error_rate:.1%} of {w.requests} predictions"
        if len(self.took) >= self.rules["min_latency_requests"] and p99 > self.limit_ms:
            return f"slot p99 {p99:.0f} ms on {len(self.took)} predictions, over {self.limit_words}"
        reason, figures = self.canary.check()
        self.seen[-1] |= {k: round(v, 4) for k, v in figures.items()}
        return reason
