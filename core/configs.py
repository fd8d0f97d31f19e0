"""The business rules in configs/*.yaml as pydantic models, validated when a file is loaded.

A misspelt key, a wrong type or a value out of range fails at load with the file and the key named
(`configs/policy.yaml: rules.0.limit: …`), not deep inside a flow. Flows read the models' fields; the
pure stage modules below them (tuning, policy, slices, expectations, drift, rollout) take the validated
model's plain-dict form (`.rules()`), so they stay testable with literal dicts.
Over 300 lines on purpose: one schema per file, side by side, so the whole rule vocabulary reads in one place.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.settings import FEATURES, LABEL, Settings


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and every bad key."""


class Rules(BaseModel):
    """A config section: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def rules(self) -> dict[str, Any]:
        """The validated values as plain dicts and lists, for the pure modules that take them."""
        return self.model_dump(mode="python")


Fraction = Field(ge=0.0, le=1.0)


# ---- training.yaml ---------------------------------------------------------------------------------
class ParamSpec(Rules):
    type: Literal["int", "float", "categorical"] = "float"
    low: int | float | None = None  # int first: an int range stays int for suggest_int
    high: int | float | None = None
    step: int | None = Field(default=None, ge=1)
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpec:
        if self.choices is None and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("needs low <= high (or choices)")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log scale needs low > 0")
        return self

    def rules(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_none=True)


class Pruner(Rules):
    n_startup_trials: int = Field(default=2, ge=0)
    n_warmup_steps: int = Field(default=1, ge=0)


class Tuning(Rules):
    n_trials: int = Field(ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)
    parallel_folds: int = Field(default=1, ge=1)
    processes: int = Field(default=1, ge=1)
    # Scale-out over the work pool: `tune-share` flow runs on other workers (storage on Postgres).
    workers: int = Field(default=1, ge=1)
    share_pickup_seconds: float = Field(default=30, gt=0)  # a share no worker started by then runs here
    share_timeout_seconds: float | None = Field(default=None, gt=0)  # a share still running then is cancelled
    n_jobs: int = -1
    pruner: Pruner = Pruner()
    warm_start: list[dict[str, Any]] = []


class ThresholdRule(Rules):
    strategy: Literal["f1", "max_recall_at_false_potable_rate"]
    max_false_potable_rate: float = Fraction


class HistoryWindow(Rules):
    """How much of the table a run trains on: all of it (both unset), or only the batches of the last
    N table versions and/or the last N days."""

    last_versions: int | None = Field(default=None, ge=1)
    last_days: float | None = Field(default=None, gt=0)


class DataRules(Rules):
    evaluation_share: float = Field(gt=0.0, lt=1.0)  # fixed for a table when its first version is written
    min_training_rows: int = Field(ge=20)
    max_training_rows: int = Field(ge=100)
    history: HistoryWindow = HistoryWindow()


class TrainingConfig(Rules):
    seed: int
    data: DataRules
    cv_folds: int = Field(ge=2)
    tuning: Tuning
    search_space: dict[str, dict[str, ParamSpec]] = Field(min_length=1)
    imputer_choices: list[Literal["median", "mean"]] = Field(min_length=1)
    model_format: Literal["cloudpickle", "skops"] = "cloudpickle"
    skops_trusted_types: list[str] = []
    threshold: ThresholdRule

    def rules(self) -> dict[str, Any]:
        plain = self.model_dump(mode="python", exclude={"search_space"})
        plain["search_space"] = {f: {n: s.rules() for n, s in p.items()} for f, p in self.search_space.items()}
        return plain


# ---- validation.yaml -------------------------------------------------------------------------------
class ColumnBounds(Rules):
    min: float
    max: float
    max_missing: float = Fraction
    decimals: int = Field(default=2, ge=0, le=9)  # measurement precision: rows equal at it are one row


class LabelQuality(Rules):
    min_reference_rows: int = Field(ge=20)
    max_reference_rows: int = Field(ge=100)
    confidence: float = Field(gt=0.5, lt=1.0)
    max_issue_share_excess: float = Fraction
    max_conflict_share: float = Fraction
    max_potable_share_shift: float = Fraction
    examples: int = Field(default=5, ge=0)


class LabelRule(Rules):
    column: str = LABEL
    values: list[int] = Field(min_length=2)


class ValidationRules(Rules):
    suite_name: str = Field(min_length=1)
    min_rows: int = Field(ge=1)
    max_rows: int = Field(ge=1)
    max_bytes: int = Field(ge=1024)
    max_duplicate_row_share: float = Fraction
    label: LabelRule
    columns: dict[str, ColumnBounds]
    numeric_types: list[str] = Field(min_length=1)
    example_values: int = Field(default=5, ge=0)
    label_quality: LabelQuality

    @model_validator(mode="after")
    def _every_feature(self) -> ValidationRules:
        missing = set(FEATURES) - set(self.columns)
        if missing:
            raise ValueError(f"columns: no bounds for {sorted(missing)}")
        return self


# ---- policy.yaml -----------------------------------------------------------------------------------
class PolicyRule(Rules):
    name: str
    measure: str
    op: Literal[">=", "<=", ">", "<", "==", "!="]
    limit: bool | float
    why: str = Field(min_length=1, description="every rule says why it exists")


class SliceDimension(Rules):
    column: str
    bins: list[float] | None = None
    labels: list[str] | None = None
    missing: bool = False

    @model_validator(mode="after")
    def _labels_fit(self) -> SliceDimension:
        if not self.missing and (self.bins is None or self.labels is None or len(self.labels) != len(self.bins) + 1):
            raise ValueError("needs bins and one label more than bins (or missing: true)")
        return self

    def rules(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_none=True)


class SliceRules(Rules):
    min_support: int = Field(ge=1)
    dimensions: dict[str, SliceDimension]

    def rules(self) -> dict[str, Any]:
        return {"min_support": self.min_support, "dimensions": {k: d.rules() for k, d in self.dimensions.items()}}


class ApprovalRules(Rules):
    auto_approve: bool = False
    timeout_seconds: int = Field(ge=1)


class Policy(Rules):
    primary_metric: str
    champion_margin: float = Field(ge=0.0)
    champion_confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    champion_resamples: int = Field(default=2000, ge=100)
    rules_: list[PolicyRule] = Field(alias="rules", min_length=1)
    slices: SliceRules
    approval: ApprovalRules

    def rules(self) -> dict[str, Any]:
        plain = self.model_dump(mode="python", by_alias=True, exclude={"slices"})
        plain["slices"] = self.slices.rules()
        return plain


# ---- monitoring.yaml -------------------------------------------------------------------------------
class MonitoringRules(Rules):
    window_hours: float = Field(gt=0)
    max_rows_per_client: int = Field(ge=1)
    min_samples: int = Field(ge=1)
    bins: int = Field(ge=2)
    psi_threshold: float = Field(gt=0)
    ks_alpha: float = Field(gt=0.0, lt=1.0)
    positive_rate_tolerance: float = Fraction
    retrain_on_drift: bool = False


# ---- release.yaml ----------------------------------------------------------------------------------
Port = Field(ge=1, le=65535)


class BodyLimits(Rules):
    predict: int = Field(default=16, ge=1)
    predict_batch: int = Field(default=4096, ge=1)
    other: int = Field(default=64, ge=1)


class RouterTls(Rules):
    certificate: Path
    key: Path

    @model_validator(mode="after")
    def _files_exist(self) -> RouterTls:
        for name in ("certificate", "key"):
            if not getattr(self, name).is_file():
                raise ValueError(f"router.tls.{name}: no file at {getattr(self, name)}")
        return self


class RouterRules(Rules):
    address: str = "127.0.0.1"
    tls: RouterTls | None = None  # HTTPS on the listen address with this certificate and key
    listen: int = Port
    rate_limit_per_second: int = Field(ge=1)
    burst: int = Field(ge=0)
    connections_per_client: int = Field(default=64, ge=1, lt=65536)
    body_limits_kb: BodyLimits = BodyLimits()
    header_buffer_kb: int = Field(default=8, ge=1, le=64)
    client_timeout_seconds: int = Field(default=10, ge=1)


class SmokeRules(Rules):
    golden_rows: int = Field(ge=1)
    tolerance: float = Field(ge=0)


class LatencyCheck(Rules):
    requests: int = Field(ge=1)
    max_p99_ms: float = Field(gt=0)


class WatchRules(Rules):
    window_seconds: float = Field(gt=0)
    interval_seconds: float = Field(gt=0)
    max_error_rate: float = Fraction
    min_requests: int = Field(ge=1)
    max_p99_ms: float = Field(gt=0)
    max_p99_ratio: float = Field(ge=1)
    p99_slack_ms: float = Field(ge=0)
    min_latency_requests: int = Field(ge=1)
    baseline_seconds: float = Field(gt=0)
    probe_timeout_seconds: float = Field(gt=0)
    probe_failures: int = Field(ge=1)


class CanaryRules(Rules):
    min_inputs: int = Field(ge=1)
    min_clients: int = Field(ge=2)  # one client is one witness: never enough alone
    max_inputs_per_client: int = Field(ge=1)
    max_share_difference: float = Fraction
    max_disagreement_increase: float = Fraction


class SlotUlimits(Rules):
    nofile: int = Field(default=16384, ge=1024)
    nproc: int = Field(default=4096, ge=64)


class ImageRules(Rules):
    build_local: bool = False
    runtime: str = Field(default="runc", min_length=1)  # the OCI runtime podman runs local slots with
    ulimits: SlotUlimits = SlotUlimits()


class AwsRules(Rules):
    cluster: str
    service_prefix: str
    listener_arn: str
    target_groups: dict[Literal["blue", "green"], str]
    load_balancer: str
    task_family: str
    container: str
    desired_count: int = Field(ge=1)
    rules_: dict[str, float] = Field(alias="rules")

    def rules(self) -> dict[str, Any]:
        return self.model_dump(mode="python", by_alias=True)


class ReleaseConfig(Rules):
    target: Literal["local", "aws"] = "local"
    router: RouterRules
    slots: dict[Literal["blue", "green"], int]
    ready_timeout_seconds: float = Field(gt=0)
    smoke: SmokeRules
    latency_check: LatencyCheck
    watch: WatchRules
    canary: CanaryRules
    image: ImageRules = ImageRules()
    queue_timeout_seconds: float = Field(default=900, gt=0)
    aws: AwsRules | None = None

    @model_validator(mode="after")
    def _two_slots(self) -> ReleaseConfig:
        if set(self.slots) != {"blue", "green"} or len(set(self.slots.values())) != 2:
            raise ValueError("slots: blue and green on two different ports")
        if self.router.listen in self.slots.values():
            raise ValueError("router.listen: the router's port is one of the slots' ports")
        if self.target == "aws" and self.aws is None:
            raise ValueError("target aws needs the aws section")
        return self

    def rules(self) -> dict[str, Any]:
        plain = self.model_dump(mode="python", exclude={"aws"})
        plain["aws"] = self.aws.rules() if self.aws else None
        return plain


# ---- loading ---------------------------------------------------------------------------------------
Model = TypeVar("Model", bound=Rules)


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]).replace("rules_", "rules") or "(top level)"


@lru_cache(maxsize=16)
def _parse(path: str, mtime: float, model: type[Rules]) -> Rules:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def load(path: Path, model: type[Model]) -> Model:
    """The file validated as `model` (cached per file version; models are frozen, so sharing is safe)."""
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    return copy.copy(_parse(str(path), mtime, model))  # type: ignore[return-value]


def training(settings: Settings) -> TrainingConfig:
    return load(settings.training_config, TrainingConfig)


def validation(settings: Settings) -> ValidationRules:
    return load(settings.validation_config, ValidationRules)


def policy(settings: Settings) -> Policy:
    return load(settings.policy_config, Policy)


def monitoring(settings: Settings) -> MonitoringRules:
    return load(settings.monitoring_config, MonitoringRules)


def release(settings: Settings) -> ReleaseConfig:
    return load(settings.release_config, ReleaseConfig)
