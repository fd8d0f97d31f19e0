"""Rollout bars: blue→green under load with 0 failures; a broken green rolled back within 10 s.

One run on a scratch POTABLE_HOME (two versions trained with 1 trial each, ~2 min) and free ports:
  1. v1 released to blue (the first release starts nginx).
  2. v2 released to green while 32 connections load the router; green is made to fail (500) the moment
     it is live: printed are failures during the episode, failures after the rollback (bar 0), the live
     slot at the end (bar: blue) and the time from the breach being measured to the switch back (bar <= 10 s).
  3. v2 released to green again, healthy, under the same load: requests served, failures (bar 0) and the
     time from "green ready" to "switched".

    python benchmarks/rollout_bench.py [--connections 32] [--watch-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml

from potable.settings import CONFIG_DIR, FEATURES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable
from benchmarks.loadgen import LoadGenerator  # noqa: E402

SAMPLE = dict.fromkeys(FEATURES, 1.0) | {"ph": 7.0, "Hardness": 200.0, "Solids": 20000.0, "Conductivity": 400.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def release_config(watch_seconds: float) -> dict:
    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text(encoding="utf-8"))
    config["router"]["listen"] = free_port()
    config["slots"] = {"blue": free_port(), "green": free_port()}
    config["watch"]["window_seconds"] = watch_seconds
    return config


def two_versions() -> tuple[str, str, str, str]:
    """Train v1 (auto-approved champion) and v2; return their versions and Bento tags."""
    from flows.training import train

    os.environ["POTABLE_AUTO_APPROVE"] = "1"
    first = train(trials=1)
    os.environ["POTABLE_AUTO_APPROVE"] = "0"
    second = train(trials=1)
    return first["model_version"], first["bento_tag"], second["model_version"], second["bento_tag"]


def run(connections: int, watch_seconds: float) -> bool:
    from deployments.rollout import BlueGreen
    from deployments.slots import fault_file
    from flows.release import golden_set
    from potable.settings import get_settings, load_config

    settings = get_settings()
    v1, bento1, v2, bento2 = two_versions()
    config = release_config(watch_seconds)
    target = BlueGreen(settings.home_dir, config, lambda *_: None)
    training = load_config(settings.training_config)
    gold1, expected1 = golden_set.fn(v1, config["smoke"]["golden_rows"], training)
    gold2, expected2 = golden_set.fn(v2, config["smoke"]["golden_rows"], training)
    router = f"http://127.0.0.1:{config['router']['listen']}/predict"
    try:
        target.release(v1, bento1, gold1, expected1)
        load = LoadGenerator(router, SAMPLE, connections).start()
        switched: list[float] = []
        broken = target.release(
            v2,
            bento2,
            gold2,
            expected2,
            on_switched=lambda slot: (
                switched.append(time.monotonic()),
                fault_file(settings.home_dir, slot.name).write_text("error"),
            ),
        )
        rolled_back_at = time.monotonic()
        time.sleep(3)
        load.stop()
        fault_file(settings.home_dir, "green").unlink(missing_ok=True)
        live_after = target.state.load()["live"]
        load2 = LoadGenerator(router, SAMPLE, connections).start()
        healthy = target.release(v2, bento2, gold2, expected2)
        load2.stop()
    finally:
        target.shutdown()
    during, after = load.failures(since=switched[0], until=rolled_back_at), load.failures(since=rolled_back_at)
    rollback_s = broken.seconds_breach_to_rollback or float("nan")
    print(f"broken green ({connections} connections): outcome {broken.status}, breach {broken.breach}")
    print(f"  failures on the live path during the episode: {during}; after the rollback: {after} (bar 0)")
    print(
        f"  live slot at the end: {live_after} (bar blue); "
        f"breach measured → switched back: {rollback_s:.2f} s (bar <= 10 s)"
    )
    print(
        f"blue → green under load: outcome {healthy.status} on {healthy.slot}; requests served {load2.served()}, "
        f"failures {load2.failures()} {load2.failure_kinds() or ''} (bar 0); "
        f"ready → switched {healthy.seconds_ready_to_switched:.3f} s"
    )
    met = (
        after == 0
        and live_after == "blue"
        and rollback_s <= 10
        and load2.failures() == 0
        and healthy.status == "released"
    )
    print(f"bars: {'MET' if met else 'NOT MET'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--watch-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as scratch:
        os.environ["POTABLE_HOME"] = str(Path(scratch) / "home")
        from potable.prefect_api import prefect_api

        with prefect_api(Path(scratch) / "home") as server:
            if server is not None:
                server.wait_healthy()
            return 0 if run(args.connections, args.watch_seconds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
