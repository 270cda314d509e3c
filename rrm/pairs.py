"""Files of pairs: one JSON object per line, in and out.

In: {"id", "query", "response_a", "response_b", "reference",
     "image" | "video" | "audio": path, or "media": [{"kind", "path"}]}
with media paths relative to a media root. A labelled line (training data, the
app's examples) adds "label", "score_a", "score_b" and "criteria": {key:
{"rationale", "score_A", "score_B"}}. Out: one judgment per line keyed by
`sample_id`, appended a whole line at a time so that a rerun can resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import RRMError, first_line
from .formats import foreign_record
from .limits import MAX_LINE_BYTES, MAX_ZIP_BYTES, MAX_ZIP_FILES
from .schema import MEDIA_KINDS, VERDICT_TIE, VERDICTS, CriterionResult, Judgment, MediaItem, ParseStatus, Sample

log = logging.getLogger(__name__)


def sample_from_record(record: dict, media_root: Path, confine: bool = False) -> Sample:
    """A Sample from one JSONL record; media paths are resolved against media_root.

    With `confine`, a media path that leads outside media_root is refused (a
    server must read no file but the ones uploaded to it).
    """
    if not isinstance(record, dict):
        raise RRMError("the line is not a JSON object")
    missing = [k for k in ("query", "response_a", "response_b") if not isinstance(record.get(k), str)]
    if missing:
        raise RRMError(f"missing or non-text field(s): {', '.join(missing)}")
    media = [MediaItem(kind, _media_path(media_root, rel, confine)) for kind, rel in _named_media(record)]
    sample_id = record.get("id")
    if sample_id is None:
        sample_id = content_id(record["query"], record["response_a"], record["response_b"], media)
    return Sample(query=record["query"], response_a=record["response_a"], response_b=record["response_b"],
                  media=media, reference=record.get("reference"), id=str(sample_id))


def read_label(value) -> str:
    """A labelled line's "label": A or B (either case), tie or equal."""
    text = str(value if value is not None else "").strip()
    label = VERDICT_TIE if text.lower() in ("tie", "equal") else text.upper()
    if label not in VERDICTS:
        raise RRMError(f"label must be A, B or tie, got {value!r}")
    return label


def read_criteria(raw) -> list[CriterionResult]:
    """A labelled line's "criteria": {key: {"rationale", "score_A", "score_B"}} or {key: rationale}. Titles are
    the keys until a rubric names them (`labelled_judgment`)."""
    if not isinstance(raw or {}, dict):
        raise RRMError('"criteria" must be an object: {key: {"rationale", "score_A", "score_B"}}')
    out = []
    for key, value in (raw or {}).items():
        if isinstance(value, dict):
            out.append(CriterionResult(key, key, str(value.get("rationale") or ""), value.get("score_A"),
                                       value.get("score_B")))
        else:
            out.append(CriterionResult(key, key, str(value or "")))
    return out


def labelled_judgment(label: str, score_a, score_b, criteria: list[CriterionResult], rubric) -> Judgment | None:
    """The judgment a labelled pair holds, in `rubric`'s order and titles, or None without a rationale for every
    criterion of `rubric`."""
    by_key = {c.key: c for c in criteria}
    if any(not (c.key in by_key and by_key[c.key].rationale) for c in rubric.criteria):
        return None
    found = [dataclasses.replace(by_key[c.key], title=c.title) for c in rubric.criteria]
    return Judgment(label, score_a, score_b, found, "", ParseStatus(True, "teacher"))


def _named_media(record: dict) -> list[tuple[str, str]]:
    """(kind, path) of each media file a record names, under "image"/"video"/"audio" (a path or a list of
    paths) or "media" (a list of {"kind", "path"})."""
    named = []
    for kind in MEDIA_KINDS:
        value = record.get(kind) or []
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
            raise RRMError(f'"{kind}" must be a file path or a list of file paths')
        named += [(kind, x) for x in paths]
    entries = record.get("media") or []
    if not isinstance(entries, list):
        raise RRMError('"media" must be a list of {"kind": ..., "path": ...} objects')
    for i, m in enumerate(entries, 1):
        if not (isinstance(m, dict) and m.get("kind") in MEDIA_KINDS and isinstance(m.get("path"), str)):
            raise RRMError(f'media entry {i} must be an object with "kind" ({", ".join(MEDIA_KINDS)}) '
                           f'and "path" (a file path)')
        named.append((m["kind"], m["path"]))
    if any("\0" in path for _, path in named):
        raise RRMError("a media path holds a NUL character, which no file name can")
    return named


