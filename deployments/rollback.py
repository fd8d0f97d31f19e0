"""How a manual rollback goes back on the local target: the cheapest way that restores the previous version.

While the previous version's slot still runs, rolling back is a router switch (seconds, nothing started).
Once that slot is retired, it is a release of the retired version (with an override reason, audited).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deployments.rollout import BlueGreen, RolloutFailed


def roll_back(target: BlueGreen, release_version: Callable[[str, str], Any]) -> str:
    """Go back to the previous version; returns what is live afterwards. `release_version(version, reason)`
    is the release flow (the caller's: deployments sit below flows)."""
    state = target.state.load()
    previous = state.get("previous")
    if previous and previous in state["slots"]:
        target.roll_back_to(previous, reason="manual rollback")
        return f"live slot: {previous}"
    retired = (state.get("retired") or {}).get("version")
    if not retired:
        raise RolloutFailed("nothing to roll back to: no earlier version has been live on this target")
    release_version(retired, f"manual rollback to v{retired}")
    return f"released v{retired} again"
