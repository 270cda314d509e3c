"""Command line: judge one pair, or a JSONL file of pairs.

    python -m rrm judge --model M --query TEXT [--image P] [--video P] [--audio P] ... \\
        --response-a TEXT --response-b TEXT [--swap-check] [--stream] [--format json|text] [--video-audio on]
    python -m rrm judge --model M --pairs IN.jsonl --out OUT.jsonl [--batch-size 4]
    python -m rrm judge --backend endpoint --endpoint http://127.0.0.1:8000/v1 --model M ...
    python -m rrm serve --model M [--port 8000] [--api-key-env NAME]

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
import logging
import os
import sys
from pathlib import Path

from . import serve as serving
from .errors import RRMError
from .endpoint import MEDIA_MODES
from .judge import BACKENDS, DECODINGS, GenerationSettings
from .limits import MAX_PROMPT_TOKENS, MAX_TEXT_CHARS, InputLimits
from .media import VIDEO_AUDIO_MODES, MediaLimits, load_media
from .model import DEFAULT_MODEL, QUANTIZATIONS
from .pairs import done_ids, read_pairs, scan_records, shown
from .results import judgment_text, summarize, summary_text
from .prompts import PROMPT_FORMATS
from .redact import install_log_redaction, redact
from .schema import MEDIA_KINDS, Judgment, MediaItem, Sample

def add_judge_arguments(parser: argparse.ArgumentParser, batch: bool = False) -> None:
    """The model, prompt, generation and media options shared by every command that judges."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id, checkpoint directory or LoRA adapter (with --backend endpoint: the served name)")
    parser.add_argument("--backend", default="transformers", choices=BACKENDS,
                        help="transformers: the model in this process; vllm: a vLLM engine for large sweeps "
                             "(pip install vllm; CUDA); endpoint: an OpenAI-compatible server (--endpoint)")
    served = parser.add_argument_group("--backend endpoint")
    served.add_argument("--endpoint", metavar="URL", help="e.g. http://127.0.0.1:8000/v1 (vllm serve, rrm serve)")
    served.add_argument("--endpoint-key-env", metavar="NAME",
                        help="the environment variable holding the endpoint's key (default: send no key)")
    served.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    served.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    served.add_argument("--endpoint-media", default="omni", choices=MEDIA_MODES,
                        help="omni: video as video, audio as audio (vLLM's Qwen2.5-Omni API); frames: for chat APIs")
    parser.add_argument("--quantization", default="auto", choices=QUANTIZATIONS,
                        help="auto: 4-bit NF4 on CUDA, full precision on CPU")
    parser.add_argument("--device", help="cuda:0, cpu ... (default: cuda:0 when available)")
    parser.add_argument("--decoding", default="auto", choices=DECODINGS,
                        help="auto: a static KV cache and a compiled decode step where they work, else plain generate")
    parser.add_argument("--merge-adapter", action="store_true", help="merge a LoRA adapter into its base")
    parser.add_argument("--prompt-format", choices=list(PROMPT_FORMATS),
                        help="default: what the checkpoint records, else (a released checkpoint) omni-rrm-release")
    parser.add_argument("--prompt-template", metavar="FILE",
                        help="your own user prompt: ${question}, ${answer_a}, ${answer_b}, ${criteria} ...")
    parser.add_argument("--system-prompt", metavar="FILE", help="your own system turn (default: the format's)")
    parser.add_argument("--rubric", metavar="FILE", help="JSON rubric: {\"Title\": \"description\", ...}")
    gen = parser.add_argument_group("generation and media")
    gen.add_argument("--max-new-tokens", type=int,
                     help=f"default {GenerationSettings.max_new_tokens} (rrm.eval --protocol release: the release's "
                          f"budget per benchmark)")
    gen.add_argument("--judgment-start-tokens", type=int, default=GenerationSettings.judgment_start_tokens,
                     metavar="N", help="stop a judgment that has opened no JSON object within N tokens, and say so "
                                       "(0: never; default %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--image-max-pixels", type=int)
    gen.add_argument("--video-fps", type=float)
    gen.add_argument("--video-max-frames", type=int)
    gen.add_argument("--video-max-pixels", type=int)
    gen.add_argument("--audio-max-seconds", type=float)
    gen.add_argument("--video-audio", choices=VIDEO_AUDIO_MODES, default="auto",
                     help="hear a video's own sound track: auto (where the file has one, unless the checkpoint "
                          "was trained on silent frames, as the released ones were), on, or off")
    gen.add_argument("--max-text-chars", type=int, default=MAX_TEXT_CHARS,
                     help="the longest query, response or reference judged (longer ones fail, with the reason)")
    gen.add_argument("--max-prompt-tokens", type=int, default=MAX_PROMPT_TOKENS,
                     help="the longest prompt, media included, checked before generation")
    if batch:
        gen.add_argument("--batch-size", type=int, default=4, help="pairs per generate call (with vllm: use 64+)")


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
    s = sub.add_parser("serve", help="serve the judge over HTTP (JSON API, OpenAI-compatible chat, batching)",
                       description=serving.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judge_arguments(s)
    serving.add_serve_arguments(s)
    return parser


def limits_from(args, base: MediaLimits | None = None) -> MediaLimits:
    """The media bounds: the flags given, on top of `base` (default: the defaults)."""
    return (base or MediaLimits()).replace(
        image_max_pixels=args.image_max_pixels, video_fps=args.video_fps, video_max_frames=args.video_max_frames,
        video_max_pixels=args.video_max_pixels, audio_max_seconds=args.audio_max_seconds,
        video_audio=None if args.video_audio == "auto" else args.video_audio,  # auto: as the checkpoint calls for
    )


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


def build_judge(args):
    """The judge the flags describe, on the backend they name."""
    from .judge import Judge

    if args.judgment_start_tokens < 0:
        raise RRMError("--judgment-start-tokens must be 0 (never stop early) or more")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens or GenerationSettings.max_new_tokens,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                  judgment_start_tokens=args.judgment_start_tokens or None)
    options = dict(prompt_format=args.prompt_format, prompt_template=args.prompt_template,
                   system_prompt=args.system_prompt, rubric=args.rubric, generation=settings,
                   input_limits=InputLimits(max_text_chars=args.max_text_chars,
                                            max_prompt_tokens=args.max_prompt_tokens))
    if args.backend == "endpoint":
        if not args.endpoint:
            raise RRMError("--backend endpoint needs --endpoint URL (e.g. http://127.0.0.1:8000/v1)")
        judge = Judge.from_endpoint(args.endpoint, args.model, api_key_env=args.endpoint_key_env,
                                    concurrency=args.concurrency, timeout_s=args.timeout, media=args.endpoint_media,
                                    **options)
    else:
        if args.endpoint:
            raise RRMError("--endpoint is for --backend endpoint")
        judge = Judge.from_pretrained(args.model, backend=args.backend, quantization=args.quantization,
                                      device=args.device, merge_adapter=args.merge_adapter, decoding=args.decoding,
                                      **options)
    judge.limits = limits_from(args, judge.limits)  # flags override what the checkpoint records
    return judge


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

    pairs = Path(args.pairs)
    media_root = Path(args.media_root) if args.media_root else pairs.parent
    samples, problems = read_pairs(pairs, media_root)
    for p in shown(problems):
        print(f"warning: {p}", file=sys.stderr)
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
            for start in range(0, len(todo), args.batch_size):
                chunk = todo[start:start + args.batch_size]
                for judgment in judge.judge_batch(chunk, batch_size=args.batch_size, swap_check=args.swap_check,
                                                  progress=False):
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


def run_command(command, args) -> int:
    """Run a command line's work: quiet libraries, and a one-line error with exit 2 on bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    install_log_redaction()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        return command(args)
    except RRMError as e:
        print(f"error: {redact(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _judge_command(args) -> int:
    _check_args(args)
    return _many(args) if args.pairs else _one(args)


def _serve_command(args) -> int:
    return serving.serve(args, build_judge(args))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(_serve_command if args.command == "serve" else _judge_command, args)


if __name__ == "__main__":
    sys.exit(main())
