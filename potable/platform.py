"""`potable up` / `down` / `status`: the platform's long-lived processes on one machine.

Prefect server (UI + scheduler + triggers), a process worker, the MLflow UI and the data watcher, each in
its own process group with a PID file and a log under POTABLE_HOME. A PID file also records the process
start time, so a recycled PID is never mistaken for (or killed as) ours.
Only the standard library and psutil at import: the CLI stays quick.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404 # starts our own services with fixed argv lists
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from core.environment import child_env
from core.mlflow_store import seed_blank_store
from core.settings import PROJECT_ROOT, Settings
from potable.prefect_api import default_sigint

WORK_POOL = "potable-process"
STOP_ORDER = ("supervisor", "watcher", "worker", "mlflow", "reports", "prefect-server")


class PlatformError(RuntimeError):
    """A service did not start or answer; the message names it and its log."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    url: str = ""


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run_dir(settings: Settings) -> Path:
    return settings.home_dir / "run"


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_exposure(settings: Settings) -> None:
    """Beyond loopback, the Prefect API (which can start any deployment, and post events) and the MLflow
    UI (which can change the registry) must demand credentials: refuse to start them otherwise."""
    if settings.bind_host in LOOPBACK:
        return
    missing = []
    if settings.prefect_api_auth_string is None:
        missing.append("PREFECT_SERVER_API_AUTH_STRING=user:password (Prefect server basic auth)")
    if settings.mlflow_auth_config is None or not settings.mlflow_auth_config.is_file():
        missing.append("POTABLE_MLFLOW_AUTH_CONFIG=<basic_auth.ini> (MLflow basic auth: admin user and password)")
    if missing:
        raise PlatformError(
            f"refusing to bind the Prefect API/UI and the MLflow UI to {settings.bind_host} without "
            f"authentication; set {' and '.join(missing)}, or keep POTABLE_BIND_HOST=127.0.0.1 "
            "(and reach them through an authenticating proxy)"
        )


def api_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prefect_port}/api"


def platform_env(settings: Settings) -> dict[str, str]:
    """What every service (and every flow run the worker starts) sees."""
    env = child_env(
        settings,
        PREFECT_API_URL=api_url(settings),
        PREFECT_UI_URL=f"http://127.0.0.1:{settings.prefect_port}",
        PREFECT_WORKER_QUERY_SECONDS=str(settings.worker_poll_seconds),
        # Heartbeats let the crash automation (potable/crashes.py) see a run whose process died.
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(settings.flow_heartbeat_seconds),
    )
    if settings.prefect_database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = settings.prefect_database_url.get_secret_value()
    if settings.prefect_api_auth_string:  # the server demands it, so every client it starts sends it
        env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"] = (
            settings.prefect_api_auth_string.get_secret_value()
        )
    if settings.mlflow_auth_config:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(settings.mlflow_auth_config)
    return env


def services(settings: Settings) -> list[Service]:
    prefect, port = _bin("prefect"), str(settings.prefect_port)
    return [
        Service(
            "prefect-server",
            [prefect, "server", "start", "--host", settings.bind_host, "--port", port, "--analytics-off"],
            f"http://127.0.0.1:{port}",
        ),
        Service("worker", [prefect, "worker", "start", "--pool", WORK_POOL, "--type", "process"]),
        Service(
            "mlflow",
            [_bin("mlflow"), "server", "--backend-store-uri", settings.tracking_uri]
            + ["--host", settings.bind_host, "--port", str(settings.mlflow_port), "--workers", "1"]
            + (["--app-name", "basic-auth"] if settings.mlflow_auth_config else []),
            f"http://127.0.0.1:{settings.mlflow_port}",
        ),
        # Model cards, Data Docs and drift reports as pages the Prefect artifacts link to: loopback only and
        # read-only (the standard library's file server), whatever POTABLE_BIND_HOST says.
        Service(
            "reports",
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(settings.reports_dir)]
            + [str(settings.reports_port)],
            f"http://127.0.0.1:{settings.reports_port}",
        ),
        Service("watcher", [_bin("potable"), "watch", settings.landing]),
        # Restarts the live slot (and the router) if it dies outside a release; audited and alerted.
        Service("supervisor", [_bin("potable"), "rollout", "supervise"]),
    ]


