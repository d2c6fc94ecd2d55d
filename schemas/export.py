"""JSON Schema files so that producers in other languages can validate what they send."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import EVENT_KINDS, SCHEMA_VERSION


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, model in EVENT_KINDS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"urn:llmwatch:schema:{kind}:v{SCHEMA_VERSION}"
        path = directory / f"{kind}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
