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


# ----------------------------------------------------------------------------- the release's layouts

@pytest.fixture(scope="module")
def released(tmp_path_factory):
    from rrm.testing import make_released

    root = tmp_path_factory.mktemp("released")
    return {layout: make_released(root / layout, layout) for layout in ("swift-lora", "swift-merged", "thinker")}


def _logits(loaded, text="Which answer is right?"):
    inputs = loaded.processor(text=[text], return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**inputs).logits


def test_released_layouts_are_written_as_the_release_wrote_them(released):
    merged = released["swift-merged"]
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((merged / s).exists() for s in shards)
    names = set(index["weight_map"])
    assert {"thinker.model.layers.0.self_attn.q_proj.weight", "thinker.visual.merger.mlp.0.weight",
            "thinker.audio_tower.proj.weight", "thinker.lm_head.weight"} <= names
    assert any(n.startswith("talker.") for n in names) and any(n.startswith("token2wav.") for n in names)
    config = json.loads((merged / "config.json").read_text())
    text = config["thinker_config"]["text_config"]
    assert "rope_scaling" in text and "rope_parameters" not in text and "torch_dtype" in config
    adapter = json.loads((released["swift-lora"] / "adapter_config.json").read_text())
    assert adapter["target_modules"].startswith("^(thinker.model") and "lorap_lr_ratio" in adapter
    keys = load_file(released["swift-lora"] / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.thinker.") for k in keys)


@pytest.mark.parametrize("layout", ["swift-merged", "thinker"])
def test_released_checkpoints_load_every_thinker_weight(released, layout):
    loaded = load_model(str(released[layout]))
    assert type(loaded.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    saved = _state(released[layout])
    prefix = "thinker." if layout == "swift-merged" else ""
    state = loaded.model.state_dict()
    assert len(state) == sum(k.startswith(prefix) for k in saved)
    for old, new in [("model.layers.1.mlp.down_proj.weight", "model.language_model.layers.1.mlp.down_proj.weight"),
                     ("visual.merger.mlp.2.weight", "model.visual.merger.mlp.2.weight"),
                     ("audio_tower.proj.weight", "model.audio_tower.proj.weight"),
                     ("lm_head.weight", "lm_head.weight")]:
        assert torch.equal(state[new], saved[prefix + old]), new


def test_an_ms_swift_lora_adapter_loads_as_its_native_twin(released):
    """The ms-swift adapter (regex targets over 4.5x names of the full model) gives the same logits as the same
    weights saved by PEFT on this thinker, and not the base's."""
    swift = load_model(str(released["swift-lora"]))
    native = load_model(str(released["swift-lora"].parent / "native-adapter"))
    base = load_model(str(released["swift-lora"].parent / "base"))
    assert swift.name == str(released["swift-lora"].parent / "base")
    torch.testing.assert_close(_logits(swift), _logits(native), rtol=0, atol=0)
    assert not torch.allclose(_logits(swift), _logits(base))
    merged = load_model(str(released["swift-lora"]), merge_adapter=True)
    torch.testing.assert_close(_logits(merged), _logits(native), rtol=1e-4, atol=1e-4)  # merged: float rounding


@pytest.mark.parametrize("layout", ["swift-lora", "swift-merged", "thinker"])
def test_released_layouts_judge_through_the_release_profile(released, layout):
    from rrm.judge import GenerationSettings, Judge
    from rrm.release import EVAL_LIMITS
    from rrm.schema import MediaItem, Sample

    from .media_files import make_image

    judge = Judge.from_pretrained(str(released[layout]),
                                  generation=GenerationSettings(max_new_tokens=6, min_new_tokens=6))
    assert judge.format.name == "omni-rrm-release" and judge.limits == EVAL_LIMITS
    assert judge.format.system == "You are a helpful assistant."
    image = make_image(released[layout].parent / f"{layout}.png", (64, 48))
    j = judge.judge(Sample("What is shown?", "A red square.", "A cat.", media=[MediaItem("image", str(image))]),
                    swap_check=True)
    assert j.timing.generated_tokens == 6 and j.swap.other.timing.generated_tokens == 6


def test_an_adapters_missing_base_is_looked_for_as_ms_swift_records_it(released, tmp_path, monkeypatch):
    import shutil

    adapter = shutil.copytree(released["swift-lora"], tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/mnt/authors/models/Qwen/Qwen2.5-Omni-7B"  # not on this machine
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "args.json").write_text(json.dumps({"model": str(released["swift-lora"].parent / "base")}))
    assert load_model(str(adapter)).name == str(released["swift-lora"].parent / "base")  # from args.json
    (adapter / "args.json").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(adapter))
    message = str(info.value)
    assert "Qwen/Qwen2.5-Omni-7B" in message and "base_model_name_or_path" in message and "\n" not in message


def test_a_judge_trained_on_from_an_adapter_merges_it_first(released, tmp_path):
    """An adapter whose base is another adapter (continued training): the inner one is merged, then ours on top."""
    from rrm.testing import make_adapter

    inner = released["swift-lora"].parent / "native-adapter"
    outer = make_adapter(tmp_path / "outer", inner, seed=5)
    loaded = load_model(str(outer))
    assert loaded.adapter == str(outer) and loaded.name == str(released["swift-lora"].parent / "base")
    assert not torch.allclose(_logits(loaded), _logits(load_model(str(inner))))
    with pytest.raises(ModelLoadError, match="--quantization none"):
        load_model(str(outer), quantization="4bit")
