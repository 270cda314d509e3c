"""The Omni-RRM judging app: compare two responses and read the rationale per criterion.

    python app.py [--model Omni-RRM/Omni-RRM-7B] [--quantization auto] [--port 7860]

UI only: every judgment comes from `rrm`. Serves on 127.0.0.1 unless --host
says otherwise; no public link unless --share.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no analytics calls, ever

import argparse
import dataclasses
import hashlib
import html
import json
import logging
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import pandas as pd

from rrm import RRMError
from rrm.errors import first_line
from rrm.cli import add_judge_arguments, add_listen_arguments, build_judge, run_command
from rrm.generation import NO_JUDGMENT_BEGUN
from rrm.judge import Judge, OutOfMemory
from rrm.limits import MAX_BATCH_PAIRS, MAX_REQUEST_SECONDS, MAX_TEXT_CHARS, InputLimits
from rrm.media import EXTENSIONS, VIDEO_AUDIO_MODES, load_media, media_kind
from rrm.model import locate
from rrm.quantization import QUANTIZATIONS
from rrm.pairs import extract_named, read_pairs
from rrm.prompts import PROMPT_FORMATS, TemplateFormat, get_format
from rrm.redact import redact
from rrm.testing import examples
from rrm.results import (VERDICT_WORDS, heard_text, overview, percent, score_text, short, summarize, write_csv,
                         write_jsonl)
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import MEDIA_KINDS, VERDICT_A, VERDICT_B, VERDICT_TIE, VERDICTS, Judgment, MediaItem, Sample
from rrm.votes import LABEL_OF_VOTE, NO_VERDICT, VOTE_NAMES, VOTES, VOTES_FILE, VoteBook, vote_stats

log = logging.getLogger("rrm.app")
MAX_RESPONSES = 8  # response boxes in the Best-of-N tab
DATA_DIR = "app-data"  # where votes go (and the media they name), unless --data-dir says otherwise
# Partial judgments go to the page at most this often: one update per token kept the browser seconds behind.
STREAM_INTERVAL_S = 0.25
MEDIA_TYPES = [ext for kind in MEDIA_KINDS for ext in EXTENSIONS[kind]]
# System fonts: the default theme would fetch web fonts, which an offline browser cannot.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])

CSS = """
.verdict-card {border: 1px solid #d0d7de; border-radius: 10px; padding: 14px; text-align: center}
.verdict-card .winner {font-size: 1.6em; font-weight: 700}
.verdict-card .scores {display: flex; justify-content: center; gap: 40px; font-size: 1.2em; margin-top: 6px}
.criteria {display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px}
.criterion {border: 1px solid #d0d7de; border-radius: 8px; padding: 10px}
.criterion.pending {opacity: 0.55}
.criterion .head {display: flex; justify-content: space-between; font-weight: 600}
.criterion .body {white-space: pre-wrap; margin-top: 6px; font-size: 0.92em}
.chart .row {display: grid; grid-template-columns: 180px 1fr; align-items: center; gap: 8px; margin: 4px 0}
.chart .bar {height: 12px; border-radius: 3px; margin: 2px 0; color: white; font-size: 10px; line-height: 12px;
             padding-left: 4px}
.chart .a {background: #3b82f6} .chart .b {background: #f59e0b}
.best {background: #dcfce7; font-weight: 700}
.orders {display: grid; grid-template-columns: 1fr 1fr; gap: 14px}
.orders .criteria {grid-template-columns: 1fr}
"""


# Uploads and the Batch tab's unpacked zips: never listed, never loaded, whatever --models-root says.
WORK_ROOT = Path(tempfile.gettempdir()) / "rrm-app-work"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _uploads() -> list[Path]:
    return [Path(gr.utils.get_upload_folder()).resolve(), WORK_ROOT.resolve()]


CHECKPOINT_DEPTH = 3  # runs/<name>/checkpoint-N: how deep under a models root the Model tab looks


def _checkpoint_dirs(root: Path, depth: int = CHECKPOINT_DEPTH) -> list[Path]:
    """Folders holding a config.json or adapter_config.json, at most `depth` levels under `root`; hidden folders
    and caches are not entered, so a root never costs a scan of an unrelated tree."""
    if not root.is_dir():
        return []
    found, level = [], [root]
    for _ in range(depth + 1):
        found += [d for d in level if (d / "config.json").is_file() or (d / "adapter_config.json").is_file()]
        level = [c for d in level for c in _subfolders(d)]
    return sorted(found)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith((".", "__")) and
                c.name != "node_modules"]
    except OSError:  # unreadable: nothing under it is listed
        return []


class JudgeSlot:
    """The loaded judge; the Model tab can replace it, with a checkpoint the server lists, while the app runs."""

    def __init__(self, judge: Judge, models_roots=(), decoding: str = "auto"):
        self.judge = judge
        self.roots = [Path(r) for r in models_roots]
        self.decoding = decoding  # for the checkpoints the model tab loads
        try:
            started = locate(judge.loaded.adapter or judge.loaded.name)
            self.started = {p.resolve() for p in (started.weights, started.adapter, *started.merged_first) if p}
        except (RRMError, AttributeError):  # a judge built in code, or one behind an endpoint
            self.started = set()

    def checkpoints(self) -> dict[str, Path]:
        """Loadable directories under the roots, by the label the client sees (it picks one; it never sends a
        path). Uploads and batch work folders are left out even where a root holds them."""
        found: dict[str, Path] = {}
        hidden = _uploads()
        for root in self.roots:
            for d in _checkpoint_dirs(root):
                if any(d.resolve().is_relative_to(h) for h in hidden):
                    continue
                rel = d.relative_to(root)
                found[root.name if rel == Path(".") else f"{root.name}/{rel}"] = d
        return found

    def allow_base(self, name: str, path: Path) -> bool:
        """An adapter's base: the model the server started with, a checkpoint it lists, or a hub id."""
        resolved = path.resolve()
        if resolved in self.started or resolved in {p.resolve() for p in self.checkpoints().values()}:
            return True
        return bool(_HUB_ID.fullmatch(name)) and not Path(name).expanduser().exists()


# ----------------------------------------------------------------------------- rendering

def _e(text) -> str:
    return html.escape(str(text))


def render_verdict(judgment: Judgment | None, partial=None, running: bool = False,
                   stopped_after: int | None = None) -> str:
    if stopped_after is not None:  # Stop was clicked: what was written so far stays on the panels
        verdict, scores, swap = None, (None, None), ""
        title = f"Stopped after {stopped_after} tokens"
    elif judgment is None:
        verdict = partial.verdict if partial else None
        title = "Judging…" if running else "No judgment yet"
        scores = (partial.score_a, partial.score_b) if partial else (None, None)
        swap = ""
    else:
        verdict, scores = judgment.verdict, (judgment.score_a, judgment.score_b)
        early = next((e.removeprefix("AB: ").removeprefix("BA: ") for e in judgment.status.errors
                      if NO_JUDGMENT_BEGUN in e), None)
        title = {VERDICT_A: "Response A is better", VERDICT_B: "Response B is better",
                 VERDICT_TIE: "Tie"}.get(verdict, f"No verdict: {early or 'the output could not be read'}")
        if verdict is None:
            scores = (None, None)  # no verdict, no scores: what could be read of a failed judgment is no result
        if judgment.swap is None:
            swap = "swap check off"
        elif judgment.swap.agree is None:
            swap = "swap check incomplete"
        else:
            swap = "both orders agree" if judgment.swap.agree else "the orders disagree: a tie"
    if judgment is None and verdict and stopped_after is None:
        title = f"Judging… leaning {verdict}"
    done = judgment is not None or stopped_after is not None
    heard = "".join(f'<div class="heard">{_e(heard_text(h))}</div>' for h in (judgment.heard if judgment else []))
    return (f'<div class="verdict-card" data-verdict="{_e(verdict or "")}" data-done="{done}">'
            f'<div class="winner">{_e(title)}</div>'
            f'<div class="scores"><span>A: {score_text(scores[0])}</span><span>B: {score_text(scores[1])}</span></div>'
            f'<div class="swap">{_e(swap)}</div>{heard}</div>')


def render_criteria(rubric: Rubric, done: dict) -> str:
    panels = []
    for c in rubric.criteria:
        found = done.get(c.key)
        if found is None:
            panels.append(f'<div class="criterion pending" data-key="{_e(c.key)}"><div class="head">'
                          f'<span>{_e(c.title)}</span><span>pending</span></div></div>')
            continue
        scores = f"A {score_text(found.score_a)} · B {score_text(found.score_b)}" \
            if found.score_a is not None or found.score_b is not None else "done"
        panels.append(f'<div class="criterion done" data-key="{_e(c.key)}"><div class="head">'
                      f'<span>{_e(c.title)}</span><span>{_e(scores)}</span></div>'
                      f'<div class="body">{_e(found.rationale or "(no rationale)")}</div></div>')
    return f'<div class="criteria">{"".join(panels)}</div>'


def render_chart(rubric: Rubric, done: dict, score_a=None, score_b=None, judgment: Judgment | None = None) -> str:
    rows = []
    entries = [(c.title, done[c.key].score_a, done[c.key].score_b) for c in rubric.criteria
               if c.key in done and (done[c.key].score_a is not None or done[c.key].score_b is not None)]
    if score_a is not None or score_b is not None:
        entries.append(("Overall", score_a, score_b))
    for title, a, b in entries:
        bars = "".join(
            f'<div class="bar {side}" style="width:{max(0.0, min(1.0, (v or 0) / 10)) * 100:.0f}%">'
            f'{side.upper()} {score_text(v)}</div>' for side, v in (("a", a), ("b", b)))
        rows.append(f'<div class="row"><span>{_e(title)}</span><div>{bars}</div></div>')
    if not rows:
        why = ("No scores yet." if judgment is None else "No scores: the judgment could not be read."
               if not judgment.ok else "No scores in this judgment.")
        return f'<div class="chart"><em>{why}</em></div>'
    return f'<div class="chart">{"".join(rows)}</div>'


def render_timing(judgment: Judgment | None) -> str:
    t = judgment.timing if judgment else None
    if t is None:
        return ""
    rate = f"{t.tokens_per_s:.1f} tokens/s" if t.tokens_per_s else "–"
    ttft = f"{t.ttft_s:.2f} s" if t.ttft_s is not None else "–"
    return f"Time to first token **{ttft}** · decode **{rate}** · {t.generated_tokens} tokens in {t.total_s:.1f} s"


def _found(j: Judgment) -> dict:
    """The criteria a judgment filled in, by key: the panels it completes."""
    return {c.key: c for c in j.criteria if c.rationale or c.score_a is not None}


def render_orders(rubric: Rubric, judgment: Judgment | None) -> str:
    """Both orders' rationales side by side when the swap check ran (the B, A order mapped back to A and B)."""
    other = judgment.swap.other if judgment is not None and judgment.swap is not None else None
    if other is None:
        return "<em>One order only: turn the swap check on to read both.</em>" if judgment else ""
    columns = []
    for title, j in (("Order A, B (as given)", judgment), ("Order B, A (mapped back to your A and B)", other)):
        verdict = VERDICT_WORDS.get(j.verdict, "no verdict")
        columns.append(f'<div class="order"><h4>{_e(title)}: {_e(verdict)}</h4>{render_criteria(rubric, _found(j))}'
                       '</div>')
    return f'<div class="orders">{"".join(columns)}</div>'


def render_ranking(candidates: list[str], numbers: list[int], result) -> str:
    """Best-of-N's ranking: the knockout's winner, then by wins, then by mean score (`BestOfN.ranking`)."""
    means = result.mean_scores()
    rows = "".join(
        f'<tr class="{"best" if i == result.best else ""}"><td>{rank}</td><td>{numbers[i]}</td>'
        f'<td>{result.wins[i]}</td><td>{score_text(None if means[i] is None else round(means[i], 2))}</td>'
        f'<td>{_e(short(candidates[i], 200))}</td></tr>' for rank, i in enumerate(result.ranking(), 1))
    return (f'<table class="ranking"><tr><th>rank</th><th>response</th><th>wins</th><th>mean score</th>'
            f'<th>text</th></tr>{rows}</table>')


def _match_scores(j: Judgment) -> tuple[str, str]:
    """A match's overall scores as shown: none without a verdict, as on the verdict card."""
    return (score_text(j.score_a), score_text(j.score_b)) if j.verdict else ("–", "–")


def render_matches(rubric: Rubric, numbers: list[int], result) -> str:
    """Each Best-of-N match with its verdict and the judge's rationale per criterion, folded."""
    blocks = []
    for n, (a, b, j) in enumerate(result.matches, 1):
        blocks.append(f"<details><summary>Match {n}: response {numbers[a]} (as A) against {numbers[b]} (as B): "
                      f"{_e(VERDICT_WORDS.get(j.verdict, 'no verdict'))}, A {_match_scores(j)[0]} · "
                      f"B {_match_scores(j)[1]}</summary>{render_criteria(rubric, _found(j))}</details>")
    return "".join(blocks)


def render_final(rubric: Rubric, j: Judgment) -> tuple:
    """Everything the Judge tab shows for a finished judgment, in the order of its outputs."""
    done = _found(j)
    overall = (j.score_a, j.score_b) if j.verdict else (None, None)  # no verdict, no Overall bar
    return (render_verdict(j), render_criteria(rubric, done), render_chart(rubric, done, *overall, j),
            render_timing(j), render_orders(rubric, j), j.raw, j.to_dict())


# ----------------------------------------------------------------------------- inputs

def uploaded(paths) -> list[str]:
    """An upload value as a list of paths: none, one path, or several (Gradio's "multiple" File)."""
    if not paths:
        return []
    return [paths] if isinstance(paths, str) else [str(p) for p in paths]


def media_items(paths, limits: InputLimits) -> list[MediaItem]:
    """The uploaded files as media, in the order given, at most `limits.max_media` of them."""
    paths = uploaded(paths)
    try:
        limits.check_media(len(paths))
    except RRMError as e:
        raise gr.Error(f"{str(e)[0].upper()}{str(e)[1:]}.") from None
    items = []
    for path in paths:
        kind = media_kind(path)
        if kind is None:
            raise gr.Error(f"Unsupported file type {Path(path).suffix or '(none)'} ({Path(path).name}); "
                           f"upload one of: {' '.join(MEDIA_TYPES)}")
        items.append(MediaItem(kind, path))
    return items


def media_limits_markdown(judge: Judge) -> str:
    """The bounds an upload is held to, as the page states them under the upload box."""
    lim = judge.limits
    sound = {"on": "heard", "off": "not heard", "auto": "heard when the file has a track"}[lim.video_audio]
    return (f"Up to {judge.input_limits.max_media} files per sample, judged in the order uploaded. "
            f"Video: {lim.video_fps:g} fps, at most {lim.video_max_frames} frames; its sound {sound} "
            f"(at most {lim.audio_max_seconds:g} s). Audio: at most {lim.audio_max_seconds:g} s. "
            "Options change these for one judgment.")


def check_text(name: str, text: str | None, required: bool = True, limit: int = MAX_TEXT_CHARS) -> str:
    text = text or ""
    if required and not text.strip():
        raise gr.Error(f"{name} is empty.")
    if len(text) > limit:
        raise gr.Error(f"{name} is {len(text):,} characters long; the limit is {limit:,}.")
    return text


def table_rows(rows) -> list[list]:
    """A Dataframe input's rows, whether Gradio hands over a pandas frame or a list."""
    return rows.values.tolist() if hasattr(rows, "values") else list(rows or [])


def rubric_from_rows(rows) -> Rubric:
    """The rubric editor's table (key, title, description) as a Rubric."""
    records = table_rows(rows)
    criteria = [{"key": str(r[0]).strip(), "title": str(r[1]).strip(), "description": str(r[2]).strip()}
                for r in records if r and any(str(x).strip() for x in r[:3])]
    try:
        facets = {k: list(v) for k, v in DEFAULT_RUBRIC.facets.items()}
        return Rubric.from_dict({"criteria": criteria, "facets": facets})
    except RRMError as e:
        raise gr.Error(f"Rubric: {e}") from None


def rubric_rows(rubric: Rubric) -> list[list[str]]:
    return [[c.key, c.title, c.description] for c in rubric.criteria]


def prompt_with_template(prompt_format: str, template: str | None) -> str | TemplateFormat:
    """The prompt format, or a template written in Options on top of it (checked: a bad one is one message)."""
    if not (template or "").strip():
        return prompt_format
    try:
        return TemplateFormat(template, get_format(prompt_format), "in Options")
    except RRMError as e:
        raise gr.Error(f"Prompt template: {first_line(e)}") from None


def _user_error(e: Exception, uploads=None) -> gr.Error:
    message = redact(e)
    for path in uploaded(uploads):  # name the file as the user knows it, not by the server's upload folder
        message = message.replace(path, Path(path).name)
    if isinstance(e, OutOfMemory):
        message += ". Lower 'video max frames' or 'audio max seconds' in Options."
    return gr.Error(message)


# ----------------------------------------------------------------------------- the app

def _named_urls(value) -> list[str]:
    """URLs given as the path of a file value (Gradio would fetch them for the client)."""
    if isinstance(value, dict):
        path = value.get("path")
        here = [path] if isinstance(path, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) else []
        return here + [u for v in value.values() for u in _named_urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _named_urls(v)]
    return []


class StrictBlocks(gr.Blocks):
    """Blocks that check a call before Gradio touches it: more values than its event takes are refused (Gradio
    drops the extra ones silently: 10,000 responses to /best_of_n were cut to 8 without a word), and so is a
    file given as a URL (Gradio would fetch it: the server never opens a connection a client names)."""

    def validate_inputs(self, block_fn, inputs):
        if len(inputs) != len(block_fn.inputs):
            raise gr.Error(f"/{block_fn.api_name} takes {len(block_fn.inputs)} values, got {len(inputs):,}.")
        if _named_urls(inputs):
            raise gr.Error("Upload the file itself: this app fetches no URL a client names.")
        super().validate_inputs(block_fn, inputs)

    async def preprocess_data(self, block_fn, *args, **kwargs):
        """Gradio's own refusal of a value of the wrong kind reaches a client as {"error": null}: name it."""
        try:
            return await super().preprocess_data(block_fn, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise gr.Error(f"/{block_fn.api_name}: a value is not of the kind its input takes "
                           f"({redact(first_line(e))}).") from None


class Deadline:
    """Sets a cancel event once a request has held the queue for its time limit."""

    def __init__(self, cancel: threading.Event, seconds: float):
        self.seconds = seconds
        self.timer = threading.Timer(seconds, cancel.set)
        self.timer.daemon = True
        self.timer.start()
        self.started = time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() - self.started >= self.seconds

    def stop(self) -> None:
        self.timer.cancel()

    def error(self) -> gr.Error:
        return gr.Error(f"Stopped after {self.seconds:g} s, the time one request may take (--max-request-seconds); "
                        f"judge fewer pairs or frames per request.")


class BatchRun:
    """A batch judged in a worker thread while the request that asked for it streams its progress.

    Stopped at the next token when the request ends, when it passes its time limit, or when its client stops
    reading (Gradio does not close a generator whose client cancelled through gradio_client: a watchdog notices
    that an update was handed over and nobody asked for the next one for ABANDONED_SECONDS; a moment in which
    the whole process stalled, the watchdog included, does not count). The work folder goes with it.
    """

    ABANDONED_SECONDS = 0.6
    TICK = 0.2  # how often the watchdog looks

    def __init__(self, work: Path, seconds: float):
        self.work, self.cancel = work, threading.Event()
        self.deadline = Deadline(self.cancel, seconds)
        self.judgments: list[Judgment] = []
        self.failure: list[Exception] = []
        self.handed_over: float | None = None  # when the last update was yielded, None once the next is asked for
        self.worker: threading.Thread | None = None

    def start(self, chunks) -> None:
        """Judge in a worker thread: `chunks` is a lazy iterable of the judgments of one chunk each."""
        def work():
            try:
                for judged in chunks:
                    self.judgments.extend(judged)
            except Exception as e:  # handed to the request
                self.failure.append(e)

        def watch():
            tick = time.monotonic()
            while self.worker.is_alive():
                self.worker.join(self.TICK)
                now, handed_over = time.monotonic(), self.handed_over
                if handed_over is not None and now - tick > 2 * self.TICK:  # the process stalled: nobody could ask
                    self.handed_over = handed_over = now
                tick = now
                if handed_over is not None and now - handed_over > self.ABANDONED_SECONDS:
                    self.end()
                    return

        self.worker = threading.Thread(target=work, name="rrm-batch", daemon=True)
        self.worker.start()
        threading.Thread(target=watch, name="rrm-batch-watch", daemon=True).start()

    def busy(self) -> bool:
        self.worker.join(0.25)
        return self.worker.is_alive()

    def hand_over(self) -> None:
        """Called as an update is yielded to Gradio."""
        self.handed_over = time.monotonic()

    def asked(self) -> None:
        """Called when Gradio asks for the next update: the client is still reading."""
        self.handed_over = None

    def result(self) -> list[Judgment]:
        if self.failure:
            raise _user_error(self.failure[0]) if isinstance(self.failure[0], RRMError) else self.failure[0]
        if self.deadline.passed():
            raise self.deadline.error()
        return self.judgments

    def end(self) -> None:
        self.cancel.set()
        self.deadline.stop()
        if self.worker is not None and self.worker is not threading.current_thread():
            self.worker.join()
        shutil.rmtree(self.work, ignore_errors=True)


# ----------------------------------------------------------------------------- votes and history

@dataclasses.dataclass
class Judged:
    """A finished judgment on a page: what a vote is about, and one entry of the page's history."""

    sample: Sample
    judgment: Judgment
    rubric: Rubric  # what its panels show
    about: dict  # the model, quantization, format, seed and rubric it was made with
    at: str
    vote: str | None = None
    vote_id: str | None = None


class PageMemory:
    """Per page (one Gradio session): the judgment on screen, and the judgments made since the page opened. The
    server keeps them, so that a vote names only its button: the client sends no pair, path or judgment."""

    def __init__(self, pages: int = 256, per_page: int = 50):
        self.pages, self.per_page = pages, per_page
        self._history: OrderedDict[str, list[Judged]] = OrderedDict()
        self._current: dict[str, Judged | None] = {}
        self._lock = threading.Lock()

    def start(self, key: str) -> None:
        """A new judgment begins: nothing is on screen to vote on until it ends."""
        with self._lock:
            self._current[key] = None

    def finish(self, key: str, judged: Judged) -> None:
        with self._lock:
            history = self._history.setdefault(key, [])
            self._history.move_to_end(key)
            history.append(judged)
            del history[:-self.per_page]
            self._current[key] = judged
            while len(self._history) > self.pages:  # the pages least recently used go first
                gone, _ = self._history.popitem(last=False)
                self._current.pop(gone, None)

    def current(self, key: str) -> Judged | None:
        return self._current.get(key)

    def show(self, key: str, judged: Judged) -> None:
        """A judgment from the history is on screen again."""
        with self._lock:
            self._current[key] = judged

    def history(self, key: str) -> list[Judged]:
        return list(self._history.get(key, []))


def _about(judge: Judge, settings) -> dict:
    loaded = judge.loaded
    return {"model": (loaded.adapter or loaded.name) if loaded else judge.backend.description,
            "quantization": loaded.quantization if loaded else None, "format": judge.format.name,
            "seed": settings.seed, "temperature": settings.temperature, "top_p": settings.top_p,
            "rubric": list(judge.rubric.keys)}


def _session(request: gr.Request | None) -> str:
    return request.session_hash if request else "local"


class Handlers:
    """The app's event handlers: the model slot and what the pages share (their cancel events, their judgments,
    the votes file), and one method per event. build_demo's tabs wire them to their components."""

    def __init__(self, slot: JudgeSlot, max_text_chars: int = MAX_TEXT_CHARS, max_batch_pairs: int = MAX_BATCH_PAIRS,
                 max_request_seconds: float = MAX_REQUEST_SECONDS, data_dir: str | Path = DATA_DIR):
        self.slot, self.max_text_chars = slot, max_text_chars
        self.max_batch_pairs, self.max_request_seconds = max_batch_pairs, max_request_seconds
        self.cancels: dict[str, threading.Event] = {}
        self.book, self.memory, self.voting = VoteBook(data_dir), PageMemory(), threading.Lock()
        self.live_raw: set[str] = set()  # pages whose Raw output accordion is open: they get the raw text as it streams

    def judge_pair(self, query: str, response_a: str, response_b: str, media: list[str] | None = None,
                   reference: str | None = None, prompt_format: str | None = None, swap_check: bool = True,
                   temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, max_new_tokens: int = 1024,
                   video_fps: float | None = None, video_max_frames: int | None = None,
                   audio_max_seconds: float | None = None, rubric_table=None, prompt_template: str | None = None,
                   video_audio: str = "auto", request: gr.Request = None):
        """Judge which response is better; streams the card, the panels and the chart, then the whole judgment.
        Everything after the two responses is optional: the defaults are the page's. `media` is a list of files,
        judged in order; `video_audio` "auto" hears a video's sound as the loaded judge does, "on" or "off" not."""
        sample = Sample(query=check_text("The query", query, required=not media, limit=self.max_text_chars),
                        response_a=check_text("Response A", response_a, limit=self.max_text_chars),
                        response_b=check_text("Response B", response_b, limit=self.max_text_chars),
                        media=media_items(media, self.slot.judge.input_limits),
                        reference=check_text("The reference answer", reference, False, self.max_text_chars) or None)
        base = self.slot.judge
        rubric = rubric_from_rows(rubric_table) if rubric_table is not None else base.rubric
        limits = base.limits.replace(video_fps=float(video_fps or base.limits.video_fps),
                                     video_max_frames=int(video_max_frames or base.limits.video_max_frames),
                                     audio_max_seconds=float(audio_max_seconds or base.limits.audio_max_seconds),
                                     video_audio=base.limits.video_audio if video_audio == "auto" else video_audio)
        judge = base.configured(prompt_format=prompt_with_template(prompt_format or base.format.name,
                                                                   prompt_template), rubric=rubric, limits=limits)
        # The served judge's settings (its command line: top-k, --judgment-start-tokens) under the page's.
        settings = dataclasses.replace(base.generation, max_new_tokens=int(max_new_tokens),
                                       temperature=float(temperature), top_p=float(top_p), seed=int(seed))
        key = _session(request)
        cancel = self.cancels.setdefault(key, threading.Event())  # the page's click made it: a Stop while queued holds
        deadline = Deadline(cancel, self.max_request_seconds)
        sent_at, sent = 0.0, ("", "", "")  # when partial panels were last sent, and what they were
        try:
            for update in judge.stream(sample, swap_check=bool(swap_check), cancel=cancel, settings=settings):
                if deadline.passed():
                    raise deadline.error()
                j = update.judgment
                if j is not None and cancel.is_set() and not deadline.passed():  # stopped by the user
                    done = {c.key: c for c in update.partial.criteria}
                    yield (render_verdict(j, stopped_after=j.timing.generated_tokens if j.timing else 0),
                           render_criteria(rubric, done), render_chart(rubric, done), render_timing(j),
                           render_orders(rubric, None), update.text, j.to_dict())
                elif j is None:
                    if time.monotonic() - sent_at < STREAM_INTERVAL_S:
                        continue  # the final update follows whatever is skipped here
                    sent_at = time.monotonic()
                    done = {c.key: c for c in update.partial.criteria}
                    panels = (render_verdict(None, update.partial, running=True), render_criteria(rubric, done),
                              render_chart(rubric, done))
                    # Only the panels that changed; the raw text only to a page that has it open, the JSON at the end.
                    yield (*(gr.skip() if new == old else new for new, old in zip(panels, sent)),
                           gr.skip(), gr.skip(), update.text if key in self.live_raw else gr.skip(), gr.skip())
                    sent = panels
                else:
                    judged = Judged(sample, j, rubric, _about(judge, settings), time.strftime("%H:%M:%S"))
                    self.memory.finish(key, judged)
                    log.info("judgment ready to send (%s tokens)", j.timing.generated_tokens if j.timing else "?")
                    yield render_final(rubric, j)
        except RRMError as e:
            raise _user_error(e, media) from None
        finally:
            deadline.stop()
            self.cancels.pop(key, None)

    def cleared(self, rubric_table, request: gr.Request):
        # Runs at the click, outside the queue: a Stop clicked while this judgment still waits its turn holds.
        self.cancels[_session(request)] = threading.Event()
        self.memory.start(_session(request))
        try:
            rubric = rubric_from_rows(rubric_table)
        except gr.Error:  # the judgment that follows reports the bad rubric
            rubric = self.slot.judge.rubric
        return (render_verdict(None), render_criteria(rubric, {}), render_chart(rubric, {}), "", "", "", None,
                *self.vote_buttons(None))

    def vote_buttons(self, judged: Judged | None) -> tuple:
        """The four vote buttons, Undo and the line under them, for the judgment on screen (None: none yet)."""
        if judged is None:
            return (*[gr.update(interactive=False)] * (len(VOTES) + 1), "")
        if judged.vote is None:
            return (*[gr.update(interactive=True)] * len(VOTES), gr.update(interactive=False),
                    "Which response do you prefer? Your vote goes to the votes file (see the Votes tab).")
        agrees = "agrees" if LABEL_OF_VOTE[judged.vote] == judged.judgment.verdict else "disagrees"
        count = self.book.count()
        return (*[gr.update(interactive=False)] * len(VOTES), gr.update(interactive=True),
                f"Your vote: **{VOTE_NAMES[judged.vote]}**; the judge {agrees}. "
                f"{count} vote{'s' if count != 1 else ''} so far.")

    def history_choices(self, key: str):
        entries = self.memory.history(key)
        choices = [(f"{i + 1}. {h.at} · {VERDICT_WORDS.get(h.judgment.verdict, 'no verdict')} · "
                    f"{short(h.sample.query or h.sample.response_a, 50)}", str(i)) for i, h in enumerate(entries)]
        return gr.update(choices=choices[::-1], value=choices[-1][1] if choices else None)

    def after_judgment(self, request: gr.Request):
        return *self.vote_buttons(self.memory.current(_session(request))), self.history_choices(_session(request))

    def reopened(self, choice, request: gr.Request):
        entries = self.memory.history(_session(request))
        if choice is None or not str(choice).isdigit() or int(choice) >= len(entries):
            raise gr.Error("Pick a judgment from the history.")
        judged = entries[int(choice)]
        self.memory.show(_session(request), judged)  # a vote now is on this one
        return *render_final(judged.rubric, judged.judgment), *self.vote_buttons(judged)

    def exported(self, request: gr.Request):
        entries = self.memory.history(_session(request))
        if not entries:
            raise gr.Error("No judgments on this page yet.")
        # One file per page, rewritten at each export (the folder is named by a hash: the session id is the client's).
        folder = WORK_ROOT / "history" / hashlib.sha256(_session(request).encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "judgments.json"
        path.write_text(json.dumps([{"at": h.at, "sample": h.sample.to_dict(), "judgment": h.judgment.to_dict(),
                                     "settings": h.about, "vote": h.vote} for h in entries], ensure_ascii=False,
                                   indent=1))
        return str(path)

    def cast_vote(self, vote: str, request: gr.Request):
        judged = self.memory.current(_session(request))
        if judged is None:
            raise gr.Error("Judge a pair first: a vote is on the judgment shown.")
        with self.voting:  # a double click sends two votes at once: one is kept
            if judged.vote is not None:
                raise gr.Error("This judgment has a vote already: undo it to vote again.")
            try:
                judged.vote_id = self.book.cast(judged.sample, judged.judgment, vote, judged.about)["id"]
            except (RRMError, OSError) as e:
                raise gr.Error(f"The vote could not be saved: {redact(first_line(e))}") from None
            judged.vote = vote
        return self.vote_buttons(judged)

    def undo_vote(self, request: gr.Request):
        judged = self.memory.current(_session(request))
        with self.voting:
            if judged is None or judged.vote_id is None:
                raise gr.Error("There is no vote to undo.")
            self.book.undo(judged.vote_id)
            judged.vote = judged.vote_id = None
        return self.vote_buttons(judged)

    def vote_api(self, vote: str, request: gr.Request) -> str:
        """Vote on the judgment this client made last: A, B, tie or both_bad. Returns the line the page shows."""
        return self.cast_vote(vote, request)[-1]

    def voter(self, vote: str):
        def handler(request: gr.Request):
            return self.cast_vote(vote, request)
        return handler

    def votes_view(self):
        stats = vote_stats(self.book.records())
        download = None
        if self.book.path.exists():  # a copy in the work folder: Gradio serves files from there, not from the data dir
            download = WORK_ROOT / "votes" / VOTES_FILE
            download.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.book.path, f"{download}.part")
            os.replace(f"{download}.part", download)
        return (_votes_markdown(stats, self.book), _agreement_frame(stats["by_modality"], "modality"),
                _agreement_frame(stats["by_swap"], "swap check"), _confusion_frame(stats["confusion"]),
                render_agreement_chart(stats["by_modality"]), str(download) if download else None)

    def raw_opened(self, request: gr.Request):
        self.live_raw.add(_session(request))

    def raw_closed(self, request: gr.Request):
        self.live_raw.discard(_session(request))

    def stop(self, request: gr.Request):
        event = self.cancels.get(_session(request))
        if event is not None:
            event.set()

    def checked_upload(self, paths):
        """Uploads that cannot be decoded, and those past the count limit, are refused at once, each with its
        reason; the others stay in the File, in order."""
        paths, kept = uploaded(paths), []
        for path in paths:
            try:
                self.slot.judge.input_limits.check_media(len(kept) + 1)
                load_media(media_items(path, self.slot.judge.input_limits)[0], self.slot.judge.limits)
                kept.append(path)
            except (RRMError, gr.Error) as e:  # gr.Error: a type the judge does not take
                message = _user_error(e, path).message if isinstance(e, RRMError) else e.message
                gr.Warning(f"{Path(path).name}: {message.rstrip('.')}. The upload was removed.")
        return gr.skip() if len(kept) == len(paths) else (kept or None)

    def show_media(self, paths):
        """The previews: images and videos in a gallery, the first audio clip in a player, every name in order."""
        items = [(media_kind(p) or "unsupported", p) for p in uploaded(paths)]
        seen = [p for kind, p in items if kind != "audio"]
        sounds = [p for kind, p in items if kind == "audio"]
        names = "In order: " + " · ".join(f"{i}. {Path(p).name} ({kind})" for i, (kind, p) in enumerate(items, 1))
        return (gr.update(value=seen or None, visible=bool(seen)),
                gr.update(value=sounds[0] if sounds else None, visible=bool(sounds),
                          label="Preview" if len(sounds) < 2 else f"Preview: the first of {len(sounds)} audio clips"),
                names if items else "")

    def judge_file(self, pairs_file: str, media_zip: str | None = None, swap_check: bool = True, batch_size: int = 4,
                   progress=gr.Progress()):
        """Judge a file of pairs in a worker thread, yielding progress. A cancelled request, an abandoned one
        or one past its time limit stops at the next token; its work folder goes, however it ends."""
        if not pairs_file:
            raise gr.Error("Upload a JSONL file of pairs.")
        WORK_ROOT.mkdir(exist_ok=True)
        run = BatchRun(Path(tempfile.mkdtemp(prefix="rrm-batch-", dir=WORK_ROOT)), self.max_request_seconds)
        try:
            samples, problems, missing = _batch_pairs(Path(pairs_file), Path(media_zip) if media_zip else None,
                                                      run.work, self.max_batch_pairs)
            for p in (problems + missing)[:5]:
                gr.Warning(p)
            judge, size = self.slot.judge, int(batch_size)
            run.start(judged for _, judged in judge.judge_chunks(samples, size, bool(swap_check), cancel=run.cancel))
            while run.busy():
                progress((len(run.judgments), len(samples)), desc="judging", unit="pairs")
                run.hand_over()
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
                run.asked()
            judgments = run.result()
            hidden = str(run.work / "media") + os.sep  # reasons name the user's files, not the server's folders
            for j in judgments:
                j.status.errors = [e.replace(hidden, "") for e in j.status.errors]
            summary = summarize(judgments)
            header, rows = overview(samples, judgments)
            files = [str(write_jsonl(judgments, run.work / "judgments.jsonl")),
                     str(write_csv(judgments, judge.rubric, run.work / "judgments.csv", samples))]
            summary.update(skipped_lines=len(problems), missing_media=len(missing))
            # Gradio copies the files it is given as this last value is sent: the folder can go after it.
            yield (_summary_markdown(summary, problems, missing), pd.DataFrame(rows, columns=header), files,
                   summary)
        finally:
            run.end()

    def best_of(self, query: str, response_1: str, response_2: str, response_3: str = "", response_4: str = "",
                response_5: str = "", response_6: str = "", response_7: str = "", response_8: str = "",
                media: list[str] | None = None, swap_check: bool = True):
        """Rank 2 to 8 responses by knockout (empty ones are left out); the query may be empty with media, a list
        of files judged in order."""
        given = (response_1, response_2, response_3, response_4, response_5, response_6, response_7, response_8)
        candidates = [check_text(f"Response {i + 1}", r, required=False, limit=self.max_text_chars)
                      for i, r in enumerate(given)]
        numbers = [i + 1 for i, r in enumerate(candidates) if r.strip()]  # the boxes' numbers, as the page shows
        candidates = [r for r in candidates if r.strip()]
        if len(candidates) < 2:
            raise gr.Error(f"Give between 2 and {MAX_RESPONSES} responses (got {len(candidates)}).")
        check_text("The query", query, required=not media, limit=self.max_text_chars)
        cancel = threading.Event()
        deadline = Deadline(cancel, self.max_request_seconds)
        try:
            judge = self.slot.judge
            result = judge.best_of_n(query or "", candidates, media=media_items(media, judge.input_limits),
                                     swap_check=bool(swap_check), cancel=cancel)
        except RRMError as e:
            raise _user_error(e, media) from None
        finally:
            deadline.stop()
        if deadline.passed():
            raise deadline.error()
        matches = [[n + 1, numbers[a], numbers[b], VERDICT_WORDS.get(j.verdict, "no verdict"), *_match_scores(j),
                    "" if j.swap is None else j.swap.agree] for n, (a, b, j) in enumerate(result.matches)]
        # Every index in the payload is a box's (0 for Response 1): wins is None for a box left empty.
        wins: list[int | None] = [None] * MAX_RESPONSES
        for i, n in enumerate(numbers):
            wins[n - 1] = result.wins[i]
        payload = {"best": numbers[result.best] - 1, "ranking": [numbers[i] - 1 for i in result.ranking()],
                   "wins": wins, "matches": [{"a": numbers[a] - 1, "b": numbers[b] - 1,
                                              "judgment": j.to_dict()} for a, b, j in result.matches]}
        return (render_ranking(candidates, numbers, result), matches,
                render_matches(self.slot.judge.rubric, numbers, result), payload)

    def model_info(self) -> str:
        return _model_markdown(self.slot.judge)

    def load_other(self, choice, quantization):
        listed = self.slot.checkpoints()
        if not choice or choice not in listed:
            raise gr.Error("Pick a checkpoint from the list.")
        try:
            self.slot.judge = Judge.from_pretrained(str(listed[choice]), quantization=quantization,
                                               decoding=self.slot.decoding, allow_base=self.slot.allow_base,
                                               input_limits=self.slot.judge.input_limits)
        except RRMError as e:
            raise gr.Error(str(e)) from None
        judge = self.slot.judge
        return self.model_info(), rubric_rows(judge.rubric), judge.format.name, media_limits_markdown(judge)


def more_responses(shown_count: int):
    count = min(int(shown_count) + 1, MAX_RESPONSES)
    return count, *[gr.update(visible=i < count) for i in range(MAX_RESPONSES)], \
        gr.update(interactive=count < MAX_RESPONSES)


def build_demo(slot: JudgeSlot, max_text_chars: int = MAX_TEXT_CHARS, max_batch_pairs: int = MAX_BATCH_PAIRS,
               max_request_seconds: float = MAX_REQUEST_SECONDS, data_dir: str | Path = DATA_DIR) -> gr.Blocks:
    h = Handlers(slot, max_text_chars, max_batch_pairs, max_request_seconds, data_dir)
    with StrictBlocks(title="Omni-RRM judge", analytics_enabled=False) as demo:
        gr.Markdown("# Omni-RRM judge\nWhich of two responses is better, and why, criterion by criterion.")
        with gr.Tab("Judge"):
            options = judge_tab(h)
        with gr.Tab("Batch"):
            batch_tab(h)
        with gr.Tab("Best-of-N"):
            best_of_n_tab(h)
        with gr.Tab("Votes") as votes:
            votes_tab(h, votes)
        with gr.Tab("Model"):
            model_tab(h, demo, [options["rubric_table"], options["prompt_format"], options["media_limits"]])
    demo.queue(default_concurrency_limit=1)  # one generation per model at a time; others see their place
    return demo


def _judge_inputs(judge0: Judge) -> dict:
    """The Judge tab's query, media (with previews and limits), responses and buttons."""
    c = {}
    with gr.Row():
        with gr.Column(scale=3):
            c["query"] = gr.Textbox(value="", label="Query", lines=2, placeholder="What is shown?")
            c["reference"] = gr.Textbox(value="", label="Reference answer (optional)", lines=1,
                                        placeholder="A known good answer the judge may compare against")
        with gr.Column(scale=2):
            c["media"] = gr.File(label="Media: images, videos or audio (optional)", file_types=MEDIA_TYPES,
                                 file_count="multiple", type="filepath", elem_id="media")
            c["media_limits"] = gr.Markdown(media_limits_markdown(judge0), elem_id="media-limits",
                                            label="Media limits")
            c["media_names"] = gr.Markdown(elem_id="media-names", label="Uploaded, in order")
            c["gallery_preview"] = gr.Gallery(label="Preview", visible=False, interactive=False, height=200,
                                              elem_id="media-gallery")
            c["audio_preview"] = gr.Audio(label="Preview", visible=False, interactive=False)
    with gr.Row(equal_height=True):
        c["response_a"] = gr.Textbox(label="Response A", lines=6, elem_id="response-a")
        c["response_b"] = gr.Textbox(label="Response B", lines=6, elem_id="response-b")
    with gr.Row():
        c["judge_btn"] = gr.Button("Judge", variant="primary", elem_id="judge-button")
        c["stop_btn"] = gr.Button("Stop", variant="stop")
        c["swap_btn"] = gr.Button("Swap A ↔ B", elem_id="swap-button")
        c["clear_btn"] = gr.Button("Clear", elem_id="clear-button")
    gr.Examples(examples=_examples(), inputs=[c["query"], c["media"], c["response_a"], c["response_b"]],
                label="Examples (text, image, video, audio, a video with sound): click one to fill the inputs")
    return c


def _judge_options(judge0: Judge) -> dict:
    """The Judge tab's Options: prompt format, sampling, media bounds, video sound, rubric and template."""
    c = {}
    with gr.Accordion("Options", open=False):
        with gr.Row():
            c["prompt_format"] = gr.Dropdown(list(PROMPT_FORMATS), value=judge0.format.name
                                             if judge0.format.name in PROMPT_FORMATS else "omni-rrm",
                                             label="Prompt format")
            c["swap_check"] = gr.Checkbox(value=True, label="Swap check (judge both orders)")
            c["max_new_tokens"] = gr.Slider(8, 4096, value=1024, step=8, label="Max new tokens")
        with gr.Row():
            c["temperature"] = gr.Slider(0.0, 1.5, value=judge0.generation.temperature, step=0.05,
                                         label="Temperature (0 = greedy)")
            c["top_p"] = gr.Slider(0.05, 1.0, value=judge0.generation.top_p, step=0.05, label="Top-p")
            c["seed"] = gr.Number(value=judge0.generation.seed, precision=0, label="Seed (for sampling)")
        with gr.Row():
            c["video_fps"] = gr.Slider(0.25, 8, value=judge0.limits.video_fps, step=0.25, label="Video fps")
            c["video_max_frames"] = gr.Slider(1, 64, value=judge0.limits.video_max_frames, step=1,
                                              label="Video max frames")
            c["audio_max_seconds"] = gr.Slider(1, 30, value=judge0.limits.audio_max_seconds, step=1,
                                               label="Audio max seconds")
            c["video_audio"] = gr.Radio(list(VIDEO_AUDIO_MODES), value="auto", label="Video sound (auto: as "
                                        "the loaded judge hears it)", elem_id="video-audio")
        c["rubric_table"] = gr.Dataframe(value=rubric_rows(judge0.rubric), headers=["key", "title", "description"],
                                         label="Rubric: add, remove or rename criteria", interactive=True,
                                         row_count=(len(judge0.rubric.criteria), "dynamic"),
                                         column_count=(3, "fixed"), wrap=True)
        with gr.Row():
            c["add_criterion"] = gr.Button("Add a criterion", size="sm")
            c["reset_rubric"] = gr.Button("Reset rubric", size="sm")
        c["prompt_template"] = gr.Textbox(
            value="", lines=4, label="Prompt template (optional): replaces the user text of the format above",
            placeholder="Uses ${question}, ${answer_a} and ${answer_b}; may use ${reference}, ${media}, "
                        "${media_file}, ${criteria}, ${facets}")
    return c


def _judge_results(judge0: Judge) -> dict:
    """The Judge tab's verdict card, votes, panels, both orders, raw output, JSON and history."""
    c = {"verdict": gr.HTML(render_verdict(None), elem_id="verdict", label="Verdict")}
    with gr.Row():
        c["vote_btns"] = [gr.Button(VOTE_NAMES[v], size="sm", interactive=False, elem_id=f"vote-{v}")
                          for v in VOTES]
        c["undo_btn"] = gr.Button("Undo vote", size="sm", interactive=False, elem_id="vote-undo")
    c["vote_status"] = gr.Markdown(elem_id="vote-status", label="Your vote")
    c["criteria"] = gr.HTML(render_criteria(judge0.rubric, {}), elem_id="criteria", label="Criteria")
    c["chart"] = gr.HTML(render_chart(judge0.rubric, {}), label="A vs B per criterion")
    c["timing"] = gr.Markdown(label="Timing")
    with gr.Accordion("Both orders, side by side", open=False):
        c["orders"] = gr.HTML(elem_id="orders", label="Both orders")
    with gr.Accordion("Raw output", open=False) as c["raw_fold"]:
        c["raw"] = gr.Textbox(lines=10, show_label=False, label="Raw output", elem_id="raw")
    with gr.Accordion("Judgment JSON", open=False):
        c["judgment_json"] = gr.JSON(show_label=False, label="Judgment")
    with gr.Accordion("History: the judgments made on this page", open=False):
        with gr.Row():
            c["history"] = gr.Dropdown([], label="Judgment", scale=3, elem_id="history")
            c["reopen"] = gr.Button("Open", size="sm", scale=1)
            c["export"] = gr.Button("Export all as JSON", size="sm", scale=1)
        c["history_file"] = gr.File(label="History (JSON)", interactive=False, elem_id="history-file")
    return c


def judge_tab(h: Handlers) -> dict:
    """One pair, streamed: its inputs, options and results, wired to the handlers. Returns the options (the
    Model tab updates them)."""
    judge0 = h.slot.judge
    i, o = _judge_inputs(judge0), _judge_options(judge0)
    r = _judge_results(judge0)
    inputs = [i["query"], i["response_a"], i["response_b"], i["media"], i["reference"], o["prompt_format"],
              o["swap_check"], o["temperature"], o["top_p"], o["seed"], o["max_new_tokens"], o["video_fps"],
              o["video_max_frames"], o["audio_max_seconds"], o["rubric_table"], o["prompt_template"],
              o["video_audio"]]
    shown = [r[k] for k in ("verdict", "criteria", "chart", "timing", "orders", "raw", "judgment_json")]
    votes_shown = [*r["vote_btns"], r["undo_btn"], r["vote_status"]]
    # Each new judgment starts from a clean card, panels and chart: an input error leaves nothing stale.
    i["judge_btn"].click(h.cleared, o["rubric_table"], shown + votes_shown, queue=False, api_name=False).then(
        h.judge_pair, inputs, shown, api_name="judge", concurrency_id="model").then(
        h.after_judgment, None, [*votes_shown, r["history"]], queue=False, api_name=False)
    _wire_votes(h, r, votes_shown)
    # Stop only sets the request's cancel event, outside the queue: generation ends at the next token and the
    # handler itself sends the "Stopped" card (cancelling Gradio's event instead left "Judging…" for good).
    i["stop_btn"].click(h.stop, None, None, queue=False, api_name=False)
    r["raw_fold"].expand(h.raw_opened, None, None, queue=False, api_name=False)
    r["raw_fold"].collapse(h.raw_closed, None, None, queue=False, api_name=False)
    pair = [i["response_a"], i["response_b"]]
    i["swap_btn"].click(lambda a, b: (b, a), pair, pair, queue=False, api_name=False)
    i["clear_btn"].click(h.cleared, o["rubric_table"], shown + votes_shown, queue=False, api_name=False).then(
        lambda: ("", "", "", None, ""), None, [i["query"], i["response_a"], i["response_b"], i["media"],
                                               i["reference"]], queue=False, api_name=False)
    r["reopen"].click(h.reopened, r["history"], shown + votes_shown, queue=False, api_name=False)
    r["export"].click(h.exported, None, r["history_file"], queue=False, api_name=False)
    # Queued (a warning reaches the page only through the queue), beside the model's queue, not behind it.
    i["media"].upload(h.checked_upload, i["media"], i["media"], api_name=False, concurrency_limit=4)
    i["media"].change(h.show_media, i["media"], [i["gallery_preview"], i["audio_preview"], i["media_names"]],
                      api_name=False, queue=False)
    o["add_criterion"].click(lambda rows: [*table_rows(rows), ["", "", ""]], o["rubric_table"], o["rubric_table"],
                             api_name=False, queue=False)
    o["reset_rubric"].click(lambda: rubric_rows(h.slot.judge.rubric), None, o["rubric_table"], api_name=False,
                            queue=False)
    return {**o, "media_limits": i["media_limits"]}


def _wire_votes(h: Handlers, r: dict, votes_shown: list) -> None:
    for v, button in zip(VOTES, r["vote_btns"]):
        button.click(h.voter(v), None, votes_shown, queue=False, api_name=False)
    r["undo_btn"].click(h.undo_vote, None, votes_shown, queue=False, api_name=False)
    # The API's vote (the page's buttons call cast_vote): a hidden choice, so that its input and output are named.
    vote_pick = gr.Radio(list(VOTES), label="Vote", visible=False)
    vote_pick.change(h.vote_api, vote_pick, r["vote_status"], api_name="vote", queue=False)


def batch_tab(h: Handlers) -> None:
    """A file of pairs (and a zip of their media), judged with progress, into a table and files."""
    gr.Markdown("A JSONL file of pairs, as for `python -m rrm judge --pairs`; media paths are relative "
                "to the root of the zip.")
    with gr.Row():
        pairs_file = gr.File(label="Pairs (.jsonl)", file_types=[".jsonl"], type="filepath", elem_id="batch-pairs")
        media_zip = gr.File(label="Media (.zip, optional)", file_types=[".zip"], type="filepath", elem_id="batch-zip")
    with gr.Row():
        batch_swap = gr.Checkbox(value=True, label="Swap check")
        batch_size = gr.Slider(1, 32, value=4, step=1, label="Batch size")
        batch_btn = gr.Button("Judge all", variant="primary")
    batch_summary = gr.Markdown(label="Summary")
    # Widths for overview()'s columns: left to itself, the table squeezed "verdict" into a letter per line.
    batch_table = gr.Dataframe(label="Results", wrap=True, interactive=False, column_widths=[
        "9%", "17%", "19%", "19%", "8%", "5%", "5%", "8%", "10%"])
    batch_files = gr.File(label="Download", file_count="multiple")
    batch_json = gr.JSON(label="Summary (JSON)", visible=False)
    batch_btn.click(h.judge_file, [pairs_file, media_zip, batch_swap, batch_size],
                    [batch_summary, batch_table, batch_files, batch_json], api_name="judge_batch",
                    concurrency_id="model")


def best_of_n_tab(h: Handlers) -> None:
    """2 to 8 responses ranked by knockout, each match explained."""
    with gr.Row():
        bon_query = gr.Textbox(value="", label="Query", lines=2, scale=3)
        bon_media = gr.File(label="Media (optional, several kept in order)", file_types=MEDIA_TYPES,
                            file_count="multiple", type="filepath", scale=2)
    # The first two have no value, so the API lists them as required; the other six as optional.
    bon_responses = [gr.Textbox(value=None if i < 2 else "", label=f"Response {i + 1}", lines=2,
                                visible=i < 2, elem_id=f"bon-response-{i + 1}") for i in range(MAX_RESPONSES)]
    bon_count = gr.State(2)
    with gr.Row():
        bon_add = gr.Button(f"Add a response (up to {MAX_RESPONSES})", size="sm")
        bon_swap = gr.Checkbox(value=True, label="Swap check")
        bon_btn = gr.Button("Rank", variant="primary")
    bon_ranking = gr.HTML(label="Ranking", elem_id="bon-ranking")
    bon_matches = gr.Dataframe(headers=["match", "response A", "response B", "verdict", "score A", "score B",
                                        "orders agree"], label="Matches", interactive=False)
    bon_rationales = gr.HTML(label="Rationales", elem_id="bon-rationales")
    bon_json = gr.JSON(visible=False, label="Result")
    bon_media.upload(h.checked_upload, bon_media, bon_media, api_name=False, concurrency_limit=4)
    bon_add.click(more_responses, bon_count, [bon_count, *bon_responses, bon_add], api_name=False, queue=False)
    bon_btn.click(h.best_of, [bon_query, *bon_responses, bon_media, bon_swap],
                  [bon_ranking, bon_matches, bon_rationales, bon_json], api_name="best_of_n",
                  concurrency_id="model")


def votes_tab(h: Handlers, tab: gr.Tab) -> None:
    """How far the judge agrees with the votes cast, refreshed when the tab opens."""
    votes_summary = gr.Markdown(label="Votes")
    votes_chart = gr.HTML(label="The judge's agreement with you, per modality")
    with gr.Row():
        votes_by_modality = gr.Dataframe(label="Agreement per modality", interactive=False)
        votes_by_swap = gr.Dataframe(label="Agreement against the swap check", interactive=False)
    votes_confusion = gr.Dataframe(label="Your votes (rows) against the judge's verdicts (columns)",
                                   interactive=False)
    with gr.Row():
        votes_refresh = gr.Button("Refresh", size="sm")
        votes_file = gr.File(label="Download the votes (train/ pairs format)", interactive=False)
    votes_out = [votes_summary, votes_by_modality, votes_by_swap, votes_confusion, votes_chart, votes_file]
    tab.select(h.votes_view, None, votes_out, api_name=False, queue=False)
    votes_refresh.click(h.votes_view, None, votes_out, api_name="votes", queue=False)


def model_tab(h: Handlers, demo: gr.Blocks, judge_options: list) -> None:
    """The loaded judge, and another checkpoint or adapter loaded in its place (updating `judge_options`: the
    Judge tab's rubric, prompt format and media limits)."""
    info = gr.Markdown(h.model_info(), label="Model")
    with gr.Row():
        choice = gr.Dropdown(list(h.slot.checkpoints()), label="Checkpoint or adapter under the models folders",
                             allow_custom_value=True)  # the list changes; load_other checks it
        quantization = gr.Dropdown(list(QUANTIZATIONS), value="auto", label="Quantization")
    with gr.Row():
        rescan = gr.Button("Rescan", size="sm")
        load_btn = gr.Button("Load", variant="primary")
    rescan.click(lambda: gr.update(choices=list(h.slot.checkpoints())), None, choice, api_name=False, queue=False)
    load_btn.click(h.load_other, [choice, quantization], [info, *judge_options], api_name="load_model",
                   concurrency_id="model")
    demo.load(h.model_info, None, info, api_name=False, queue=False)


def _examples() -> list[list]:
    """The bundled examples (assets/pairs.jsonl, the pairs the demo judge learns) as the inputs they fill."""
    return [[s.query, [m.path for m in s.media] or None, s.response_a, s.response_b] for s, _ in examples()]


def _batch_pairs(pairs_file: Path, media_zip: Path | None, work: Path,
                 max_pairs: int) -> tuple[list[Sample], list[str], list[str]]:
    """The pairs of an uploaded file that can be judged, their media unpacked from the zip into `work` (only the
    files they name); the lines that could not be read; and the pairs set aside for media that are not there."""
    media_root = work / "media"
    media_root.mkdir()
    samples, problems = read_pairs(pairs_file, media_root, confine=True)
    problems = [p.replace(str(pairs_file), pairs_file.name) for p in problems]
    if not samples:
        raise gr.Error("No readable pairs in the file" + (f": {problems[0]}" if problems else "."))
    if len(samples) > max_pairs:
        raise gr.Error(f"The file holds {len(samples):,} pairs; one request may judge {max_pairs:,} "
                       f"(--max-batch-pairs). Split the file.")
    named = {Path(m.path).relative_to(media_root).as_posix() for s in samples for m in s.media}
    if media_zip is not None:
        try:
            extract_named(media_zip, media_root, named)
        except RRMError as e:
            raise gr.Error(str(e)) from None
    ready, missing = [], []
    for sample in samples:
        absent = next((m for m in sample.media if not Path(m.path).is_file()), None)
        if absent is None:
            ready.append(sample)
        else:  # named as the pairs file names it: the server's folders stay out of it
            name = Path(absent.path).relative_to(media_root).as_posix()
            missing.append(f"pair {sample.id} names {absent.kind} {name}: upload a zip holding it")
    if not ready:
        raise gr.Error(f"No pair has its media: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                               if len(missing) > 1 else ""))
    return ready, problems, missing


def _summary_markdown(s: dict, problems: list[str], missing: list[str]) -> str:
    def pct(x):
        return percent(x, 1)

    lines = ["| pairs judged | A wins | B wins | ties | swap agreement | no verdict | media missing "
             "| unreadable lines |",
             "|---|---|---|---|---|---|---|---|",
             f"| {s['pairs']} | {pct(s['win_rate_a'])} | {pct(s['win_rate_b'])} | {pct(s['tie_rate'])} | "
             f"{pct(s['swap_agreement'])} | {s['parse_failures']} | {len(missing)} | {len(problems)} |"]
    for title, found in (("Not judged, media missing:", missing), ("Skipped lines:", problems)):
        if found:
            lines += ["", title] + [f"- {_e(p)}" for p in found[:20]]
    return "\n".join(lines)


def _votes_markdown(stats: dict, book: VoteBook) -> str:
    o = stats["overall"]
    if not o.votes:
        return "No votes yet: judge a pair on the Judge tab, then say which response you prefer."
    unjudged = f" ({o.votes - o.judged} judgments without a verdict are left out)" if o.judged < o.votes else ""
    if stats["not_votes"]:
        unjudged += f"; {stats['not_votes']} lines of the file are not votes and are left out"
    return (f"**{o.votes} vote{'s' if o.votes != 1 else ''}.** The judge agrees with you on "
            f"**{percent(o.rate, 1)}** of the {o.judged} it gave a verdict on{unjudged}. Train your judge on them: "
            f"`python -m train.sft --data {book.path}` (the pairs where it agreed, with its rationale as the "
            "target; the others are RL data).")


def _agreement_frame(groups: dict, name: str) -> pd.DataFrame:
    return pd.DataFrame([[key, g.votes, g.judged, percent(g.rate, 1)] for key, g in groups.items()],
                        columns=[name, "votes", "with a verdict", "judge agrees"])


def _confusion_frame(confusion) -> pd.DataFrame:
    columns = [*VERDICTS, NO_VERDICT]
    return pd.DataFrame([[VOTE_NAMES[v], *(confusion[v, c] for c in columns)] for v in VOTES],
                        columns=["your vote / the judge's verdict", "A", "B", "tie", "no verdict"])


def render_agreement_chart(by_modality: dict) -> str:
    rows = [f'<div class="row"><span>{_e(key)}: {percent(g.rate)} of {g.judged}</span><div><div class="bar a" '
            f'style="width:{100 * g.rate:.0f}%"></div></div></div>'
            for key, g in by_modality.items() if g.rate is not None]
    return (f'<div class="chart"><strong>The judge agrees with you, per modality</strong>'
            f'{"".join(rows) or "<p><em>No votes on a verdict yet.</em></p>"}</div>')


def _model_markdown(judge: Judge) -> str:
    import torch

    loaded = judge.loaded
    rows = [f"| {k} | `{_e(str(v if v is not None else 'none'))}` |" for k, v in judge.backend.info().items()
            if k != "decoding"]
    rows.append(f"| decoding | {judge.decoding}: {_e(judge.decoding_note)} |")
    if loaded is not None:
        if torch.cuda.is_available():
            memory = (f"{torch.cuda.memory_allocated() / 1024**3:.2f} GiB allocated, "
                      f"{torch.cuda.max_memory_allocated() / 1024**3:.2f} GiB peak")
        else:
            import psutil

            memory = f"{psutil.Process().memory_info().rss / 1024**3:.2f} GiB resident (CPU)"
        rows += [f"| weights | {loaded.model.get_memory_footprint() / 1024**2:,.1f} MiB |", f"| memory | {memory} |"]
    return "\n".join(["| | |", "|---|---|", *rows, f"| prompt format | {judge.format.name} |",
                      f"| rubric | {', '.join(judge.rubric.keys)} |"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Omni-RRM judging app")
    add_judge_arguments(parser)
    add_listen_arguments(parser, port=7860)
    parser.add_argument("--max-upload-mb", type=int, default=200)
    parser.add_argument("--max-batch-pairs", type=int, default=MAX_BATCH_PAIRS, help="pairs per Batch request")
    parser.add_argument("--max-request-seconds", type=float, default=MAX_REQUEST_SECONDS,
                        help="how long one request may hold the queue before it is stopped")
    parser.add_argument("--models-root", action="append", metavar="DIR",
                        help="a folder whose checkpoints and adapters the Model tab may load; repeat for more "
                             "(default: runs/ and the --model folder itself)")
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="where votes are kept: DIR/votes.jsonl, and their media under DIR/media")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    return run_command(_launch, parser.parse_args(argv))


def _launch(args) -> int:
    judge = build_judge(args)
    local = Path(args.model).expanduser()
    roots = args.models_root or [Path("runs"), *([local] if local.is_dir() and judge.loaded else [])]
    demo = build_demo(JudgeSlot(judge, roots, args.decoding), max_text_chars=args.max_text_chars,
                      max_batch_pairs=args.max_batch_pairs, max_request_seconds=args.max_request_seconds,
                      data_dir=args.data_dir)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=f"{args.max_upload_mb}mb", theme=THEME, css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
