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

from deployments.health import RouterLog, potable_share, read_classes
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


def canary_breach(
    answers: float, share: float, expected_share: float | None, old: tuple[float, float] | None, rules: dict
) -> str | None:
    """The model-level canary: too different a share of "potable" answers on live traffic rolls back."""
    if answers < rules["min_requests"]:
        return None
    limit = rules["max_share_difference"]
    if expected_share is not None and abs(share - expected_share) > limit:
        return f"potable share {share:.1%} on live traffic vs {expected_share:.1%} on its hold-out"
    if old is not None and old[0] >= rules["min_requests"] and abs(share - old[1]) > limit:
        return f"potable share {share:.1%} vs {old[1]:.1%} from the previous version just before"
    return None


class Watch:
    """One watch window over a just-switched slot; `check()` returns the reason to roll back, or None."""

    def __init__(self, slot: SlotProcess, router: NginxRouter, rules: dict, canary: dict, baseline: dict) -> None:
        self.slot, self.router, self.rules, self.canary = slot, router, rules, canary
        self.log = RouterLog(router.access_log)
        self.expected_share, self.old = baseline.get("expected_share"), baseline.get("old")
        self.classes_at_switch = baseline.get("classes") or {0: 0.0, 1: 0.0}
        self.failed_probes = 0
        self.seen: list[dict[str, float]] = []

    def probe(self) -> bool:
        """/readyz through the router: the path a client takes, to the slot that is live now."""
        try:
            answer = httpx.get(f"{self.router.url}/readyz", timeout=self.rules["probe_timeout_seconds"])
            return answer.status_code == 200
        except httpx.HTTPError:
            return False

    def check(self) -> str | None:
        if not self.slot.alive():
            return f"slot {self.slot.name} process exited"
        self.failed_probes = 0 if self.probe() else self.failed_probes + 1
        w = self.log.read(self.slot.port)
        self.seen.append({"requests": w.requests, "error_rate": w.error_rate, "p99_ms": w.p99_ms})
        if self.failed_probes >= self.rules["probe_failures"]:
            return f"{self.failed_probes} probes through the router failed"
        if self.failed_probes:
            return None  # not answering right now: its /metrics would only cost another timeout
        if w.requests >= self.rules["min_requests"]:
            if w.error_rate > self.rules["max_error_rate"]:
                return f"clients got 5xx on {w.error_rate:.1%} of {w.requests:.0f} predictions"
            if w.p99_ms > self.rules["max_p99_ms"]:
                return f"client p99 {w.p99_ms:.0f} ms over {w.requests:.0f} predictions"
        try:
            now = read_classes(self.slot.url, self.slot.version, self.rules["probe_timeout_seconds"])
            answers, share = potable_share(self.classes_at_switch, now)
        except httpx.HTTPError:
            return None  # the probes above judge an unresponsive slot
        self.seen[-1] |= {"answers": answers, "potable_share": round(share, 4)}
        return canary_breach(answers, share, self.expected_share, self.old, self.canary)
