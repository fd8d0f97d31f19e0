"""Policy as code: rules from configs/policy.yaml evaluated against measured values."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


@dataclass(frozen=True)
class RuleResult:
    name: str
    measure: str
    op: str
    limit: Any
    measured: Any
    passed: bool
    why: str = ""

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.name}: {self.measure} = {_fmt(self.measured)} (must be {self.op} {_fmt(self.limit)})"


@dataclass(frozen=True)
class PolicyReport:
    results: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rules": [asdict(r) for r in self.results]}

    def markdown(self) -> str:
        rows = [
            f"| {r.name} | {_fmt(r.measured)} | {r.op} {_fmt(r.limit)} | {'pass' if r.passed else '**FAIL**'} |"
            for r in self.results
        ]
        verdict = "PASSED" if self.passed else "FAILED"
        head = f"**Policy gate: {verdict}**\n\n| rule | measured | limit | result |\n|---|---|---|---|"
        return "\n".join([head, *rows])


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluate_policy(policy: dict[str, Any], measured: dict[str, Any]) -> PolicyReport:
    """Evaluate every rule; a measure that could not be taken fails its rule (never passes silently)."""
    results = []
    for rule in policy["rules"]:
        op = rule["op"]
        if op not in OPERATORS:
            raise ValueError(f"policy rule {rule['name']!r}: unknown operator {op!r}")
        value = measured.get(rule["measure"])
        passed = value is not None and value == value and bool(OPERATORS[op](value, rule["limit"]))  # NaN fails
        results.append(RuleResult(rule["name"], rule["measure"], op, rule["limit"], value, passed, rule.get("why", "")))
    return PolicyReport(results)
