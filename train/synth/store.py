"""Append-only JSONL files keyed by id: how every stage resumes.

Each record is written with one `write` call on a file opened for appending,
so a killed process leaves whole lines, or at worst one cut-off last line,
which `done_ids` removes on the next start (lines it cannot read elsewhere are
kept and reported). A rerun reads the ids already written and skips them: at
most the items in flight are lost, none is doubled.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from rrm.pairs import done_ids

log = logging.getLogger(__name__)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = done_ids(self.path, key="id")

    def append(self, record: dict) -> None:
        if record["id"] in self.done:
            raise ValueError(f"{self.path}: id {record['id']} is already written")
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        self.done.add(record["id"])


def write_atomic(path: str | Path, text: str) -> None:
    """Replace a file's content in one step (a reader never sees half of it)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
