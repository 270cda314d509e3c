import json

import pytest
import torch
from safetensors.torch import load_file

from rrm.errors import ModelLoadError
from rrm.model import JUDGE_CONFIG_FILE, load_model, resolve
from rrm.testing import build_thinker, make_tiny


def _state(path):
    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_thinker_checkpoint(tiny_dir):
    loaded = load_model(str(tiny_dir))
    assert type(loaded.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert loaded.quantization == "none" and loaded.device == "cpu" and loaded.adapter is None
    assert type(loaded.processor).__name__ == "Qwen2_5OmniProcessor"
    assert loaded.judge_config == {}


def test_full_checkpoint_loads_only_the_thinker(tiny_full_dir):
    saved = _state(tiny_full_dir)
    assert any(k.startswith("talker.") for k in saved) and any(k.startswith("token2wav.") for k in saved)
    loaded = load_model(str(tiny_full_dir))
    model = loaded.model
    assert type(model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    names = [n for n, _ in model.named_parameters()]
    assert not any("talker" in n or "token2wav" in n for n in names)
    # Every thinker tensor came from the checkpoint's thinker.* entries.
    thinker = {k[len("thinker."):]: v for k, v in saved.items() if k.startswith("thinker.")}
    state = model.state_dict()
    assert len(thinker) == len(state)
    assert torch.equal(state["lm_head.weight"], thinker["lm_head.weight"])
    embed = next(k for k in thinker if k.endswith("embed_tokens.weight"))
    assert torch.equal(state["model.language_model.embed_tokens.weight"], thinker[embed])


def _adapter(tmp_path, base_dir, judge_config=None):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    base = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=r"model\.language_model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj")
    torch.manual_seed(1)
    peft_model = get_peft_model(base, config)
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    if judge_config:
        (out / JUDGE_CONFIG_FILE).write_text(json.dumps(judge_config))
    return out


def test_lora_adapter_directory(tmp_path, tiny_dir):
    adapter = _adapter(tmp_path, tiny_dir, {"prompt_format": "rubric-v2"})
    loaded = load_model(str(adapter))
    assert type(loaded.model).__name__ == "PeftModel"
    assert loaded.adapter == str(adapter) and loaded.name == str(tiny_dir)
    assert loaded.judge_config == {"prompt_format": "rubric-v2"}
    merged = load_model(str(adapter), merge_adapter=True).model
    assert type(merged).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    plain = load_model(str(tiny_dir)).model
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[key], plain.state_dict()[key])  # the LoRA delta was merged
    with pytest.raises(ModelLoadError, match="quantized base"):
        load_model(str(adapter), quantization="4bit", merge_adapter=True)


def test_recorded_prompt_format_and_rubric_reach_the_judge(tmp_path):
    from rrm.judge import Judge

    rubric = {"criteria": [{"key": "humour", "title": "Humour", "description": "funny?"}]}
    d = make_tiny(tmp_path / "m", judge_config={"prompt_format": "rubric-v2", "rubric": rubric})
    judge = Judge.from_pretrained(str(d))
    assert judge.format.name == "rubric-v2" and judge.rubric.keys == ["humour"]
    assert Judge.from_pretrained(str(d), prompt_format="omni-rrm").format.name == "omni-rrm"


@pytest.mark.parametrize("quantization,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_bitsandbytes_quantization_leaves_encoders_and_head_unquantized(tiny_dir, quantization, layer):
    model = load_model(str(tiny_dir), quantization=quantization).model
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert kinds["model.language_model.layers.0.self_attn.q_proj"] == layer
    assert kinds["model.visual.blocks.0.attn.q"] == "Linear"
    assert kinds["model.audio_tower.layers.0.self_attn.q_proj"] == "Linear"
    assert kinds["lm_head"] == "Linear"


def test_errors_name_what_to_pass(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="unknown quantization 'fp3'"):
        load_model(str(tmp_path), quantization="fp3")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="'llama' model"):
        load_model(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="pass --model DIR"):
        resolve("Omni-RRM/not-cached-anywhere")


def test_unreachable_hub_gives_one_clear_error(monkeypatch):
    # A closed port on this machine stands in for an unreachable hub.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelLoadError) as info:
        resolve("Omni-RRM/not-cached-anywhere")
    assert "not cached" in str(info.value) and "\n" not in str(info.value)


def test_tiny_fixture_is_small_and_fast():
    import time

    build_thinker()  # warm the imports
    started = time.perf_counter()
    model, processor = build_thinker()
    assert time.perf_counter() - started < 2.0
    assert sum(p.numel() for p in model.parameters()) < 400_000
