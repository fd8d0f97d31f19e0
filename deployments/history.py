"""What served when: the audit trail's switches, rollbacks, restarts and stops as intervals.

"Which model answered this prediction at time T" has one answer: the interval containing T (the prediction
log's model_version says the same from the other side).
"""

from __future__ import annotations

from typing import Any

STARTS = ("switched", "rolled_back", "slot_restarted")
ENDS = ("stopped",)


def served_intervals(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit entries (in order) → [{version, bento_tag, digest, runs, slot, from, to, because}], `to` None if
    live; `runs` names the artifact the slot ran: "image <registry/repository@digest>" or "bento <tag>"."""
    intervals: list[dict[str, Any]] = []
    for entry in entries:
        action, details = entry["action"], entry.get("details") or {}
        if action not in STARTS + ENDS:
            continue
        if intervals and intervals[-1]["to"] is None:
            intervals[-1]["to"] = entry["timestamp"]
        if action in ENDS:
            continue
        intervals.append(
            {
                "version": details.get("version") or entry["subject"].get("model_version"),
                "bento_tag": details.get("bento_tag"),
                "digest": details.get("digest"),
                "runs": details.get("runs") or f"bento {details.get('bento_tag')}",
                "slot": details.get("slot") or entry["subject"].get("slot"),
                "from": entry["timestamp"],
                "to": None,
                "because": action if action != "rolled_back" else f"rolled_back: {details.get('reason', '')}",
            }
        )
    return intervals


def serving_at(intervals: list[dict[str, Any]], timestamp: str) -> dict[str, Any] | None:
    """The interval that was live at an ISO timestamp (same UTC format as the audit trail)."""
    for interval in intervals:
        if interval["from"] <= timestamp and (interval["to"] is None or timestamp < interval["to"]):
            return interval
    return None
