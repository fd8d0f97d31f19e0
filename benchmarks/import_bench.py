"""Imports with and without compiled bytecode, side by side in one run, each in a fresh process.

The environment here (like CI and most images) sets PYTHONDONTWRITEBYTECODE=1, so a venv installed without
.pyc files compiles every module from source in every process. `./dev` installs with --compile-bytecode.
"Without" is simulated on the same venv by pointing PYTHONPYCACHEPREFIX at an empty folder: Python then
finds no .pyc and, with PYTHONDONTWRITEBYTECODE=1, compiles from source every time, as before.

    .venv/bin/python benchmarks/import_bench.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess  # nosec B404 # runs our own interpreter with fixed argv
import sys
import tempfile
import time
from pathlib import Path

MODULES = ("flows.training", "great_expectations", "sklearn.ensemble", "mlflow", "prefect", "bentoml")
ROOT = Path(__file__).resolve().parents[1]


def timed_import(module: str, empty_cache: str | None) -> float:
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    if empty_cache:
        env["PYTHONPYCACHEPREFIX"] = empty_cache
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, check=True)  # nosec B603
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"{'module':<20}{'compiled (s)':>14}{'from source (s)':>17}{'ratio':>8}")
    with tempfile.TemporaryDirectory(prefix="no-pyc-") as empty:
        for module in MODULES:
            compiled = statistics.median(timed_import(module, None) for _ in range(args.repeat))
            source = statistics.median(timed_import(module, empty) for _ in range(args.repeat))
            print(f"{module:<20}{compiled:>14.2f}{source:>17.2f}{source / compiled:>7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
