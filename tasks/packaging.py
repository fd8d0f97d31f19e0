"""Packaging: a governed MLflow model version → BentoML model store → a Bento, traceable both ways."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.lineage import LineageMissing, training_batch
from core.settings import MODEL_NAME, PROJECT_ROOT, Settings
from core.versions import ModelRegistry, NotGated, UnknownVersion, VersionRecord
from governance.audit import audit_log
from tasks.onnx_export import BackgroundExport, OnnxExportError, export_checked
from tasks.registry import serving_requirements, setup_mlflow

BENTO_DIR = PROJECT_ROOT / "bentos"
BENTO_NAME = "water-potability-service"
ONNX_MODEL_NAME = f"{MODEL_NAME}-onnx"
SERVED_MODELS_FILE = "served_models.json"  # read by bentos/service.py
logger = logging.getLogger(__name__)
LABEL_FIELDS = ("data_sha256", "git_commit", "threshold", "optuna_study", "model_family")
LABEL_METRICS = ("roc_auc", "false_potable_rate", "brier")


class PackagingRefused(Exception):
    """The version may not be packaged: unknown, or it did not pass the policy gate."""


@dataclass(frozen=True)
class Packaged:
    version: str
    model_tag: str
    bento_tag: str
    runtime: str = "sklearn"


def installed_closure(roots: list[str]) -> list[str]:
    """`name==version` for the roots and everything they need, as installed in this environment.

    The image gets the exact versions the model was trained, converted and parity-checked with (this
    venv comes from requirements.lock), rather than whatever a resolver picks from PyPI at build time;
    it also spares BentoML's `uv pip compile` (~4 s and a network round trip per Bento).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    todo = [Requirement(root) for root in roots]
    while todo:
        wanted = todo.pop()
        name = canonicalize_name(wanted.name)
        if name in pinned:
            continue
        try:
            dist = distribution(wanted.name)
        except PackageNotFoundError as exc:
            raise PackagingRefused(f"{wanted.name} is needed to serve the model but is not installed") from exc
        pinned[name] = dist.version
        extras = [""] + sorted(wanted.extras)
        for needed in map(Requirement, dist.requires or []):
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(needed)
    return [f"{name}=={version}" for name, version in sorted(pinned.items())]


def bentoml_home(settings: Settings) -> str:
    """Point BentoML at the settings' store (<home>/bentoml unless BENTOML_HOME says) before it is imported.

    BentoML reads BENTOML_HOME once, at import. A process whose BentoML already serves another store would
    write Bentos where no slot looks; re-pointing it would mean replacing BentoML's private singletons, so
    such a process is refused with what to do instead (every command and flow run is a process of its own).
    """
    home = str(settings.bentoml_store)
    if "bentoml" in sys.modules and os.environ.get("BENTOML_HOME") != home:
        raise PackagingRefused(
            f"this process's BentoML store is {os.environ.get('BENTOML_HOME') or '~/bentoml'}, not {home}; "
            "package in a new process (potable package --version N)"
        )
    os.environ["BENTOML_HOME"] = home
    for folder in ("bentos", "models", "tmp", "envs"):
        os.makedirs(os.path.join(home, folder), exist_ok=True)
    return home


def save_onnx_model(bentoml, record: VersionRecord, labels: dict[str, str], started: BackgroundExport | None = None):
    """Store the ONNX form of the version next to its MLflow form, or None when it does not answer alike.

    Parity is checked on the version's own training batch (core/lineage.py), the rows it was fitted on:
    by the train flow as soon as it fitted the model (`started`), else here from the registry.
    """
    import mlflow

    try:
        if started is not None:
            export = started.result()
        else:
            features = training_batch(record.run_id).features
            export = export_checked(mlflow.sklearn.load_model(record.model_uri), features)
    except (OnnxExportError, LineageMissing) as exc:
        logger.warning("serving %s with sklearn: %s", record.model_uri, exc)
        return None, str(exc)
    parity = {"parity_max_abs_diff": f"{export.max_abs_diff:.2e}", "parity_rows": str(export.rows_checked)}
    with bentoml.models.create(ONNX_MODEL_NAME, labels=labels | parity) as model:
        (Path(model.path) / "model.onnx").write_bytes(export.model.SerializeToString())
    return model, f"parity {export.max_abs_diff:.2e} on {export.rows_checked} rows"


def docker_options(settings: Settings) -> dict[str, str]:
    """Image base for `bentoml containerize`: POTABLE_IMAGE_BASE (default the offline Debian base that
    deployments/image.py builds; python:3.11-slim where Docker Hub is reachable)."""
    return {"base_image": settings.image_base}


