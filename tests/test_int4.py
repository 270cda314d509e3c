"""`--quantization int4` (torchao) on CPU, on the tiny fixture: what it quantizes and what it leaves alone, its
judgments against full precision, its static path against plain generate (the compiled one: tests/test_judge.py),
a LoRA adapter on it, and training."""

from __future__ import annotations

import re

import pytest
import torch

from rrm.errors import ModelLoadError
from rrm.judge import GenerationSettings, Judge
from rrm.model import load_model
from rrm.quantization import TOWERS, UNQUANTIZED_MODULES, int4_group_size
from rrm.testing import make_adapter, make_tiny

from .media_files import comparable, modality_samples

pytest.importorskip("torchao", reason="--quantization int4 needs torchao (requirements.txt pins it)")

SETTINGS = GenerationSettings(max_new_tokens=10, min_new_tokens=10)
LINEARS = re.compile(r"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj")


def _snap(weight: torch.Tensor, group: int) -> torch.Tensor:
    """`weight` moved onto a 16-level grid spanning each group's own range: what int4 stores without error."""
    rows, width = weight.shape
    g = weight.reshape(rows, width // group, group)
    low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    step = (high - low) / 15
    return (low + torch.round((g - low) / step) * step).reshape(rows, width)


@pytest.fixture(scope="module")
def exact_dir(tmp_path_factory):
    """The tiny checkpoint with its language model's linear weights on the int4 grid: int4's error is zero there."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration as Thinker

    d = make_tiny(tmp_path_factory.mktemp("int4") / "exact")
    model = Thinker.from_pretrained(d)
    group = int4_group_size(model.config.text_config)
    with torch.no_grad():
        for name, module in model.named_modules():
            if LINEARS.fullmatch(name):
                module.weight.copy_(_snap(module.weight, group))
    model.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def judges(exact_dir):
    """The int4 judge, and the full-precision one whose head and embedding hold what int4 stores at int8 (int8's
    symmetric grid, 255 / 2 steps of the largest value, has no weights it stores exactly)."""
    loaded = {q: load_model(str(exact_dir), quantization=q, device="cpu") for q in ("none", "int4")}
    full, int4 = loaded["none"].model.to(torch.bfloat16), loaded["int4"].model  # int4 computes in bf16
    with torch.no_grad():
        full.lm_head.weight.copy_(int4.lm_head.weight.dequantize())
        full.model.language_model.embed_tokens.weight.copy_(int4.model.language_model.embed_tokens.weight.dequantize())
    return {q: Judge(m, prompt_format="rubric-v2", generation=SETTINGS) for q, m in loaded.items()}


def test_int4_quantizes_the_language_model_and_leaves_the_encoders(judges):
    model = judges["int4"].backend.model
    kinds = {n: type(m.weight).__name__ for n, m in model.named_modules() if isinstance(
        getattr(m, "weight", None), torch.Tensor)}
    assert kinds["model.language_model.layers.0.self_attn.q_proj"] == "Int4OpaqueTensor"  # the CPU layout
    assert kinds["model.language_model.layers.1.mlp.down_proj"] == "Int4OpaqueTensor"
    assert kinds["lm_head"] == kinds["model.language_model.embed_tokens"] == "Int8Tensor"
    towers = {n: m.weight for n, m in model.named_modules() if n.startswith(("model.visual.", "model.audio_tower."))
              and isinstance(getattr(m, "weight", None), torch.Tensor)}
    assert towers and all(type(w) is torch.nn.Parameter and w.dtype == torch.bfloat16 for w in towers.values())
    # The q/k/v biases stay plain tensors (an int4 config handed a bias fails to load).
    assert type(model.model.language_model.layers[0].self_attn.q_proj.bias) is torch.nn.Parameter


@pytest.mark.parametrize("spelling", ["transformers 5.17", "transformers 5.24"])
def test_the_skip_lists_match_either_spelling_of_the_towers(spelling):
    from transformers.quantizers.quantizers_utils import should_convert_module

    prefix = "" if spelling == "transformers 5.17" else "model."
    for tower in (f"{prefix}audio_tower.layers.0.fc1", f"{prefix}visual.blocks.0.attn.q"):
        assert not should_convert_module(tower, TOWERS) and not should_convert_module(tower, UNQUANTIZED_MODULES)
    language = f"{prefix}language_model.layers.0.self_attn.q_proj" if prefix else "model.layers.0.self_attn.q_proj"
    assert should_convert_module(language, TOWERS) and should_convert_module(language, UNQUANTIZED_MODULES)


def test_int4_judges_every_modality_as_full_precision_does_when_its_error_is_zero(judges, media_dir):
    samples = modality_samples(media_dir)
    got = judges["int4"].judge_batch(samples, batch_size=4, swap_check=True, progress=False)
    want = judges["none"].judge_batch(samples, batch_size=4, swap_check=True, progress=False)
    assert [comparable(j) for j in got] == [comparable(j) for j in want]
    assert all(j.raw and j.swap.other.raw for j in got)


def test_int4_logits_stay_near_full_precision_on_random_weights(tiny_dir):
    """Without the grid (random weights, groups of 64 values): the stated tolerance, 15 % of the largest logit."""
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    logits = {q: load_model(str(tiny_dir), quantization=q, device="cpu").model(input_ids=ids).logits.detach()
              for q in ("none", "int4")}
    error = (logits["int4"] - logits["none"]).abs().max()
    assert 0 < error <= 0.15 * logits["none"].abs().max()


def test_the_static_path_gives_plain_generates_tokens_on_int4(judges, media_dir):
    loaded = judges["int4"].backend.loaded
    static = Judge(loaded, prompt_format="rubric-v2", generation=SETTINGS, decoding="static")
    assert static.decoding == "static"
    samples = modality_samples(media_dir)
    for batch in (1, 2):
        fast = static.judge_batch(samples[:batch * 2], batch_size=batch, swap_check=True, progress=False)
        plain = judges["int4"].judge_batch(samples[:batch * 2], batch_size=batch, swap_check=True, progress=False)
        assert [comparable(j) for j in fast] == [comparable(j) for j in plain]


def test_a_lora_adapter_loads_on_int4_and_changes_its_judgments(exact_dir, tmp_path, media_dir, judges):
    adapter = make_adapter(tmp_path / "lora", exact_dir)
    sample = modality_samples(media_dir)[1]
    on = Judge.from_pretrained(str(adapter), quantization="int4", device="cpu", prompt_format="rubric-v2",
                               generation=SETTINGS)
    assert on.backend.loaded.adapter == str(adapter) and on.backend.loaded.quantization == "int4"
    q_proj = on.backend.model.get_base_model().model.language_model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer.weight).__name__ == "Int4OpaqueTensor" and q_proj.lora_A  # LoRA over int4
    assert on.judge(sample).raw != judges["int4"].judge(sample).raw  # the adapter is applied
    with pytest.raises(ModelLoadError, match="--quantization none"):
        load_model(str(adapter), quantization="int4", merge_adapter=True)


def test_training_on_an_int4_base_is_refused_naming_what_to_use(tiny_dir):
    from train.common import load_base

    for quantization in ("int4", "int4-gemlite"):
        with pytest.raises(ModelLoadError, match=f"training on an {quantization} .* --quantization 4bit for QLoRA"):
            load_base(str(tiny_dir), quantization)


def test_int4_gemlite_is_refused_off_a_gpu_and_without_gemlite(tiny_dir):
    from transformers import AutoConfig

    from rrm.quantization import load_kwargs

    with pytest.raises(ModelLoadError, match="int4-gemlite needs a CUDA GPU .* not cpu: use --quantization int4"):
        load_model(str(tiny_dir), quantization="int4-gemlite", device="cpu")
    # On a GPU it needs the gemlite package, which requirements.txt leaves out (it imports CUDA at once).
    with pytest.raises(ModelLoadError, match="int4-gemlite needs gemlite: pip install gemlite"):
        load_kwargs("int4-gemlite", "cuda:0", AutoConfig.from_pretrained(tiny_dir))

