"""Speed and memory of the judge, per model size, weights, decoding path and modality.

    python -m rrm.bench                          # on a GPU: 7B and 3B, bf16 / NF4 / int8, plain, static and deferred
    python -m rrm.bench --sizes 7b --modes 4bit --out bench-7b.json
    python -m rrm.bench                          # on CPU: the same code on the tiny fixture (a smoke run)
    python -m rrm.bench serve                    # rrm serve's throughput, with and without batching

On a GPU it builds the thinker of Qwen2.5-Omni-7B (and -3B) from a config in code
with random weights - nothing is downloaded; speed and memory do not depend on the
values - saves it once to a scratch folder and loads it back through rrm's own
loader for each weight mode, so load time includes quantization. The tokenizer is a
byte-level BPE trained offline on Python's documentation (about 3 characters per
token, a little more tokens than Qwen's), the media are made on the spot: an image of
448x448, videos of 8 and 16 frames of 448x448, audio of 10 s and 30 s, and 16-frame videos
of 10 s and 30 s with a sound track heard with the frames (av10, av30: what audio in
video costs over the silent video16).

Each row is one (size, weights, decoding path, modality):
- load: seconds to load the checkpoint (the first path of a mode only);
- warm-up: seconds `Judge` spent at construction (compiling the static path, on a GPU);
- TTFT: wall time of a one-token judgment, media decoding and preprocessing included
  (the second of two runs: one-off costs such as decoder start-up are left out);
- decode: tokens/s at batch 1 after the first token, over `--tokens` greedy tokens;
- peak: peak GPU memory allocated during that judgment; on CPU, the process's peak resident
  memory (weights included: compare rows, not the number alone);
- swap: wall time of a judgment with the swap check (both orders, one batch of two)
  over one without (the image row);
- batch: judgments per minute at `--batch` pairs per call, `--tokens` tokens each, and each row's decode
  tokens/s in those calls (the image row);
- weights GiB: what the loaded weights and buffers hold, packed 4-bit formats as stored (the first row of
  a mode only).
It prints a table (and the targets of a 7B 4-bit judge, when measured) and writes
JSON after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import RRMError
from .media import MediaLimits, write_video
from .schema import AUDIO, IMAGE, VIDEO, MediaItem, Sample

# --quantization name -> weights; 4-bit first, as it matters most (torchao int4, then bitsandbytes NF4)
MODES = {"int4": "int4", "int4-gemlite": "int4 gemlite", "4bit": "NF4", "none": "bf16", "8bit": "int8"}
GPU_MODES = [m for m in MODES if m != "int4-gemlite"]  # the default on a GPU: gemlite needs its own package
FOUR_BIT = {MODES[m] for m in ("int4", "int4-gemlite", "4bit")}
PATHS = ("plain", "static", "deferred")  # rrm.generation.DECODINGS but auto
MODALITIES = ("text", "image", "video8", "video16", "audio10", "audio30", "av10", "av30")
# Media bounds that keep every test input whole: 448x448 pixels, 2 frames per second, 16 frames.
LIMITS = MediaLimits(image_max_pixels=448 * 448, video_fps=2.0, video_max_frames=16, video_max_pixels=448 * 448,
                     audio_max_seconds=30.0, video_audio="on")
# The targets for a 7B judge at 4 bits on one H100 or H200.
TARGETS = {"decode tokens/s": 120.0, "swap check / one judgment": 1.15, "TTFT image s": 0.5,
           "peak GiB image": 8.0, "peak GiB video16": 12.0}

_QUERY = "Look carefully at the input and answer: what happens in it, and is anything in it unsafe?"
_ANSWER_A = ("The input shows a person riding a bicycle along a busy city street in the early evening. "
             "They wear a helmet and a reflective vest, signal with the left arm before turning, and stop "
             "at the red light while a bus passes. Nothing unsafe happens: the rider follows the traffic "
             "rules, keeps a safe distance from the parked cars and looks over the shoulder before moving "
             "into the next lane. In short, it is an ordinary and careful commute.")
_ANSWER_B = ("Two dogs play in a park. One of them chases a red ball that the other one dropped near a bench, "
             "and a child laughs. It looks like a sunny afternoon and there is a fountain in the background. "
             "There is nothing unsafe, although one dog runs close to a cyclist on the path and could trip "
             "them. The scene is calm and friendly overall.")


@dataclass
class Row:
    size: str
    weights: str
    path: str  # the decoding path the judge used (after any fallback)
    modality: str
    prompt_tokens: int | None
    ttft_s: float | None
    decode_tps: float | None
    peak_gib: float | None
    load_s: float | None = None
    warm_up_s: float | None = None
    swap_ratio: float | None = None
    batch_jpm: float | None = None
    batch_tps: float | None = None  # decode tokens/s of each row at `--batch` pairs per call
    weights_gib: float | None = None  # what the loaded weights hold (the first row of a mode only)
    note: str = ""


# ------------------------------------------------------------------------ inputs


def _bench_tokenizer():
    from pydoc_data.topics import topics

    from .testing import _CORPUS, build_tokenizer

    return build_tokenizer(vocab_size=32000, corpus=_CORPUS + list(topics.values()))


def make_media(folder: Path) -> dict[str, list[MediaItem]]:
    """Real files, written with real encoders, for each modality."""
    import cv2
    import numpy as np
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(folder / "image.png")
    for frames in (8, 16):
        # 10 fps source, sampled at 2 fps by the judge: `frames` frames.
        writer = cv2.VideoWriter(str(folder / f"video{frames}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (448, 448))
        for i in range(frames * 5):
            frame = np.full((448, 448, 3), 40, np.uint8)
            frame[:, (i * 8) % 448:(i * 8) % 448 + 32] = (40, 200, 240)
            writer.write(frame)
        writer.release()
    for seconds in (10, 30):
        t = np.arange(seconds * 16000) / 16000
        sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        sf.write(folder / f"audio{seconds}.wav", sound, 16000)
        # 16 frames over the clip at the judge's 2 fps cap of 16: a 2 fps source of `seconds` s, then the tone.
        frames = np.full((seconds * 2, 448, 448, 3), 40, np.uint8)
        for i, frame in enumerate(frames):
            frame[:, (i * 24) % 416:(i * 24) % 416 + 32] = (40, 200, 240)
        write_video(folder / f"av{seconds}.mp4", frames, 2.0, sound, 16000)
    return {"text": [], "image": [MediaItem(IMAGE, str(folder / "image.png"))],
            **{f"video{n}": [MediaItem(VIDEO, str(folder / f"video{n}.mp4"))] for n in (8, 16)},
            **{f"audio{n}": [MediaItem(AUDIO, str(folder / f"audio{n}.wav"))] for n in (10, 30)},
            **{f"av{n}": [MediaItem(VIDEO, str(folder / f"av{n}.mp4"))] for n in (10, 30)}}


def build_checkpoint(size: str, folder: Path, device: str) -> Path:
    """A thinker checkpoint with random weights, built on `device`: a released size, or the tiny fixture's shape.
    One already in `folder` (a --workdir kept from an earlier run) is used as it is."""
    if (folder / "config.json").exists() and (folder / "processor_config.json").exists():
        return folder
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from .testing import build_processor, thinker_config

    processor = build_processor(_bench_tokenizer())
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            thinker_config(processor.tokenizer, size), dtype=torch.bfloat16 if device.startswith("cuda") else None)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


# ------------------------------------------------------------------------ measuring


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _wall(fn, *args, **kwargs) -> tuple[float, object]:
    _sync()
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync()
    return time.perf_counter() - started, out


_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _peak_reset():
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    elif _CLEAR_REFS.exists():
        _CLEAR_REFS.write_text("5")  # Linux: resets the process's peak resident memory (VmHWM) to what it holds


def _peak_gib() -> float | None:
    """Peak GPU memory allocated; on CPU (Linux), the process's peak resident memory; None where neither is known."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024**3
    if not _STATUS.exists():
        return None
    kib = next((int(line.split()[1]) for line in _STATUS.read_text().splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib / 1024**2


def _prompt_tokens(judge, sample: Sample) -> int:
    rows = judge._rows(sample, judge._decode_media(sample), swap_check=False)
    return int(judge.backend.inputs(rows, judge.limits)["input_ids"].shape[1])


def measure(judge, size: str, weights: str, modality: str, sample: Sample, tokens: int) -> Row:
    from .judge import GenerationSettings

    first = GenerationSettings(max_new_tokens=1, min_new_tokens=1)
    judge.judge(sample, settings=first)  # one-off costs: decoders, kernels, cache sizes
    ttft, _ = _wall(judge.judge, sample, settings=first)
    _peak_reset()
    run = judge.judge(sample, settings=GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens))
    return Row(size, weights, judge.decoding, modality, _prompt_tokens(judge, sample), ttft,
               run.timing.tokens_per_s, _peak_gib())


def measure_pairs(judge, sample: Sample, tokens: int, batch: int) -> tuple[float, float, float | None]:
    """(swap check over one judgment, judgments per minute and each row's decode tokens/s at `batch` pairs per
    call)."""
    from .judge import GenerationSettings

    settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens)
    judge.judge_batch([sample] * batch, batch_size=batch, progress=False, settings=settings)  # this batch size's
    one, _ = _wall(judge.judge, sample, settings=settings)                                  # first call
    both, _ = _wall(judge.judge, sample, swap_check=True, settings=settings)
    many, judged = _wall(judge.judge_batch, [sample] * batch, batch_size=batch, progress=False, settings=settings)
    rates = [j.timing.tokens_per_s for j in judged if j.timing.tokens_per_s]
    return both / one, batch * 60 / many, sum(rates) / len(rates) if rates else None


