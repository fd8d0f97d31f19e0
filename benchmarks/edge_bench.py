"""Edge bars: serving through the router (nginx, as rendered for a release) vs the same router in front of the
bare ASGI+ONNX app, and vs the slot alone, side by side in one run.

Serves one registered model version: (a) a slot as a release runs it (`potable serve` with the setting a
release gives its slots, POTABLE_EDGE_BY_ROUTER=1: validation, prediction log, metrics on; body limits, slow
clients and rates left to the router), (b) benchmarks/bare_onnx_app.py under uvicorn -w 2 (the limit: JSON
in → onnxruntime → JSON out); then two routers rendered from configs/release.yaml exactly as a release
renders them (client keep-alive on, body and header limits, JSON error pages), one in front of each, with
the per-client rate and connection limits set above the load (the load generator is one client address;
the limits are measured apart, in the release tests). "Slot alone" is the same slot process, asked directly.

Traffic is lab-like: 500 varied real rows of the bundled data in turn. A single repeated sample is measured
too (one round) and printed beside: it keeps the same tree paths of the model in the CPU's cache, which
flatters the thinnest app most (the ONNX call itself is ~50 µs hot and ~100-190 µs once other work has
evicted the model from the cache), so it measures the cache more than the service.
Load at 4 connections through the router to the slot, then ROUNDS rounds at 64 kept-alive connections of
router→slot, router→bare and the slot alone, the order rotating each round so a neighbour's load on this
shared machine falls on every side; ratios are medians of the per-round ratios.
Bars (lab-like traffic): router→slot >= 0.6x router→bare at 64 connections (goal 0.8x); the router costs at
most 20 % of the slot's req/s; p99 <= 5 ms at 4 connections; 0 non-2xx (both traffics).

    POTABLE_HOME=.potable python benchmarks/edge_bench.py --version N [--rounds 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable
from benchmarks.serve_bench import DURATION, WARM_UP, free_port, lab_rows, load, server_env, start, stop  # noqa: E402
from core.settings import CONFIG_DIR, MODEL_NAME  # noqa: E402
from deployments.router import NginxRouter  # noqa: E402

SIDES = ("router → slot", "router → bare", "slot alone")


def router_in_front_of(port: int, scratch: Path, name: str) -> NginxRouter:
    rules = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text(encoding="utf-8"))["router"]
    rules |= {"listen": free_port(), "rate_limit_per_second": 10_000_000, "burst": 10_000_000}
    rules |= {"connections_per_client": 60_000}
    router = NginxRouter(scratch / name, rules, {"blue": port, "green": free_port()})
    router.start("blue")
    return router


def measure(urls: dict[str, str], rounds: int) -> dict:
    results: dict = {}
    lab = lab_rows()
    for url in urls.values():
        load(url, 64, WARM_UP, lab)  # caches, allocators, upstream keep-alive connections: not counted
    results["four"] = load(urls["router → slot"], 4, payloads=lab)
    runs: dict[tuple[str, int], dict] = {}
    for i in range(rounds):
        order = SIDES[i % 3 :] + SIDES[: i % 3]
        for side in order:
            runs[(side, i)] = load(urls[side], 64, payloads=lab)
    results["runs"] = runs
    results["one_sample"] = {side: load(urls[side], 64) for side in SIDES}
    per_round = {side: [runs[(side, i)] for i in range(rounds)] for side in SIDES}
    results["vs_bare"] = [a["rps"] / b["rps"] for a, b in zip(per_round[SIDES[0]], per_round[SIDES[1]], strict=True)]
    results["vs_slot"] = [a["rps"] / b["rps"] for a, b in zip(per_round[SIDES[0]], per_round[SIDES[2]], strict=True)]
    measured = [results["four"], *runs.values(), *results["one_sample"].values()]
    results["non2xx"] = sum(r["non2xx"] + r["errors"] for r in measured)
    results["median"] = {side: float(np.median([r["rps"] for r in rs])) for side, rs in per_round.items()}
    return results


def report(results: dict, version: str, rounds: int) -> int:
    print(f"{DURATION} s per load after {WARM_UP} s warm-up, {MODEL_NAME} v{version}, {rounds} rounds of lab rows")
    print(f"load by {'wrk' if shutil.which('wrk') else 'python'}; all servers and both routers up at once")
    print(f"{'side':<16}{'traffic':>12}{'conns':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}")
    rows = [("router → slot", "lab rows", 4, results["four"])]
    rows += [(side, "lab rows", 64, r) for (side, _), r in results["runs"].items()]
    rows += [(side, "one sample", 64, r) for side, r in results["one_sample"].items()]
    for side, traffic, conns, r in rows:
        print(
            f"{side:<16}{traffic:>12}{conns:>7}{r['rps']:>9.1f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
            f"{r['non2xx']:>9d}{r['errors']:>8d}"
        )
    vs_bare, vs_slot = float(np.median(results["vs_bare"])), float(np.median(results["vs_slot"]))
    p99_4 = results["four"]["p99"]
    print("median req/s at 64: " + ", ".join(f"{k} {v:.0f}" for k, v in results["median"].items()))
    print(
        f"router→slot / router→bare per round {', '.join(f'{r:.2f}' for r in results['vs_bare'])}; "
        f"median {vs_bare:.2f}x (bar >= 0.6x, goal 0.8x)"
    )
    print(
        f"router→slot / slot alone per round {', '.join(f'{r:.2f}' for r in results['vs_slot'])}; "
        f"median {vs_slot:.2f}x: the router costs {1 - vs_slot:.0%} of the slot's req/s (bar <= 20 %)"
    )
    one = results["one_sample"]
    print(
        f"one sample repeated (informative): router→slot / router→bare "
        f"{one[SIDES[0]]['rps'] / one[SIDES[1]]['rps']:.2f}x, router→slot / slot alone "
        f"{one[SIDES[0]]['rps'] / one[SIDES[2]]['rps']:.2f}x"
    )
    met = vs_bare >= 0.6 and vs_slot >= 0.8 and p99_4 <= 5 and results["non2xx"] == 0
    print(
        f"p99 at 4 connections through the router {p99_4:.2f} ms (bar <= 5 ms); non-2xx {results['non2xx']} "
        f"(bar 0); bars {'MET' if met else 'NOT MET'}"
    )
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="registered model version to serve")
    parser.add_argument("--rounds", type=int, default=4, help="rounds at 64 connections (all three sides each)")
    args = parser.parse_args()
    env = server_env(args.version)
    bin_dir = Path(sys.executable).parent
    slot_port, bare_port = free_port(), free_port()
    running, routers = [], []
    scratch = Path(tempfile.mkdtemp(prefix="potable-edge-"))
    try:
        slot_url = f"http://127.0.0.1:{slot_port}/predict"
        slot = [str(bin_dir / "potable"), "serve", "--version", args.version, "--port", str(slot_port)]
        running.append(start(slot, env | {"POTABLE_EDGE_BY_ROUTER": "1"}, slot_url))  # as a release starts it
        bare = [str(bin_dir / "uvicorn"), "benchmarks.bare_onnx_app:app", "--workers", "2", "--http", "httptools"]
        bare += ["--loop", "uvloop", "--no-access-log", "--log-level", "warning", "--port", str(bare_port)]
        running.append(start(bare, env, f"http://127.0.0.1:{bare_port}/predict"))
        routers = [router_in_front_of(slot_port, scratch, "slot"), router_in_front_of(bare_port, scratch, "bare")]
        urls = {
            "router → slot": f"{routers[0].url}/predict",
            "router → bare": f"{routers[1].url}/predict",
            "slot alone": slot_url,
        }
        results = measure(urls, args.rounds)
    finally:
        for router in routers:
            router.stop()
        for proc in running:
            stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)
    return report(results, args.version, args.rounds)


if __name__ == "__main__":
    raise SystemExit(main())
