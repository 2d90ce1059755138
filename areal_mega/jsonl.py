"""The one JSONL reader: one JSON object per line, blank lines skipped.

Every file format that stores a record per line (math data sets, SFT pairs,
metrics.jsonl) reads through `iter_jsonl` and checks only its own fields. A
line that is not JSON, or is JSON but not an object, raises JsonlError whose
message starts with `path:line:`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


class JsonlError(ValueError):
    """A bad line in a JSONL file; the message starts with `path:line:`."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line of the UTF-8 file `path`."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip())  # a cut-off line then reports its own last column
            except json.JSONDecodeError as e:
                raise JsonlError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
