"""The command-line pieces every command shares: the judge's flags, the judge they describe, where a server
listens, and how a command reports bad input (one line, exit status 2).

`python -m rrm`, `python -m rrm.eval`, `python -m train.mine_hard`, `python -m train.synth` and `app.py` build on
these, so a flag means the same everywhere.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .endpoint import MEDIA_MODES
from .errors import RRMError
from .judge import BACKENDS, DECODINGS, GenerationSettings
from .limits import MAX_PROMPT_TOKENS, MAX_TEXT_CHARS, InputLimits
from .media import VIDEO_AUDIO_MODES, MediaLimits
from .model import DEFAULT_MODEL
from .quantization import QUANTIZATIONS
from .prompts import PROMPT_FORMATS
from .redact import install_log_redaction, redact


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
                        help="auto: 4-bit NF4 on CUDA, full precision on CPU; int4: torchao int4 weights, int8 head; "
                             "int4-gemlite: the same with gemlite's kernels (CUDA only)")
    parser.add_argument("--device", help="cuda:0, cpu ... (default: cuda:0 when available)")
    parser.add_argument("--decoding", default="auto", choices=DECODINGS,
                        help="auto: a static KV cache and a compiled decode step where they work, else plain generate; "
                             "deferred: static, reading the stop flag a step late (no host sync per token)")
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
    gen.add_argument("--min-p", type=float, help="when sampling, keep only tokens at least this times as likely as "
                                               "the likeliest one (0 to 1; default: no such cut)")
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


def add_listen_arguments(parser, port: int) -> None:
    """Where a server listens: loopback unless told otherwise (`parser` may be an argument group)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="0.0.0.0 serves the network: mind who can reach it (rrm serve: set --api-key-env too)")
    parser.add_argument("--port", type=int, default=port)


def limits_from(args, base: MediaLimits | None = None) -> MediaLimits:
    """The media bounds: the flags given, on top of `base` (default: the defaults)."""
    return (base or MediaLimits()).replace(
        image_max_pixels=args.image_max_pixels, video_fps=args.video_fps, video_max_frames=args.video_max_frames,
        video_max_pixels=args.video_max_pixels, audio_max_seconds=args.audio_max_seconds,
        video_audio=None if args.video_audio == "auto" else args.video_audio,  # auto: as the checkpoint calls for
    )


def build_judge(args):
    """The judge the flags describe, on the backend they name."""
    from .judge import Judge

    if args.judgment_start_tokens < 0:
        raise RRMError("--judgment-start-tokens must be 0 (never stop early) or more")
    if args.min_p is not None and not 0 <= args.min_p <= 1:
        raise RRMError("--min-p must be between 0 and 1")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens or GenerationSettings.max_new_tokens,
                                  temperature=args.temperature, top_p=args.top_p, min_p=args.min_p, seed=args.seed,
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


def read_pairs_arg(args) -> tuple[list, list[str], Path]:
    """The --pairs file (read as --pairs-format, its media under --media-root, default its folder): (sample,
    record) pairs, a message per line skipped (each warned about on stderr), and the media root."""
    from .pairs import read_pair_records, shown

    path = Path(args.pairs)
    media_root = Path(args.media_root) if args.media_root else path.parent
    pairs, problems = read_pair_records(path, media_root, fmt=args.pairs_format)
    for p in shown(problems):
        print(f"warning: {p}", file=sys.stderr)
    return pairs, problems, media_root


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
