"""Command line: judge one pair, or a JSONL file of pairs.

    python -m rrm judge --model M --query TEXT [--image P] [--video P] [--audio P] ... \\
        --response-a TEXT --response-b TEXT [--swap-check] [--stream] [--format json|text] [--video-audio on]
    python -m rrm judge --model M --pairs IN.jsonl --out OUT.jsonl [--batch-size 4]
    python -m rrm judge --backend endpoint --endpoint http://127.0.0.1:8000/v1 --model M ...
    python -m rrm serve --model M [--port 8000] [--api-key-env NAME]
    python -m rrm export --judged OUT.jsonl --pairs IN.jsonl --format trl|swift|llamafactory|preference --out DIR

Media flags repeat (an image and an audio clip; two images), kept in the order
given. A video's own sound track is heard with its frames (--video-audio,
default auto). One pair: the judgment is printed as JSON on stdout, or for
people with --format text (--stream writes the rationale to stderr as it is
generated). A file of pairs: one judgment per line in OUT, keyed by `sample_id`; a rerun skips
the ids already there; a summary (A/B/tie rates, swap agreement, judgments
without a verdict) ends on stderr.
Exit status: 0 done; 1 some input lines were skipped (each is reported);
2 bad input or configuration, with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import export as exporting
from . import serve as serving
from .cli import add_judge_arguments, build_judge, limits_from, read_pairs_arg, run_command
from .errors import RRMError
from .formats import PAIRS_FORMATS
from .limits import InputLimits
from .media import load_media
from .pairs import done_ids, scan_records
from .results import judgment_text, summarize, summary_text
from .schema import MEDIA_KINDS, Judgment, MediaItem, Sample


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rrm", description="Omni-RRM judge")
    sub = parser.add_subparsers(dest="command", required=True)
    j = sub.add_parser("judge", help="judge which of two responses is better",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judge_arguments(j, batch=True)
    j.add_argument("--swap-check", action="store_true", help="judge both orders in one batch and combine")
    one = j.add_argument_group("one pair")
    one.add_argument("--query")
    for kind in MEDIA_KINDS:  # repeatable; every media flag appends to one list, in the order given
        one.add_argument(f"--{kind}", metavar="PATH", dest="media", action="append", default=[],
                         type=lambda path, kind=kind: MediaItem(kind, path))
    one.add_argument("--response-a")
    one.add_argument("--response-b")
    one.add_argument("--reference", help="optional reference answer")
    one.add_argument("--stream", action="store_true", help="write the rationale to stderr as it is generated")
    one.add_argument("--format", choices=["json", "text"], default="json",
                     help="json: the judgment as JSON (default); text: a verdict line, the criteria, swap, timing")
    many = j.add_argument_group("a file of pairs")
    many.add_argument("--pairs", metavar="IN.jsonl",
                      help="lines of {id, query, response_a, response_b, image|video|audio: path, reference}")
    many.add_argument("--out", metavar="OUT.jsonl")
    many.add_argument("--media-root", help="media paths are relative to this (default: the folder of IN)")
    many.add_argument("--pairs-format", choices=PAIRS_FORMATS, default="preference",
                      help="preference: ours; trl, swift (ms-swift RM/DPO rows), llamafactory (sharegpt preference)")
    s = sub.add_parser("serve", help="serve the judge over HTTP (JSON API, OpenAI-compatible chat, batching)",
                       description=serving.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judge_arguments(s)
    serving.add_serve_arguments(s)
    e = sub.add_parser("export", help="judged pairs out as DPO / reward-model data (TRL, ms-swift, LLaMA-Factory)",
                       description=exporting.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exporting.add_export_arguments(e)
    return parser


def _check_args(args) -> None:
    if args.pairs:
        if not args.out:
            raise RRMError("--pairs needs --out OUT.jsonl")
        if args.batch_size < 1:
            raise RRMError("--batch-size must be at least 1")
        return
    missing = [f"--{n.replace('_', '-')}" for n in ("query", "response_a", "response_b") if getattr(args, n) is None]
    if missing:
        raise RRMError(f"missing {', '.join(missing)} (or pass --pairs IN.jsonl --out OUT.jsonl)")
    InputLimits().check_media(len(args.media))
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise RRMError("--max-new-tokens must be at least 1")


def _one(args) -> int:
    for item in args.media:  # decode once before the model loads: a bad file fails in a second, not in minutes
        load_media(item, limits_from(args))
    sample = Sample(query=args.query, response_a=args.response_a, response_b=args.response_b, media=args.media,
                    reference=args.reference)
    judge = build_judge(args)
    if args.stream:
        shown = 0
        for update in judge.stream(sample, swap_check=args.swap_check):
            sys.stderr.write(update.text[shown:])
            sys.stderr.flush()
            shown = len(update.text)
            judgment = update.judgment
        sys.stderr.write("\n")
    else:
        judgment = judge.judge(sample, swap_check=args.swap_check)
    print(judgment_text(judgment) if args.format == "text" else
          json.dumps(judgment.to_dict(), ensure_ascii=False, indent=2))
    return 0


def _many(args) -> int:
    from tqdm.auto import tqdm

    pairs, problems, _ = read_pairs_arg(args)
    samples = [sample for sample, _ in pairs]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_ids(out)
    todo = [s for s in samples if s.id not in done]
    if done:
        print(f"resuming: {len(samples) - len(todo)} of {len(samples)} pairs already in {out}", file=sys.stderr)
    failed = 0
    if todo:
        judge = build_judge(args)
        with open(out, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="judging", unit="pair") as bar:
            for chunk, judgments in judge.judge_chunks(todo, args.batch_size, args.swap_check):
                for judgment in judgments:
                    failed += not judgment.ok
                    # One write per line: a killed run leaves whole lines (and at most one partial, dropped on resume).
                    f.write(json.dumps(judgment.to_dict(), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(chunk))
    print(f"judged {len(todo)} pairs into {out} ({failed} without a verdict); "
          f"{len(problems)} input lines skipped", file=sys.stderr)
    ids = {s.id for s in samples}
    judged = [Judgment.from_dict(r) for r in scan_records(out).records if r.get("sample_id") in ids]
    if judged:  # this file's pairs, those judged by earlier runs included
        print(summary_text(summarize(judged)), file=sys.stderr)
    return 1 if problems else 0


def _judge_command(args) -> int:
    _check_args(args)
    return _many(args) if args.pairs else _one(args)


def _serve_command(args) -> int:
    return serving.serve(args, build_judge(args))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"judge": _judge_command, "serve": _serve_command, "export": exporting.export_command}
    return run_command(commands[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