def content_id(query: str, response_a: str, response_b: str, media: list[MediaItem]) -> str:
    """An id for a record that has none: stable across reruns and reorderings of its file."""
    key = json.dumps([query, response_a, response_b, [m.path for m in media]], ensure_ascii=False)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _media_path(root: Path, rel: str, confine: bool) -> str:
    path = root / rel
    if confine and not path.resolve().is_relative_to(root.resolve()):
        raise RRMError(f"media path {rel!r} leads outside the uploaded files")
    return str(path)


def extract_named(archive: Path, root: Path, named: set[str], max_files: int = MAX_ZIP_FILES,
                  max_bytes: int = MAX_ZIP_BYTES) -> None:
    """Unpack the members of an uploaded zip that pairs name (paths relative to the archive's root), under root.
    A zip bomb, a member that would land outside root and a file that is no zip are refused. Nothing else is
    written: a folder of other files (a checkpoint) stays packed."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            if len(members) > max_files:
                raise RRMError(f"The zip holds {len(members):,} files; the limit is {max_files:,}.")
            wanted = [m for m in members if not m.is_dir() and posixpath.normpath(m.filename) in named]
            if sum(m.file_size for m in wanted) > max_bytes:
                raise RRMError(f"The media the pairs name unpack to more than {max_bytes / 1024**3:g} GB.")
            for m in wanted:
                if not (root / m.filename).resolve().is_relative_to(root.resolve()):
                    raise RRMError(f"The zip entry {m.filename!r} points outside the archive.")
                z.extract(m, root)
    except zipfile.BadZipFile:
        raise RRMError("The media file is not a valid zip archive.") from None


def jsonl_rows(path: Path, what: str = "data file",
               max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, object, str | None]]:
    """(line number, value, None) for each line of a JSONL file that parses, (line number, None, problem) for each
    that does not; blank lines are passed over and a UTF-8 BOM is ignored. A file that is missing, a folder or
    binary is one RRMError naming it (`what` says what the file is for)."""
    path = Path(path)
    if path.is_dir():
        raise RRMError(f"{what} {path} is a folder, not a JSONL file")
    if not path.is_file():
        raise RRMError(f"{what} {path} does not exist")
    with open(path, "rb") as f:
        if b"\0" in f.read(8192):
            raise RRMError(f"{what} {path} is not JSONL text: it holds binary data (NUL bytes)")
        f.seek(0)
        for n, raw in enumerate(iter(lambda: f.readline(max_line_bytes + 1), b""), 1):
            if len(raw.rstrip(b"\r\n")) > max_line_bytes:
                while not raw.endswith(b"\n") and raw:  # pass over the rest of the line, a chunk at a time
                    raw = f.readline(max_line_bytes)
                yield n, None, f"the line is longer than the {max_line_bytes:,}-byte limit on one line"
                continue
            raw = raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw
            if raw.strip():
                yield n, *_parse_line(raw)


def table_rows(source, what: str = "data file") -> Iterator[tuple[int, object, str | None]]:
    """The rows of a data file as `jsonl_rows` gives them, from JSON Lines, a JSON array (.json), parquet
    (.parquet), or rows already in memory: a `datasets.Dataset` or a list of dicts (numbered from 1)."""
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is None:
        rows = source
    elif path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's errors share no base class but Exception
            raise RRMError(f"{what} {path} is not a readable parquet file: {first_line(e)}") from None
    elif path.suffix == ".json" and path.is_file() and _starts_array(path):
        try:
            rows = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RRMError(f"{what} {path} is not a JSON array: {first_line(e)}") from None
    else:
        yield from jsonl_rows(path, what)
        return
    yield from ((n, row, None) for n, row in enumerate(rows, 1))


def _starts_array(path: Path) -> bool:
    """Whether a .json file holds one array (else it is read as JSON Lines, as `datasets` does)."""
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _parse_line(raw: bytes) -> tuple[object, str | None]:
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"


def read_pairs(path: Path, media_root: Path, confine: bool = False, defaults: dict | None = None,
               what: str = "pairs file", fmt: str = "preference") -> tuple[list[Sample], list[str]]:
    """Samples, and a message for each line that could not be read (`defaults` fill fields a line lacks). `fmt`:
    our own lines, or another project's preference rows (rrm.formats)."""
    pairs, problems = read_pair_records(path, media_root, confine, defaults, what, fmt)
    return [sample for sample, _ in pairs], problems


