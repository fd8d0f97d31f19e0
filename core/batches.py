"""What a batch is, how it is hashed and parsed: plain Python, no Prefect, cheap to import.

Kept free of heavy imports so a validation worker process can start fast (see core/expectations.py).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from core.settings import COLUMNS


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


def s3_parts(uri: str) -> tuple[str, str]:
    """`s3://bucket/key-or-prefix` → (bucket, key-or-prefix); the one S3 URI parser (no checks)."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """An S3 object's URI → (bucket, key), or BatchError naming what is missing."""
    bucket, key = s3_parts(uri)
    if not uri.startswith("s3://") or not bucket or not key:
        raise BatchError(f"not an S3 object URI: {uri!r} (expected s3://bucket/key)")
    return bucket, key


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MAX_HEADER_BYTES = 64 * 1024  # ten column names need well under 1 KB
MAX_COLUMNS = 100


def check_header(path: Path) -> None:
    """Refuse a CSV whose header is absurd before parsing it: a million-column header would otherwise take
    minutes and gigabytes to parse, only to be rejected."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    line = head.split(b"\n", 1)[0]
    if len(line) > MAX_HEADER_BYTES:
        raise BatchError(
            f"{path.name}: header row longer than {MAX_HEADER_BYTES // 1024} KB; expected {len(COLUMNS)} columns"
        )
    columns = line.count(b",") + 1
    if columns > MAX_COLUMNS:
        raise BatchError(f"{path.name}: header has {columns} columns; expected {len(COLUMNS)} ({', '.join(COLUMNS)})")


def check_size(path: Path, max_bytes: int, max_rows: int) -> None:
    """Refuse a batch over the configured limits before parsing it: parsing 2 million rows takes a gigabyte
    and tens of seconds only to find out, and training on them would not end in any useful time."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BatchError(
            f"{path.name}: {size:,} bytes, over the limit of {max_bytes:,} (configs/validation.yaml max_bytes)"
        )
    lines = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            lines += chunk.count(b"\n")
            if lines > max_rows + 1:
                raise BatchError(
                    f"{path.name}: more than {max_rows:,} rows, over the limit (configs/validation.yaml max_rows)"
                )


def read_batch(path: Path) -> pd.DataFrame:
    """Parse the CSV; anything that is not a readable, non-empty CSV becomes a BatchError."""
    if path.stat().st_size == 0:
        raise BatchError(f"{path.name} is empty (0 bytes): expected a CSV with a header row")
    check_header(path)
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
