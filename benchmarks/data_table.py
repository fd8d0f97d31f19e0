"""Bars of the training table (issue: what the model learns from and is judged against), in one run.

Whole `potable` commands as separate processes, each scenario on a fresh POTABLE_HOME:
- overlap: a table started from 75 % of the bundled rows, v1 trained and made champion; then a batch that
  re-exports those rows rounded to 2 decimals plus the other 25 % -> only the 25 % are new, and the
  champion's score on the judging rows stays within 0.05 ROC-AUC of its score at its own gate;
- poison: a copy with every label inverted, and one with 40 % flipped at random -> refused, nothing registered;
- accumulation: five batches of 60-200 re-measured rows (1 % noise) appended; `data log --json` lists the
  versions with totals that add up; `train` with no data trains on the latest; `--dataset-version 3`
  reproduces that version's metrics exactly;
- cost: table append + label check + read at 3,276 rows (what a run adds), and the read curve 10^3..10^6.

    python benchmarks/data_table.py [--trials 2] [--skip-commands]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 # runs our own CLI
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
POTABLE = Path(sys.executable).with_name("potable")

from core.settings import BUNDLED_DATA, FEATURES  # noqa: E402
from tests.batches import remeasured as noisy  # noqa: E402


def potable(home: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> tuple[int, str, str]:
    full = {**os.environ, "POTABLE_HOME": str(home), **(env or {})}
    done = subprocess.run([str(POTABLE), *args], env=full, cwd=ROOT, capture_output=True, text=True, check=False)  # nosec B603
    if ok and done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"potable {' '.join(args)} failed ({done.returncode})")
    return done.returncode, done.stdout, done.stderr


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def overlap(work: Path, data: pd.DataFrame, trials: str) -> None:
    home = work / "overlap"
    first = data.sample(frac=0.75, random_state=1)
    first.to_csv(work / "first75.csv", index=False)
    env = {"POTABLE_SEED_DATA": "none"}
    potable(home, "data", "init", str(work / "first75.csv"), env=env)
    v1 = last_json(potable(home, "train", "--trials", trials, env=env)[1])
    potable(home, "promote", "--version", v1["model_version"], env={**env, "POTABLE_AUTO_APPROVE": "1"})
    re_export = data.copy()
    re_export[list(FEATURES)] = re_export[list(FEATURES)].round(2)
    re_export.to_csv(work / "reexport.csv", index=False)
    v2 = last_json(potable(home, "train", "--data", str(work / "reexport.csv"), "--trials", trials, env=env)[1])
    c = v2["champion_comparison"]
    own = v1["metrics"]["roc_auc"]
    print("\n== overlap")
    print(f"  batch: {v2['batch']['rows']} rows, {v2['batch']['rows_added']} new (expected {len(data) - len(first)})")
    print(f"  champion v1 at its own gate: ROC-AUC {own:.4f} on {v1['rows']['evaluation']} evaluation rows of v0")
    print(
        f"  champion v1 judging v2:      ROC-AUC {c['champion_value']:.4f} on {c['rows']} evaluation rows of "
        f"v{c['dataset_version']}; challenger {c['challenger_value']:.4f}; difference {c['difference']:+.4f} "
        f"[{c['interval'][0]:+.4f}, {c['interval'][1]:+.4f}] -> {'pass' if c['passed'] else 'FAIL'}"
    )
    drift = abs(c["champion_value"] - own)
    met = v2["batch"]["rows_added"] == len(data) - len(first) and drift <= 0.05
    print(f"  |champion now - champion at its gate| = {drift:.4f} (bar <= 0.05): {'MET' if met else 'NOT MET'}")


def poison(work: Path, data: pd.DataFrame, trials: str) -> None:
    home = work / "poison"
    potable(home, "train", "--trials", trials)
    inverted = data.assign(Potability=1 - data["Potability"])
    inverted.to_csv(work / "inverted.csv", index=False)
    rng = np.random.default_rng(40)
    flipped = data.copy()
    flip = rng.random(len(data)) < 0.4
    flipped.loc[flip, "Potability"] = 1 - flipped.loc[flip, "Potability"]
    flipped.to_csv(work / "flipped40.csv", index=False)
    print("\n== poison")
    for name in ("inverted.csv", "flipped40.csv"):
        code, _, err = potable(home, "train", "--data", str(work / name), "--trials", trials, ok=False)
        reasons = [line.strip() for line in err.splitlines() if line.strip().startswith("- labels:")]
        print(f"  {name}: exit {code}; {len(reasons)} label finding(s):")
        for reason in reasons:
            print(f"    {reason[:200]}")
    log = json.loads(potable(home, "data", "log", "--json")[1])
    from mlflow import MlflowClient

    versions = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_model_versions("name='water-potability'")
    print(
        f"  after both: table versions {[c['version'] for c in log]}, model versions {len(versions)} "
        "(bar: v0 only, and only the seed run's version 1)"
    )


def accumulation(work: Path, data: pd.DataFrame, trials: str) -> None:
    home = work / "accumulation"
    potable(home, "train", "--trials", trials)
    sizes = [60, 90, 120, 160, 200]
    metrics_at: dict[int, dict] = {}
    for n, size in enumerate(sizes):
        path = work / f"batch{n}.csv"
        noisy(data.sample(size, random_state=100 + n), 100 + n).to_csv(path, index=False)
        summary = last_json(potable(home, "train", "--data", str(path), "--trials", trials)[1])
        metrics_at[summary["dataset_version"]] = summary
    log = json.loads(potable(home, "data", "log", "--json")[1])
    latest = last_json(potable(home, "train", "--trials", trials)[1])
    again = last_json(potable(home, "train", "--dataset-version", "3", "--trials", trials)[1])
    print("\n== accumulation")
    for c in log:
        print(f"  v{c['version']}: +{c['rows_added']} = {c['rows_total']}  {Path(str(c['source'])).name}")
    adds_up = all(b["rows_total"] == a["rows_total"] + b["rows_added"] for a, b in zip(log, log[1:], strict=False))
    print(
        f"  {len(log)} versions, totals add up: {adds_up}; no-data train on v{latest['dataset_version']} "
        f"({latest['rows']}), latest is v{log[-1]['version']}"
    )
    same = again["metrics"] == metrics_at[3]["metrics"] and again["data_sha256"] == metrics_at[3]["data_sha256"]
    print(
        f"  --dataset-version 3: ROC-AUC {again['metrics']['roc_auc']:.6f} vs {metrics_at[3]['metrics']['roc_auc']:.6f}"
        f" at the time; all metrics and rows identical: {same}"
    )


def cost(work: Path, data: pd.DataFrame) -> None:
    from core import configs
    from core.labels import check_labels
    from core.settings import get_settings
    from core.table import TrainingTable

    rules = configs.validation(get_settings()).label_quality.rules()
    decimals = {name: 2 for name in FEATURES}
    table = TrainingTable(str(work / "cost" / "t"), decimals, 0.2)
    started = time.perf_counter()
    table.append(data, "s" * 64, "bundled")
    seeded = time.perf_counter() - started
    batch = noisy(data.sample(200, random_state=1), 1)
    check_labels(table.rows_for(batch, "w" * 64), table.read().frame, rules)  # imports (a flow has them already)
    started = time.perf_counter()
    report = check_labels(table.rows_for(batch, "b" * 64), table.read().frame, rules)
    labelled = time.perf_counter() - started
    started = time.perf_counter()
    table.append(batch, "b" * 64, "batch")
    appended = time.perf_counter() - started
    started = time.perf_counter()
    table.read()
    read = time.perf_counter() - started
    print("\n== cost at 3,276 rows (in-process, after imports)")
    print(
        f"  first version {seeded:.2f} s; label check {labelled:.2f} s ({report.success}); append 200 rows "
        f"{appended:.2f} s; read + verify latest {read:.2f} s;\n  a run with a batch adds "
        f"{labelled + appended + read:.2f} s (bar <= 2 s)"
    )
    print("  read + verify curve:")
    for rows in (1_000, 10_000, 100_000, 1_000_000):
        big = noisy(data.sample(rows, replace=True, random_state=rows), rows)
        t = TrainingTable(str(work / "cost" / f"t{rows}"), decimals, 0.2)
        started = time.perf_counter()
        t.append(big, "s" * 64, "synthetic")
        write = time.perf_counter() - started
        started = time.perf_counter()
        got = t.read()
        elapsed = time.perf_counter() - started
        print(
            f"    {rows:>9,} rows: append {write:6.2f} s, read {elapsed:6.2f} s ({len(got.frame):,} distinct rows)"
            + ("  (bar <= 10 s)" if rows == 1_000_000 else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", default="2")
    parser.add_argument("--skip-commands", action="store_true", help="only the in-process cost figures")
    args = parser.parse_args()
    data = pd.read_csv(BUNDLED_DATA)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="potable-data-bench-") as tmp:
        work = Path(tmp)
        cost(work, data)
        if not args.skip_commands:
            overlap(work, data, args.trials)
            poison(work, data, args.trials)
            accumulation(work, data, args.trials)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
