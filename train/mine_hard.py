"""Select hard, low-contrast pairs for RL.

    python -m train.mine_hard --data pairs.jsonl --out rl.jsonl [--max-gap 2]
    python -m train.mine_hard --data pairs.jsonl --out rl.jsonl --model runs/sft-7b --samples 4 [--rule either]

A pair is hard when the teachers' score gap is at most --max-gap, and/or (with
--model) when the judge is unstable on it: its sampled verdicts disagree across
--samples draws, or its two A/B orders disagree. Ties never go to RL (a tie
label gives GRPO no direction). The kept records are written as they came, with
"split": "rl" and the evidence under "hardness".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rrm.cli import add_judge_arguments, build_judge, run_command
from rrm.judge import GenerationSettings
from rrm.schema import VERDICT_TIE

from .data import load_pairs


def teacher_gap(pair) -> float | None:
    a, b = pair.score_a, pair.score_b
    return None if a is None or b is None else abs(a - b)


def instability(judge, samples: list, draws: int, seed: int, settings: GenerationSettings,
                batch_size: int = 4) -> list[dict]:
    """How much the judge wavers on each pair: `draws` sampled judgments (both orders each time), every pair of a
    draw judged in batches (with a progress bar per draw), and what they show."""
    sampled = GenerationSettings(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature or 1.0,
                                 top_p=settings.top_p, min_p=settings.min_p)
    found = [{"verdicts": [], "flips": False, "swap_disagreements": 0} for _ in samples]
    for k in range(draws):
        judged = judge.judge_batch(samples, batch_size=batch_size, swap_check=True,
                                   settings=dataclasses.replace(sampled, seed=seed + k))
        for evidence, j in zip(found, judged):
            evidence["verdicts"].append(j.verdict)
            evidence["swap_disagreements"] += j.swap is not None and j.swap.agree is False
    for evidence in found:
        evidence["flips"] = len(set(evidence["verdicts"])) > 1
    return found


def is_hard(gap: float | None, unstable: dict | None, max_gap: float, rule: str) -> bool:
    low_gap = gap is not None and gap <= max_gap
    wavers = unstable is not None and (unstable["flips"] or unstable["swap_disagreements"] > 0)
    if unstable is None:
        return low_gap
    if gap is None:
        return wavers
    return (low_gap and wavers) if rule == "both" else (low_gap or wavers)


def _command(args) -> int:
    pairs, report = load_pairs(args.data, args.media_root, splits=("sft", "rl"))
    ties = sum(p.label == VERDICT_TIE for p in pairs)
    pairs = [p for p in pairs if p.label != VERDICT_TIE]
    unstable = [None] * len(pairs)
    if args.samples:
        judge = build_judge(args)
        unstable = instability(judge, [p.sample for p in pairs], args.samples, args.seed, judge.generation,
                               args.batch_size)
    kept = [{**p.record, "split": "rl", "hardness": {"teacher_gap": teacher_gap(p), "judge": u}}
            for p, u in zip(pairs, unstable) if is_hard(teacher_gap(p), u, args.max_gap, args.rule)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(kept)} hard pairs of {len(pairs) + ties} written to {out} ({ties} ties left out; {report})",
          file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.mine_hard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="preference JSONL")
    parser.add_argument("--media-root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-gap", type=float, default=2.0, help="teacher score gap at most this is low contrast")
    parser.add_argument("--samples", type=int, default=0,
                        help="judge each pair this many times with sampling (needs --model); 0: teacher gap only")
    parser.add_argument("--rule", choices=["either", "both"], default="either",
                        help="with both signals: hard if either says so, or only if both do")
    add_judge_arguments(parser, batch=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.samples < 0:
        print("error: --samples must be 0 or more", file=sys.stderr)
        return 2
    return run_command(_command, args)


if __name__ == "__main__":
    sys.exit(main())
