"""Serving bar: the BentoML service vs the seed-style Flask app, same model version, one run.

Starts (a) `potable serve --version N` and (b) benchmarks/seed_flask_app.py under gunicorn with 2
workers, loads each for 20 s at 64 concurrent connections with the seed's example payload (wrk when
installed — `apt-get install wrk` — else a Python load generator), and prints req/s, p50, p99 and
non-2xx for both plus the throughput ratio. Bar: >= 15x the baseline's req/s, 0 non-2xx, p99 <= 100 ms.

    POTABLE_HOME=.potable python benchmarks/serve_bench.py --version N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess  # nosec B404 # starts our own servers and wrk
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED_PAYLOAD = {
    "ph": 7.08,
    "Hardness": 204.89,
    "Solids": 20791.32,
    "Chloramines": 7.3,
    "Sulfate": 368.52,
    "Conductivity": 564.31,
    "Organic_carbon": 10.38,
    "Trihalomethanes": 86.99,
    "Turbidity": 2.96,
}
DURATION, CONNECTIONS = 20, 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: list[str], env: dict[str, str], ready_url: str, timeout: float = 180) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # nosec B603
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(ready_url, json=SEED_PAYLOAD, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{argv[0]} exited with {proc.returncode}")
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"{' '.join(argv)} not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load_with_wrk(url: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{json.dumps(SEED_PAYLOAD)}'\n"
        )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", "-s", script.name, url],  # nosec B603 B607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


async def _python_load(url: str) -> dict[str, float]:
    latencies: list[float] = []
    bad = 0
    deadline = time.perf_counter() + DURATION
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal bad
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=SEED_PAYLOAD)
                    bad += response.status_code >= 300
                except httpx.HTTPError:
                    bad += 1
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return {
        "rps": len(latencies) / DURATION,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "non2xx": bad,
        "errors": 0,
    }


def load(url: str) -> dict[str, float]:
    return load_with_wrk(url) if shutil.which("wrk") else asyncio.run(_python_load(url))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="registered model version to serve on both sides")
    args = parser.parse_args()
    from mlflow import MlflowClient

    from core.settings import MODEL_NAME, get_settings

    settings = get_settings()
    mv = MlflowClient(tracking_uri=settings.tracking_uri).get_model_version(MODEL_NAME, args.version)
    env = {
        **os.environ,
        "POTABLE_HOME": str(settings.home_dir),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "POTABLE_BASELINE_MODEL_URI": f"models:/{MODEL_NAME}/{args.version}",
        "POTABLE_BASELINE_THRESHOLD": mv.tags.get("threshold", "0.5"),
    }
    env.pop("POTABLE_API_TOKEN", None)
    bin_dir = Path(sys.executable).parent
    results = {}
    port = free_port()
    bento = start(
        [str(bin_dir / "potable"), "serve", "--version", args.version, "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/predict",
    )
    try:
        runtime = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json().get("runtime", "?")
        results["bentoml service"] = load(f"http://127.0.0.1:{port}/predict")
    finally:
        stop(bento)
    port = free_port()
    flask = start(
        [str(bin_dir / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "benchmarks.seed_flask_app:app"],
        env,
        f"http://127.0.0.1:{port}/predict",
    )
    try:
        results["seed-style flask, gunicorn -w 2"] = load(f"http://127.0.0.1:{port}/predict")
    finally:
        stop(flask)
    print(
        f"{DURATION} s at {CONNECTIONS} connections, seed payload, {MODEL_NAME} v{args.version}, "
        f"served with {runtime}, load by {'wrk' if shutil.which('wrk') else 'python'}"
    )
    print(f"{'server':<36}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<36}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['non2xx']:>9d}{r['errors']:>8d}")
    ours, base = results["bentoml service"], results["seed-style flask, gunicorn -w 2"]
    ratio = ours["rps"] / base["rps"]
    met = ratio >= 15 and ours["non2xx"] == 0 and ours["errors"] == 0 and ours["p99"] <= 100
    print(f"throughput ratio {ratio:.1f}x; bar >= 15x, 0 non-2xx, p99 <= 100 ms: {'MET' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
