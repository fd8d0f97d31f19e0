"""nginx as the blue-green router and the edge: both slots are upstreams; a marker file names the live one.

A switch creates or removes `run/live-green` (one atomic filesystem call); nginx checks it per request.
No reload, so client keep-alive stays on and a switch loses nothing: a reload would close idle kept-alive
connections, and a request sent on one at that instant would be lost. nginx is reloaded only when its
rendered configuration changes (ports, limits), after `nginx -t` has accepted it.

What clients may send (sizes, times, rate and connections per address, media type) and every answer nginx
makes itself (in the service's JSON error shape) come from infra/nginx/router.conf.template, rendered with
the `router` section of configs/release.yaml.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess  # nosec B404 # runs the nginx binary with fixed arguments
import time
from pathlib import Path
from string import Template
from typing import Any

from core.settings import PROJECT_ROOT

TEMPLATE = PROJECT_ROOT / "infra" / "nginx" / "router.conf.template"


class RouterError(RuntimeError):
    """nginx refused the configuration or did not start; the live path is unchanged."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise RouterError("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


LOOPBACK = ("127.0.0.1", "::1", "localhost")
ALL_ADDRESSES = "0.0.0.0"  # nosec B104 # compared with router.address, never bound by this code


class NginxRouter:
    """An nginx master owned by potable: config, PID and logs under `home`. `rules` is the `router` section
    of configs/release.yaml; `token_set`: whether the slots demand a bearer token (POTABLE_API_TOKEN)."""

    def __init__(self, home: Path, rules: dict[str, Any], slots: dict[str, int], token_set: bool = False) -> None:
        self.run_dir, self.log_dir = home / "run", home / "logs"
        self.conf = self.run_dir / "nginx.conf"
        self.marker = self.run_dir / "live-green"
        self.rules, self.slots = rules, slots
        self.listen = rules["listen"]
        self.address = rules.get("address", "127.0.0.1")
        if self.address not in LOOPBACK and not token_set:
            # Beyond loopback anyone on the network could post predictions (and feed the drift monitor).
            raise RouterError(
                f"refusing to listen on {self.address} without a bearer token; set POTABLE_API_TOKEN "
                "(the slots then demand it) or keep router.address 127.0.0.1 in configs/release.yaml"
            )

    @property
    def access_log(self) -> Path:
        return self.log_dir / "router-access.log"

    def trim_access_log(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        """Start a release with a short log: nginx appends (O_APPEND), so truncating in place is safe."""
        if self.access_log.exists() and self.access_log.stat().st_size > max_bytes:
            os.truncate(self.access_log, 0)

    @property
    def tls(self) -> dict[str, str] | None:
        """{certificate, key} paths when the router serves HTTPS (router.tls in configs/release.yaml)."""
        return self.rules.get("tls") or None

    @property
    def url(self) -> str:
        """Where this machine reaches the router (its probes): loopback unless it listens elsewhere only."""
        host = "127.0.0.1" if self.address in (ALL_ADDRESSES, *LOOPBACK) else self.address
        return f"{'https' if self.tls else 'http'}://{host}:{self.listen}"

    @property
    def verify(self) -> bool | ssl.SSLContext:
        """How this machine's probes check the router's certificate: trusted as given (the operator's own
        certificate, which names the public host, not the loopback address the probes use)."""
        if not self.tls:
            return True
        context = ssl.create_default_context(cafile=self.tls["certificate"])
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf certificate trusted on its own
        return context

    def render(self) -> str:
        rules, limits = self.rules, self.rules.get("body_limits_kb", {})
        values = {"run_dir": self.run_dir, "log_dir": self.log_dir, "listen": self.listen, "address": self.address}
        values |= {"blue_port": self.slots["blue"], "green_port": self.slots["green"]}
        values["ssl"] = " ssl" if self.tls else ""
        values["tls"] = (
            f"ssl_certificate {self.tls['certificate']};\n        ssl_certificate_key {self.tls['key']};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;"
            if self.tls
            else "# no TLS (router.tls in configs/release.yaml: certificate and key paths)"
        )
        # A root master drops its workers to `nobody`, who cannot read the marker under a private home:
        # they run as the user who runs potable (never needed when that user is not root).
        values["user"] = "user root;" if os.geteuid() == 0 else ""
        values |= {k: rules[k] for k in ("rate_limit_per_second", "burst")}
        values |= {
            "connections_per_client": rules.get("connections_per_client", 64),
            "header_buffer_kb": rules.get("header_buffer_kb", 8),
            "client_timeout_seconds": rules.get("client_timeout_seconds", 10),
            "predict_body_kb": limits.get("predict", 16),
            "batch_body_kb": limits.get("predict_batch", 4096),
            "other_body_kb": limits.get("other", 64),
        }
        return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)

    def _nginx(self, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess:
        argv = [nginx_binary(), "-p", str(self.run_dir), "-c", str(conf or self.conf), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)  # nosec B603 # fixed argv

    def _write_checked(self) -> bool:
        """Validate the config with `nginx -t` before it replaces the live one (atomic rename); False when
        the live one is the same already."""
        for name in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        rendered = self.render()
        if self.conf.is_file() and self.conf.read_text(encoding="utf-8") == rendered:
            return False
        candidate = self.conf.with_suffix(".next")
        candidate.write_text(rendered, encoding="utf-8")
        checked = self._nginx("-t", conf=candidate)
        if checked.returncode != 0:
            candidate.unlink(missing_ok=True)
            raise RouterError(f"nginx rejected the configuration: {checked.stderr.strip()}")
        os.replace(candidate, self.conf)
        return True

    def pid(self) -> int | None:
        pid_file = self.run_dir / "nginx.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def live(self) -> str:
        """The slot nginx sends new requests to."""
        return "green" if self.marker.exists() else "blue"

    def _mark(self, live_slot: str) -> None:
        if live_slot not in self.slots:
            raise RouterError(f"no slot named {live_slot!r} (slots: {', '.join(self.slots)})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if live_slot == "green":
            self.marker.touch()
        else:
            self.marker.unlink(missing_ok=True)

    def start(self, live_slot: str) -> None:
        """nginx running with the current configuration, sending new requests to `live_slot`."""
        if self.pid():
            self.switch(live_slot)
            return
        self._write_checked()
        self._mark(live_slot)
        started = self._nginx()
        if started.returncode != 0:
            raise RouterError(f"nginx did not start: {started.stderr.strip()}")

    def switch(self, live_slot: str) -> None:
        """Send new requests to `live_slot` from now on; those in flight finish where they are."""
        if self._write_checked() and self.pid():  # the settings changed: a reload, never for a switch alone
            reloaded = self._nginx("-s", "reload")
            if reloaded.returncode != 0:
                raise RouterError(f"nginx reload failed: {reloaded.stderr.strip()}")
        self._mark(live_slot)

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
