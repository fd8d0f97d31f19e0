"""MLflow set-up and model registration: the registry is the one source of truth for what was trained."""

from __future__ import annotations

import subprocess  # nosec B404 # only to read the git commit of this checkout
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from core.mlflow_store import seed_blank_store
from core.settings import MODEL_NAME, PROJECT_ROOT, Settings
from core.versions import CANDIDATE, ModelRegistry, as_tags
from tasks.retries import io_retries


def setup_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store; a local store keeps its artifacts under POTABLE_HOME."""
    seed_blank_store(settings)  # a new home's default store: a migrated copy, not MLflow's migrations
    mlflow.set_tracking_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        # A tracking server keeps artifacts itself; a database store (SQLite, Postgres) gets ours.
        served = urlparse(settings.tracking_uri).scheme in ("http", "https", "databricks")
        location = None if served else settings.artifact_root.as_uri()
        experiment_id = mlflow.create_experiment(settings.mlflow_experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextmanager
def parent_run(run_name: str) -> Iterator[mlflow.ActiveRun]:
    """`mlflow.start_run` for a flow's parent run, except that when the run fails because the store did,
    failing to mark it FAILED never hides the error that ended it (the run stays RUNNING in the store)."""
    run = mlflow.start_run(run_name=run_name)
    try:
        yield run
    except BaseException:
        with suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run()


def git_commit(settings: Settings) -> str:
    """The commit the code was trained from (setting first, so images and CI can inject it)."""
    if settings.git_commit:
        return settings.git_commit
    try:
        out = subprocess.run(  # nosec B603 B607 # fixed argv, no shell
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def serving_requirements() -> list[str]:
    """Pinned packages a consumer needs to load the model: those it was trained and pickled with."""
    from importlib.metadata import version

    packages = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy", "cloudpickle"]
    return [f"{name}=={version(name)}" for name in packages]


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str


def register_model(
    model: Pipeline, X_example: pd.DataFrame, facts: dict[str, Any], storage: dict[str, Any], settings: Settings
) -> RegisteredVersion:
    """Log the fitted Pipeline in the active run, register it, record its facts and point `candidate` at it.

    All or nothing: the version is created with its facts as tags in one write (a cut connection leaves
    either a whole version or none), and if moving the alias fails the version is deleted again.
    `facts` are fields of core.versions.VersionRecord (validated
    before anything is logged); `storage` holds model_format and skops_trusted_types.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_model needs an active MLflow run")
    tags = as_tags(facts)  # a wrong field or type fails here, before a version exists
    example = X_example.head(5)
    model_format = storage["model_format"]
    info = mlflow.sklearn.log_model(
        sk_model=model,
        name="model",
        serialization_format=model_format,
        skops_trusted_types=storage["skops_trusted_types"] if model_format == "skops" else None,
        pip_requirements=serving_requirements(),  # explicit: inferring them reloads the model (~10 s)
        signature=infer_signature(example, model.predict_proba(example)),
        input_example=example,
        pyfunc_predict_fn="predict_proba",  # the threshold is applied by the service, not by pyfunc
    )
    registry = ModelRegistry(settings)
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags=tags)
    try:
        registry.move_alias(CANDIDATE, version.version)
    except Exception:
        registry.delete(version.version)
        raise
    return RegisteredVersion(MODEL_NAME, str(version.version), run.info.run_id, info.model_uri)


class StoreUnreachable(RuntimeError):
    """The MLflow store failed while registering (worth retrying: a cut connection may come back)."""

    transient = True


def store_name(settings: Settings) -> str:
    """The tracking store as a person can find it, without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(settings.tracking_uri).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL (an MLflow server)
        parsed = urlparse(settings.tracking_uri)
        return f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"


@task(name="register-model", cache_policy=NO_CACHE, **io_retries())
def register_model_task(
    model: Pipeline, X_example: pd.DataFrame, facts: dict[str, Any], storage: dict[str, Any], settings: Settings
) -> RegisteredVersion:
    try:
        return register_model(model, X_example, facts, storage, settings)
    except (TypeError, ValueError, KeyError, AttributeError):
        raise  # our facts or code are wrong: retrying cannot help
    except Exception as exc:  # noqa: BLE001 - MLflow wraps driver errors in many types; name the store
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise StoreUnreachable(
            f"registering in the MLflow store {store_name(settings)} failed: {type(exc).__name__}: {first_line}"
        ) from exc
