"""The one environment every potable process runs in, derived from the settings in one place.

A CLI command, a flow run started by a worker, a release slot and a test all need the same paths
(BentoML's store, Prefect's home, the MLflow store) and the same switches. Each child process gets them
explicitly from `child_env`; a process that starts (CLI, flow) applies them to itself with `apply`.
Nothing may rely on an earlier call in the same process having set a variable: that is how a release in
a fresh process once looked for Bentos in ~/bentoml.
"""

from __future__ import annotations

import os

from core.settings import PROJECT_ROOT, Settings


def derived(settings: Settings) -> dict[str, str]:
    """The variables potable sets for itself and its children, all absolute."""
    return {
        "POTABLE_HOME": str(settings.home_dir),
        "POTABLE_PROJECT_DIR": str(PROJECT_ROOT),
        "BENTOML_HOME": str(settings.bentoml_store),
        "PREFECT_HOME": str(settings.prefect_home_dir),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        # No phoning home: the platform runs on closed networks.
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        # Progress bars of artifact downloads (lineage reads the training batch) are noise in flow logs.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a child process: this one's, the derived variables over it, then `extra`."""
    return {**os.environ, **derived(settings), **extra}


def apply(settings: Settings) -> Settings:
    """Make this process's environment the derived one (start of every CLI command and flow run)."""
    os.environ.update(derived(settings))
    settings.ensure_dirs()
    return settings
