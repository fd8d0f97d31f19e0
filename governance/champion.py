"""Champion vs challenger on the same held-out data, decided on the policy's primary metric."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Comparison:
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None
    margin: float
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_with_champion(
    metric: str,
    margin: float,
    challenger_version: str,
    challenger_value: float,
    champion_version: str | None,
    champion_value: float | None,
) -> Comparison:
    """Pass when there is no champion yet, or the challenger is not worse by more than `margin`."""
    if champion_version is None or champion_value is None:
        return Comparison(
            metric,
            challenger_version,
            challenger_value,
            None,
            None,
            margin,
            True,
            "no champion yet: judged by the policy alone",
        )
    delta = challenger_value - champion_value
    passed = delta >= -margin
    reason = (
        f"challenger {metric} {challenger_value:.4f} vs champion v{champion_version} {champion_value:.4f} "
        f"(difference {delta:+.4f}, allowed down to -{margin:.4f})"
    )
    return Comparison(
        metric, challenger_version, challenger_value, champion_version, champion_value, margin, passed, reason
    )
