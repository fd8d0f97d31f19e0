"""Files that other processes read while we write them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def save_json_atomically(path: Path, data: Any, **dumps: Any) -> None:
    """Write `data` as JSON beside `path`, then rename over it: a reader sees the old file or the new one,
    never half of one (the watcher's state, the rollout state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(json.dumps(data, **dumps), encoding="utf-8")
    os.replace(partial, path)