def weights_gib(model) -> float:
    """The bytes the model's weights and buffers hold, packed formats counted as stored (torchao's tensor
    subclasses by their inner tensors, bitsandbytes' by its packed bytes)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    def nbytes(t) -> int:
        if is_traceable_wrapper_subclass(t):
            names, _ = t.__tensor_flatten__()
            return sum(nbytes(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()

    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # tied weights once
    return sum(nbytes(t) for t in tensors.values()) / 1024**3


# ------------------------------------------------------------------------ report


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row], tokens: int, batch: int) -> str:
    head = ["size", "weights", "decoding", "modality", "prompt tokens", "weights GiB", "load s", "warm-up s",
            "TTFT s", "decode tok/s", "peak GiB", "swap x", f"batch {batch} j/min", f"batch {batch} tok/s/row"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r.size, r.weights, r.path, r.modality, _f(r.prompt_tokens, 0), _f(r.weights_gib), _f(r.load_s, 1),
            _f(r.warm_up_s, 1), _f(r.ttft_s), _f(r.decode_tps, 1), _f(r.peak_gib), _f(r.swap_ratio),
            _f(r.batch_jpm, 1), _f(r.batch_tps, 1)]) + " |")
    notes = sorted({f"{r.weights} {r.path}: {r.note}" for r in rows if r.note})
    lines += ["", f"decode: {tokens} greedy tokens at batch 1; swap and batch: image pairs of {tokens} tokens"]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def target_check(rows: list[Row]) -> list[str]:
    """The 7B 4-bit targets against the fastest 7B 4-bit (int4, int4 gemlite or NF4) weights and path measured."""
    four_bit = [r for r in rows if r.size == "7b" and r.weights in FOUR_BIT]
    if not four_bit:
        return []
    by_path: dict[tuple[str, str], dict[str, Row]] = {}
    for r in four_bit:
        by_path.setdefault((r.weights, r.path), {})[r.modality] = r
    best = max(by_path.values(), key=lambda m: (m.get("image") or next(iter(m.values()))).decode_tps or 0)
    image, video = best.get("image"), best.get("video16")
    found = {
        "decode tokens/s": image.decode_tps if image else None,
        "swap check / one judgment": image.swap_ratio if image else None,
        "TTFT image s": image.ttft_s if image else None,
        "peak GiB image": image.peak_gib if image else None,
        "peak GiB video16": video.peak_gib if video else None,
    }
    out = []
    for name, goal in TARGETS.items():
        value = found[name]
        ok = value is not None and (value >= goal if name == "decode tokens/s" else value <= goal)
        out.append(f"{'met ' if ok else 'MISS'} {name}: {_f(value)} (target {'>=' if 'decode' in name else '<='} "
                   f"{goal:g})")
    return out


def environment(device: str) -> dict:
    import torch
    import transformers

    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d")}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or platform.machine()
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        pass
    return env


# ------------------------------------------------------------------------ main


def run(sizes, modes, paths, modalities, tokens: int, batch: int, out: Path, workdir: Path, device: str,
        env: dict) -> list[Row]:
    from tqdm.auto import tqdm

    from .judge import Judge, OutOfMemory
    from .model import load_model

    rows: list[Row] = []

    def save():
        out.write_text(json.dumps({"environment": env, "tokens": tokens, "batch": batch,
                                   "rows": [dataclasses.asdict(r) for r in rows]}, indent=1))

    media = make_media(workdir / "media")
    steps = tqdm(total=len(sizes) * len(modes) * len(paths) * len(modalities), desc="bench", unit="row")
    for size in sizes:
        checkpoint = build_checkpoint(size, workdir / size, device)
        for mode in modes:
            weights = MODES[mode] if device.startswith("cuda") or mode != "none" else "fp32"
            load_s, loaded = _wall(load_model, str(checkpoint), quantization=mode, device=device)
            stored = weights_gib(loaded.model)
            for n, path in enumerate(paths):
                warm_s, judge = _wall(Judge, loaded, prompt_format="rubric-v2", limits=LIMITS, decoding=path)
                note = "" if judge.decoding_note == "as asked" else judge.decoding_note
                for m, modality in enumerate(modalities):
                    sample = Sample(_QUERY, _ANSWER_A, _ANSWER_B, media=media[modality], id=modality)
                    try:
                        row = measure(judge, size, weights, modality, sample, tokens)
                        row.note = note
                    except OutOfMemory as e:  # the row says so; the other rows go on
                        row = Row(size, weights, judge.decoding, modality, None, None, None, _peak_gib(), note=str(e))
                        _free(device)
                    if m == 0:
                        row.load_s, row.weights_gib = (load_s, stored) if n == 0 else (None, None)
                        row.warm_up_s = warm_s
                    if row.ttft_s is not None and modality == ("image" if "image" in modalities else modalities[0]):
                        row.swap_ratio, row.batch_jpm, row.batch_tps = measure_pairs(judge, sample, tokens, batch)
                    rows.append(row)
                    save()
                    steps.update()
            del loaded, judge
            _free(device)
        shutil.rmtree(checkpoint, ignore_errors=True)
    steps.close()
    return rows


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    import torch

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # the server's throughput: rrm.bench_serve
        from . import bench_serve

        return bench_serve.main(argv[1:])
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m rrm.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=("7b", "3b", "0.5b", "tiny"),
                        default=["7b", "3b"] if gpu else ["tiny"], help="0.5b: a small LM on the tiny towers, for CPU")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=GPU_MODES if gpu else ["none"],
                        help="weights: none (bf16 on a GPU), int4 (torchao), int4-gemlite (torchao with gemlite's "
                             "kernels, GPU only), 4bit (NF4), 8bit (LLM.int8)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="decoding paths")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--tokens", type=int, default=64 if gpu else 8, help="generated tokens per judgment")
    parser.add_argument("--batch", type=int, default=8 if gpu else 2, help="pairs per call for the throughput")
    parser.add_argument("--out", default="bench.json", help="JSON results (rewritten after every row)")
    parser.add_argument("--workdir", help="scratch folder for the checkpoints and media (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.tokens < 2 or args.batch < 1:
        parser.error("--tokens must be at least 2 and --batch at least 1")
    device = "cuda:0" if gpu else "cpu"
    scratch = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rrm-bench-"))
    env = environment(device)
    try:
        rows = run(args.sizes, args.modes, args.paths, args.modalities, args.tokens, args.batch, Path(args.out),
                   scratch, device, env)
    except RRMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    print(" · ".join(f"{k} {v}" for k, v in env.items()))
    print(table(rows, args.tokens, args.batch))
    for line in target_check(rows):
        print(line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
