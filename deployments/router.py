"""nginx as the blue-green router: one upstream (the live slot), switched by a graceful reload."""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404 # runs the nginx binary with fixed arguments
import time
from pathlib import Path
from string import Template

from core.settings import PROJECT_ROOT

TEMPLATE = PROJECT_ROOT / "infra" / "nginx" / "router.conf.template"


class RouterError(RuntimeError):
    """nginx refused the configuration or did not start; the live path is unchanged."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise RouterError("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


class NginxRouter:
    """An nginx master owned by potable: config, PID and logs under `home`."""

    def __init__(self, home: Path, listen: int, rate_limit_per_second: int, burst: int) -> None:
        self.run_dir, self.log_dir = home / "run", home / "logs"
        self.conf = self.run_dir / "nginx.conf"
        self.listen, self.rate, self.burst = listen, rate_limit_per_second, burst

    @property
    def access_log(self) -> Path:
        return self.log_dir / "router-access.log"

    def trim_access_log(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        """Start a release with a short log: nginx appends (O_APPEND), so truncating in place is safe."""
        if self.access_log.exists() and self.access_log.stat().st_size > max_bytes:
            os.truncate(self.access_log, 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen}"

    def render(self, live_slot: str, live_port: int) -> str:
        values = {"run_dir": self.run_dir, "log_dir": self.log_dir, "listen": self.listen, "burst": self.burst}
        values |= {"rate_limit_per_second": self.rate, "live_slot": live_slot, "live_port": live_port}
        return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)

    def _nginx(self, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess:
        argv = [nginx_binary(), "-p", str(self.run_dir), "-c", str(conf or self.conf), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)  # nosec B603 # fixed argv

    def _write_checked(self, live_slot: str, live_port: int) -> None:
        """Validate the new config with `nginx -t` before it replaces the live one (atomic rename)."""
        for name in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.conf.with_suffix(".next")
        candidate.write_text(self.render(live_slot, live_port), encoding="utf-8")
        checked = self._nginx("-t", conf=candidate)
        if checked.returncode != 0:
            candidate.unlink(missing_ok=True)
            raise RouterError(f"nginx rejected the configuration: {checked.stderr.strip()}")
        os.replace(candidate, self.conf)

    def pid(self) -> int | None:
        pid_file = self.run_dir / "nginx.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, live_slot: str, live_port: int) -> None:
        if self.pid():
            self.switch(live_slot, live_port)
            return
        self._write_checked(live_slot, live_port)
        started = self._nginx()
        if started.returncode != 0:
            raise RouterError(f"nginx did not start: {started.stderr.strip()}")

    def switch(self, live_slot: str, live_port: int) -> None:
        """Point the live path at another slot; in-flight requests finish on the old one."""
        self._write_checked(live_slot, live_port)
        reloaded = self._nginx("-s", "reload")
        if reloaded.returncode != 0:
            raise RouterError(f"nginx reload failed: {reloaded.stderr.strip()}")

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        self._nginx("-s", "quit")  # graceful: workers finish their requests
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid():
            time.sleep(0.1)
        if self.pid():
            os.kill(pid, 9)
