"""The run record, `<workspace>/run.json`: what each stage did, written atomically after each.

A later stage (or a later Tekton task in another pod) reads what it needs from here, never from
another stage's internals.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import __version__, atomic
from .errors import UsageError
from .jsonfile import read_object

RECORD_VERSION = 1

# Tekton results and where in the record each one comes from (section, key[, key]).
RESULT_PATHS: dict[str, tuple[str, ...]] = {
    "IMAGE_DIGEST": ("image", "digest"),
    "IMAGE_URL": ("image", "pinned"),
    "MODEL_URI": ("registry", "model_uri"),
    "REGISTERED_MODEL_ID": ("registry", "registered_model_id"),
    "MODEL_VERSION_ID": ("registry", "model_version_id"),
    "SIGNATURE_REF": ("image", "signature", "ref"),
    "SIGNATURE_DIGEST": ("image", "signature", "digest"),
    "MODEL_SIG_DIGEST": ("image", "signature", "model_sig", "digest"),
}


class RunRecord:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        """Reads run.json, or starts a new record when it is missing."""
        if not path.exists():
            return cls(path, {"version": RECORD_VERSION, "modelcar": __version__, "stages": {}})
        data = read_object(path, lambda message: UsageError(f"{message}; delete it or run cleanup"), "the run record")
        data.setdefault("stages", {})
        return cls(path, data)

    def get(self, section: str) -> Any:
        return self.data.get(section)

    def set(self, section: str, value: Any) -> None:
        self.data[section] = value

    def drop(self, *sections: str) -> None:
        for section in sections:
            self.data.pop(section, None)

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name, {})

    def mark_stage(self, name: str, status: str, **details: Any) -> None:
        entry = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        entry.update(details)
        self.data["stages"][name] = entry

    def results(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for result, path in RESULT_PATHS.items():
            value: Any = self.data
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value and not isinstance(value, dict | list):
                found[result] = str(value)
        return found

    def save(self) -> None:
        self.data["modelcar"] = __version__
        atomic.write_json(self.path, self.data)
