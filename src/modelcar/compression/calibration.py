"""Calibration text: c4 (one shard), a bounded slice of a Hub dataset, or a local file.

Only as many rows as needed are read: Hub datasets are streamed (nothing but the rows taken is
fetched, nothing is cached on disk), local files are read row by row. The text is tokenized
with the model's own tokenizer and truncated to SEQUENCE_LENGTH tokens.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError

C4_REPO = "allenai/c4"
C4_SHARD = "en/c4-train.00000-of-01024.json.gz"
TEXT_COLUMNS = ("text", "content", "document", "sentence")
CHAT_COLUMNS = ("messages", "conversations", "conversation")
MIN_TOKENS = 2
PARQUET_BATCH = 256


class CalibrationDataError(UsageError):
    """The calibration dataset is missing, unreadable or holds no usable text."""


def describe_source(dataset: str) -> str:
    if dataset == "c4":
        return f"c4 ({C4_REPO}, {C4_SHARD})"
    return dataset


def load_texts(dataset: str, count: int, tokenizer: Any = None, token: str | None = None) -> list[str]:
    """The first `count` non-empty texts of the dataset."""
    if dataset == "c4":
        rows = _hub_rows(C4_REPO, token, data_files={"train": C4_SHARD})
    elif Path(dataset).is_absolute():
        rows = _local_rows(Path(dataset))
    else:
        rows = _hub_rows(dataset, token)
    texts = _texts(rows, dataset, tokenizer)
    try:
        taken = list(itertools.islice(texts, count))
    except CalibrationDataError:
        raise
    except Exception as exc:  # network or format errors surface while iterating a stream
        raise CalibrationDataError(f"cannot read calibration dataset {describe_source(dataset)}: {exc}") from None
    if not taken:
        raise CalibrationDataError(f"calibration dataset {describe_source(dataset)} holds no text")
    return taken


def tokenize(tokenizer: Any, texts: list[str], sequence_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to sequence_length; texts too short to use are dropped."""
    encoded = tokenizer(texts, truncation=True, max_length=sequence_length, add_special_tokens=True)
    return [list(ids) for ids in encoded["input_ids"] if len(ids) >= MIN_TOKENS]


def to_dataset(samples: list[list[int]]) -> Any:
    """A datasets.Dataset of input_ids and attention_mask, as oneshot takes it."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(ids) for ids in samples]})


def _hub_rows(repo: str, token: str | None, data_files: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    from datasets import load_dataset

    where = describe_source("c4" if data_files and repo == C4_REPO else repo)
    try:
        loaded = load_dataset(repo, data_files=data_files, streaming=True, token=token)
    except Exception as exc:
        raise CalibrationDataError(
            f"cannot load calibration dataset {where} from the Hub ({type(exc).__name__}: {_first_line(exc)}); "
            "check DATASET (a Hub dataset id, c4, or a local .jsonl/.json/.txt/.parquet file) and the network"
        ) from None
    splits = list(loaded.keys())
    if not splits:
        raise CalibrationDataError(f"calibration dataset {where} has no splits")
    split = "train" if "train" in splits else splits[0]
    return iter(loaded[split])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _local_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise CalibrationDataError(f"calibration file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return ({"text": line} for line in _lines(path))
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".json":
        return iter(_json_rows(path))
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise CalibrationDataError(f"calibration file {path}: expected .jsonl, .json, .txt or .parquet")


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise CalibrationDataError(f"calibration file {path}, line {number}: not JSON ({exc})") from None
            yield row if isinstance(row, dict) else {"text": row}


def _json_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CalibrationDataError(f"calibration file {path} is not JSON ({exc})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            data = lists[0]  # {"data": [{...}, ...]}
        elif lists and len(lists) == len(data):
            data = [dict(zip(data, values, strict=False)) for values in zip(*data.values(), strict=False)]
        else:
            data = [data]
    if not isinstance(data, list):
        raise CalibrationDataError(f"calibration file {path}: expected a list of records or of strings")
    return [row if isinstance(row, dict) else {"text": row} for row in data]


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise CalibrationDataError(f"calibration file {path} is not a readable parquet file ({exc})") from None
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
        yield from batch.to_pylist()


def _texts(rows: Iterable[dict[str, Any]], dataset: str, tokenizer: Any) -> Iterator[str]:
    column: str | None = None
    for row in rows:
        if column is None:
            column = _pick_column(row, dataset)
        text = _text_of(row.get(column), tokenizer)
        if text and text.strip():
            yield text


def _pick_column(row: dict[str, Any], dataset: str) -> str:
    for name in TEXT_COLUMNS + CHAT_COLUMNS:
        if name in row:
            return name
    for name, value in row.items():
        if isinstance(value, str):
            return name
    columns = ", ".join(row) or "none"
    raise CalibrationDataError(
        f"calibration dataset {describe_source(dataset)} has no text column (columns: {columns}); "
        f"expected one of {', '.join(TEXT_COLUMNS + CHAT_COLUMNS)} or any column of strings"
    )


def _text_of(value: Any, tokenizer: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        messages = [
            {"role": m.get("role", m.get("from", "user")), "content": m.get("content", m.get("value", ""))}
            for m in value
        ]
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(str(m["content"]) for m in messages)
    return None
