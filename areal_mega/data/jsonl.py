"""JSONL math data sets: one record per line with a problem and a gold answer.

The shared data folder is found, in order, at `$AREAL_MEGA_DATA_DIR`, then
`<repo root>/../shared/data` (where CI puts `shared/` beside the checkout).
A malformed line raises DataError naming `path:line` and what is wrong.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from areal_mega.jsonl import JsonlError, iter_jsonl

DATA_DIR_ENV = "AREAL_MEGA_DATA_DIR"
KNOWN_SETS = ("math500", "aime24", "amc23", "deepscaler_train")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DataError(JsonlError):
    """A data file problem; the message starts with `path:line` (or `path:` for the whole file)."""


@dataclass(frozen=True)
class MathRecord:
    """One problem: `id` (str, unique within `source`), `problem` text, gold `answer`, `source` data set name."""

    id: str
    problem: str
    answer: str
    source: str


def data_dir() -> Path:
    """The shared data folder (see module docstring); it may not exist."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "data"


def resolve_path(name_or_path: str) -> Path:
    """`math500` -> <data dir>/math500.jsonl; anything else is a file path."""
    if name_or_path in KNOWN_SETS:
        return data_dir() / f"{name_or_path}.jsonl"
    return Path(name_or_path)


def _field(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DataError(f"{where}: missing field '{key}' (fields: {sorted(row)[:10]})")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: field '{key}' must be a string or number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    value = str(value).strip()
    if not value:
        raise DataError(f"{where}: field '{key}' is empty")
    return value


def load_jsonl(
    name_or_path: str, problem_key: str = "problem", answer_key: str = "answer", id_key: str = ""
) -> list[MathRecord]:
    """Records of a JSONL file or known data set name; blank lines are skipped.

    Numbers in the answer field become strings (27.0 -> "27"). id_key "" uses
    the 1-based line number as the id.
    """
    path = resolve_path(name_or_path)
    if not path.is_file():
        hint = f" (data folder {data_dir()}; set {DATA_DIR_ENV})" if name_or_path in KNOWN_SETS else ""
        raise FileNotFoundError(f"data file not found: {path}{hint}")
    source = path.stem
    try:
        rows = list(iter_jsonl(path))
    except JsonlError as e:
        raise DataError(str(e)) from None
    records = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        rid = _field(row, id_key, where) if id_key else str(lineno)
        records.append(MathRecord(rid, _field(row, problem_key, where), _field(row, answer_key, where), source))
    if not records:
        raise DataError(f"{path}: no records")
    return records
