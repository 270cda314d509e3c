"""Benchmark loaders: one registry, every benchmark read into the same `EvalItem`.

Media paths inside benchmark files are resolved against `media_root`. Labels
are always relative to the file's own first and second response.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import RRMError
from ..pairs import jsonl_rows, read_label, sample_from_record
from ..schema import AUDIO, IMAGE, VERDICT_A, VERDICT_B, VERDICT_TIE, VIDEO, MediaItem, Sample

# The spoken Audio-HH-RLHF prompts have no text: the judge is told where the request is.
SPOKEN_QUERY = "Respond to the request spoken in the audio."


@dataclass
class EvalItem:
    sample: Sample  # sample.id is unique within a benchmark
    label: str  # the preferred response: one of VERDICTS
    subset: str = "all"


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, row, problem in jsonl_rows(path):
        if problem:
            raise RRMError(f"{path} line {n}: {problem}")
        rows.append(row)
    return rows


def read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RRMError(f"{path} is not valid JSON ({getattr(e, 'msg', 'not UTF-8 text')})") from None
    if not isinstance(data, list):
        raise RRMError(f"{path} must hold a JSON list of records")
    return data


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    if not files:
        raise RRMError(f"no .parquet files under {path}")
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _media(root: Path, rel: str | None, kind: str) -> list[MediaItem]:
    if not rel:
        return []
    return [MediaItem(kind, str(root / rel))]


def _label01(value, n: int) -> str:
    if value in (0, "0"):
        return VERDICT_A
    if value in (1, "1"):
        return VERDICT_B
    raise RRMError(f"record {n}: label must be 0 (A preferred) or 1 (B preferred), got {value!r}")


def load_hh_rlhf(path: Path, media_root: Path) -> list[EvalItem]:
    return [EvalItem(Sample(r["text_prompt"], r["answer_a"], r["answer_b"], id=f"hh-{n}"), _label01(r["label"], n))
            for n, r in enumerate(read_jsonl(path))]


def load_audio_hh_rlhf(path: Path, media_root: Path) -> list[EvalItem]:
    return [EvalItem(Sample(SPOKEN_QUERY, r["answer_a"], r["answer_b"], id=f"audio-hh-{n}",
                            media=_media(media_root, r["audio_prompt"], AUDIO)), _label01(r["label"], n))
            for n, r in enumerate(read_jsonl(path))]


def load_sharegpt_video(path: Path, media_root: Path) -> list[EvalItem]:
    # Every released item has the preferred answer in slot A: the protocol's two
    # orders are what keep an "always A" judge from scoring 100 %.
    return [EvalItem(Sample(r["query"], r["answer_a"], r["answer_b"], id=str(r.get("id", n)),
                            media=_media(media_root, r["video"], VIDEO)), _label01(r["label"], n))
            for n, r in enumerate(read_jsonl(path))]


def load_mm_rewardbench(path: Path, media_root: Path) -> list[EvalItem]:
    items = []
    for n, r in enumerate(read_json_list(path)):
        better = str(r["Better"]).strip().lower()
        if better not in ("output1", "output2"):
            raise RRMError(f"record {n}: Better must be Output1 or Output2, got {r['Better']!r}")
        text = r.get("Text")
        query = "" if text in (None, "None") else str(text)  # the released subset strips some questions
        items.append(EvalItem(
            Sample(query, r["Output1"], r["Output2"], id=str(r["ID"]), media=_media(media_root, r.get("Image"), IMAGE)),
            VERDICT_A if better == "output1" else VERDICT_B, subset=str(r.get("Category") or "all")))
    return items


def _image_from_cell(cell, media_root: Path) -> list[MediaItem]:
    """A parquet image cell: {'bytes': ..., 'path': ...}, raw bytes, or a path."""
    from PIL import Image

    if isinstance(cell, dict) and cell.get("bytes"):
        return [MediaItem(IMAGE, cell.get("path"), data=Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))]
    path = cell.get("path") if isinstance(cell, dict) else cell
    return _media(media_root, path, IMAGE)


def load_vl_rewardbench(path: Path, media_root: Path) -> list[EvalItem]:
    """The hub's parquet (a file, or a folder of them): query, image, response[2], human_ranking."""
    items = []
    for n, r in enumerate(_read_parquet(path)):
        first, second = r["response"][0], r["response"][1]
        ranking = list(r["human_ranking"])
        label = VERDICT_A if ranking[0] < ranking[1] else VERDICT_B if ranking[1] < ranking[0] else VERDICT_TIE
        rid = str(r.get("id") or n)
        subset = r.get("query_source") or rid.split("-")[0].split("_")[0]
        media = _image_from_cell(r.get("image"), media_root)
        items.append(EvalItem(Sample(r["query"], first, second, id=rid, media=media),
                              label, subset=str(subset)))
    return items


