"""Command line of the evaluation.

    python -m rrm.eval run --benchmark NAME --data PATH [--media-root DIR] --model M [--limit N] --out DIR
                           [--shard i/n] [--protocol two-order|release]
    python -m rrm.eval merge OUT1 OUT2 ... --out DIR
    python -m rrm.eval compare OUT1 OUT2 ...
    python -m rrm.eval bon --data FILE [--media-root DIR] --model M --out DIR [--strategy knockout|round-robin|both]

Exit status: 0 done; 2 bad input or configuration, with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..cli import add_judge_arguments, build_judge, run_command
from ..errors import RRMError
from ..pairs import done_ids
from .bon import STRATEGIES, bon_markdown, load_bon, select_item, summarize_bon
from .loaders import LOADERS
from .release import rules_for
from .run import (CONFIG, ITEMS, PROTOCOLS, RELEASE, SUMMARY, TABLE, TWO_ORDER, compare, judge_config, merge,
                  parse_shard, read_records, run)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rrm.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="judge a benchmark under a protocol and summarize")
    r.add_argument("--benchmark", required=True, help=f"one of: {', '.join(LOADERS)}")
    r.add_argument("--data", required=True, help="the benchmark file (or folder of parquet files, or hub id)")
    r.add_argument("--media-root", help="media paths in the data are relative to this (default: its folder)")
    r.add_argument("--limit", type=int, help="the first N items only")
    r.add_argument("--shard", help="i/n: judge every n-th item from the i-th (merge the shards afterwards)")
    r.add_argument("--protocol", default=TWO_ORDER, choices=PROTOCOLS,
                   help="two-order: both orders, greedy (this project's); release: the release's own per-benchmark "
                        "order, sampling and rules, to compare with the paper")
    r.add_argument("--out", required=True)
    add_judge_arguments(r, batch=True)
    m = sub.add_parser("merge", help="merge shard outputs")
    m.add_argument("parts", nargs="+")
    m.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="print summaries side by side")
    c.add_argument("outs", nargs="+")
    b = sub.add_parser("bon", help="best-of-N selection over sampled answers")
    b.add_argument("--data", required=True, help="MMMU, Video-MME or AVQA records with sampled answers")
    b.add_argument("--media-root")
    b.add_argument("--strategy", default="both", choices=[*STRATEGIES, "both"])
    b.add_argument("--limit", type=int)
    b.add_argument("--out", required=True)
    add_judge_arguments(b)
    return parser


def _run(args) -> int:
    if args.benchmark not in LOADERS:
        raise RRMError(f"unknown benchmark {args.benchmark!r}; known: {', '.join(LOADERS)}")
    shard = parse_shard(args.shard)
    if args.protocol == RELEASE:
        rules_for(args.benchmark)  # fails before the model loads
    judge = build_judge(args)
    summary = run(judge, args.benchmark, args.data, args.out, media_root=args.media_root, limit=args.limit,
                  shard=shard, batch_size=args.batch_size, protocol=args.protocol, max_new_tokens=args.max_new_tokens)
    print((Path(args.out) / TABLE).read_text())
    return 0 if (summary.get("micro") or summary.get("overall") or {}).get("items") else 2


def _bon(args) -> int:
    from tqdm.auto import tqdm

    items = load_bon(args.data, args.media_root)[: args.limit or None]
    strategies = STRATEGIES if args.strategy == "both" else (args.strategy,)
    judge = build_judge(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(json.dumps({"data": args.data, "strategies": strategies, "items": len(items),
                                          **judge_config(judge)}, indent=2, default=str))
    done = done_ids(out / ITEMS, key="id")
    with open(out / ITEMS, "a", encoding="utf-8") as f:
        for item in tqdm([i for i in items if i.id not in done], desc="best-of-N", unit="item",
                         initial=len(done), total=len(items)):
            f.write(json.dumps(select_item(judge, item, strategies)) + "\n")
            f.flush()
            os.fsync(f.fileno())
    wanted = {i.id for i in items}
    summary = summarize_bon([r for r in read_records(out) if r["id"] in wanted])
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    (out / TABLE).write_text(bon_markdown(summary))
    print(bon_markdown(summary))
    return 0


def _command(args) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "merge":
        merge(args.parts, args.out)
        print((Path(args.out) / TABLE).read_text())
        return 0
    if args.command == "compare":
        print(compare(args.outs))
        return 0
    return _bon(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(_command, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