def read_pair_records(path, media_root: Path, confine: bool = False, defaults: dict | None = None,
                      what: str = "pairs file", fmt: str = "preference") -> tuple[list[tuple[Sample, dict]], list[str]]:
    """`read_pairs`, each sample with the record it came from (our own line: a foreign row converted, its
    label included)."""
    pairs, problems, seen = [], [], set()
    for n, record, problem in table_rows(path, what):
        try:
            if problem:
                raise RRMError(problem)
            if fmt != "preference":
                record = foreign_record(record, fmt, n)
            if defaults and isinstance(record, dict):
                record = {**defaults, **record}
            sample = sample_from_record(record, media_root, confine)
        except RRMError as e:
            problems.append(f"{path} line {n}: {e}; skipped")
            continue
        if sample.id in seen:
            problems.append(f"{path} line {n}: duplicate id {sample.id}; skipped")
            continue
        seen.add(sample.id)
        pairs.append((sample, record))
    return pairs, problems


def shown(problems: list[str], limit: int = 10) -> list[str]:
    """The first `limit` problems, and one line counting the rest."""
    rest = len(problems) - limit
    return problems[:limit] + ([f"... and {rest} more lines skipped"] if rest > 0 else [])


# A record file (the CLI's OUT, eval's items.jsonl, synth's stores) is append-only: one JSON object per line,
# each written in one call, so a killed run leaves whole lines and at worst one cut-off last line. Reading and
# resuming never delete anything else: a line that cannot be read (a blank line, a note added by hand, a binary
# chunk) is kept where it is, reported, and skipped.
_REPORTED = 5  # unreadable lines reported one by one; the rest are counted


@dataclass
class RecordScan:
    records: list[dict]
    unreadable: list[int]  # line numbers
    cut_at: int | None  # byte offset of a cut-off last line (no newline, not JSON), None when there is none
    ends_without_newline: bool  # the last line is whole but lacks its newline


def scan_records(path: Path) -> RecordScan:
    """Every JSON object in a record file, the lines that hold none, and where a cut-off last line starts."""
    scan = RecordScan([], [], None, False)
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            last = not raw.endswith(b"\n")
            if raw.strip():
                try:
                    record = json.loads(raw)
                except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                    record = None
                if isinstance(record, dict):
                    scan.records.append(record)
                    scan.ends_without_newline = last
                elif last:
                    scan.cut_at = offset
                else:
                    scan.unreadable.append(n)
            offset += len(raw)
    return scan


def _report_unreadable(path: Path, lines: list[int]) -> None:
    for n in lines[:_REPORTED]:
        log.warning("%s line %d is not a JSON record: kept as it is, and skipped", path, n)
    if len(lines) > _REPORTED:
        log.warning("%s: %d more lines are not JSON records (kept, skipped)", path, len(lines) - _REPORTED)


def read_records(path: Path) -> list[dict]:
    """Every whole record of a file (a missing file has none); other lines are reported and skipped."""
    path = Path(path)
    if not path.exists():
        return []
    scan = scan_records(path)
    _report_unreadable(path, scan.unreadable)
    return scan.records


def done_ids(out: Path, key: str = "sample_id") -> set[str]:
    """Ids (under `key`) already written to OUT, made ready to append to.

    A cut-off last line left by a killed run is removed (its record is done again); a whole last line missing
    its newline gets one. Nothing else is touched: unreadable lines in the middle are reported and kept.
    """
    out = Path(out)
    if not out.exists():
        return set()
    if out.is_dir():
        raise RRMError(f"{out} is a folder; give a file to write the results to")
    scan = scan_records(out)
    if scan.cut_at is not None:
        log.warning("%s: dropping a partial line at its end (left by an interrupted run)", out)
        with open(out, "r+b") as f:
            f.truncate(scan.cut_at)
    elif scan.ends_without_newline:
        with open(out, "ab") as f:
            f.write(b"\n")
    _report_unreadable(out, scan.unreadable)
    keyless = sum(key not in r for r in scan.records)
    if keyless:
        log.warning("%s: %d records have no %r: kept, and skipped", out, keyless, key)
    return {str(r[key]) for r in scan.records if key in r}