def start(service: Service, settings: Settings, env: dict[str, str]) -> int:
    """Start one service in its own process group; PID file = {pid, started, url, log}."""
    logs = settings.home_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{service.name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # nosec B603 # fixed argv of our own tools, no shell
            service.argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_sigint,  # noqa: PLW1509
        )
    record = {"pid": process.pid, "started": psutil.Process(process.pid).create_time()}
    record |= {"url": service.url, "log": str(log_path), "argv": service.argv}
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    (run_dir(settings) / f"{service.name}.json").write_text(json.dumps(record), encoding="utf-8")
    return process.pid


def running(record: dict) -> psutil.Process | None:
    """The recorded process if it is still the one we started (same PID and start time)."""
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["started"]) < 0.01 and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except psutil.Error:
        pass
    return None


def records(settings: Settings) -> dict[str, dict]:
    found = {}
    for name in (*STOP_ORDER[::-1],):
        path = run_dir(settings) / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def wait_for_url(url: str, name: str, log: str, timeout: float, accept_html: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers={"Accept": "text/html"} if accept_html else {})
            with urllib.request.urlopen(request, timeout=3) as response:  # nosec B310 # loopback URL we built
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise PlatformError(f"{name} did not answer {url} within {timeout:.0f} s; see {log}")


def wait_for_watcher_baseline(settings: Settings, timeout: float) -> None:
    """A new watcher first records what the landing area already holds, and announces only what comes
    after. `up` returns once that baseline is saved: a file dropped right after `up` returned was taken
    for an old one (and never trained on) when the watcher started slower than the upload. A watcher
    that cannot take it in time is reported, not fatal (the supervisor and its log take it from there)."""
    from potable.watcher import state_path

    path, deadline = state_path(settings), time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            log = settings.home_dir / "logs" / "watcher.log"
            print(f"warning: the watcher has not recorded the landing area yet; see {log}", file=sys.stderr)
            return
        time.sleep(0.2)


