import dataclasses
import threading

import numpy as np
import pytest
import torch

from rrm.errors import RRMError
from rrm.generation import Output
from rrm.judge import GenerationSettings, Judge, combine_orders
from rrm.media import MediaLimits
from rrm.parse import parse_judgment
from rrm.prompts import build_messages
from rrm.schema import MediaItem, Sample, Timing

TOKENS = 12  # the judge fixture generates exactly this many tokens


def _samples(media_dir):
    return {
        "text": Sample("Which answer is kinder?", "Thank you!", "Go away.", id="text"),
        "image": Sample("What is shown?", "a red disc", "a blue square",
                        media=[MediaItem("image", str(media_dir / "red.png"))], id="image"),
        "video": Sample("Where does the bar move?", "to the right", "to the left",
                        media=[MediaItem("video", str(media_dir / "clip.mp4"))], id="video"),
        "audio": Sample("What is heard?", "a steady tone", "a dog barking",
                        media=[MediaItem("audio", str(media_dir / "tone.wav"))], id="audio"),
    }


@pytest.mark.parametrize("modality", ["text", "image", "video", "audio"])
def test_judge_end_to_end_with_swap_check_in_one_generate_call(judge, media_dir, modality, monkeypatch):
    calls = []
    real_generate = judge.backend.model.generate
    monkeypatch.setattr(judge.backend.model, "generate", lambda **kw: calls.append(kw["input_ids"].shape) or
                        real_generate(**kw))
    j = judge.judge(_samples(media_dir)[modality], swap_check=True)
    assert len(calls) == 1 and calls[0][0] == 2  # both orders in one batch of two rows
    assert j.sample_id == modality and j.order == "AB"
    assert [c.key for c in j.criteria] == judge.rubric.keys
    assert j.timing.generated_tokens == TOKENS and j.timing.ttft_s > 0 and j.timing.total_s >= j.timing.ttft_s
    assert j.swap is not None and j.swap.other.order == "BA" and j.swap.other.timing.generated_tokens == TOKENS
    assert j.raw and j.swap.other.raw
    assert judge.loaded.name in j.model and "omni-rrm" in j.model
    assert j.verdict in ("A", "B", "tie", None) and j.status.ok == (j.verdict is not None)


