"""Omni-Preference synthesis: preference pairs without human labels.

    python -m train.synth generate --prompts P.jsonl --strong SPEC --weak SPEC --out DIR [--media-root M]
    python -m train.synth annotate --prompts P.jsonl --teachers SPEC,SPEC --out DIR
    python -m train.synth filter   --prompts P.jsonl --teachers SPEC,SPEC --out DIR [--max-longer-wins 0.6]
    python -m train.synth run --config train/recipes/synth-tiny.yaml [--flag value ...]

SPEC is local:DIR (a checkpoint rrm loads) or api:MODEL@URL (an OpenAI-compatible
endpoint; the key comes from $OPENAI_API_KEY, or the api_key_env a recipe names).
Every stage resumes; a recipe (--config) gives the same settings as the flags,
and flags override it. Exit status: 0 done; 1 some calls failed (rerun to
retry them); 2 bad input or configuration, with a one-line error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rrm.cli import run_command
from rrm.errors import RRMError, first_line
from rrm.media import MediaLimits
from rrm.pairs import shown
from rrm.rubric import load_rubric

from .backends import ModelSpec, parse_spec
from .pipeline import REPORT_MD, annotate, filter_stage, generate, read_prompts
from .rules import FilterRules



@dataclass
class SynthConfig:
    prompts: str = ""
    out: str = ""
    media_root: str | None = None
    strong: str | dict | None = None
    weak: str | dict | None = None
    teachers: list = field(default_factory=list)
    seed: int = 0
    prompt_format: str = "rubric-v2"
    rubric: str | None = None
    video_max_frames: int = 16  # the paper's generators saw 16 frames
    quality_floor: float = 4.0
    hard_gap: float = 2.0
    near_duplicate: float = 0.9
    max_longer_wins: float | None = None

    def rules(self) -> FilterRules:
        return FilterRules(self.quality_floor, self.hard_gap, self.near_duplicate, self.max_longer_wins, self.seed)

    def teacher_specs(self) -> list[ModelSpec]:
        teachers = self.teachers.split(",") if isinstance(self.teachers, str) else list(self.teachers)
        return [parse_spec(t) for t in teachers]

    def generator_specs(self) -> dict[str, ModelSpec]:
        if not self.strong or not self.weak:
            raise RRMError("generation needs --strong and --weak")
        return {"strong": parse_spec(self.strong), "weak": parse_spec(self.weak)}


def load_config(path: str | None) -> SynthConfig:
    if not path:
        return SynthConfig()
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RRMError(f"cannot read recipe {path}: {first_line(e)}") from None
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = set(raw) - known
    if unknown:
        raise RRMError(f"recipe {path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return SynthConfig(**raw)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("generate", "answers from a strong and a weak generator"),
                        ("annotate", "two-order judgments from each teacher"),
                        ("filter", "consensus and rule filters; data.jsonl and the report"),
                        ("run", "all three stages")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="a YAML recipe with these settings")
        p.add_argument("--prompts", help="JSONL: id, query, and image / video / audio (or media) paths")
        p.add_argument("--media-root", help="media paths are relative to this (default: the prompt file's folder)")
        p.add_argument("--out", help="the output directory (each stage resumes in it)")
        p.add_argument("--seed", type=int)
        if name in ("generate", "run"):
            p.add_argument("--strong", help="local:DIR or api:MODEL@URL")
            p.add_argument("--weak", help="local:DIR or api:MODEL@URL")
            p.add_argument("--video-max-frames", type=int)
        if name in ("annotate", "filter", "run"):
            p.add_argument("--teachers", help="comma-separated: local:DIR or api:MODEL@URL, at least two")
            p.add_argument("--prompt-format", help="how teachers are asked (default rubric-v2)")
            p.add_argument("--rubric", help="a JSON rubric file (default: the five criteria)")
        if name in ("filter", "run"):
            p.add_argument("--quality-floor", type=float, help="drop pairs whose two scores are both below (4)")
            p.add_argument("--hard-gap", type=float, help="rl split: score gap at most this (2)")
            p.add_argument("--near-duplicate", type=float, help="drop when the responses are this similar (0.9)")
            p.add_argument("--max-longer-wins", type=float,
                           help="rebalance: drop pairs the longer response wins until their share is at most this")
    return parser


def _config(args) -> SynthConfig:
    config = load_config(args.config)
    for f in dataclasses.fields(SynthConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, value)
    if not config.prompts or not config.out:
        raise RRMError("--prompts and --out are required (as flags or in the recipe)")
    return config


def _command(args) -> int:
    config = _config(args)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts, problems = read_prompts(config.prompts, config.media_root)
    for p in shown(problems):
        print(p, file=sys.stderr)
    limits = MediaLimits(video_max_frames=config.video_max_frames)
    rubric = load_rubric(config.rubric)
    failed = 0
    stages = []
    if args.command in ("generate", "run"):
        stages.append(("generate", lambda: generate(prompts, config.generator_specs(), out, config.seed, limits)))
    if args.command in ("annotate", "run"):
        stages.append(("annotate", lambda: annotate(prompts, config.teacher_specs(), out, config.seed,
                                                    config.prompt_format, rubric, config.rules(), limits)))
    for name, stage in stages:
        counts = stage()
        print(f"{name}: {counts}")
        for error in sorted(set(counts.errors))[:5]:
            print(f"  {error}", file=sys.stderr)
        failed += counts.failed
    if args.command in ("filter", "run"):
        generators = config.generator_specs() if config.strong and config.weak else None
        report = filter_stage(prompts, config.teacher_specs(), out, generators, config.seed, rubric, config.rules(),
                              problems)
        print((out / REPORT_MD).read_text(encoding="utf-8"))
        print(f"filter: {report['kept']['total']} pairs kept in {out / 'data.jsonl'}")
    if failed:
        print(f"{failed} calls failed after every retry; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(_command, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