def _audio_from_cell(cell, rel: str | None, media_root: Path) -> list[MediaItem]:
    if isinstance(cell, dict) and cell.get("bytes"):
        import soundfile as sf

        samples, rate = sf.read(io.BytesIO(cell["bytes"]), dtype="float32")
        return [MediaItem(AUDIO, cell.get("path") or rel, data=samples, sampling_rate=rate)]
    return _media(media_root, rel or (cell.get("path") if isinstance(cell, dict) else cell), AUDIO)


def _preference(value, n: int) -> str:
    s = str(value).strip().lower()
    if s in ("response1", "1", "a"):
        return VERDICT_A
    if s in ("response2", "2", "b"):
        return VERDICT_B
    if s in ("tie", "equal", "same"):
        return VERDICT_TIE
    raise RRMError(f"record {n}: criteria_preference must be response1, response2 or tie, got {value!r}")


def load_omni_rewardbench_ta2t(path: Path, media_root: Path) -> list[EvalItem]:
    """Omni-RewardBench text+audio-to-text: prompt, audio, response1/2, a free-form criterion, its preference."""
    rows = _read_parquet(path) if path.suffix == ".parquet" or path.is_dir() else read_jsonl(path)
    items = []
    for n, r in enumerate(rows):
        query = r["prompt"]
        if r.get("criteria"):  # each item is judged by its own stated criterion
            query = f"{query}\n\nJudge the answers by this criterion: {r['criteria']}"
        media = _audio_from_cell(r.get("audio"), r.get("audio_path"), media_root)
        items.append(EvalItem(Sample(query, r["response1"], r["response2"], id=str(r.get("id") or n), media=media),
                              _preference(r["criteria_preference"], n)))
    return items


def load_preference(path: Path, media_root: Path) -> list[EvalItem]:
    """The project's own preference JSONL (what train/ reads): label A / B / tie, media relative to the root."""
    items = []
    for n, r in enumerate(read_jsonl(path)):
        try:
            label = read_label(r.get("label"))
        except RRMError as e:
            raise RRMError(f"record {n}: {e}") from None
        sample = sample_from_record(r, media_root)
        items.append(EvalItem(sample, label, subset=str(r.get("modality") or sample.modality)))
    return items


LOADERS: dict[str, Callable[[Path, Path], list[EvalItem]]] = {
    "vl-rewardbench": load_vl_rewardbench,
    "mm-rewardbench": load_mm_rewardbench,
    "sharegpt-video": load_sharegpt_video,
    "audio-hh-rlhf": load_audio_hh_rlhf,
    "omni-rewardbench-ta2t": load_omni_rewardbench_ta2t,
    "hh-rlhf": load_hh_rlhf,
    "preference": load_preference,
}

# Hub datasets a --data argument may name instead of a local path.
HUB_DATASETS = {"vl-rewardbench": "MMInstruction/VL-RewardBench"}


def load_benchmark(name: str, data: str, media_root: str | None = None) -> list[EvalItem]:
    if name not in LOADERS:
        raise RRMError(f"unknown benchmark {name!r}; known: {', '.join(LOADERS)}")
    path = Path(data)
    if not path.exists():
        path = _from_hub(name, data)
    root = Path(media_root) if media_root else (path if path.is_dir() else path.parent)
    try:
        items = LOADERS[name](path, root)
    except KeyError as e:
        raise RRMError(f"{path} is not in the {name} format: a record lacks the field {e}") from None
    ids = [i.sample.id for i in items]
    if len(set(ids)) != len(ids):
        raise RRMError(f"{path}: item ids are not unique")
    return items


def _from_hub(name: str, data: str) -> Path:
    if data != HUB_DATASETS.get(name):
        raise RRMError(f"data file {data} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(data, repo_type="dataset"))
    except Exception as e:
        raise RRMError(f"cannot get {data} from the Hugging Face hub ({type(e).__name__}); "
                       f"download its parquet files and pass --data DIR") from None
