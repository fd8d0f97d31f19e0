"""Stopping what a test started, by its process group (never by name)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the process's group (started with start_new_session); SIGKILL if still there after `grace` s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
