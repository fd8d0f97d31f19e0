"""One place for settings: environment variables (and a `.env` file) over documented defaults.

Business rules (search space, expectations, thresholds) live in the YAML files under configs/;
this module only says where things are and which services to talk to.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # core/ sits in the project root
CONFIG_DIR = PROJECT_ROOT / "configs"
BUNDLED_DATA = PROJECT_ROOT / "data" / "water_potability.csv"

MODEL_NAME = "water-potability"
EVENT_RESOURCE_PREFIX = f"potable.model.{MODEL_NAME}"  # Prefect event resources: <prefix>.<version>
FEATURES: tuple[str, ...] = (
    "ph",
    "Hardness",
    "Solids",
    "Chloramines",
    "Sulfate",
    "Conductivity",
    "Organic_carbon",
    "Trihalomethanes",
    "Turbidity",
)
LABEL = "Potability"
COLUMNS: tuple[str, ...] = (*FEATURES, LABEL)


class Settings(BaseSettings):
    """Where state lives and which services to use; every field has an env var (see README)."""

    model_config = SettingsConfigDict(env_prefix="POTABLE_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".potable"), description="All local state (POTABLE_HOME).")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "POTABLE_MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; default sqlite:///<home>/mlflow.db.",
    )
    mlflow_experiment: str = "water-potability"
    optuna_storage: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the Optuna study storage; default sqlite:///<home>/optuna.db.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POTABLE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3 API endpoint (moto, MinIO); unset means AWS itself.",
    )
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("POTABLE_AWS_REGION", "AWS_DEFAULT_REGION")
    )
    quarantine_prefix: str = Field(default="quarantine/", description="S3 prefix that bad batches move to.")
    reports_uri: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="s3://bucket/prefix/ that drift reports, model cards and Data Docs are also kept in "
        "(workers on several machines); default only <home>/reports.",
    )
    table_uri: str | None = Field(
        default=None,
        description="The versioned training table (Delta Lake): a folder or s3://bucket/prefix; default <home>/table.",
    )
    seed_data: str = Field(
        default=str(BUNDLED_DATA),
        description="CSV that becomes a new table's first version; `none` starts the table empty "
        "(`potable data init FILE` starts it from your own history instead).",
    )
    training_config: Path = Field(default=CONFIG_DIR / "training.yaml")
    validation_config: Path = Field(default=CONFIG_DIR / "validation.yaml")
    policy_config: Path = Field(default=CONFIG_DIR / "policy.yaml")
    monitoring_config: Path = Field(default=CONFIG_DIR / "monitoring.yaml")
    release_config: Path = Field(default=CONFIG_DIR / "release.yaml")
    auto_approve: bool = Field(
        default=False, description="Dev only: approve promotions without an approver (audited as such)."
    )
    git_commit: str | None = Field(default=None, description="Overrides `git rev-parse HEAD` (CI, images).")
    alert_urls: SecretStr | None = Field(
        default=None,
        description="Alert destinations as Apprise URLs, comma-separated (Slack, Teams, mailto://, json:// any "
        "webhook); alerts always also go to <home>/logs/alerts.jsonl and the Prefect event feed.",
    )
    alert_urls_secret: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the alert URLs (production)."
    )
    slack_webhook_url: SecretStr | None = Field(default=None, description="Slack incoming-webhook URL for alerts.")
    slack_webhook_secret: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the Slack webhook URL (production)."
    )
    sns_topic_arn: str | None = Field(default=None, description="SNS topic that alerts are published to.")
    sns_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POTABLE_SNS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL"),
        description="SNS API endpoint (moto, LocalStack); unset means AWS itself.",
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POTABLE_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="Endpoint for ECR, ECS, ELBv2 and CloudWatch (moto, LocalStack); unset means AWS itself.",
    )
    sqs_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POTABLE_SQS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"),
        description="SQS API endpoint (moto, LocalStack); unset means AWS itself.",
    )
    watch: str | None = Field(
        default=None,
        description="Where data lands: s3://bucket/prefix (listing), an SQS queue URL (S3 notifications), "
        "or a folder; default <home>/landing.",
    )
    landing_areas: str | None = Field(
        default=None,
        description="More landing areas besides POTABLE_WATCH, comma-separated (folders or s3://bucket/prefix/); "
        "arrival events naming anything outside them are refused.",
    )
    watch_interval_seconds: float = Field(default=5.0, description="Polling interval of the watcher.")
    prefect_port: int = Field(default=4200, description="`potable up`: Prefect server and UI port.")
    bind_host: str = Field(
        default="127.0.0.1",
        description="`potable up`: address the Prefect API/UI and the MLflow UI listen on; anything but loopback "
        "is refused unless both have authentication configured.",
    )
    prefect_api_auth_string: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_SERVER_API_AUTH_STRING", "POTABLE_PREFECT_API_AUTH_STRING"),
        description="`user:password` the Prefect server requires (basic auth); clients it starts get it too.",
    )
    mlflow_auth_config: Path | None = Field(
        default=None,
        description="MLflow basic-auth config (basic_auth.ini: admin user, password, database); turns the "
        "MLflow UI's authentication on.",
    )
    mlflow_port: int = Field(default=5000, description="`potable up`: MLflow UI port.")
    reports_port: int = Field(
        default=4210,
        description="`potable up`: port of the reports server (model cards, Data Docs, drift reports under "
        "<home>/reports, read-only); the Prefect artifacts link there.",
    )
    prefect_database_url: SecretStr | None = Field(
        default=None,
        description="`potable up`: Prefect server DB (postgresql+asyncpg://...); default SQLite in <home>/prefect.",
    )
    audit_database_url: SecretStr | None = Field(
        default=None,
        description="Audit trail in Postgres (postgresql://...), shared by every worker; default the file "
        "<home>/audit/audit.jsonl.",
    )
    prediction_log_database_url: SecretStr | None = Field(
        default=None,
        description="Service workers ship the prediction log to this Postgres (postgresql://...) and the drift "
        "flow reads it there; default the files under <home>/predictions.",
    )
    worker_name: str = Field(
        default_factory=lambda: socket.gethostname(),
        description="Who wrote an audit entry or ran a trial when workers share the stores; default the host name.",
    )
    worker_poll_seconds: float = Field(default=2.0, description="How often the worker asks for scheduled runs.")
    start_timeout_seconds: float = Field(default=120.0, description="`potable up`: wait this long per service.")
    flow_heartbeat_seconds: int = Field(
        default=30,
        ge=30,  # Prefect's own floor
        description="Flow runs started by the worker send a heartbeat this often; a run silent for two beats and"
        " 15 s more is marked Crashed (its process or machine died) and alerted by the supervisor.",
    )
    image_registry: str = Field(
        default="127.0.0.1:5001", description="Registry images are pushed to (an ECR host selects the ECR login)."
    )
    image_repository: str = Field(default="potable-service", description="Repository name in the registry.")
    image_tls_verify: bool = Field(default=False, description="TLS verification when pushing (true for ECR).")
    image_base: str = Field(
        default="localhost/potable-base:bookworm",
        description="Base image of the Bento image; the default is built offline from the Debian mirror.",
    )
    image_ca_dir: Path = Field(
        default=Path("/usr/local/share/ca-certificates"), description="Extra CA certificates trusted in the base."
    )
    debian_mirror: str = Field(default="http://deb.debian.org/debian", description="Mirror for the offline base.")
    alert_timeout_seconds: float = Field(default=10.0, description="Per-destination alert timeout.")
    bentoml_home: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("BENTOML_HOME", "POTABLE_BENTOML_HOME"),
        description="BentoML model and Bento store; default <home>/bentoml.",
    )
    prefect_home: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_HOME", "POTABLE_PREFECT_HOME"),
        description="Prefect's own state (profiles, local server DB); default <home>/prefect.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def table(self) -> str:
        return self.table_uri or str(self.home_dir / "table")

    @property
    def artifact_root(self) -> Path:
        return self.home_dir / "mlartifacts"

    @property
    def optuna_url(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.home_dir / 'optuna.db'}"

    @property
    def quarantine_dir(self) -> Path:
        return self.home_dir / "quarantine"

    @property
    def landing(self) -> str:
        return self.watch or str(self.home_dir / "landing")

    @property
    def bentoml_store(self) -> Path:
        return (self.bentoml_home or self.home_dir / "bentoml").expanduser().resolve()

    @property
    def prefect_home_dir(self) -> Path:
        return (self.prefect_home or self.home_dir / "prefect").expanduser().resolve()

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    def ensure_dirs(self) -> None:
        for path in (self.home_dir, self.artifact_root, self.quarantine_dir, self.reports_dir):
            path.mkdir(parents=True, exist_ok=True)


def worker_name() -> str:
    """POTABLE_WORKER_NAME, else the host name: for code that records who did something without settings."""
    return os.environ.get("POTABLE_WORKER_NAME") or socket.gethostname()


def get_settings() -> Settings:
    """Read settings afresh so a changed environment (tests, CLI flags) is always honoured."""
    return Settings()
