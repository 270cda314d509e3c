"""Checks that need a CUDA GPU; they skip cleanly without one."""

import pytest
import torch

from rrm.judge import GenerationSettings, Judge
from rrm.schema import MediaItem, Sample

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_quantization_is_4bit_on_cuda_and_judges_an_image(tiny_dir, media_dir):
    judge = Judge.from_pretrained(str(tiny_dir), generation=GenerationSettings(max_new_tokens=8, min_new_tokens=8))
    assert judge.loaded.quantization == "4bit" and judge.loaded.device.startswith("cuda")
    kinds = {n: type(m).__name__ for n, m in judge.backend.model.named_modules()}
    assert kinds["model.language_model.layers.0.mlp.up_proj"] == "Linear4bit"
    assert kinds["model.visual.blocks.0.attn.q"] == "Linear"
    j = judge.judge(Sample("What is shown?", "a disc", "a cat", media=[MediaItem("image", str(media_dir / "red.png"))]),
                    swap_check=True)
    assert j.timing.generated_tokens == 8 and j.swap.other.timing.generated_tokens == 8


def test_bf16_greedy_judgments_repeat_exactly(tiny_dir, media_dir):
    judge = Judge.from_pretrained(str(tiny_dir), quantization="none",
                                  generation=GenerationSettings(max_new_tokens=16, min_new_tokens=16))
    sample = Sample("What is heard?", "a tone", "a dog", media=[MediaItem("audio", str(media_dir / "tone.wav"))])
    assert judge.judge(sample).raw == judge.judge(sample).raw


def test_out_of_memory_becomes_a_message_and_the_judge_keeps_serving(tiny_dir, media_dir):
    from rrm.judge import OutOfMemory

    judge = Judge.from_pretrained(str(tiny_dir), quantization="none",
                                  generation=GenerationSettings(max_new_tokens=8, min_new_tokens=8))
    clip = MediaItem("video", str(media_dir / "clip.mp4"))
    sample = Sample("Where does the bar move?", "right", "left", media=[clip])
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - 2 * 1024**2, dtype=torch.uint8, device="cuda")  # leave 2 MB
    try:
        with pytest.raises(OutOfMemory, match="fewer video frames"):
            judge.judge(sample, swap_check=True)
        failed = judge.judge_batch([sample, sample], batch_size=2, progress=False)
        assert all(not j.ok and "out of GPU memory" in j.status.errors[0] for j in failed)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert judge.judge(sample).timing.generated_tokens == 8  # serving again


def _check_static_matches_plain(fast, settings, media_dir, path="static"):
    """`fast` took `path` (warmed up) and writes plain generate's greedy tokens for every modality."""
    assert fast.decoding == path and "warm-up" in fast.decoding_note, fast.decoding_note
    plain = Judge(fast.loaded, decoding="plain", generation=settings)
    for media in ([], [MediaItem("image", str(media_dir / "red.png"))],
                  [MediaItem("video", str(media_dir / "clip.mp4"))], [MediaItem("audio", str(media_dir / "tone.wav"))]):
        sample = Sample("Which answer is right?", "the first", "the second", media=media)
        a, b = fast.judge(sample, swap_check=True), plain.judge(sample, swap_check=True)
        assert (a.raw, a.swap.other.raw) == (b.raw, b.swap.other.raw)


def test_the_default_fast_path_writes_the_same_greedy_tokens_as_plain_generate(tiny_dir, media_dir):
    settings = GenerationSettings(max_new_tokens=64, min_new_tokens=64)
    fast = Judge.from_pretrained(str(tiny_dir), quantization="none", generation=settings)  # decoding auto
    _check_static_matches_plain(fast, settings, media_dir)
    _check_static_matches_plain(Judge(fast.loaded, decoding="deferred", generation=settings), settings, media_dir,
                                "deferred")


def test_nf4_weights_compile_under_auto_and_write_plain_generates_tokens(tiny_dir, media_dir):
    settings = GenerationSettings(max_new_tokens=32, min_new_tokens=32)
    nf4 = Judge.from_pretrained(str(tiny_dir), quantization="4bit", generation=settings)  # decoding auto
    _check_static_matches_plain(nf4, settings, media_dir)


def test_int4_takes_the_tinygemm_layout_and_its_compiled_path_writes_plain_generates_tokens(tiny_dir, media_dir):
    settings = GenerationSettings(max_new_tokens=32, min_new_tokens=32)
    fast = Judge.from_pretrained(str(tiny_dir), quantization="int4", generation=settings)  # decoding auto
    kinds = {n: type(m.weight).__name__ for n, m in fast.backend.model.named_modules() if hasattr(m, "weight")}
    assert kinds["model.language_model.layers.0.mlp.up_proj"] == "Int4TilePackedTo4dTensor"
    assert kinds["lm_head"] == "Int8Tensor" and kinds["model.visual.blocks.0.attn.q"] == "Parameter"
    _check_static_matches_plain(fast, settings, media_dir)
    _check_static_matches_plain(Judge(fast.loaded, decoding="deferred", generation=settings), settings, media_dir,
                                "deferred")


def test_int4_gemlite_loads_gemlites_layout_and_its_compiled_path_writes_plain_generates_tokens(tiny_dir, media_dir):
    pytest.importorskip("gemlite", reason="int4-gemlite needs the gemlite package (README: the GPU run's wheels)")
    settings = GenerationSettings(max_new_tokens=32, min_new_tokens=32)
    fast = Judge.from_pretrained(str(tiny_dir), quantization="int4-gemlite", generation=settings)
    kinds = {n: type(m.weight).__name__ for n, m in fast.backend.model.named_modules() if hasattr(m, "weight")}
    assert kinds["model.language_model.layers.0.mlp.up_proj"] == "UIntxBitPackedTensor"
    assert kinds["lm_head"] == "Int8Tensor" and kinds["model.visual.blocks.0.attn.q"] == "Parameter"
    _check_static_matches_plain(fast, settings, media_dir)
