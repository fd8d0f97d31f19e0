"""Speed bar: `potable train` with default settings vs the seed design's training job, in one run.

Times `potable train` from process start to registered version (the command exits after registering),
first on an empty POTABLE_HOME (cold: databases created) and then again on the same home (warm: the
steady state of a platform that retrains on a schedule), then the seed-equivalent job
(benchmarks/seed_equivalent.py), and prints the figures and ratios side by side.
Bars: warm run <= 60 s and >= 1.6x faster than the seed-equivalent; quality still met by the default
settings (benchmarks/model_quality.py on the model the timed run registered; skip with --no-quality).

    python benchmarks/train_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 # runs our own CLI and scripts
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POTABLE = Path(sys.executable).with_name("potable")
WALL_BAR, RATIO_BAR = 60.0, 1.6


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)  # nosec B603 # our own CLI
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{' '.join(argv)} failed with exit code {done.returncode}")
    return elapsed, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-quality", action="store_true", help="skip the quality check of the timed model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="potable-bench-") as home:
        env = {**os.environ, "POTABLE_HOME": home}
        for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)  # the default settings: private Prefect API, SQLite MLflow
        cold, _ = timed([str(POTABLE), "train"], env)
        warm, out = timed([str(POTABLE), "train"], env)
        summary = json.loads(out.strip().splitlines()[-1])
        seed, seed_out = timed(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "seed_equivalent.py"),
                str(ROOT / "data" / "water_potability.csv"),
            ],
            env,
        )
        print(f"{'job':<58}{'seconds':>9}")
        print(f"{'potable train, cold (empty POTABLE_HOME)':<58}{cold:>9.1f}")
        print(f"{'potable train, warm (same POTABLE_HOME)':<58}{warm:>9.1f}")
        print(f"{'seed-equivalent (20 RF trials x 5-fold CV accuracy)':<58}{seed:>9.1f}")
        print(f"speed-up seed/warm {seed / warm:.2f}x, seed/cold {seed / cold:.2f}x")
        print(
            f"warm run registered v{summary['model_version']} ({summary['model_family']}), "
            f"CV ROC-AUC {summary['cv_roc_auc']:.4f}, test ROC-AUC {summary['metrics']['roc_auc']:.4f}"
        )
        print(seed_out.strip())
        met = warm <= WALL_BAR and seed / warm >= RATIO_BAR
        print(f"bar warm <= {WALL_BAR:.0f} s and >= {RATIO_BAR}x: {'MET' if met else 'NOT MET'}")
        if not args.no_quality:
            quality = subprocess.run(  # nosec B603 # fixed argv
                [sys.executable, str(ROOT / "benchmarks" / "model_quality.py")], env=env, cwd=ROOT, check=False
            )
            met = met and quality.returncode == 0
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
