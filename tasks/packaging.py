"""Packaging: a governed MLflow model version → BentoML model store → a Bento, traceable both ways."""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from governance.audit import audit_log
from potable.settings import MODEL_NAME, PROJECT_ROOT, Settings
from tasks.registry import serving_requirements, setup_mlflow

BENTO_DIR = PROJECT_ROOT / "bentos"
BENTO_NAME = "water-potability-service"
LABEL_TAGS = (
    "data_sha256",
    "git_commit",
    "threshold",
    "optuna_study",
    "model_family",
    "test_roc_auc",
    "test_false_potable_rate",
    "test_brier",
)


class PackagingRefused(Exception):
    """The version may not be packaged: unknown, or it did not pass the policy gate."""


@dataclass(frozen=True)
class Packaged:
    version: str
    model_tag: str
    bento_tag: str


def bentoml_home(settings: Settings) -> str:
    """BentoML's store lives under POTABLE_HOME unless BENTOML_HOME says otherwise."""
    return os.environ.setdefault("BENTOML_HOME", str(settings.home_dir / "bentoml"))


def gated_version(client: MlflowClient, version: str):
    try:
        mv = client.get_model_version(MODEL_NAME, str(version))
    except MlflowException as exc:
        raise PackagingRefused(f"{MODEL_NAME} v{version} does not exist") from exc
    if mv.tags.get("gate_passed") != "true":
        raise PackagingRefused(
            f"{MODEL_NAME} v{version} did not pass the policy gate "
            f"({mv.tags.get('gate_failed_rules', 'no governance verdict recorded')}); not packaged"
        )
    return mv


def package_version(version: str, settings: Settings, actor: str = "packaging") -> Packaged:
    """Import the version into the BentoML store with its lineage as labels and build a Bento serving it."""
    setup_mlflow(settings)
    bentoml_home(settings)
    import bentoml  # after BENTOML_HOME is set: BentoML reads it at import
    from bentoml._internal.bento.build_config import BentoEnvSchema  # the type bentos.build expects

    client = MlflowClient()
    mv = gated_version(client, version)
    labels = {"model_version": str(mv.version), "run_id": mv.run_id, "alias": ",".join(mv.aliases) or "none"}
    labels |= {k: mv.tags[k] for k in LABEL_TAGS if k in mv.tags}
    model = bentoml.mlflow.import_model(MODEL_NAME, f"models:/{MODEL_NAME}/{mv.version}", labels=labels)
    spec = yaml.safe_load((BENTO_DIR / "bentofile.yaml").read_text(encoding="utf-8"))
    os.environ["POTABLE_BENTO_MODEL_TAG"] = str(model.tag)  # the service resolves exactly this model
    bento = bentoml.bentos.build(
        spec["service"],
        name=BENTO_NAME,
        labels=labels,
        include=spec["include"],
        python={"packages": [*spec["python"]["packages"], *serving_requirements()]},
        envs=[BentoEnvSchema(name="POTABLE_BENTO_MODEL_TAG", value=str(model.tag), stage="runtime")],
        models=[str(model.tag)],
        build_ctx=str(BENTO_DIR),
    )
    client.set_model_version_tag(MODEL_NAME, str(mv.version), "bento_tag", str(bento.tag))
    audit_log(settings).append(
        actor,
        "bento_packaged",
        {"model_version": str(mv.version), "run_id": mv.run_id, "bento_tag": str(bento.tag)},
        {"model_tag": str(model.tag)},
    )
    return Packaged(str(mv.version), str(model.tag), str(bento.tag))


@task(name="package-bento", cache_policy=NO_CACHE)
def package_task(version: str, settings: Settings) -> Packaged:
    return package_version(version, settings, actor="train-flow")
