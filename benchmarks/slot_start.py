"""Slot start: how long a release waits for a new slot, measured the way a release starts one.

Starts the version's Bento through deployments.slots.start_slot (the same argv, PID namespace and
environment a release uses) and times, from the call, (a) BentoML's server process spawning its workers
(before that it imports BentoML and the service to read its configuration), (b) /readyz 200 and (c) the
first 200 from POST /predict with the seed payload, polling every 20 ms. The first start runs on a fresh
slot home (a new machine or a wiped run folder; the OS page cache stays warm); the rest reuse it. Side by
side, alternating, the bare ASGI+ONNX app (benchmarks/bare_onnx_app.py under uvicorn, 2 workers) on the same
ONNX graph is started the same way: the floor of "two Python processes answering with this model"; the
ratio to it is what BentoML's server adds (an arbiter that loads the service before forking workers that
load it again, OpenTelemetry, metrics, the FastAPI app).

    POTABLE_HOME=.potable python benchmarks/slot_start.py --version N [--starts 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess  # nosec B404 # starts our own servers
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable
from benchmarks.serve_bench import SEED_PAYLOAD, free_port, onnx_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.02
SLOT, BARE = "slot (BentoML)", "bare ASGI + ONNX"


def watch_workers(pid: int, began: float, times: dict[str, float]) -> None:
    """Records when BentoML's server has spawned a worker (polled beside the HTTP probe, which may wait on a
    socket the server already listens on but no worker accepts from yet)."""
    while "predict" not in times and time.perf_counter() - began < 120:
        try:
            if any("_bentoml_impl.worker" in " ".join(c.cmdline()) for c in psutil.Process(pid).children(True)):
                times["workers"] = time.perf_counter() - began
                return
        except psutil.Error:
            pass
        time.sleep(0.01)


def first_answers(url: str, began: float, proc: psutil.Process, readyz: bool) -> dict[str, float]:
    """Seconds from `began` to workers spawned and /readyz 200 (if `readyz`), and to the first /predict 200."""
    times: dict[str, float] = {}
    if readyz:
        threading.Thread(target=watch_workers, args=(proc.pid, began, times), daemon=True).start()
    with httpx.Client(timeout=2) as client:
        while time.perf_counter() - began < 120:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                raise SystemExit(f"the server at {url} exited before it answered")
            try:
                if readyz and "readyz" not in times and client.get(f"{url}/readyz").status_code == 200:
                    times["readyz"] = time.perf_counter() - began
                if (not readyz or "readyz" in times) and client.post(f"{url}/predict", json=SEED_PAYLOAD).is_success:
                    times["predict"] = time.perf_counter() - began
                    return dict(sorted(times.items(), key=lambda item: item[1]))
            except httpx.HTTPError:
                pass
            time.sleep(POLL)
    raise SystemExit(f"{url} did not answer within 120 s")


def slot_start(bento_tag: str, version: str, home: Path, env: dict[str, str]) -> dict[str, float]:
    from deployments.slots import start_slot, stop_slot

    began = time.perf_counter()
    slot = start_slot("bench", free_port(), bento_tag, version, home, env)
    try:
        return first_answers(slot.url, began, psutil.Process(slot.pid), readyz=True)
    finally:
        stop_slot(slot)


def bare_start(env: dict[str, str]) -> dict[str, float]:
    port = free_port()
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    argv = [uvicorn, "benchmarks.bare_onnx_app:app", "--workers", "2", "--http", "httptools", "--loop", "uvloop"]
    argv += ["--no-access-log", "--log-level", "warning", "--port", str(port)]
    began = time.perf_counter()
    proc = subprocess.Popen(  # nosec B603 # fixed argv
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        return first_answers(f"http://127.0.0.1:{port}", began, psutil.Process(proc.pid), readyz=False)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="a packaged model version")
    parser.add_argument("--starts", type=int, default=5, help="starts of each kind (the first is cold)")
    args = parser.parse_args()
    from core import environment
    from core.settings import get_settings
    from core.versions import ModelRegistry
    from tasks.packaging import local_bento

    settings = environment.apply(get_settings())
    bento_tag = local_bento(ModelRegistry(settings).get(args.version), settings, actor="benchmark")
    env = environment.child_env(settings, POTABLE_BARE_ONNX_PATH=str(onnx_path(args.version)))
    runs: dict[str, list[dict[str, float]]] = {SLOT: [], BARE: []}
    with tempfile.TemporaryDirectory(prefix="slot-start-") as scratch:  # a fresh run folder: the cold start
        for i in range(args.starts):
            order = (SLOT, BARE) if i % 2 == 0 else (BARE, SLOT)  # a neighbour's load falls on both sides
            for name in order:
                runs[name].append(
                    slot_start(bento_tag, args.version, Path(scratch), env) if name == SLOT else bare_start(env)
                )
    return report(runs, bento_tag)


def report(runs: dict[str, list[dict[str, float]]], bento_tag: str) -> int:
    print(f"{bento_tag}: seconds from start to each answer (polled every {POLL * 1000:.0f} ms); first start cold")
    print(f"{'server':<20}{'until':<18}{'cold':>7}{'warm median':>13}   warm runs")
    for name, starts in runs.items():
        for key in starts[0]:
            warm = [run[key] for run in starts[1:]] or [starts[0][key]]
            shown = " ".join(f"{w:.2f}" for w in warm)
            print(f"{name:<20}{key:<18}{starts[0][key]:>7.2f}{statistics.median(warm):>13.2f}   {shown}")
    slot, bare = (statistics.median(run["predict"] for run in starts[1:] or starts) for starts in runs.values())
    print(f"first predict, warm median: slot {slot:.2f} s, bare {bare:.2f} s, slot / bare {slot / bare:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
