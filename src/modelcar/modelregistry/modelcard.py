"""What a model card (README.md with YAML front matter) says about the model: description, license."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DESCRIPTION_LIMIT = 500
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_SKIPPED_LINE = re.compile(r"^\s*(#|!\[|\[!\[|<|\||```|~~~|---|===|\*\*\*|>)")


@dataclass(frozen=True)
class ModelCard:
    description: str | None = None
    license: str | None = None


def read_model_card(path: Path) -> ModelCard:
    """Reads a model card; a missing or unreadable one gives an empty card, never an error."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ModelCard()
    return parse_model_card(text)


def parse_model_card(text: str) -> ModelCard:
    meta: dict[str, Any] = {}
    body = text
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict):
            meta = loaded
        body = text[match.end() :]
    description = _text(meta.get("description")) or first_paragraph(body)
    return ModelCard(description=_shorten(description) if description else None, license=_license(meta))


def first_paragraph(body: str) -> str | None:
    """The first run of prose lines: headings, badges, HTML, tables and code blocks skipped."""
    lines: list[str] = []
    in_code = False
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_code = not in_code
            if lines:
                break
            continue
        if in_code:
            continue
        if not stripped:
            if lines:
                break
            continue
        if _SKIPPED_LINE.match(stripped):
            if lines:
                break
            continue
        lines.append(stripped)
    return " ".join(lines) or None


def _license(meta: dict[str, Any]) -> str | None:
    value = meta.get("license")
    if isinstance(value, list):
        value = ", ".join(str(item) for item in value if item)
    text = _text(value)
    if text == "other":
        return _text(meta.get("license_name")) or text
    return text


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = " ".join(str(value).split())
    return text or None


def _shorten(text: str) -> str:
    if len(text) <= DESCRIPTION_LIMIT:
        return text
    cut = text[: DESCRIPTION_LIMIT - 1].rsplit(" ", 1)[0]
    return cut + "…"
