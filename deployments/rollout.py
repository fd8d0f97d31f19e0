"""Blue-green rollout on one machine: idle slot → ready → smoke → latency → switch → watch → keep or roll back.

The old slot keeps serving until the watch window has passed, so a rollback is one graceful nginx reload.
State (which slot is live, with which version, Bento and image digest) lives in POTABLE_HOME/release/.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from deployments.health import Window, read_snapshot, window
from deployments.router import NginxRouter
from deployments.slots import SlotProcess, start_slot, stop_slot, wait_ready

SLOTS = ("blue", "green")
Record = Callable[[str, dict[str, Any]], None]


class RolloutFailed(RuntimeError):
    """A pre-switch check failed: the live path was never touched."""


@dataclass
class Outcome:
    status: str  # released | rolled_back
    version: str
    slot: str
    previous_slot: str | None
    seconds_ready_to_switched: float
    breach: dict[str, Any] | None = None
    seconds_breach_to_rollback: float | None = None
    watched: list[dict[str, float]] = field(default_factory=list)


class RolloutState:
    """JSON on disk, replaced atomically: live slot, each slot's process and what it serves."""

    def __init__(self, home: Path) -> None:
        self.path = home / "release" / "state.json"

    def load(self) -> dict[str, Any]:
        if self.path.is_file():
            return json.loads(self.path.read_text(encoding="utf-8"))
        return {"live": None, "slots": {}, "history": []}

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def smoke_test(slot: SlotProcess, golden: pd.DataFrame, expected: np.ndarray, tolerance: float) -> float:
    """The slot answers the golden rows as the registered model does; returns the largest difference."""
    records = [{k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for row in golden.to_dict("records")]
    response = httpx.post(f"{slot.url}/predict_batch", json={"samples": records}, timeout=30)
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


def breached(w: Window, rules: dict[str, Any]) -> bool:
    if w.requests < rules["min_requests"]:
        return False
    return w.error_rate > rules["max_error_rate"] or w.p99_ms > rules["max_p99_ms"]


class BlueGreen:
    """The local target: two BentoML slots behind nginx."""

    def __init__(self, home: Path, config: dict[str, Any], record: Record) -> None:
        self.home, self.config, self.record = home, config, record
        router = config["router"]
        self.router = NginxRouter(home, router["listen"], router["rate_limit_per_second"], router["burst"])
        self.state = RolloutState(home)

    def status(self) -> dict[str, Any]:
        state = self.state.load()
        for name, slot in state["slots"].items():
            slot["running"] = self._slot(state, name).alive()
        return state | {"router": self.router.url, "router_running": self.router.pid() is not None}

    def _slot(self, state: dict[str, Any], name: str | None) -> SlotProcess | None:
        data = state["slots"].get(name or "")
        return SlotProcess(**{k: data[k] for k in SlotProcess.__dataclass_fields__}) if data else None

    def prepare(self, version: str, bento_tag: str, golden: pd.DataFrame, expected: np.ndarray) -> SlotProcess:
        """Start the idle slot with the new Bento and check it; nothing live changes here."""
        state = self.state.load()
        idle = "green" if state["live"] == "blue" else "blue"
        leftover = self._slot(state, idle)
        if leftover is not None:
            stop_slot(leftover)  # a previous release's slot that was never switched to
        slot = start_slot(idle, self.config["slots"][idle], bento_tag, version, self.home)
        try:
            ready = wait_ready(slot, self.config["ready_timeout_seconds"])
            worst = smoke_test(slot, golden, expected, self.config["smoke"]["tolerance"])
            sample = {k: (None if pd.isna(v) else float(v)) for k, v in golden.iloc[0].items()}
            check = self.config["latency_check"]
            p99 = latency_check(slot, sample, check["requests"], check["max_p99_ms"])
        except Exception:
            stop_slot(slot)
            raise
        self.record("slot_ready", {"slot": idle, "ready_s": round(ready, 2), "smoke_max_diff": worst, "p99_ms": p99})
        return slot

    def switch(self, slot: SlotProcess, digest: str | None) -> str | None:
        """Point the live path at `slot`; returns the slot that was live."""
        state = self.state.load()
        previous = state["live"]
        if self.router.pid() is None:
            self.router.start(slot.name, slot.port)
        else:
            self.router.switch(slot.name, slot.port)
        state["slots"][slot.name] = slot.to_dict() | {"digest": digest}
        state["live"], state["previous"] = slot.name, previous
        self.state.save(state)
        self.record("switched", {"slot": slot.name, "from": previous, "version": slot.version})
        return previous

    def watch(self, slot: SlotProcess, previous: str | None) -> tuple[dict | None, float | None, list[dict]]:
        """Read the new slot's metrics each interval; on a breach switch back at once."""
        rules = self.config["watch"]
        deadline = time.monotonic() + rules["window_seconds"]
        before, seen = read_snapshot(slot.url), []
        while time.monotonic() < deadline:
            time.sleep(rules["interval_seconds"])
            after = read_snapshot(slot.url)
            w = window(before, after)
            before = after
            seen.append({"requests": w.requests, "error_rate": w.error_rate, "p99_ms": w.p99_ms})
            if breached(w, rules) and previous is not None:
                measured = time.monotonic()
                self.roll_back_to(previous, reason=f"error rate {w.error_rate:.1%}, p99 {w.p99_ms:.0f} ms")
                return seen[-1], time.monotonic() - measured, seen
        return None, None, seen

    def roll_back_to(self, previous: str, reason: str) -> None:
        state = self.state.load()
        old = self._slot(state, previous)
        if old is None or not old.alive():
            raise RolloutFailed(f"cannot roll back: slot {previous} is not running")
        failed = state["live"]
        self.router.switch(old.name, old.port)
        state["live"], state["previous"] = old.name, None
        self.state.save(state)
        self.record("rolled_back", {"slot": old.name, "from": failed, "reason": reason})

    def retire(self, name: str | None) -> None:
        """Stop a slot that no longer serves (after the watch window, or a rolled-back one)."""
        state = self.state.load()
        slot = self._slot(state, name)
        if slot is not None:
            stop_slot(slot)
            retired = state["slots"].pop(name, None) or {}
            if name != state["live"]:  # what a manual rollback would bring back
                state["retired"] = {k: retired.get(k) for k in ("version", "bento_tag", "digest")}
            self.state.save(state)

    def release(
        self,
        version: str,
        bento_tag: str,
        golden: pd.DataFrame,
        expected: np.ndarray,
        digest: str | None = None,
        on_switched: Callable[[SlotProcess], None] | None = None,
    ) -> Outcome:
        slot = self.prepare(version, bento_tag, golden, expected)
        ready_at = time.monotonic()
        try:
            previous = self.switch(slot, digest)
        except Exception:
            stop_slot(slot)  # the router refused: the live path is unchanged, the new slot goes
            raise
        switched_s = time.monotonic() - ready_at
        if on_switched is not None:
            on_switched(slot)
        breach, rollback_s, seen = self.watch(slot, previous)
        if breach is not None:
            self.retire(slot.name)
            return Outcome("rolled_back", version, previous or "", slot.name, switched_s, breach, rollback_s, seen)
        self.retire(previous)
        return Outcome("released", version, slot.name, previous, switched_s, watched=seen)

    def shutdown(self) -> None:
        """Stop router and slots (tests, `potable rollout stop`)."""
        self.router.stop()
        for name in SLOTS:
            self.retire(name)
        state = self.state.load()
        state["live"] = None
        self.state.save(state)
