"""Loading a batch from the landing area (local path or s3://), hashing it and splitting it.

Plain functions do the work (unit-tested without Prefect); the `@task` wrappers add retries and names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import train_test_split

from core.batches import Batch, BatchError, file_sha256, read_batch, split_s3_uri
from core.settings import FEATURES, LABEL, Settings
from tasks.retries import io_retries

__all__ = ["Batch", "BatchError", "file_sha256", "read_batch", "split_s3_uri", "fetch_batch", "split_batch"]


class BatchUnreachable(BatchError):
    """The store holding the batch did not answer (worth retrying, unlike a bad or missing batch)."""

    transient = True


def s3_bucket(bucket_name: str, settings: Settings):
    """A prefect-aws S3Bucket honouring the endpoint URL setting, so moto/MinIO use the production path."""
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    # botocore's default (legacy mode, 60 s timeouts, 5 attempts) would hold a dead endpoint for minutes
    # inside each of our task attempts; the task's own retries are the policy, so botocore keeps it short.
    client_config = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 30}
    credentials = AwsCredentials(
        region_name=settings.aws_region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url, config=client_config),
    )
    return S3Bucket(bucket_name=bucket_name, credentials=credentials)


_S3_REFUSALS = frozenset({"404", "403", "NoSuchKey", "NoSuchBucket", "AccessDenied", "Forbidden"})


def _s3_refusal(exc: BaseException) -> bool:
    """Whether S3 answered and said no (as opposed to not answering at all)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return str(code) in _S3_REFUSALS


def fetch_batch(uri: str, settings: Settings) -> Batch:
    """Bring the batch to local disk (S3 objects are downloaded under POTABLE_HOME/downloads)."""
    if uri.startswith("s3://"):
        bucket_name, key = split_s3_uri(uri)
        target = settings.home_dir / "downloads" / bucket_name / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            s3_bucket(bucket_name, settings).download_object_to_path(key, target)
        except Exception as exc:  # botocore raises many types; the user needs the URI and the reason
            if _s3_refusal(exc):  # a missing object or a denied read will not pass on retry
                raise BatchError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
            raise BatchUnreachable(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
        return Batch(uri=uri, path=target, sha256=file_sha256(target))
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise BatchError(f"input file not found: {path}")
    if not path.is_file():
        raise BatchError(f"input is not a file: {path}")
    return Batch(uri=str(path), path=path, sha256=file_sha256(path))


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def split_batch(frame: pd.DataFrame, test_size: float, seed: int) -> Split:
    """Stratified hold-out split; the test part is touched once, after tuning."""
    X = frame.loc[:, list(FEATURES)].astype("float64")
    y = frame[LABEL].astype("int64")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    return Split(X_train, X_test, y_train, y_test)


# Tasks take DataFrames and estimators: hashing them for a cache key would cost more than it saves.
@task(name="load-batch", cache_policy=NO_CACHE, **io_retries(BatchError))
def load_batch(uri: str, settings: Settings) -> Batch:
    return fetch_batch(uri, settings)


@task(name="split-batch", cache_policy=NO_CACHE)
def split_batch_task(frame: pd.DataFrame, test_size: float, seed: int) -> Split:
    return split_batch(frame, test_size, seed)
