"""The model-level canary: the new version's answers on live inputs, weighed as evidence, not as traffic.

Requests are not evidence: one client posting one sample 3,000 times is one input from one witness. So the
canary reads the slots' prediction log (bentos/prediction_log.py: client pseudonym, inputs, answer), keeps
each client's distinct inputs up to a cap, and judges only with enough distinct inputs from enough clients.
It compares the new version with the one it replaces on the same inputs (their disagreement, against how
often they disagree on the version's judging rows), and its share of "potable" answers with its hold-out.
A breach must stand with any one client left out: no single client can roll a release back, however it
chooses its inputs. Too little evidence is "no verdict yet", never a rollback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PreviousModel = Callable[[pd.DataFrame], np.ndarray]  # the replaced version's 0/1 answers on rows


@dataclass
class Evidence:
    """Distinct live inputs per client (first `cap` of each), with the new and the old version's answers."""

    cap: int
    by_client: dict[str, dict[str, tuple[dict[str, Any], int]]] = field(default_factory=dict)
    previous: dict[str, int] = field(default_factory=dict)  # input key → the old version's answer

    def add(self, client: str, inputs: dict[str, Any], prediction: int) -> None:
        seen = self.by_client.setdefault(client, {})
        key = json.dumps(inputs, sort_keys=True)
        if key not in seen and len(seen) < self.cap:
            seen[key] = (inputs, prediction)

    def score_previous(self, previous: PreviousModel, features: list[str]) -> None:
        """The old version's answers on inputs not scored yet (each distinct input once)."""
        fresh = {k: i for answers in self.by_client.values() for k, (i, _) in answers.items() if k not in self.previous}
        if not fresh:
            return
        rows = pd.DataFrame([{f: inputs.get(f) for f in features} for inputs in fresh.values()], dtype=float)
        self.previous |= dict(zip(fresh, (int(p) for p in previous(rows)), strict=True))

    def figures(self, leave_out: str | None = None) -> dict[str, float]:
        """Inputs, clients, potable share and (when scored) disagreement with the old version, over all
        clients or all but `leave_out`. An input two clients sent counts once."""
        answers: dict[str, int] = {}
        clients = 0
        for client, seen in self.by_client.items():
            if client == leave_out or not seen:
                continue
            clients += 1
            answers |= {key: prediction for key, (_, prediction) in seen.items()}
        figures = {"inputs": float(len(answers)), "clients": float(clients)}
        if answers:
            figures["potable_share"] = sum(answers.values()) / len(answers)
            compared = [(p, self.previous[k]) for k, p in answers.items() if k in self.previous]
            if compared:
                figures["disagreement"] = sum(new != old for new, old in compared) / len(compared)
        return figures


def breach(
    figures: dict[str, float],
    expected_share: float | None,
    expected_disagreement: float | None,
    rules,
    min_clients: int | None = None,
) -> str | None:
    """The reason this evidence says the version misbehaves, or None (also when there is too little of it)."""
    needed = rules["min_clients"] if min_clients is None else min_clients
    if figures["inputs"] < rules["min_inputs"] or figures["clients"] < needed:
        return None
    share, limit = figures["potable_share"], rules["max_share_difference"]
    if expected_share is not None and abs(share - expected_share) > limit:
        return f"potable share {share:.1%} on live inputs vs {expected_share:.1%} on its hold-out"
    if expected_disagreement is not None and "disagreement" in figures:
        if figures["disagreement"] - expected_disagreement > rules["max_disagreement_increase"]:
            return (
                f"disagrees with the previous version on {figures['disagreement']:.1%} of live inputs "
                f"vs {expected_disagreement:.1%} on its judging rows"
            )
    return None


def verdict(
    evidence: Evidence, expected_share: float | None, expected_disagreement: float | None, rules
) -> tuple[str | None, dict[str, float]]:
    """(reason to roll back or None, the pooled figures). The reason must hold with every client left out
    in turn, each time on at least `min_inputs` distinct inputs: otherwise one witness would decide."""
    pooled = evidence.figures()
    reason = breach(pooled, expected_share, expected_disagreement, rules)
    if reason is None:
        return None, pooled
    for client in evidence.by_client:
        rest = evidence.figures(leave_out=client)
        if breach(rest, expected_share, expected_disagreement, rules, min_clients=1) is None:
            return None, pooled | {"decided_by_one_client": 1.0}
    return f"{reason} ({pooled['inputs']:.0f} distinct inputs from {pooled['clients']:.0f} clients)", pooled


class PredictionLogReader:
    """New lines of the slots' prediction log since the reader was made: POTABLE_HOME/predictions/*.jsonl, and
    a folder below it per container slot (deployments/slots.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offsets = {path: path.stat().st_size for path in self._files()}

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("**/predictions-*.jsonl")) if self.folder.is_dir() else []

    def read(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for path in self._files():
            offset = self.offsets.get(path, 0)
            if path.stat().st_size < offset:
                offset = 0
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            complete = chunk.rfind(b"\n") + 1
            self.offsets[path] = offset + complete
            for line in chunk[:complete].splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("inputs"), dict):
                    rows.append(row)
        return rows


class Canary:
    """One watch window's canary over a version: feed it the log each interval, ask for the verdict."""

    def __init__(
        self,
        folder: Path,
        version: str,
        rules: dict[str, Any],
        features: list[str],
        expected_share: float | None = None,
        previous: PreviousModel | None = None,
        expected_disagreement: float | None = None,
    ) -> None:
        self.version, self.rules, self.features = version, rules, features
        self.expected_share, self.previous = expected_share, previous
        self.expected_disagreement = expected_disagreement if previous is not None else None
        self.reader = PredictionLogReader(folder)
        self.evidence = Evidence(int(rules["max_inputs_per_client"]))

    def check(self) -> tuple[str | None, dict[str, float]]:
        for row in self.reader.read():
            if str(row.get("model_version")) == self.version and row.get("prediction") in (0, 1):
                self.evidence.add(str(row.get("client", "")), row["inputs"], int(row["prediction"]))
        if self.previous is not None:
            self.evidence.score_previous(self.previous, self.features)
        return verdict(self.evidence, self.expected_share, self.expected_disagreement, self.rules)