def build_bento(bentoml, labels: dict[str, str], served: dict[str, str], settings: Settings):
    """Build the Bento from bentos/ with the model tags it serves written into it."""
    spec = yaml.safe_load((BENTO_DIR / "bentofile.yaml").read_text(encoding="utf-8"))
    os.environ.update(served)  # bentos.build imports the service, which must resolve these models
    # ...afresh: a service module imported by an earlier build in this process names the earlier models.
    sys.modules.pop(spec["service"].split(":")[0], None)
    with tempfile.TemporaryDirectory(prefix="bento-ctx-") as ctx:
        # The Bento carries which models it serves: `bentoml serve` of a stored Bento sets no build envs.
        shutil.copytree(BENTO_DIR, ctx, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        Path(ctx, SERVED_MODELS_FILE).write_text(json.dumps(served), encoding="utf-8")
        return bentoml.bentos.build(
            spec["service"],
            name=BENTO_NAME,
            labels=labels,
            include=[*spec["include"], SERVED_MODELS_FILE],
            python={
                "packages": installed_closure(
                    [*spec["python"]["packages"], *serving_requirements(), "onnx", "onnxruntime", "bentoml"]
                ),
                "lock_packages": False,  # installed_closure is the lock
            },
            models=[v for v in served.values() if v],
            docker=docker_options(settings),
            build_ctx=ctx,
        )


def package_version(
    version: str,
    settings: Settings,
    actor: str = "packaging",
    onnx_export: BackgroundExport | None = None,
    rebuild: bool = False,
) -> Packaged:
    """Import the version into the BentoML store with its lineage as labels and build a Bento serving it.

    `onnx_export`: the conversion the train flow started from the very model it registered as `version`.
    `rebuild`: the version was packaged already, on another machine; this builds the same Bento into this
    machine's store and leaves the version's recorded Bento as it was (audited as `bento_rebuilt`).
    """
    setup_mlflow(settings)
    bentoml_home(settings)
    import bentoml  # after BENTOML_HOME is set: BentoML reads it at import

    registry = ModelRegistry(settings)
    try:
        record = registry.gated(version)
    except (UnknownVersion, NotGated) as exc:
        raise PackagingRefused(f"{exc}; not packaged") from exc
    facts = record.model_dump(include=set(LABEL_FIELDS), exclude_none=True)
    labels = {"model_version": record.version, "run_id": record.run_id, "alias": ",".join(record.aliases) or "none"}
    labels |= {k: str(v) for k, v in facts.items()}
    labels |= {f"test_{k}": f"{record.metrics[k]:.6f}" for k in LABEL_METRICS if k in record.metrics}
    model = bentoml.mlflow.import_model(MODEL_NAME, record.model_uri, labels=labels)
    onnx_model, parity = save_onnx_model(bentoml, record, labels, onnx_export)
    runtime = "onnx" if onnx_model else "sklearn"
    served = {
        "POTABLE_BENTO_MODEL_TAG": str(model.tag),
        "POTABLE_BENTO_ONNX_TAG": str(onnx_model.tag) if onnx_model else "",
    }
    bento = build_bento(bentoml, labels | {"runtime": runtime}, served, settings)
    if not rebuild:
        registry.record(record.version, bento_tag=str(bento.tag), serving_runtime=f"{runtime} ({parity})")
    audit_log(settings).append(
        actor,
        "bento_rebuilt" if rebuild else "bento_packaged",
        {"model_version": record.version, "run_id": record.run_id, "bento_tag": str(bento.tag)},
        {"model_tag": str(model.tag), "runtime": runtime, "onnx": parity},
    )
    return Packaged(record.version, str(model.tag), str(bento.tag), runtime)


def local_bento(record: VersionRecord, settings: Settings, actor: str) -> str:
    """The Bento serving `record`'s version in this machine's BentoML store, built here from the registry if
    the store has none. Workers on several machines share no disk: the version may have been packaged
    where it was trained. The recorded Bento when this store holds it; else one built here before (same
    version and run, by label); else a rebuild from the registry, through the same gate and ONNX parity
    check as packaging. A version never packaged (it failed the gate) is refused, not built."""
    bentoml_home(settings)
    import bentoml
    from bentoml.exceptions import NotFound

    if not record.bento_tag:
        raise PackagingRefused(
            f"{MODEL_NAME} v{record.version} has no Bento (potable package --version {record.version})"
        )
    try:
        return str(bentoml.bentos.get(record.bento_tag).tag)
    except NotFound:
        pass
    try:
        stored = bentoml.bentos.list(BENTO_NAME)
    except NotFound:  # no Bento of that name in this store at all
        stored = []
    mine = [
        b
        for b in stored
        if b.info.labels.get("model_version") == record.version and b.info.labels.get("run_id") == record.run_id
    ]
    if mine:
        return str(max(mine, key=lambda b: b.info.creation_time).tag)
    logger.info(
        "v%s: Bento %s is not in this store; building it here from the registry", record.version, record.bento_tag
    )
    return package_version(record.version, settings, actor=actor, rebuild=True).bento_tag


@task(name="package-bento", cache_policy=NO_CACHE)
def package_task(version: str, settings: Settings, onnx_export: BackgroundExport | None = None) -> Packaged:
    return package_version(version, settings, actor="train-flow", onnx_export=onnx_export)
