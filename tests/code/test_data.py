"""Unit tests of loading, hashing and splitting a batch."""

from __future__ import annotations

import hashlib
import math

import pytest

from core.settings import BUNDLED_DATA, FEATURES
from tasks.data import BatchError, fetch_batch, file_sha256, read_batch, split_batch, split_s3_uri


def test_split_s3_uri_accepts_bucket_and_key() -> None:
    assert split_s3_uri("s3://landing/2026/batch.csv") == ("landing", "2026/batch.csv")


@pytest.mark.parametrize("uri", ["s3://bucket", "s3:///key.csv", "http://bucket/key.csv"])
def test_split_s3_uri_rejects_incomplete_uris(uri: str) -> None:
    with pytest.raises(BatchError, match="not an S3 object URI"):
        split_s3_uri(uri)


def test_file_sha256_is_the_sha256_of_the_bytes() -> None:
    assert file_sha256(BUNDLED_DATA) == hashlib.sha256(BUNDLED_DATA.read_bytes()).hexdigest()


def test_fetch_local_batch_records_uri_path_and_hash(settings) -> None:
    batch = fetch_batch(str(BUNDLED_DATA), settings)
    assert batch.path == BUNDLED_DATA and not batch.is_s3
    assert batch.sha256 == file_sha256(BUNDLED_DATA)


def test_fetch_missing_file_names_the_path(settings, tmp_path) -> None:
    with pytest.raises(BatchError, match="input file not found: .*nope.csv"):
        fetch_batch(str(tmp_path / "nope.csv"), settings)


def test_fetch_directory_is_rejected(settings, tmp_path) -> None:
    with pytest.raises(BatchError, match="not a file"):
        fetch_batch(str(tmp_path), settings)


def test_read_empty_file(write_csv) -> None:
    with pytest.raises(BatchError, match="is empty"):
        read_batch(write_csv(""))


def test_read_binary_file(write_csv) -> None:
    with pytest.raises(BatchError, match="not a (UTF-8 )?CSV"):
        read_batch(write_csv(bytes(range(256)) * 8))


def test_read_header_only_gives_zero_rows(write_csv) -> None:
    frame = read_batch(write_csv(",".join([*FEATURES, "Potability"]) + "\n"))
    assert len(frame) == 0 and list(frame.columns)[-1] == "Potability"


def test_split_is_stratified_disjoint_and_seeded(reference_frame) -> None:
    first = split_batch(reference_frame, test_size=0.2, seed=7)
    again = split_batch(reference_frame, test_size=0.2, seed=7)
    assert len(first.X_test) == math.ceil(0.2 * len(reference_frame))
    assert set(first.X_train.index).isdisjoint(first.X_test.index)
    assert list(first.X_test.index) == list(again.X_test.index)
    overall = reference_frame["Potability"].mean()
    assert abs(first.y_test.mean() - overall) < 0.01 and abs(first.y_train.mean() - overall) < 0.01
    assert list(first.X_train.columns) == list(FEATURES)


def test_a_missing_s3_object_is_a_refusal_not_an_outage(s3_bucket_name) -> None:
    """S3 answered "no such key": retrying cannot help, so it is a plain BatchError (not transient)."""
    from core.settings import Settings
    from tasks.data import BatchUnreachable

    with pytest.raises(BatchError, match=rf"cannot read s3://{s3_bucket_name}/absent.csv") as raised:
        fetch_batch(f"s3://{s3_bucket_name}/absent.csv", Settings())
    assert not isinstance(raised.value, BatchUnreachable)
