"""The evaluation protocol: every item judged in both orders, one batched call each.

Outputs in OUT: items.jsonl (one record per item, raw outputs and parsed
judgments of both orders), summary.json, summary.md, config.json. A rerun skips
the ids already in items.jsonl; shards of one sweep are merged by `merge`.
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
from ..schema import Judgment
from .loaders import EvalItem, load_benchmark
from .metrics import markdown_table, summarize

ITEMS, SUMMARY, TABLE, CONFIG = "items.jsonl", "summary.json", "summary.md", "config.json"


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


def read_records(out: Path) -> list[dict]:
    path = out / ITEMS
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_summary(out: Path, records: Sequence[dict], title: str) -> dict:
    summary = summarize(records)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    (out / TABLE).write_text(markdown_table(summary, title))
    return summary


def versions() -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    return {"python": platform.python_version(), "omni-rrm": version("omni-rrm"), "torch": torch.__version__,
            "transformers": transformers.__version__}


def judge_config(judge) -> dict:
    """What a number depends on: model, adapter, quantization, prompt, media bounds, decoding, seed, versions."""
    loaded = judge.loaded
    return {
        "model": loaded.name, "adapter": loaded.adapter, "quantization": loaded.quantization,
        "device": loaded.device, "prompt_format": judge.format.name, "rubric": judge.rubric.keys,
        "media_limits": dataclasses.asdict(judge.limits), "generation": dataclasses.asdict(judge.generation),
        "seed": judge.generation.seed, "versions": versions(),
    }


def run(judge, benchmark: str, data: str, out: str | Path, media_root: str | None = None,
        limit: int | None = None, shard: tuple[int, int] = (0, 1), batch_size: int = 4,
        progress: bool = True) -> dict:
    """Judge a benchmark (or one shard of it) into OUT, resuming; return the summary."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = select(load_benchmark(benchmark, data, media_root), limit, shard)
    config = {"benchmark": benchmark, "data": str(data), "media_root": media_root, "limit": limit,
              "shard": f"{shard[0]}/{shard[1]}", "items": len(items), **judge_config(judge)}
    (out / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    done = done_ids(out / ITEMS, key="id")
    todo = [i for i in items if i.sample.id not in done]
    with open(out / ITEMS, "a", encoding="utf-8") as f, \
            tqdm(total=len(items), initial=len(items) - len(todo), desc=benchmark, unit="item",
                 disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            started = time.perf_counter()
            judgments = judge.judge_batch([i.sample for i in chunk], batch_size=batch_size, swap_check=True,
                                          progress=False)
            share = (time.perf_counter() - started) / (2 * len(chunk))  # both orders of every item, one call
            for item, judgment in zip(chunk, judgments):
                f.write(json.dumps(record(item, judgment, share), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
    wanted = {i.sample.id for i in items}
    return write_summary(out, [r for r in read_records(out) if r["id"] in wanted], benchmark)


def merge(parts: Sequence[str | Path], out: str | Path) -> dict:
    """Merge shard outputs into OUT (one record per id) and summarize the whole."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, dict] = {}
    configs = []
    for part in parts:
        part = Path(part)
        if not (part / ITEMS).exists():
            raise RRMError(f"{part} holds no {ITEMS}: not an evaluation output")
        configs.append(json.loads((part / CONFIG).read_text()) if (part / CONFIG).exists() else {})
        for r in read_records(part):
            seen.setdefault(r["id"], r)
    with open(out / ITEMS, "w", encoding="utf-8") as f:
        for r in seen.values():
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    config = dict(configs[0]) if configs else {}
    config.update(shard="merged", parts=[str(p) for p in parts], items=len(seen))
    (out / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    return write_summary(out, list(seen.values()), str(config.get("benchmark", "merged")))


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