def test_media_reach_the_model_inputs(judge, media_dir, tmp_path):
    from .media_files import make_video

    slow = make_video(tmp_path / "slow.mp4", frames=6, fps=1)  # 6 s at 1 fps: fewer frames than 2 fps asks for
    samples = _samples(media_dir)
    two_videos = Sample("q", "a", "b", media=[MediaItem("video", str(media_dir / "clip.mp4")),
                                              MediaItem("video", str(slow))])
    rows = [(build_messages(s, judge.format, judge.rubric), judge._decode_media(s))
            for s in (samples["image"], samples["audio"], two_videos)]
    inputs = judge.backend.inputs(rows, judge.limits)
    ids = inputs["input_ids"]
    tok = judge.backend.tokenizer
    merge = judge.backend.processor.image_processor.merge_size ** 2
    assert (ids[0] == tok.image_token_id).sum() == int(inputs["image_grid_thw"][0].prod()) // merge
    assert (ids[1] == tok.audio_token_id).sum() > 0 and inputs["input_features"].shape[0] == 1
    assert (ids[2] == tok.video_token_id).sum() == sum(int(g.prod()) // merge for g in inputs["video_grid_thw"])
    # Each clip keeps its own real sampling rate on the model's time axis.
    fps = [clip.fps for _, clip in rows[2][1]]
    assert fps[0] == pytest.approx(2.0) and fps[1] == pytest.approx(1.0)
    patch = judge.backend.processor.video_processor.temporal_patch_size
    assert inputs["video_second_per_grid"].tolist() == pytest.approx([patch / f for f in fps])


def test_stream_yields_growing_text_then_the_judgment(judge, media_dir):
    updates = list(judge.stream(_samples(media_dir)["image"], swap_check=True))
    assert len(updates) >= 2
    assert all(u.judgment is None for u in updates[:-1]) and updates[-1].judgment is not None
    texts = [u.text for u in updates]
    assert all(a == b[:len(a)] for a, b in zip(texts, texts[1:]))  # the text only grows
    assert updates[-1].swapped_text is not None
    final = updates[-1].judgment
    assert final.raw == updates[-1].text and final.timing.generated_tokens == TOKENS
    assert final.swap.other.raw == updates[-1].swapped_text


@pytest.mark.parametrize("decoding", ["plain", "deferred"])
def test_stream_can_be_cancelled_and_the_judge_keeps_serving(judge, media_dir, decoding):
    judge = Judge(judge.loaded, decoding=decoding, generation=judge.generation)
    long = GenerationSettings(max_new_tokens=400, min_new_tokens=400)
    cancel = threading.Event()
    updates = []
    for update in judge.stream(_samples(media_dir)["text"], cancel=cancel, settings=long):
        updates.append(update)
        cancel.set()
    final = updates[-1].judgment
    assert final.timing.generated_tokens < 50
    assert "generation was cancelled" in final.status.errors
    # Closing the generator mid-way stops generation and frees the lock.
    gen = judge.stream(_samples(media_dir)["text"], settings=long)
    next(gen)
    gen.close()
    assert judge.backend._lock.acquire(timeout=5)
    judge.backend._lock.release()
    assert judge.judge(_samples(media_dir)["text"]).timing.generated_tokens == TOKENS


def test_judge_batch_keeps_order_and_records_bad_samples(judge, media_dir, tmp_path):
    (tmp_path / "broken.mp4").write_text("not a video")
    s = _samples(media_dir)
    batch = [s["text"], s["image"], Sample("q", "a", "b", media=[MediaItem("video", str(tmp_path / "broken.mp4"))],
                                           id="bad-video"),
             s["audio"], Sample("q", "", "b", id="empty"), s["video"]]
    results = judge.judge_batch(batch, batch_size=3, swap_check=True, progress=False)
    assert [r.sample_id for r in results] == [b.id for b in batch]
    assert "cannot be decoded" in results[2].status.errors[0] and results[2].verdict is None
    assert results[4].status.errors == ["response_a is empty"]
    for r in (results[0], results[1], results[3], results[5]):
        assert r.timing.generated_tokens == TOKENS and r.swap is not None


def _texts(first, second):
    return [Output(first, Timing(0.1, 1.0, 10, 10.0)), Output(second, Timing(0.1, 1.2, 10, 10.0))]


AB_SAYS_A = '{"score_A": 8, "score_B": 3, "better": "A", "reasoning": "<think>Part 1: x</think>", ' \
            '"final_verdict": "<answer>[[A]]</answer>"}'
BA_SAYS_B = '{"score_A": 4, "score_B": 9, "better": "B", "reasoning": "<think>Part 1: y</think>", ' \
            '"final_verdict": "<answer>[[B]]</answer>"}'
BA_SAYS_A = BA_SAYS_B.replace('"B"', '"A"').replace("[[B]]", "[[A]]").replace('"score_A": 4, "score_B": 9',
                                                                              '"score_A": 9, "score_B": 4')


def test_the_second_order_is_mapped_back_to_the_callers_a_and_b(judge):
    sample = Sample("q", "a", "b", id="s")
    j = judge._finish(sample, _texts(AB_SAYS_A, BA_SAYS_B))  # the model saw (b, a) and preferred its B = a
    assert j.verdict == "A" and j.swap.agree is True
    assert (j.swap.verdict_ab, j.swap.verdict_ba) == ("A", "A")
    assert (j.swap.other.score_a, j.swap.other.score_b) == (9, 4)
    assert (j.score_a, j.score_b) == (8.5, 3.5)
    assert j.timing.total_s == 1.2  # one batched call: the slower row
    j = judge._finish(sample, _texts(AB_SAYS_A, BA_SAYS_A))  # position bias: "A" both times
    assert j.verdict == "tie" and j.swap.agree is False
    assert any("disagree" in e for e in j.status.errors)


def test_combine_orders_with_one_failure_keeps_the_other_verdict():
    ab = parse_judgment(AB_SAYS_A)
    ba = parse_judgment("junk")
    j = combine_orders(ab, ba)
    assert j.verdict == "A" and j.swap.agree is None and j.status.ok
    assert combine_orders(parse_judgment("junk"), parse_judgment("junk")).verdict is None


def test_multimodal_tokens_are_never_generated(judge, media_dir):
    tok = judge.backend.tokenizer
    specials = ["<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>", "<|vision_bos|>", "<|vision_eos|>",
                "<|audio_bos|>", "<|audio_eos|>"]
    ids = set(tok.convert_tokens_to_ids(specials))
    assert set(judge.backend._suppress) == ids
    # Near-uniform sampling over 400 steps would hit one of these 8 tokens almost surely.
    settings = GenerationSettings(max_new_tokens=400, min_new_tokens=400, temperature=20.0, seed=3)
    sample = _samples(media_dir)["image"]
    inputs = judge.backend.inputs([(build_messages(sample, judge.format, judge.rubric), judge._decode_media(sample))],
                                  judge.limits)
    torch.manual_seed(3)
    out = judge.backend.model.generate(**inputs, **judge.backend.generate_kwargs(settings))
    generated = set(out[0, inputs["input_ids"].shape[1]:].tolist())
    assert len(generated) > 50 and not generated & ids


def test_sampling_is_seeded_and_greedy_is_deterministic(judge, media_dir):
    s = _samples(media_dir)["text"]
    hot = GenerationSettings(max_new_tokens=16, min_new_tokens=16, temperature=1.0, seed=7)
    assert judge.judge(s, settings=hot).raw == judge.judge(s, settings=hot).raw
    other = GenerationSettings(max_new_tokens=16, min_new_tokens=16, temperature=1.0, seed=8)
    assert judge.judge(s, settings=hot).raw != judge.judge(s, settings=other).raw
    assert judge.judge(s).raw == judge.judge(s).raw


def test_min_p_cuts_the_tail_a_hot_sampler_would_draw_from(judge, media_dir):
    s = _samples(media_dir)["image"]
    greedy = GenerationSettings(max_new_tokens=16, min_new_tokens=16)
    hot = dataclasses.replace(greedy, temperature=3.0, seed=7)
    assert judge.judge(s, settings=hot).raw != judge.judge(s, settings=greedy).raw
    # min_p 1 keeps the likeliest token alone: sampling, however hot, writes the greedy tokens
    assert judge.judge(s, settings=dataclasses.replace(hot, min_p=1.0)).raw == judge.judge(s, settings=greedy).raw


def test_grade_and_best_of_n(judge, media_dir):
    g = judge.grade(Sample("What is shown?", "a red disc", "", media=[MediaItem("image", str(media_dir / "red.png"))]))
    assert [c.key for c in g.criteria] == judge.rubric.keys and g.timing.generated_tokens == TOKENS
    assert g.status.ok == (g.score is not None)
    result = judge.best_of_n("Say hi", ["hi", "hello", "hey there"], swap_check=False)
    assert [(a, b) for a, b, _ in result.matches][0] == (0, 1) and len(result.matches) == 2
    assert 0 <= result.best < 3 and len(result.wins) == 3
    with pytest.raises(RRMError, match="at least two"):
        judge.best_of_n("q", ["only one"])


def test_grade_batch_grades_many_in_one_call_and_records_the_one_it_cannot(judge, media_dir, monkeypatch):
    disc = Sample("What is shown?", "a red disc", "", media=[MediaItem("image", str(media_dir / "red.png"))])
    alone = judge.grade(disc)
    calls = []
    real = judge.backend.generate
    monkeypatch.setattr(judge.backend, "generate", lambda rows, *a: calls.append(len(rows)) or real(rows, *a))
    together, empty, text = judge.grade_batch([disc, Sample("q", "  ", ""), Sample("Say hi", "hello", "")])
    assert calls == [2]  # the two gradeable ones, one backend call
    assert together.raw == alone.raw and together.score == alone.score
    assert empty.score is None and empty.status.errors == ["the response to grade is empty"]
    assert text.timing.generated_tokens == TOKENS


@pytest.mark.parametrize("sample,message", [
    (Sample("q", "", "b"), "response_a is empty"),
    (Sample("q", "a", "   "), "response_b is empty"),
    (Sample("", "a", "b"), "query is empty"),
])
def test_empty_fields_are_refused(judge, sample, message):
    with pytest.raises(RRMError, match=message):
        judge.judge(sample)


def test_an_exception_with_no_message_becomes_a_failed_judgment_naming_its_type(judge, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise RuntimeError()  # no message at all: its first line is its type's name

    monkeypatch.setattr(type(judge.backend.processor), "__call__", refuse)
    [failed] = judge.judge_batch([Sample("q", "a", "b", id="bare")], progress=False)
    assert failed.verdict is None and not failed.ok
    assert failed.status.errors == ["the processor rejected the input: RuntimeError"]
    with pytest.raises(RRMError, match="^the processor rejected the input: RuntimeError$"):
        judge.judge(Sample("q", "a", "b"))


def test_decoded_media_can_be_passed_directly(judge, rng):
    frames = rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
    j = judge.judge(Sample("q", "a", "b", media=[MediaItem("video", data=frames, fps=4.0)]))
    assert j.timing.generated_tokens == TOKENS


@pytest.fixture(scope="module")
def parrot(parrot_dir):
    return Judge.from_pretrained(str(parrot_dir))


def test_a_valid_judgment_flows_through_both_orders(parrot):
    from rrm.testing import parrot_sample

    j = parrot.judge(parrot_sample(), swap_check=True)
    assert j.status.ok and j.status.consistent and j.status.format == "rubric-v2", j.status.errors
    assert j.verdict == "B" and j.swap.agree is True and (j.swap.verdict_ab, j.swap.verdict_ba) == ("B", "B")
    assert j.score_b > j.score_a and j.swap.other.score_b > j.swap.other.score_a  # mapped back to our order
    assert all(c.rationale and c.score_a is not None and c.score_b is not None for c in j.criteria)


def test_streamed_criteria_complete_in_order_and_the_verdict_comes_last(parrot):
    from rrm.testing import parrot_sample

    updates = list(parrot.stream(parrot_sample()))
    counts = [len(u.partial.criteria) for u in updates]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 5
    assert len(set(counts)) == 6  # each criterion was seen completing on its own
    first_verdict = next(i for i, u in enumerate(updates) if u.partial.verdict)
    assert first_verdict > counts.index(5)
    assert updates[-1].judgment.verdict == "B"


def test_the_demo_judge_gives_every_bundled_pair_its_label_in_a_batch(parrot):
    """assets/pairs.jsonl (the app's examples and the batch demo) judged as a new user's first batch would be."""
    from rrm.pairs import read_pairs
    from rrm.testing import ASSETS, EXAMPLES, examples

    samples, problems = read_pairs(EXAMPLES, ASSETS)
    assert not problems and {s.media[0].kind for s in samples if s.media} == {"image", "video", "audio"}
    judgments = parrot.judge_batch(samples, swap_check=True, batch_size=4, progress=False)
    assert [j.verdict for j in judgments] == [teacher.verdict for _, teacher in examples()]
    assert all(j.ok and j.swap.agree for j in judgments)
    # The clip with sound was heard (in its own forward: a batch mixing heard and silent videos is split).
    [heard] = [j.heard for s, j in zip(samples, judgments) if s.id == "video-sound-1"]
    assert heard[0]["video"] == "ball_beeps.mp4" and 1.8 <= heard[0]["audio_s"] <= 2.0


@pytest.mark.parametrize("decoding", ["plain", "deferred"])
def test_a_judge_that_opens_no_judgment_is_stopped_early_and_says_so(tiny_dir, decoding):
    """The random fixture writes junk without a "{": stopped at 96 tokens rather than at max_new_tokens (with the
    deferred stop check too: the step it runs past the stop is dropped)."""
    junk = Judge.from_pretrained(str(tiny_dir), generation=GenerationSettings(max_new_tokens=300), decoding=decoding)
    sample = Sample("Tell a joke", "a red ball", "a cat")
    j = junk.judge(sample, swap_check=True)
    assert not j.ok and j.timing.generated_tokens == 96 and "{" not in j.raw
    assert [e for e in j.status.errors if "no judgment had begun" in e] == [
        f"{order}: stopped after 96 tokens: no judgment had begun (no JSON object opened), so the rest would have "
        "been junk too" for order in ("AB", "BA")]
    off = junk.judge(sample, settings=dataclasses.replace(junk.generation, judgment_start_tokens=None))
    assert off.timing.generated_tokens == 300 and not any("stopped after" in e for e in off.status.errors)
    assert junk.answer([sample])[0].timing.generated_tokens == 300  # free text is never stopped for it


def test_the_early_stop_spares_rows_that_opened_a_judgment_or_ended():
    from rrm.generation import _NoJudgmentBegun

    prompt, opening, eos = [5, 5], [7], [9]
    rule = _NoJudgmentBegun(len(prompt), 3, opening, eos)
    rows = torch.tensor([prompt + [1, 7, 1], prompt + [1, 9, 0], prompt + [1, 2, 3]])
    assert rule(rows[:, :4], None).tolist() == [False, False, False]  # two tokens written: too soon to tell
    assert rule(rows, None).tolist() == [False, False, True] and rule.rows == {2}


def test_encoded_targets_are_the_only_labelled_tokens(judge, media_dir):
    from rrm.inputs import END_OF_TURN, encode

    samples = _samples(media_dir)
    rows = [(build_messages(s, judge.format, judge.rubric), judge._decode_media(s))
            for s in (samples["image"], samples["text"])]
    targets = ['{"verdict": "A"}', '{"score_A": 3, "score_B": 9, "verdict": "B"}']
    inputs = encode(judge.backend.processor, rows, judge.limits, targets=targets)
    for row, target in enumerate(targets):
        labelled = inputs["labels"][row][inputs["labels"][row] != -100]
        assert judge.backend.tokenizer.decode(labelled) == target + END_OF_TURN
        assert (inputs["labels"][row] != -100).sum() < inputs["attention_mask"][row].sum()


def test_media_bounds_recorded_by_a_checkpoint_are_used_and_flags_override_them(tmp_path):
    from rrm.__main__ import _parser
    from rrm.cli import build_judge
    from rrm.testing import make_tiny

    ckpt = make_tiny(tmp_path / "t", judge_config={"media_limits": {"video_max_frames": 5, "video_fps": 3.0}})
    recorded = Judge.from_pretrained(str(ckpt)).limits
    assert (recorded.video_max_frames, recorded.video_fps) == (5, 3.0)
    args = _parser().parse_args(["judge", "--model", str(ckpt), "--video-fps", "0.5"])
    limits = build_judge(args).limits
    assert (limits.video_max_frames, limits.video_fps) == (5, 0.5)
    assert Judge.from_pretrained(str(ckpt), limits=MediaLimits()).limits == MediaLimits()


def test_release_frames_are_resized_into_the_floor_its_video_decoder_kept(judge, media_dir):
    """qwen-omni-utils, which the release decoded video with, resizes every frame to at least 100,352 pixels
    whatever lower VIDEO_MAX_PIXELS its scripts set; the release profile does the same."""
    from rrm.release import EVAL_LIMITS

    sample = Sample("q", "a", "b", media=[MediaItem("video", str(media_dir / "clip.mp4"))])  # 64x48 frames
    patch = judge.backend.processor.video_processor.patch_size

    def frame(limits):
        view = judge.configured(limits=limits)
        inputs = view.backend.inputs([(build_messages(sample, view.format, view.rubric), view._decode_media(sample))],
                                     view.limits)
        _, h, w = inputs["video_grid_thw"][0].tolist()
        return h * patch, w * patch

    # By hand, as qwen's smart_resize upscales: scale sqrt(100352 / (48 x 64)) = 5.72, each side rounded up to 28.
    assert frame(EVAL_LIMITS) == (280, 392)
    h, w = frame(MediaLimits())  # no floor: never upscaled past the clip's own size, rounded to the patch grid
    assert h * w <= 56 * 84
    assert EVAL_LIMITS.video_max_pixels == 50_176 and EVAL_LIMITS.video_frame_pixels == (100_352, 105_369)


def test_a_system_prompt_file_replaces_the_system_turn(tiny_dir, tmp_path):
    from rrm.__main__ import _parser
    from rrm.cli import build_judge

    system = tmp_path / "system.txt"
    system.write_text("Judge as the release's GRPO stage did.")
    args = _parser().parse_args(["judge", "--model", str(tiny_dir), "--system-prompt", str(system)])
    judge = build_judge(args)
    assert judge.format.name == "omni-rrm-release" and judge.format.system == system.read_text()
    messages = build_messages(Sample("q", "a", "b"), judge.format, judge.rubric)
    assert messages[0]["content"][0]["text"] == system.read_text()
    missing = _parser().parse_args(["judge", "--model", str(tiny_dir), "--system-prompt", str(tmp_path / "no.txt")])
    with pytest.raises(RRMError, match="cannot read system prompt"):
        build_judge(missing)


# ---------------------------------------------------------------- decoding paths


def test_auto_decoding_is_plain_on_cpu_and_unknown_names_are_refused(judge, tiny_dir):
    assert judge.decoding == "plain" and judge.decoding_note == "no GPU (cpu)"
    with pytest.raises(RRMError, match="unknown decoding 'fast'; known: auto, plain, static, deferred"):
        Judge(judge.loaded, decoding="fast")


@pytest.mark.parametrize("decoding", ["static", "deferred"])
@pytest.mark.parametrize("modality", ["text", "image", "video", "audio"])
def test_static_cache_decoding_writes_the_same_tokens_as_plain_generate(judge, media_dir, modality, decoding):
    settings = GenerationSettings(max_new_tokens=40, min_new_tokens=40)
    static = Judge(judge.loaded, decoding=decoding, generation=settings)
    plain = Judge(judge.loaded, decoding="plain", generation=settings)
    sample = _samples(media_dir)[modality]
    a, b = static.judge(sample, swap_check=True), plain.judge(sample, swap_check=True)
    assert a.raw == b.raw and a.swap.other.raw == b.swap.other.raw
    assert a.timing.generated_tokens == 40


@pytest.mark.parametrize("decoding", ["static", "deferred"])
def test_static_decoding_in_batches_and_on_a_trained_judge(judge, parrot, media_dir, decoding):
    from rrm.testing import parrot_sample

    samples = list(_samples(media_dir).values())
    static = Judge(judge.loaded, decoding=decoding)
    settings = GenerationSettings(max_new_tokens=24, min_new_tokens=24)
    assert [j.raw for j in static.judge_batch(samples, batch_size=3, swap_check=True, progress=False,
                                              settings=settings)] == \
        [j.raw for j in judge.judge_batch(samples, batch_size=3, swap_check=True, progress=False, settings=settings)]
    # The parrot writes a whole valid judgment, hundreds of tokens long, and stops at its end of turn: the
    # deferred stop drops the step it ran past the end.
    fast, plain = Judge(parrot.loaded, decoding=decoding), parrot.judge(parrot_sample(), swap_check=True)
    j = fast.judge(parrot_sample(), swap_check=True)
    assert j.status.ok and j.verdict == "B" and j.raw == plain.raw
    assert j.timing.generated_tokens == plain.timing.generated_tokens


def test_deferred_stop_streams_every_token_samples_like_plain_and_ends_rows_apart(judge, parrot, media_dir):
    from rrm.testing import examples, parrot_sample

    deferred = Judge(parrot.loaded, decoding="deferred")
    updates = list(deferred.stream(parrot_sample(), swap_check=True))
    texts = [u.text for u in updates]
    assert all(a == b[:len(a)] for a, b in zip(texts, texts[1:]))
    assert updates[-1].judgment.raw == parrot.judge(parrot_sample()).raw  # streamed one step behind, none lost
    # Sampling draws the same tokens as plain generate from the same seed.
    sampled = GenerationSettings(max_new_tokens=32, temperature=1.0, seed=7)
    sample = _samples(media_dir)["image"]
    assert Judge(judge.loaded, decoding="deferred", generation=sampled).judge(sample, swap_check=True).raw == \
        Judge(judge.loaded, decoding="plain", generation=sampled).judge(sample, swap_check=True).raw
    # Rows of one batch that end apart: each stops at its own end of turn, the other padded meanwhile. Both are
    # lessons the parrot learnt, so both end (an unseen pair ran to the limit on one CPU and not on another).
    pair = [parrot_sample(), next(s for s, _ in examples() if not s.media)]
    settings = GenerationSettings(max_new_tokens=256)
    lagged, plain = (j.judge_batch(pair, batch_size=2, progress=False, settings=settings) for j in (deferred, parrot))
    assert [j.raw for j in lagged] == [j.raw for j in plain]
    lengths = [j.timing.generated_tokens for j in lagged]
    assert lengths == [j.timing.generated_tokens for j in plain] and len(set(lengths)) == 2 and max(lengths) < 256


@pytest.mark.parametrize("quantization", ["int4", "4bit"])
def test_the_compiled_decode_step_writes_plain_generates_tokens_on_4bit_weights(parrot_dir, quantization):
    """The decode step compiled as on a GPU (torch.compile; here with inductor's CPU kernels), on torchao int4 and
    bitsandbytes NF4 weights. A trained judge, so that no greedy choice is a near tie that a fused kernel's
    rounding could flip; the step after the prompt is the same for every modality (media enter at the prefill,
    which is not compiled)."""
    from rrm.generation import TransformersBackend
    from rrm.model import load_model
    from rrm.testing import parrot_sample

    loaded = load_model(str(parrot_dir), quantization=quantization, device="cpu")
    plain = Judge(loaded, decoding="plain").judge(parrot_sample(), swap_check=True)
    for decoding in ("static", "deferred", "deferred"):  # compiling, then compiled
        j = Judge(TransformersBackend(loaded, decoding, compile_step=True)).judge(parrot_sample(), swap_check=True)
        assert (j.raw, j.swap.other.raw) == (plain.raw, plain.swap.other.raw)
        assert j.timing.generated_tokens == plain.timing.generated_tokens > 100
    assert hasattr(loaded.model, "_compiled_call")  # where transformers keeps the step torch.compile made


@pytest.mark.parametrize("decoding", ["static", "deferred"])
def test_warm_up_checks_the_static_path_against_plain_generate(judge, decoding):
    static = Judge(judge.loaded, decoding=decoding)
    static.backend.warm_up()  # on a GPU this runs at load; here it runs the same check without compiling
    assert static.decoding == decoding and "warm-up" in static.decoding_note


def test_a_failed_warm_up_falls_back_one_path_at_a_time_and_says_why(judge):
    from rrm.generation import TransformersBackend

    backend = TransformersBackend(judge.loaded, "deferred", max_prompt_tokens=8)  # the warm-up rows are longer
    backend.warm_up()
    assert backend.decoding == "plain"
    assert backend.decoding_note.startswith("deferred off: RRMError: the prompt")
    assert "; static off: RRMError: the prompt" in backend.decoding_note


def test_best_of_n_ranks_the_winner_first_then_by_wins_then_by_mean_score():
    from rrm.judge import BestOfN
    from rrm.schema import Judgment, ParseStatus

    def match(a, b, verdict, score_a, score_b):
        return a, b, Judgment(verdict, score_a, score_b, [], "", ParseStatus(True, "rubric-v2"))

    # 0 beats 1 and 2; 3 beats 0. Then 1 and 2 have no wins: 2 scored higher than 1 when they lost.
    result = BestOfN(best=3, wins=[2, 0, 0, 1], matches=[match(0, 1, "A", 8, 2), match(0, 2, "A", 7, 5),
                                                         match(0, 3, "B", 4, 9)])
    assert result.mean_scores() == [19 / 3, 2, 5, 9]
    assert result.ranking() == [3, 0, 2, 1]
    assert BestOfN(best=1, wins=[0, 0, 0], matches=[]).ranking() == [1, 0, 2]  # nothing scored: by index
    unread = BestOfN(best=0, wins=[0, 0], matches=[match(0, 1, None, 3, 9)])
    assert unread.mean_scores() == [None, None]  # a judgment without a verdict scores nobody
