"""The service refuses (422) exactly what validation refuses in a batch: the request model's bounds are the
per-column min/max of configs/validation.yaml. The service cannot import our config code (it runs inside its
image), so its bounds are read here from its source and compared."""

from __future__ import annotations

import ast

from core import configs
from core.settings import FEATURES, PROJECT_ROOT, Settings


def request_bounds() -> dict[str, tuple[float, float]]:
    tree = ast.parse((PROJECT_ROOT / "bentos" / "service.py").read_text(encoding="utf-8"))
    model = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Sample")
    bounds = {}
    for field in model.body:
        if isinstance(field, ast.AnnAssign) and isinstance(field.value, ast.Call):
            words = {k.arg: ast.literal_eval(k.value) for k in field.value.keywords if k.arg in ("ge", "le")}
            bounds[field.target.id] = (words["ge"], words["le"])
    return bounds


def test_the_service_bounds_are_the_validation_bounds() -> None:
    columns = configs.validation(Settings()).rules()["columns"]
    expected = {name: (columns[name]["min"], columns[name]["max"]) for name in FEATURES}
    assert request_bounds() == expected
