"""A model version as one typed record, and the one module that reads and writes it in the MLflow registry.

Stages hand a version over through the registry (another process, another worker), so what they agree on
is written down here: every field of `VersionRecord` is a version tag, with one name and one format.
Nobody else calls `set_model_version_tag` or looks an alias up; `candidate` and `champion` live here.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field

from core.settings import MODEL_NAME, Settings

CANDIDATE = "candidate"  # the newest registered version
CHAMPION = "champion"  # the version a person approved for production


class UnknownVersion(LookupError):
    """No such model version in the registry."""


class NotGated(Exception):
    """The version did not pass the policy gate (or has no verdict): it may not be packaged or promoted."""


class VersionRecord(BaseModel):
    """What the platform knows about one registered version, in the order the stages learn it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    run_id: str
    aliases: tuple[str, ...] = ()
    # lineage (the batch itself is the run's `training` dataset input: core/lineage.py)
    data_sha256: str | None = None  # sha256 of the rows the run used (its `training` dataset artifact)
    dataset_version: int | None = None  # the training table version it was trained and judged on
    table_uri: str | None = None
    git_commit: str | None = None
    optuna_study: str | None = None
    # training and evaluation
    model_family: str | None = None
    cv_roc_auc: float | None = None
    threshold: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="held-out test metrics (tags test_<name>)")
    # governance
    gate_passed: bool | None = None
    gate_failed_rules: str | None = None
    champion_comparison: str | None = None
    slice_roc_auc_gap: float | None = None
    model_card: str | None = None
    approval: str | None = None
    # packaging, image and release
    bento_tag: str | None = None
    serving_runtime: str | None = None
    image: str | None = None
    image_digest: str | None = None
    release: str | None = None

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases

    @property
    def model_uri(self) -> str:
        return f"models:/{MODEL_NAME}/{self.version}"

    @property
    def decision_threshold(self) -> float:
        """The threshold the service applies; 0.5 only for versions registered before thresholds existed."""
        return 0.5 if self.threshold is None else self.threshold

    @classmethod
    def from_tags(cls, version: str, run_id: str, aliases: list[str], tags: dict[str, str]) -> VersionRecord:
        fields: dict[str, Any] = {k: v for k, v in tags.items() if k in _TAG_FIELDS}
        if "gate_passed" in fields:
            fields["gate_passed"] = fields["gate_passed"] == "true"
        metrics = {k.removeprefix("test_"): float(v) for k, v in tags.items() if k.startswith("test_")}
        return cls(version=str(version), run_id=run_id, aliases=tuple(aliases), metrics=metrics, **fields)


_TAG_FIELDS = frozenset(VersionRecord.model_fields) - {"version", "run_id", "aliases", "metrics"}


def as_tags(fields: dict[str, Any]) -> dict[str, str]:
    """Field values as registry tags: booleans lower-case, floats to six places, metrics as test_<name>."""
    unknown = set(fields) - _TAG_FIELDS - {"metrics"}
    if unknown:
        raise TypeError(f"not fields of a model version record: {sorted(unknown)}")
    VersionRecord.model_validate({"version": "0", "run_id": "", **fields})  # types checked before anything is written
    tags: dict[str, str] = {}
    for key, value in fields.items():
        if key == "metrics":
            tags |= {f"test_{name}": f"{float(v):.6f}" for name, v in value.items()}
        elif isinstance(value, bool):
            tags[key] = str(value).lower()
        elif isinstance(value, float):
            tags[key] = f"{value:.6f}"
        elif value is not None:
            tags[key] = str(value)
    return tags


class ModelRegistry:
    """The registered model `water-potability` as records; a thin layer over MlflowClient."""

    def __init__(self, settings: Settings):
        mlflow.set_tracking_uri(settings.tracking_uri)  # load_model("models:/…") resolves through the global URI
        self.client = MlflowClient(tracking_uri=settings.tracking_uri)

    def get(self, version: str | int) -> VersionRecord:
        try:
            mv = self.client.get_model_version(MODEL_NAME, str(version))
        except MlflowException as exc:
            raise UnknownVersion(f"{MODEL_NAME} v{version} does not exist") from exc
        return VersionRecord.from_tags(str(mv.version), mv.run_id, list(mv.aliases or []), dict(mv.tags))

    def by_alias(self, alias: str) -> VersionRecord | None:
        try:
            mv = self.client.get_model_version_by_alias(MODEL_NAME, alias)
        except MlflowException:
            return None
        return self.get(str(mv.version))

    def champion(self) -> VersionRecord | None:
        return self.by_alias(CHAMPION)

    def candidate(self) -> VersionRecord | None:
        return self.by_alias(CANDIDATE)

    def gated(self, version: str | int) -> VersionRecord:
        """The version, provided it passed the policy gate."""
        record = self.get(version)
        if record.gate_passed is not True:
            raise NotGated(
                f"{MODEL_NAME} v{record.version} did not pass the policy gate "
                f"({record.gate_failed_rules or 'no governance verdict recorded'})"
            )
        return record

    def record(self, version: str | int, **fields: Any) -> None:
        """Write fields of the version's record (validated first, so a wrong field writes nothing)."""
        for key, value in as_tags(fields).items():
            self.client.set_model_version_tag(MODEL_NAME, str(version), key, value)

    def move_alias(self, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(MODEL_NAME, alias, str(version))

    def delete(self, version: str | int) -> None:
        self.client.delete_model_version(MODEL_NAME, str(version))

    def load_model(self, version: str | int):
        """The fitted scikit-learn Pipeline of the version."""
        return mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
