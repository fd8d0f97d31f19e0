"""Loading a batch from the landing area (local path or s3://), hashing it and splitting it.

Plain functions do the work (unit-tested without Prefect); the `@task` wrappers add retries and names.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import train_test_split

from potable.settings import FEATURES, LABEL, Settings


class BatchError(Exception):
    """The batch cannot be used; the message says why in words a data steward can act on."""


@dataclass(frozen=True)
class Batch:
    """A batch fetched to local disk: where it came from, where it is now and what it hashes to."""

    uri: str
    path: Path
    sha256: str

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key:
        raise BatchError(f"not an S3 object URI: {uri!r} (expected s3://bucket/key)")
    return parsed.netloc, key


def s3_bucket(bucket_name: str, settings: Settings):
    """A prefect-aws S3Bucket honouring the endpoint URL setting, so moto/MinIO use the production path."""
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    credentials = AwsCredentials(
        region_name=settings.aws_region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
    )
    return S3Bucket(bucket_name=bucket_name, credentials=credentials)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_batch(uri: str, settings: Settings) -> Batch:
    """Bring the batch to local disk (S3 objects are downloaded under POTABLE_HOME/downloads)."""
    if uri.startswith("s3://"):
        bucket_name, key = split_s3_uri(uri)
        target = settings.home_dir / "downloads" / bucket_name / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            s3_bucket(bucket_name, settings).download_object_to_path(key, target)
        except Exception as exc:  # botocore raises many types; the user needs the URI and the reason
            raise BatchError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
        return Batch(uri=uri, path=target, sha256=file_sha256(target))
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise BatchError(f"input file not found: {path}")
    if not path.is_file():
        raise BatchError(f"input is not a file: {path}")
    return Batch(uri=str(path), path=path, sha256=file_sha256(path))


def read_batch(path: Path) -> pd.DataFrame:
    """Parse the CSV; anything that is not a readable, non-empty CSV becomes a BatchError."""
    if path.stat().st_size == 0:
        raise BatchError(f"{path.name} is empty (0 bytes): expected a CSV with a header row")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            sample = fh.read(4096)
        if "\x00" in sample:
            raise BatchError(f"{path.name} is not a CSV text file (binary content)")
        csv.Sniffer().sniff(sample, delimiters=",")
        return pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise BatchError(f"{path.name} is not a UTF-8 CSV text file ({exc.reason})") from exc
    except csv.Error as exc:
        raise BatchError(f"{path.name} is not a comma-separated CSV file ({exc})") from exc
    except pd.errors.EmptyDataError as exc:
        raise BatchError(f"{path.name} has no columns: expected a CSV with a header row") from exc
    except pd.errors.ParserError as exc:
        raise BatchError(f"{path.name} is not a well-formed CSV: {exc}") from exc


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
@task(name="load-batch", cache_policy=NO_CACHE)
def load_batch(uri: str, settings: Settings) -> Batch:
    return fetch_batch(uri, settings)


@task(name="split-batch", cache_policy=NO_CACHE)
def split_batch_task(frame: pd.DataFrame, test_size: float, seed: int) -> Split:
    return split_batch(frame, test_size, seed)
