"""Which Bento serves a request for an alias or a version (packaging it first if needed)."""

from __future__ import annotations

import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core.settings import MODEL_NAME, get_settings
from tasks.packaging import PackagingRefused, bentoml_home, package_version
from tasks.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, setup_mlflow


class ServingError(Exception):
    """Nothing servable: no such version or alias, or the version failed the gate."""


def resolve_version(client: MlflowClient, alias: str, version: str | None) -> str:
    if version is not None:
        return str(version)
    try:
        return str(client.get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException:
        if alias != CHAMPION_ALIAS:
            raise ServingError(f"no {MODEL_NAME} version has alias {alias!r}") from None
    try:
        found = str(client.get_model_version_by_alias(MODEL_NAME, CANDIDATE_ALIAS).version)
    except MlflowException:
        raise ServingError(f"no {MODEL_NAME} version is registered yet: run `potable train`") from None
    print(f"warning: no champion yet; serving the candidate v{found}", file=sys.stderr)
    return found


def bento_for(alias: str, version: str | None) -> str:
    """The Bento tag recorded on the version, packaging the version now if it has none."""
    settings = get_settings()
    setup_mlflow(settings)
    bentoml_home(settings)
    client = MlflowClient()
    chosen = resolve_version(client, alias, version)
    try:
        tags = client.get_model_version(MODEL_NAME, chosen).tags
    except MlflowException as exc:
        raise ServingError(f"{MODEL_NAME} v{chosen} does not exist") from exc
    if tags.get("bento_tag"):
        return tags["bento_tag"]
    try:
        return package_version(chosen, settings, actor="cli").bento_tag
    except PackagingRefused as exc:
        raise ServingError(str(exc)) from exc
