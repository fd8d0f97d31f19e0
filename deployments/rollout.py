"""Blue-green rollout on one machine: idle slot → ready → smoke → latency → switch → watch → keep or roll back.

The old slot keeps serving until the watch window has passed, so a rollback is one switch of the router's
marker file (deployments/router.py).
The window judges the new slot only on what it did itself: its process, probes through the router, the
answers it produced (never those nginx made alone for a malformed or over-limit request), its own time
against the old slot's on the same traffic, and the model-level canary (deployments/canary.py: distinct
inputs from enough clients, compared with the replaced version on the same inputs). Whatever goes wrong
inside the window, the live path goes back to the old slot: the flow never dies with the router pointing
at a dead slot. State (which slot is live, with which version, Bento and image digest) lives in
POTABLE_HOME/release/. With `image.build_local` on, a slot runs the version's pushed image by digest (podman)
rather than its Bento, and the history says which.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from core.files import save_json_atomically
from core.settings import FEATURES
from deployments.canary import Canary, PreviousModel
from deployments.checks import RolloutFailed, Watch, latency_check, records, smoke_test
from deployments.health import RouterLog, Window
from deployments.router import NginxRouter
from deployments.slots import SlotError, SlotImage, SlotProcess, start_slot, stop_slot, sweep_port, wait_ready

__all__ = ["BlueGreen", "Outcome", "RolloutFailed"]
SLOTS = ("blue", "green")
DRAIN_SECONDS = 2.0  # after a switch back, before the rolled-back slot is stopped (its in-flight requests finish)
Record = Callable[[str, dict[str, Any]], None]


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


def interval_words(seen: dict[str, float]) -> str:
    """One watch interval's figures in words (the run log's line for it)."""
    if not seen:
        return "no figures"
    words = f"{seen.get('requests', 0):.0f} predictions answered by the slot, 5xx {seen.get('error_rate', 0):.1%}"
    words += f", p99 {seen.get('p99_ms', 0):.0f} ms"
    if seen.get("router_answers"):
        words += f", {seen['router_answers']:.0f} answered by the router alone (not the slot's)"
    if "inputs" in seen:
        words += f"; canary: {seen['inputs']:.0f} distinct inputs from {seen['clients']:.0f} clients"
        if "potable_share" in seen:
            words += f", potable share {seen['potable_share']:.1%}"
        if "disagreement" in seen:
            words += f", disagrees with the previous version on {seen['disagreement']:.1%}"
    return words


def baseline_words(baseline: dict[str, Any], old: SlotProcess | None) -> str:
    """What the watch will judge against, in words (the run log's line before the first interval)."""
    words = "canary baseline: potable share on the hold-out "
    words += f"{baseline['expected_share']:.1%}" if baseline["expected_share"] is not None else "unknown"
    if baseline["expected_disagreement"] is not None and old is not None:
        words += f", disagreement with v{old.version} on the judging rows {baseline['expected_disagreement']:.1%}"
    if baseline["old_timed"]:
        words += f"; old slot p99 {baseline['old_p99_ms']:.0f} ms on its last {baseline['old_timed']} predictions"
    return words


class RolloutState:
    """JSON on disk, replaced atomically: live slot, each slot's process and what it serves."""

    def __init__(self, home: Path) -> None:
        self.path = home / "release" / "state.json"

    def load(self) -> dict[str, Any]:
        if self.path.is_file():
            return json.loads(self.path.read_text(encoding="utf-8"))
        return {"live": None, "slots": {}, "history": []}

    def save(self, state: dict[str, Any]) -> None:
        save_json_atomically(self.path, state, indent=2, sort_keys=True)


class BlueGreen:
    """The local target: two BentoML slots behind nginx. `slot_env` is the whole environment of a slot."""

    def __init__(
        self,
        home: Path,
        config: dict[str, Any],
        record: Record,
        slot_env: dict[str, str],
        say: Callable[[str], None] | None = None,
        image_tls_verify: bool = False,
    ) -> None:
        self.home, self.config, self.record = home, config, record
        # Behind the router, body limits, slow clients and per-client rates are nginx's (bentos/service.py).
        self.slot_env = slot_env | {"POTABLE_EDGE_BY_ROUTER": "1"}
        self.image_tls_verify = image_tls_verify  # pulling a slot's image from the registry
        # The release narrates itself: each step with its figure, in the run's log (flows pass Prefect's logger).
        self.say = say or logging.getLogger(__name__).info
        token_set = bool(slot_env.get("POTABLE_API_TOKEN"))
        self.router = NginxRouter(home, config["router"], config["slots"], token_set=token_set)
        self.state = RolloutState(home)
        # One release (or supervisor repair) at a time on this target, whoever starts it.
        (home / "run").mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(home / "run" / "rollout.lock"))

    def status(self) -> dict[str, Any]:
        state = self.state.load()
        for name, slot in state["slots"].items():
            slot["running"] = self._slot(state, name).alive()
        return state | {"router": self.router.url, "router_running": self.router.pid() is not None}

    def live_version(self) -> str | None:
        """The version the live slot serves, if any."""
        state = self.state.load()
        return (state["slots"].get(state["live"] or "") or {}).get("version")

    def _slot(self, state: dict[str, Any], name: str | None) -> SlotProcess | None:
        data = state["slots"].get(name or "")
        return SlotProcess(**{k: data[k] for k in SlotProcess.__dataclass_fields__ if k in data}) if data else None

    def _slot_image(self, reference: str | None) -> SlotImage | None:
        """How a slot runs `reference` (configs/release.yaml `image`); None: the Bento is served directly."""
        if not reference:
            return None
        rules = self.config["image"]
        limits = rules["ulimits"]
        return SlotImage(reference, rules["runtime"], limits["nofile"], limits["nproc"], self.image_tls_verify)

    def _serving(self, slot: SlotProcess, digest: str | None) -> dict[str, Any]:
        """What an interval of `potable rollout history` says served, and which artifact ran it."""
        runs = f"image {slot.image}" if slot.image else f"bento {slot.bento_tag}"
        return {"slot": slot.name, "version": slot.version, "bento_tag": slot.bento_tag, "digest": digest, "runs": runs}

    def prepare(
        self, version: str, bento_tag: str, golden: pd.DataFrame, expected: np.ndarray, image: str | None = None
    ) -> SlotProcess:
        """Start the idle slot with the new Bento (or its image, by digest) and check it; nothing live changes."""
        state = self.state.load()
        idle = "green" if state["live"] == "blue" else "blue"
        leftover = self._slot(state, idle)
        if leftover is not None:
            stop_slot(leftover)  # a previous release's slot that was never switched to
        began = time.monotonic()
        port = self.config["slots"][idle]
        slot = start_slot(idle, port, bento_tag, version, self.home, self.slot_env, self._slot_image(image))
        runs = f"image {image}, pulled in {time.monotonic() - began:.1f} s" if image else bento_tag
        self.say(f"slot {idle}: started v{version} ({runs}) on {slot.url}, pid {slot.pid}")
        try:
            ready = wait_ready(slot, self.config["ready_timeout_seconds"])
            self.say(f"slot {idle}: ready after {ready:.1f} s")
            worst = smoke_test(slot, golden, expected, self.config["smoke"]["tolerance"])
            self.say(
                f"slot {idle}: smoke test on {len(golden)} golden rows, largest probability difference {worst:.2e} "
                f"(tolerance {self.config['smoke']['tolerance']:g})"
            )
            sample = records(golden.head(1))[0]
            check = self.config["latency_check"]
            p99 = latency_check(slot, sample, check["requests"], check["max_p99_ms"])
            self.say(
                f"slot {idle}: latency p99 {p99:.1f} ms over {check['requests']} requests "
                f"(limit {check['max_p99_ms']} ms)"
            )
        except Exception as exc:
            self.say(f"slot {idle}: check failed, stopping it; the live path is unchanged ({exc})")
            stop_slot(slot)
            raise
        self.record("slot_ready", {"slot": idle, "ready_s": round(ready, 2), "smoke_max_diff": worst, "p99_ms": p99})
        return slot

    def switch(self, slot: SlotProcess, digest: str | None) -> str | None:
        """Point the live path at `slot`; returns the slot that was live."""
        state = self.state.load()
        previous = state["live"]
        if self.router.pid() is None:
            self.router.start(slot.name)
        else:
            self.router.switch(slot.name)
        state["slots"][slot.name] = slot.to_dict() | {"digest": digest}
        state["live"], state["previous"] = slot.name, previous
        self.state.save(state)
        self.record("switched", self._serving(slot, digest) | {"from": previous})
        self.say(f"router: switched to slot {slot.name} (v{slot.version}); was {previous or 'nothing'}")
        return previous

    def watch(
        self, slot: SlotProcess, previous: str | None, canary: Canary, old: Window | None
    ) -> tuple[dict | None, float | None, list]:
        """Judge the new slot each interval; on a breach (or any error while judging) switch back at once."""
        rules = self.config["watch"]
        watch = Watch(slot, self.router, rules, canary, old)
        deadline = time.monotonic() + rules["window_seconds"]
        self.say(
            f"watch: judging slot {slot.name} for {rules['window_seconds']:g} s, every {rules['interval_seconds']:g} s"
        )
        while time.monotonic() < deadline:
            time.sleep(rules["interval_seconds"])
            try:
                reason = watch.check()
            except Exception as exc:  # noqa: BLE001 - whatever fails while judging, the old slot is safer
                reason = f"watch failed: {type(exc).__name__}: {exc}"
            self.say(
                f"watch {len(watch.seen)}: {interval_words(watch.seen[-1] if watch.seen else {})} → {reason or 'ok'}"
            )
            if reason is not None and previous is not None:
                measured = time.monotonic()
                self.roll_back_to(previous, reason=reason)
                return (
                    {"reason": reason, **(watch.seen[-1] if watch.seen else {})},
                    time.monotonic() - measured,
                    watch.seen,
                )
        return None, None, watch.seen

    def roll_back_to(self, previous: str, reason: str) -> None:
        state = self.state.load()
        old = self._slot(state, previous)
        if old is None or not old.alive():
            raise RolloutFailed(f"cannot roll back: slot {previous} is not running")
        failed = state["live"]
        self.router.switch(old.name)
        state["live"], state["previous"] = old.name, None
        self.state.save(state)
        self.record(
            "rolled_back",
            self._serving(old, state["slots"][old.name].get("digest")) | {"from": failed, "reason": reason},
        )

    def retire(self, name: str | None) -> None:
        """Stop a slot that no longer serves (after the watch window, or a rolled-back one)."""
        state = self.state.load()
        slot = self._slot(state, name)
        if slot is not None:
            stop_slot(slot)
            retired = state["slots"].pop(name, None) or {}
            if name != state["live"]:  # what a manual rollback would bring back
                state["retired"] = {k: retired.get(k) for k in ("version", "bento_tag", "digest", "image")}
            self.state.save(state)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the target's lock, or RolloutFailed at once when another release or repair holds it."""
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise RolloutFailed("another release is running on this target; nothing was changed") from None
        try:
            yield
        finally:
            self.lock.release()

    def release(
        self,
        version: str,
        bento_tag: str,
        golden: pd.DataFrame,
        expected: np.ndarray,
        digest: str | None = None,
        expected_share: float | None = None,
        previous_model: PreviousModel | None = None,
        expected_disagreement: float | None = None,
        on_switched: Callable[[SlotProcess], None] | None = None,
        image: str | None = None,
    ) -> Outcome:
        """`previous_model` answers as the version being replaced does (0/1 per row); with it, the canary
        compares both versions on the same live inputs against `expected_disagreement` (on judging rows).
        `image` (registry/repository@digest): the slot runs that image rather than the Bento."""
        with self.holding():
            self.router.trim_access_log()
            state = self.state.load()
            old = self._slot(state, state["live"])
            slot = self.prepare(version, bento_tag, golden, expected, image)
            ready_at = time.monotonic()
            old_window = self._recent(old)
            canary = Canary(
                self.home / "predictions",
                version,
                self.config["canary"],
                list(FEATURES),
                expected_share,
                previous_model if old is not None else None,
                expected_disagreement,
            )
            try:
                previous = self.switch(slot, digest)
            except Exception:
                stop_slot(slot)  # the router refused: the live path is unchanged, the new slot goes
                raise
            switched_s = time.monotonic() - ready_at
            baseline = {
                "slot": slot.name,
                "expected_share": expected_share,
                "expected_disagreement": canary.expected_disagreement,
                "old_p99_ms": round(old_window.p99_ms, 2) if old_window else None,
                "old_timed": old_window.timed if old_window else 0,
            }
            self.record("canary_baseline", baseline)
            self.say(baseline_words(baseline, old))
            if on_switched is not None:
                on_switched(slot)
            breach, rollback_s, seen = self.watch(slot, previous, canary, old_window)
            if breach is not None:
                self.say(f"rolled back to slot {previous} in {rollback_s:.2f} s: {breach['reason']}")
                time.sleep(DRAIN_SECONDS)  # requests already on their way to the failed slot get their answer
                self.retire(slot.name)
                self.say(f"slot {slot.name} (v{version}) stopped")
                return Outcome("rolled_back", version, previous or "", slot.name, switched_s, breach, rollback_s, seen)
            self.retire(previous)
            self.say(f"released: v{version} live on slot {slot.name}; slot {previous or '-'} retired")
            return Outcome("released", version, slot.name, previous, switched_s, watched=seen)

    def _recent(self, old: SlotProcess | None) -> Window | None:
        """The old slot's own figures on the traffic of the last seconds: what the new one is judged against."""
        if old is None:
            return None
        return RouterLog(self.router.access_log).recent(old.port, self.config["watch"]["baseline_seconds"], time.time())

    def repair(self) -> dict[str, Any] | None:
        """Outside a release: restart a live slot that died, and the router if it is down (`potable up`)."""
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            return None  # a release is judging the slots right now
        try:
            state = self.state.load()
            live = self._slot(state, state["live"])
            if live is None:
                return None
            done: dict[str, Any] = {}
            if not live.alive():
                began = time.monotonic()
                sweep_port(live.port)
                image = self._slot_image(live.image)
                fresh = start_slot(live.name, live.port, live.bento_tag, live.version, self.home, self.slot_env, image)
                try:
                    wait_ready(fresh, self.config["ready_timeout_seconds"])
                except SlotError as exc:
                    stop_slot(fresh)
                    return {"slot": live.name, "restarted": False, "error": str(exc)}
                state = self.state.load()
                digest = state["slots"][live.name].get("digest")
                state["slots"][live.name] = fresh.to_dict() | {"digest": digest}
                self.state.save(state)
                done = {"restarted": True, "recovery_s": round(time.monotonic() - began, 2)}
                self.record("slot_restarted", self._serving(fresh, digest) | done)
            if self.router.pid() is None:
                self.router.start(live.name)
                done["router_restarted"] = True
                self.record("router_restarted", {"slot": live.name})
            return (done | {"slot": live.name, "version": live.version}) if done else None
        finally:
            self.lock.release()

    def shutdown(self) -> None:
        """Stop router and slots (tests, `potable rollout stop`)."""
        with self.holding():
            self.router.stop()
            for name in SLOTS:
                self.retire(name)
            state = self.state.load()
            if state["live"] is not None:
                self.record("stopped", {"slot": state["live"]})
            state["live"] = None
            self.state.save(state)