def register_deployments(settings: Settings, env: dict[str, str]) -> None:
    """Work pool (idempotent) and every deployment in prefect.yaml."""
    prefect = _bin("prefect")
    steps = [
        [prefect, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        [prefect, "--no-prompt", "deploy", "--all"],
        # One release at a time, whoever starts it (flows/release.py waits on this limit).
        [prefect, "global-concurrency-limit", "create", "potable-release", "--limit", "1"],
    ]
    log = settings.home_dir / "logs" / "deploy.log"
    for argv in steps:
        with open(log, "ab") as out:
            done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # nosec B603
        if done.returncode != 0 and "global-concurrency-limit" not in argv:  # exists already: fine
            raise PlatformError(f"`{' '.join(argv[1:])}` failed with exit code {done.returncode}; see {log}")
    _register_crash_automation(settings, env)


def _register_crash_automation(settings: Settings, env: dict[str, str]) -> None:
    """The heartbeat automation that marks runs of dead processes Crashed (potable/crashes.py)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from potable.crashes import ensure_crash_automation

    updates = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if env.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    try:
        with temporary_settings(updates=updates):
            ensure_crash_automation(settings)
    except Exception as exc:  # noqa: BLE001 - any API failure: up stops what it started and says why
        raise PlatformError(f"could not register the crash automation: {type(exc).__name__}: {exc}") from exc


def up(settings: Settings, say: Callable[[str], None] = lambda line: None) -> dict[str, dict]:
    """Start what is not running yet, register the deployments, return the status. `say` hears each step
    as it finishes, with the seconds since `up` began (the terminal shows progress, not 80 s of silence)."""
    check_exposure(settings)  # before anything starts
    began = time.monotonic()

    def done(what: str) -> None:
        say(f"{what:<58} {time.monotonic() - began:6.1f} s")

    seed_blank_store(settings)  # before the MLflow UI opens (and would migrate) a new home's store
    env = platform_env(settings)
    current = {name: r for name, r in records(settings).items() if running(r)}
    for name in current:
        done(f"{name} already running")
    wanted = [service for service in services(settings) if service.name not in current]
    # The MLflow UI and the reports server need nothing else: they start beside the Prefect server.
    independent = [s for s in wanted if s.name in ("prefect-server", "mlflow", "reports")]
    try:
        for service in independent:
            done(f"{service.name} started (pid {start(service, settings, env)})")
        if any(s.name == "prefect-server" for s in independent):
            log = str(settings.home_dir / "logs" / "prefect-server.log")
            wait_for_url(f"{api_url(settings)}/health", "prefect-server", log, settings.start_timeout_seconds)
            done(f"prefect-server answering on {api_url(settings)}")
            register_deployments(settings, env)
            done("work pool, deployments and automations registered")
        for service in (s for s in wanted if s not in independent):
            done(f"{service.name} started (pid {start(service, settings, env)})")
        for name, url in (
            ("mlflow", f"http://127.0.0.1:{settings.mlflow_port}/health"),
            ("reports", f"http://127.0.0.1:{settings.reports_port}/"),
        ):
            if any(s.name == name for s in wanted):
                wait_for_url(url, name, str(settings.home_dir / "logs" / f"{name}.log"), settings.start_timeout_seconds)
                done(f"{name} answering")
        if any(s.name == "watcher" for s in wanted):
            wait_for_watcher_baseline(settings, settings.start_timeout_seconds)
            done(f"watcher has recorded {settings.landing}")
    except (PlatformError, KeyboardInterrupt):
        down(settings)  # nothing half-started stays behind (Ctrl-C included)
        raise
    (run_dir(settings) / "platform-api.url").write_text(api_url(settings), encoding="utf-8")
    return status(settings)


RESTARTABLE = ("worker", "watcher", "mlflow", "reports")  # the supervisor needs the Prefect server; `up` restarts that


def restart_dead(settings: Settings) -> list[str]:
    """Start again the services `potable up` started that died since (`down` removes a record before it stops
    the service, and the supervisor first, so nothing it stops comes back)."""
    found, restarted = records(settings), []
    for service in services(settings):
        record = found.get(service.name)
        if service.name in RESTARTABLE and record and running(record) is None:
            start(service, settings, platform_env(settings))
            restarted.append(service.name)
    return restarted


def stop_process(process: psutil.Process, timeout: float = 20.0) -> None:
    stop_processes([process], timeout)


def stop_processes(processes: list[psutil.Process], timeout: float = 20.0) -> None:
    """SIGTERM each process group at once, wait for all, then SIGKILL whatever is left of them."""
    groups, members = [], []
    for process in processes:
        try:
            group = os.getpgid(process.pid)
            # Only this service's own group: a release slot the supervisor restarted is its child but lives
            # in a session of its own, and must outlive a restart of the supervisor.
            members += [process, *(p for p in process.children(recursive=True) if _pgid(p) == group)]
            os.killpg(group, signal.SIGTERM)
            groups.append(group)
        except (ProcessLookupError, psutil.Error):
            continue
    _, alive = psutil.wait_procs(members, timeout=timeout)
    if alive:
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


def down(settings: Settings) -> list[str]:
    """Stop every recorded service; returns the names stopped. The supervisor goes first and alone (it would
    restart what stops next), the Prefect server last (the worker reports to it while stopping), the
    rest at once."""
    found = records(settings)
    live = {name: p for name in STOP_ORDER if name in found and (p := running(found[name])) is not None}
    for phase in (("supervisor",), ("watcher", "worker", "mlflow", "reports"), ("prefect-server",)):
        stop_processes([live[name] for name in phase if name in live])
    for name in found:
        (run_dir(settings) / f"{name}.json").unlink(missing_ok=True)
    stopped = list(live)
    (run_dir(settings) / "platform-api.url").unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, dict]:
    """Per service: running or not, PID, URL, log."""
    found = records(settings)
    report = {}
    for service in services(settings):
        record = found.get(service.name)
        process = running(record) if record else None
        report[service.name] = {
            "running": process is not None,
            "pid": record["pid"] if process else None,
            "url": service.url,
            "log": record["log"] if record else "",
        }
    return report
