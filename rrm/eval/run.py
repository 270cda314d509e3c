"""Running a benchmark under a protocol, into one output folder.

- `two-order` (the default): every item judged in both orders, in one batched call each, greedy.
- `release`: the release's own per-benchmark protocol (rrm.eval.release): one order, its sampling, its verdict
  reading, its rules for unreadable outputs and ties.

Outputs in OUT, per protocol (the release's carry `.release` in their names): items.jsonl (one record per
item, raw outputs and parsed judgments), summary.json, config.json; and summary.md, which puts both
protocols side by side with the paper's figures. A rerun skips the ids already judged; shards of one sweep
are merged by `merge`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import RRMError
from ..pairs import done_ids
from ..pairs import read_records as read_record_file
from ..schema import ORDER_BA, Judgment, flip_verdict
from . import release
from .loaders import EvalItem, load_benchmark
from .metrics import markdown_table, pct, summarize

ITEMS, SUMMARY, TABLE, CONFIG = "items.jsonl", "summary.json", "summary.md", "config.json"
TWO_ORDER, RELEASE = "two-order", "release"
PROTOCOLS = (TWO_ORDER, RELEASE)


def artifact(name: str, protocol: str = TWO_ORDER) -> str:
    """The file of a protocol: items.jsonl for two-order, items.release.jsonl for the release's, and so on."""
    if protocol not in PROTOCOLS:
        raise RRMError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    stem, ext = name.rsplit(".", 1)
    return name if protocol == TWO_ORDER else f"{stem}.{protocol}.{ext}"


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RRMError(f"--shard takes i/n (such as 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise RRMError(f"--shard {text}: i must be at least 0 and below n")
    return i, n


def select(items: Sequence[EvalItem], limit: int | None, shard: tuple[int, int]) -> list[EvalItem]:
    """The first `limit` items, then every n-th from the i-th: shards of one sweep never overlap."""
    items = list(items[:limit] if limit else items)
    i, n = shard
    return items[i::n]


def record(item: EvalItem, judgment: Judgment, seconds: float) -> dict:
    """One line of items.jsonl: both orders' verdicts in the item's own A/B frame, and the judgment."""
    swap = judgment.swap
    other = swap.other if swap else None
    tokens = [j.timing.generated_tokens for j in (judgment, other) if j is not None and j.timing is not None]
    return {
        "id": item.sample.id,
        "subset": item.subset,
        "label": item.label,
        "verdict_ab": swap.verdict_ab if swap else judgment.verdict,
        "verdict_ba": swap.verdict_ba if swap else None,
        "verdict": judgment.verdict,
        "tokens": tokens,
        "seconds": seconds,
        "failed": not judgment.raw,  # never generated: bad media, or an input the processor refused
        "judgment": judgment.to_dict(),
    }


def release_record(item: EvalItem, index: int, order: str, judgment: Judgment, rules: release.Rules,
                   seconds: float) -> dict:
    """One line of items.release.jsonl: the order shown, the verdict the release's reader finds in the output
    (mapped to the item's own A/B frame), and our own reading of the judgment (in that frame too)."""
    seen = rules.read(judgment.raw) if judgment.raw else None
    back = ORDER_BA == order
    ours = judgment.swapped() if back else judgment
    return {
        "id": item.sample.id, "index": index, "subset": item.subset,
        "group": rules.group(item.subset, item.sample.id), "label": item.label, "order": order,
        "verdict": flip_verdict(seen) if back else seen,
        "tokens": [judgment.timing.generated_tokens] if judgment.timing else [],
        "seconds": seconds, "failed": not judgment.raw,
        "judgment": {**ours.to_dict(), "order": order},
    }


def read_records(out: Path, protocol: str = TWO_ORDER) -> list[dict]:
    return read_record_file(Path(out) / artifact(ITEMS, protocol))


def _side_by_side(benchmark: str, two: dict | None, rel: dict | None) -> str:
    """Both protocols' accuracy per group, beside the paper's figures for the released judges."""
    rows: dict[str, list] = {}
    if two:
        if len(two["subsets"]) > 1:
            for name, m in two["subsets"].items():
                rows.setdefault(name, [None, None])[0] = m["accuracy"]
            rows.setdefault("macro", [None, None])[0] = two["macro"]["accuracy"]
        rows.setdefault("all", [None, None])[0] = two["micro"]["accuracy"]
        if "micro_without_ties" in two:
            rows.setdefault("without ties", [None, None])[0] = two["micro_without_ties"]["accuracy"]
    if rel:
        if len(rel["groups"]) > 1:
            for name, m in rel["groups"].items():
                rows.setdefault(name, [None, None])[1] = m["accuracy"]
            rows.setdefault("macro", [None, None])[1] = rel.get("macro")
        rows.setdefault("all", [None, None])[1] = rel["overall"]["accuracy"]
        if "without_ties" in rel:
            rows.setdefault("without ties", [None, None])[1] = rel["without_ties"]["accuracy"]
    paper = release.PAPER.get(benchmark, {})
    head = ("| group | two-order (this project) | release protocol | "
            + " | ".join(f"paper: {m}" for m in release.PAPER_MODELS) + " |")
    lines = [f"### {benchmark}", "", head, "|---|---|---|" + "---|" * len(release.PAPER_MODELS)]
    for name, (a, b) in rows.items():
        reference = [f"{paper[m]:.1f}" if name == "all" and m in paper else "–" for m in release.PAPER_MODELS]
        lines.append(f"| {name} | {pct(a)} | {pct(b)} | " + " | ".join(reference) + " |")
    note = ("The paper's figures are for the released checkpoints under the release's protocol (its TA2T figure "
            "includes the tie items). Two-order: both orders, greedy, every tie and unreadable output wrong.")
    return "\n".join(lines) + f"\n\n{note}\n"


def _release_table(summary: dict) -> str:
    groups = list(summary["groups"].items()) if len(summary["groups"]) > 1 else []
    rows = [*groups, ("**all**", summary["overall"])]
    if "without_ties" in summary:
        rows.append(("**without ties**", summary["without_ties"]))
    lines = ["#### release protocol", "", "| group | items | counted | accuracy | left out | ties | coin flips |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['items']} | {m['counted']} | {pct(m['accuracy'])} | {m['left_out']} | {m['ties']} | "
              f"{m['coin_flips']} |" for name, m in rows]
    if "macro" in summary:
        lines.append(f"| **macro** | | | {pct(summary['macro'])} | | | |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, benchmark: str, wanted: set[str] | None = None) -> dict:
    """Summaries of every protocol run into OUT (of the `wanted` items only, when given), and summary.md with
    both protocols side by side."""
    summaries = {}
    for protocol in PROTOCOLS:
        records = [r for r in read_records(out, protocol) if wanted is None or r["id"] in wanted]
        if records:
            summaries[protocol] = (summarize(records) if protocol == TWO_ORDER
                                   else release.summarize_release(benchmark, records))
    for protocol, summary in summaries.items():
        (out / artifact(SUMMARY, protocol)).write_text(json.dumps(summary, indent=2))
    parts = [_side_by_side(benchmark, summaries.get(TWO_ORDER), summaries.get(RELEASE))]
    if TWO_ORDER in summaries:
        parts.append(markdown_table(summaries[TWO_ORDER], "two-order protocol").replace("### ", "#### ", 1))
    if RELEASE in summaries:
        parts.append(_release_table(summaries[RELEASE]))
    (out / TABLE).write_text("\n".join(parts))
    return summaries


def versions() -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    return {"python": platform.python_version(), "omni-rrm": version("omni-rrm"), "torch": torch.__version__,
            "transformers": transformers.__version__}


def judge_config(judge) -> dict:
    """What a number depends on: backend, model, adapter, quantization, prompt, media bounds, decoding, seed,
    versions."""
    return {
        **judge.backend.info(), "prompt_format": judge.format.name, "rubric": judge.rubric.keys,
        "media_limits": dataclasses.asdict(judge.limits), "generation": dataclasses.asdict(judge.generation),
        "seed": judge.generation.seed, "versions": versions(),
    }


def run(judge, benchmark: str, data: str, out: str | Path, media_root: str | None = None,
        limit: int | None = None, shard: tuple[int, int] = (0, 1), batch_size: int = 4,
        progress: bool = True, protocol: str = TWO_ORDER, max_new_tokens: int | None = None) -> dict:
    """Judge a benchmark (or one shard of it) into OUT under a protocol, resuming; return its summary.

    `max_new_tokens` caps the release protocol's token budget (default: the release's own for the benchmark).
    """
    from tqdm.auto import tqdm

    rules = release.rules_for(benchmark) if protocol == RELEASE else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    every = load_benchmark(benchmark, data, media_root)
    index = {item.sample.id: n for n, item in enumerate(every)}
    items = select(every, limit, shard)
    config = {"benchmark": benchmark, "protocol": protocol, "data": str(data), "media_root": media_root,
              "limit": limit, "shard": f"{shard[0]}/{shard[1]}", "items": len(items), **judge_config(judge)}
    settings = _release_settings(judge, rules, max_new_tokens) if rules else None  # None: the judge's own
    if settings:
        config["generation"] = dataclasses.asdict(settings)
    (out / artifact(CONFIG, protocol)).write_text(json.dumps(config, indent=2, default=str))
    path = out / artifact(ITEMS, protocol)
    done = done_ids(path, key="id")
    # A fixed grid of chunks: a resumed run judges the same pairs together, so sampled outputs come out the same.
    # Whole chunks already done are left out; the rest, all full but the last, fall on the same grid again.
    todo = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        if not all(i.sample.id in done for i in chunk):
            todo += chunk
    orders = [release.shown_order(i.sample.id, judge.generation.seed, rules) if rules else None for i in todo]
    shown = [i.sample.swapped() if o == ORDER_BA else i.sample for i, o in zip(todo, orders)]
    with open(path, "a", encoding="utf-8") as f, \
            tqdm(total=len(items), initial=len(done & set(index)), desc=benchmark, unit="item",
                 disable=not progress) as bar:
        started, at = time.perf_counter(), 0
        # Two-order: both orders of every item in one call; release: the one order it was shown in.
        for chunk, judgments in judge.judge_chunks(shown, batch_size, swap_check=not rules, settings=settings):
            share = (time.perf_counter() - started) / ((1 if rules else 2) * len(chunk))
            for item, order, judgment in zip(todo[at:at + len(chunk)], orders[at:at + len(chunk)], judgments):
                if item.sample.id not in done:
                    line = (release_record(item, index[item.sample.id], order, judgment, rules, share) if rules
                            else record(item, judgment, share))
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    bar.update(1)
            f.flush()
            os.fsync(f.fileno())
            started, at = time.perf_counter(), at + len(chunk)
    return write_summary(out, benchmark, {i.sample.id for i in items})[protocol]


def _release_settings(judge, rules: release.Rules, max_new_tokens: int | None = None):
    from ..judge import GenerationSettings

    return GenerationSettings(max_new_tokens=max_new_tokens or rules.max_new_tokens, temperature=rules.temperature,
                              top_p=rules.top_p, seed=judge.generation.seed)


def merge(parts: Sequence[str | Path], out: str | Path) -> dict:
    """Merge shard outputs into OUT (one record per id, per protocol) and summarize the whole."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [Path(p) for p in parts]
    found = [protocol for protocol in PROTOCOLS if any((p / artifact(ITEMS, protocol)).exists() for p in parts)]
    if not found:
        raise RRMError(f"{parts[0]} holds no {ITEMS}: not an evaluation output")
    benchmark = "merged"
    for protocol in found:
        seen: dict[str, dict] = {}
        configs = []
        for part in parts:
            if (part / artifact(CONFIG, protocol)).exists():
                configs.append(json.loads((part / artifact(CONFIG, protocol)).read_text()))
            for r in read_records(part, protocol):
                seen.setdefault(r["id"], r)
        with open(out / artifact(ITEMS, protocol), "w", encoding="utf-8") as f:
            for r in seen.values():
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        config = dict(configs[0]) if configs else {}
        config.update(shard="merged", parts=[str(p) for p in parts], items=len(seen))
        (out / artifact(CONFIG, protocol)).write_text(json.dumps(config, indent=2, default=str))
        benchmark = str(config.get("benchmark", benchmark))
    return write_summary(out, benchmark)[found[0]]


def compare(outs: Sequence[str | Path]) -> str:
    """The summaries of several outputs side by side, as a Markdown table."""
    columns, rows = [], {}
    for o in outs:
        o = Path(o)
        if not (o / SUMMARY).exists():
            raise RRMError(f"{o} holds no {SUMMARY}: run the evaluation first")
        summary = json.loads((o / SUMMARY).read_text())
        config = json.loads((o / CONFIG).read_text()) if (o / CONFIG).exists() else {}
        columns.append(f"{o.name} ({config.get('prompt_format', '?')})")
        bench = config.get("benchmark", o.name)
        groups = {**({f"{bench} / {k}": v for k, v in summary["subsets"].items()}
                     if len(summary["subsets"]) > 1 else {}),
                  **({f"{bench} macro": summary["macro"]} if "macro" in summary else {}),
                  f"{bench}": summary["micro"]}
        for name, m in groups.items():
            rows.setdefault(name, {})[len(columns) - 1] = m
    head = "| | " + " | ".join(columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for name, by_col in rows.items():
        cells = []
        for c in range(len(columns)):
            m = by_col.get(c)
            cells.append("–" if m is None else f"{100 * m['accuracy']:.1f} (swap {100 * m['swap_consistency']:.0f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
