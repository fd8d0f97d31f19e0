"""Rollout bars with real faults: a crashed new slot rolled back under load, and blue→green dropping nothing.

One run on a scratch POTABLE_HOME (two versions trained with 1 trial each) and free ports, through the
`release` flow exactly as `potable release` runs it:
  1. v1 released to blue (the first release starts nginx).
  2. v2 released to green while N connections send varied hold-out rows through the router; the moment green
     is live its server and every worker get SIGKILL. Printed: kill → switched back, kill → last failed
     client request (the router answering 2xx again; bar <= 10 s), failures after the rollback (bar 0), the
     live slot at the end (bar: blue), and whether the flow ended rolled back with an alert (Slack receiver).
  3. v2 released to green again, healthy, under the same load: requests served, failures (bar 0).

    python benchmarks/rollout_bench.py [--connections 32] [--watch-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable
from benchmarks.loadgen import LoadGenerator  # noqa: E402
from core.batches import read_batch  # noqa: E402
from core.settings import BUNDLED_DATA, CONFIG_DIR, FEATURES  # noqa: E402
from tests.conftest import AlertReceiver, free_port  # noqa: E402


def traffic() -> list[dict]:
    rows = read_batch(BUNDLED_DATA)[list(FEATURES)].sample(300, random_state=11)
    return [{k: (None if v != v else float(v)) for k, v in r.items()} for r in rows.to_dict("records")]


def kill_when_live(state_path: Path, slot: str, killed: list[float]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if state.get("live") == slot:
            root = psutil.Process(state["slots"][slot]["pid"])
            for process in [root, *root.children(recursive=True)]:
                process.send_signal(signal.SIGKILL)
            killed.append(time.monotonic())
            return
        time.sleep(0.02)


def run(connections: int, watch_seconds: float, scratch: Path) -> bool:
    from flows.release import ReleaseRolledBack, release
    from flows.training import train

    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text(encoding="utf-8"))
    config["router"]["listen"] = free_port()
    config["slots"] = {"blue": free_port(), "green": free_port()}
    config["watch"] |= {"window_seconds": watch_seconds, "max_p99_ms": 1500}  # load generator on the same 2 cores
    (scratch / "release.yaml").write_text(yaml.safe_dump(config))
    os.environ["POTABLE_RELEASE_CONFIG"] = str(scratch / "release.yaml")
    os.environ["POTABLE_AUTO_APPROVE"] = "1"
    v1 = train(trials=1)["model_version"]
    os.environ["POTABLE_AUTO_APPROVE"] = "0"
    v2 = train(trials=1)["model_version"]
    home, router = Path(os.environ["POTABLE_HOME"]), f"http://127.0.0.1:{config['router']['listen']}/predict"
    alerts = AlertReceiver()
    os.environ["POTABLE_ALERT_URLS"] = alerts.url
    try:
        release(version=v1)
        load = LoadGenerator(router, traffic(), connections).start()
        killed: list[float] = []
        saboteur = threading.Thread(target=kill_when_live, args=(home / "release" / "state.json", "green", killed))
        saboteur.start()
        try:
            release(version=v2, override_reason="crash rehearsal")
            outcome = "released (not expected)"
        except ReleaseRolledBack:
            outcome = "rolled_back"
        back_at = time.monotonic()
        time.sleep(3)
        load.stop()
        saboteur.join()
        live_after = json.loads((home / "release" / "state.json").read_text())["live"]
        failed = [end for began, end, status in load.results if began >= killed[0] and not 200 <= status < 300]
        clean_s = (max(failed) - killed[0]) if failed else 0.0
        after = load.failures(since=back_at)
        alerted = any("release RolledBack" in text for text in alerts.texts())
        load2 = LoadGenerator(router, traffic(), connections).start()
        healthy = release(version=v2, override_reason="second model, reviewed")
        load2.stop()
    finally:
        from core.environment import child_env
        from core.settings import get_settings
        from deployments.rollout import BlueGreen

        BlueGreen(home, config, lambda *_: None, child_env(get_settings())).shutdown()
        alerts.stop()
    print(f"crash rehearsal ({connections} connections): green SIGKILLed right after the switch → {outcome}")
    print(f"  kill → switched back: {back_at - killed[0]:.2f} s (the flow returned)")
    print(f"  kill → last failed client request: {clean_s:.2f} s (bar <= 10 s); failures in the episode {len(failed)}")
    print(f"  failures after the rollback: {after} (bar 0); live slot at the end: {live_after} (bar blue)")
    print(f"  alert sent: {alerted}")
    print(
        f"blue → green under load: outcome {healthy['status']} on {healthy['slot']}; requests served {load2.served()}, "
        f"failures {load2.failures()} {load2.failure_kinds() or ''} (bar 0)"
    )
    met = (
        outcome == "rolled_back"
        and clean_s <= 10
        and after == 0
        and live_after == "blue"
        and alerted
        and load2.failures() == 0
        and healthy["status"] == "released"
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
        for name in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "PREFECT_API_URL"):
            os.environ.pop(name, None)
        from potable.prefect_api import prefect_api

        with prefect_api(Path(scratch) / "home") as server:
            if server is not None:
                server.wait_healthy()
            return 0 if run(args.connections, args.watch_seconds, Path(scratch)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
