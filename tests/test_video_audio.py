"""A video's own sound track: decoded from real files (PyAV's FFmpeg encoders), handed to Qwen2.5-Omni interleaved
with the frames, heard by the judge on every backend, recorded in the judgment, and seen by training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rrm.__main__ import _parser
from rrm.errors import MediaError, RRMError
from rrm.inputs import decode_media, encode, judge_rows, sound_groups
from rrm.judge import GenerationSettings, Judge
from rrm.media import MediaLimits, load_video
from rrm.prompts import SOUND_NOTE
from rrm.schema import MediaItem, Sample
from rrm.serve import JudgeServer, running
from rrm.testing import make_tiny

from . import vllm_standin
from .media_files import make_audio, make_av_video, make_broken_sound_video, make_image, make_video
from .openai_server import ScriptedServer

HEAR = MediaLimits(video_audio="on")
SETTINGS = GenerationSettings(max_new_tokens=6, min_new_tokens=6)


def _pitch(samples: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv", ".mov"])
@pytest.mark.parametrize("rate,channels", [(16_000, 1), (48_000, 2)])
def test_each_container_gives_its_sound_track_mono_at_16_khz(tmp_path, suffix, rate, channels):
    clip = load_video(make_av_video(tmp_path / f"a{suffix}", rate=rate, channels=channels), HEAR)
    silent = load_video(make_video(tmp_path / f"s{suffix}", frames=20, fps=10), HEAR)
    assert clip.audio is not None and clip.audio.sampling_rate == 16_000 and clip.audio.samples.ndim == 1
    assert abs(clip.audio.duration_s - 2.0) < 0.15 and abs(_pitch(clip.audio.samples) - 440) < 5
    assert clip.heard()["audio_s"] == pytest.approx(clip.audio.duration_s, abs=0.01)
    assert len(clip.frames) == len(silent.frames) and clip.duration_s == pytest.approx(2.0, abs=0.15)
    assert silent.audio is None and silent.heard() == {"audio_s": None, "note": "no audio track"}


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_sound_shorter_or_longer_than_the_frames_is_held_to_their_span(tmp_path, suffix):
    short = load_video(make_av_video(tmp_path / f"short{suffix}", sound_seconds=1.0), HEAR)
    long = load_video(make_av_video(tmp_path / f"long{suffix}", sound_seconds=3.5), HEAR)
    assert short.audio.duration_s == pytest.approx(1.0, abs=0.1)  # what there is; nothing is made up
    assert long.duration_s == pytest.approx(2.0, abs=0.05)  # the frames' span, not the longer sound's
    assert long.audio.duration_s == pytest.approx(2.0, abs=0.01) and len(long.frames) == len(short.frames)


def test_a_broken_sound_track_leaves_a_valid_video_and_says_why(tmp_path):
    clip = load_video(make_broken_sound_video(tmp_path / "broken.mp4"), HEAR)
    assert len(clip.frames) == 4 and clip.audio is None
    assert clip.heard()["note"].startswith("audio track undecodable:") and "\n" not in clip.heard()["note"]


def test_sound_off_says_what_was_not_heard_and_the_audio_bound_cuts(tmp_path):
    path = make_av_video(tmp_path / "a.mp4", seconds=3.0)
    off = load_video(path, MediaLimits(video_audio="off"))
    assert off.audio is None and off.heard()["note"].startswith("sound off: its 3.0 s sound track is not heard")
    cut = load_video(path, MediaLimits(audio_max_seconds=1.0))
    assert cut.audio.duration_s == pytest.approx(1.0) and cut.audio.truncated
    assert cut.heard() == {"audio_s": 1.0, "note": "1.0 s of sound (cut to the audio bound)"}
    with pytest.raises(MediaError, match="video audio must be one of auto, on, off, got 'loud'"):
        MediaLimits(video_audio="loud")


def test_the_processor_interleaves_frames_and_sound_and_the_model_is_told(tiny_dir, tmp_path):
    judge = Judge.from_pretrained(str(tiny_dir), limits=HEAR)
    sample = Sample("What is said?", "a", "b", [MediaItem("video", str(make_av_video(tmp_path / "a.mp4",
                                                                                       seconds=5.0)))])
    rows = judge_rows(sample, decode_media(sample, HEAR), judge.format, judge.rubric)
    assert SOUND_NOTE in rows[0][0][-1]["content"][-1]["text"]
    inputs = encode(judge.loaded.processor, rows, HEAR)
    assert inputs["use_audio_in_video"] is True and "input_features" in inputs
    tok = judge.loaded.processor.tokenizer
    ids = inputs["input_ids"][0].tolist()
    video, audio = tok.convert_tokens_to_ids("<|VIDEO|>"), tok.convert_tokens_to_ids("<|AUDIO|>")
    runs = [t for i, t in enumerate(ids) if t in (video, audio) and (i == 0 or ids[i - 1] != t)]
    assert runs[:4] == [video, audio, video, audio]  # 5 s of sound in 2 s chunks, each after its frames
    silent_rows = judge_rows(sample, decode_media(sample, MediaLimits(video_audio="off")), judge.format,
                             judge.rubric)
    silent = encode(judge.loaded.processor, silent_rows, HEAR)
    assert silent["use_audio_in_video"] is False and "input_features" not in silent
    assert SOUND_NOTE not in silent_rows[0][0][-1]["content"][-1]["text"]


def test_rows_that_cannot_share_a_forward_are_grouped_and_a_mixed_sample_is_refused(tmp_path):
    heard = decode_media(Sample("q", "a", "b", [MediaItem("video", str(make_av_video(tmp_path / "a.mp4")))]), HEAR)
    silent = decode_media(Sample("q", "a", "b", [MediaItem("video", str(make_video(tmp_path / "s.mp4")))]), HEAR)
    rows = [([], heard), ([], silent), ([], []), ([], heard)]
    assert sound_groups(rows) == [[0, 2, 3], [1]]
    with pytest.raises(RRMError, match="must all be heard at one frame rate, or none"):
        sound_groups([([], heard + silent)])


def _audio_tower_calls(judge):
    calls = []
    handle = judge.loaded.model.model.audio_tower.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


@pytest.fixture(scope="module")
def av_samples(tmp_path_factory):
    d = tmp_path_factory.mktemp("av")
    return [Sample("What is heard?", "A tone.", "Speech.", [MediaItem("video", str(make_av_video(d / "a.mp4")))],
                   id="sound"),
            Sample("What moves?", "A bar.", "Nothing.", [MediaItem("video", str(make_video(d / "s.mp4")))],
                   id="silent"),
            Sample("Which matches?", "Red, with a tone.", "Blue.", [MediaItem("image", str(make_image(d / "r.png"))),
                                                                     MediaItem("audio", str(make_audio(d / "t.wav")))],
                   id="image+audio")]


def test_the_judge_hears_the_video_records_it_and_a_mixed_batch_matches_one_at_a_time(tiny_dir, av_samples):
    judge = Judge.from_pretrained(str(tiny_dir), limits=HEAR, generation=SETTINGS)
    calls, handle = _audio_tower_calls(judge)
    try:
        alone = judge.judge(av_samples[0], swap_check=True)
        assert calls  # the audio encoder ran on the video's sound
        calls.clear()
        judge.judge(av_samples[1])
        assert not calls
    finally:
        handle.remove()
    assert alone.heard == [{"video": "a.mp4", "audio_s": 2.0, "note": "2.0 s of sound"}]
    singles = [judge.judge(s, swap_check=True) for s in av_samples]
    batch = judge.judge_batch(av_samples, batch_size=3, swap_check=True, progress=False)
    assert [j.raw for j in batch] == [j.raw for j in singles] and batch[0].raw == alone.raw
    assert [j.swap.other.raw for j in batch] == [j.swap.other.raw for j in singles]
    assert batch[1].heard[0]["note"] == "no audio track" and batch[2].heard == []
    streamed = list(judge.stream(av_samples[0], swap_check=True))[-1].judgment
    assert streamed.raw == alone.raw and streamed.heard == alone.heard


def test_released_checkpoints_judge_silent_frames_by_default_and_a_record_turns_sound_on(tiny_dir, tmp_path,
                                                                                          av_samples):
    released = Judge.from_pretrained(str(tiny_dir), generation=SETTINGS)  # no rrm_judge.json: the release profile
    assert released.limits.video_audio == "off"
    assert released.judge(av_samples[0]).heard[0]["note"].startswith("sound off: its 2.0 s sound track")
    assert Judge.from_pretrained(str(tiny_dir), limits=MediaLimits(video_fps=1.0)).limits.video_audio == "off"
    ours = make_tiny(tmp_path / "ours", judge_config={"prompt_format": "rubric-v2"})
    assert Judge.from_pretrained(str(ours)).limits.video_audio == "auto"
    silent = make_tiny(tmp_path / "silent", judge_config={"prompt_format": "rubric-v2",
                                                          "media_limits": {"video_audio": "off"}})
    assert Judge.from_pretrained(str(silent)).limits.video_audio == "off"
    assert Judge.from_pretrained(str(silent), limits=HEAR).limits.video_audio == "on"


def _audio_encoder_runs(fn) -> int:
    """How many times any Qwen2.5-Omni audio encoder runs during fn()."""
    calls = []

    def spy(module, args, output):
        if type(module).__name__ == "Qwen2_5OmniAudioEncoder":
            calls.append(1)

    handle = torch.nn.modules.module.register_module_forward_hook(spy)
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)


def test_vllm_takes_each_videos_sound_as_its_audio_with_use_audio_in_video(tiny_dir, av_samples, monkeypatch):
    vllm_standin.install(monkeypatch)
    engine = Judge.from_pretrained(str(tiny_dir), backend="vllm", prompt_format="rubric-v2", limits=HEAR,
                                   generation=SETTINGS)
    sample = av_samples[0]
    media = decode_media(sample, HEAR)
    request = engine.backend.prompts(judge_rows(sample, media, engine.format, engine.rubric))[0]
    assert request["mm_processor_kwargs"] == {"use_audio_in_video": True}
    (audio, rate), = request["multi_modal_data"]["audio"]
    assert rate == 16_000 and np.array_equal(audio, media[0][1].audio.samples)
    assert _audio_encoder_runs(lambda: engine.judge(sample)) == 1
    assert engine.judge(sample).heard[0]["audio_s"] == 2.0
    with pytest.raises(RRMError, match="no separate audio clip"):
        engine.backend.prompts([([], media + decode_media(av_samples[2], HEAR)[1:])])


def test_an_endpoint_judge_over_rrm_serve_hears_what_the_local_judge_hears(tiny_dir, av_samples):
    local = Judge.from_pretrained(str(tiny_dir), prompt_format="rubric-v2", limits=HEAR, generation=SETTINGS)
    samples = av_samples[:2]
    want = local.judge_batch(samples, batch_size=2, swap_check=True, progress=False)
    with running(JudgeServer(local, "tiny-judge")) as url:
        remote = Judge.from_endpoint(f"{url}/v1", "tiny-judge", generation=SETTINGS)
        assert remote.limits.video_audio == "on"  # read from the server's card
        got = remote.judge_batch(samples, batch_size=2, swap_check=True, progress=False)
    assert [j.raw for j in got] == [j.raw for j in want]
    assert [j.swap.other.raw for j in got] == [j.swap.other.raw for j in want]
    assert got[0].heard == [{"video": "a.mp4", "audio_s": 2.0, "note": "2.0 s of sound"}]


def test_endpoint_requests_ask_for_the_sound_or_carry_it_as_audio(av_samples):
    server = ScriptedServer()
    try:
        for media, parts in (("omni", ["video_url", "text"]), ("frames", None)):
            judge = Judge.from_endpoint(server.url, "strong", media=media, limits=HEAR, generation=SETTINGS)
            judge.judge(av_samples[0])
            judge.judge(av_samples[1])
            heard, silent = (r["body"] for r in server.requests[-2:])
            types = [p["type"] for p in heard["messages"][-1]["content"]]
            if media == "omni":
                assert types == parts and heard["mm_processor_kwargs"] == {"use_audio_in_video": True}
            else:  # a chat API: the frames, then the sound as an audio part
                assert types[-2] == "input_audio" and "mm_processor_kwargs" not in heard
                assert "Its sound track follows them." in heard["messages"][-1]["content"][0]["text"]
            assert "mm_processor_kwargs" not in silent
            assert "input_audio" not in [p["type"] for p in silent["messages"][-1]["content"]]
    finally:
        server.close()


def test_rrm_serve_hears_a_chat_requests_video_as_it_asks(tiny_dir, av_samples):
    local = Judge.from_pretrained(str(tiny_dir), prompt_format="rubric-v2", generation=SETTINGS)  # silent frames
    with running(JudgeServer(local, "tiny-judge")) as url:
        heard = Judge.from_endpoint(f"{url}/v1", "tiny-judge", limits=HEAR, generation=SETTINGS)
        got = heard.judge(av_samples[0])
    want = local.configured(limits=local.limits.replace(video_audio="on")).judge(av_samples[0])  # the server's bounds
    assert got.raw == want.raw and got.heard == want.heard


def test_media_flags_repeat_in_the_order_given():
    args = _parser().parse_args(["judge", "--query", "q", "--audio", "n.wav", "--video", "v.mp4", "--image", "1.png",
                                 "--image", "2.png", "--response-a", "a", "--response-b", "b", "--video-audio", "on"])
    assert [(m.kind, m.path) for m in args.media] == [("audio", "n.wav"), ("video", "v.mp4"), ("image", "1.png"),
                                                      ("image", "2.png")]
    assert args.video_audio == "on"


@pytest.mark.slow
def test_the_cli_reports_the_seconds_heard(tiny_dir, tmp_path):
    from .test_cli import run

    video = make_av_video(tmp_path / "clip_with_sound.mp4", seconds=3.0)
    narration = make_audio(tmp_path / "narration.wav")
    result = run("rrm", "judge", "--model", str(tiny_dir), "--video", str(video), "--audio", str(narration),
                 "--query", "Does the narration match the clip?", "--response-a", "yes", "--response-b", "no",
                 "--video-audio", "on", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["heard"] == [{"video": "clip_with_sound.mp4", "audio_s": 3.0,
                                                   "note": "3.0 s of sound"}]
    default = run("rrm", "judge", "--model", str(tiny_dir), "--video", str(video), "--query", "What is said?",
                  "--response-a", "a", "--response-b", "b", "--max-new-tokens", "4", "--format", "text")
    assert default.returncode == 0 and "sound off: its 3.0 s sound track is not heard" in default.stdout


def test_training_batches_carry_the_sound(tiny_dir, tmp_path):
    from train.sft import JudgeCollator

    judge = Judge.from_pretrained(str(tiny_dir))
    clip = make_av_video(tmp_path / "a.mp4")
    sample = Sample("What is heard?", "A tone.", "Speech.", [MediaItem("video", str(clip))])
    collate = JudgeCollator(judge.loaded.processor, judge.format, judge.rubric, MediaLimits())
    batch = collate([{"sample": json.dumps(sample.to_dict()), "target": "{}"}])
    assert batch["use_audio_in_video"] is True and batch["input_features"].shape[0] == 1
    with torch.no_grad():
        assert judge.loaded.model(**{k: v for k, v in batch.items()}).loss is not None


def test_avqa_best_of_n_judges_each_item_with_its_image_and_its_audio(tiny_dir, tmp_path):
    from rrm.eval.bon import load_bon, select_item

    (tmp_path / "images").mkdir()
    (tmp_path / "audios").mkdir()
    make_image(tmp_path / "images" / "sample_0.jpg")
    make_audio(tmp_path / "audios" / "sample_0.wav")
    row = {"problem_id": 0, "problem": "What is the source of the sound?", "data_type": "image_audio",
           "options": ["A. motorcycle", "B. automobile"], "solution": "<answer>B</answer>",
           "path": {"image": "images/sample_0.jpg", "audio": "audios/sample_0.wav"}, "candidates": ["A", "B"]}
    (tmp_path / "avqa.json").write_text(json.dumps([row]))
    item, = load_bon(tmp_path / "avqa.json")
    assert [m.kind for m in item.media] == ["image", "audio"]
    judge = Judge.from_pretrained(str(tiny_dir), generation=SETTINGS)
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, a, o: seen.append(type(m).__name__) if type(m).__name__.endswith("Encoder") else None)
    try:
        result = select_item(judge, item)
    finally:
        handle.remove()
    assert {"Qwen2_5OmniVisionEncoder", "Qwen2_5OmniAudioEncoder"} <= set(seen)
    assert result["pairs_judged"] >= 1  # a random judge gives no verdict: its failures are counted, not fatal
