"""The weight formats a judge loads in: full precision, bitsandbytes NF4 or int8, and torchao int4.

    kwargs = load_kwargs("int4", "cuda:0", thinker_config)   # -> Qwen2_5OmniThinker....from_pretrained(path, **kwargs)

`int4` is torchao's weight-only int4 for the language model's linear layers (groups of 128 values, HQQ scales),
int8 weight-only for the output head and the input embedding, and the vision and audio encoders left in bf16 (it
computes in bf16 on CPU too). Its layout suits the device: the tile-packed layout of the tinygemm kernel on a CUDA
GPU, torchao's CPU layout on CPU. `int4-gemlite` is the same split with gemlite's Triton kernels for the int4
linears (through torchao; a CUDA GPU and the gemlite package only): faster prefill than tinygemm, by gemlite's
own account, with its own min-max scales. The 4bit and 8bit formats are bitsandbytes', as before; both leave
the encoders and the output head alone.
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import ModelLoadError

QUANTIZATIONS = ("auto", "int4", "int4-gemlite", "4bit", "8bit", "none")
TORCHAO = ("int4", "int4-gemlite")  # the formats torchao loads
BITSANDBYTES = ("4bit", "8bit")  # the formats bitsandbytes loads (NF4, LLM.int8)
# The encoders are small and sensitive to quantization, and the output head decides every token. transformers 5.17
# names the towers `audio_tower` and `visual`, 5.24 `model.audio_tower` and `model.visual`: both are listed.
TOWERS = ["audio_tower", "model.audio_tower", "visual", "model.visual"]
UNQUANTIZED_MODULES = [*TOWERS, "lm_head"]
INT4_GROUP_SIZES = (128, 64, 32)  # the first that divides every linear layer's input width
# Parameter-level names (ending in .weight), so that the q/k/v biases are never handed to the int4 config.
_LANGUAGE_MODEL = r"(model\.)?(language_model\.)?"
INT4_LINEARS = rf"re:{_LANGUAGE_MODEL}layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight"
INT8_HEAD = "lm_head.weight"
INT8_EMBEDDING = rf"re:{_LANGUAGE_MODEL}embed_tokens\.weight"


def pick(quantization: str, device: str) -> str:
    """The format `auto` means on `device`: NF4 on a CUDA GPU (until int4's speed there is measured), else none."""
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization {quantization!r}; known: {', '.join(QUANTIZATIONS)}")
    if quantization == "auto":
        return "4bit" if device.startswith("cuda") else "none"
    return quantization


def int4_group_size(text_config) -> int:
    """The largest group size of INT4_GROUP_SIZES that divides the input width of every language-model linear."""
    heads = getattr(text_config, "num_attention_heads", 0)
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // max(heads, 1)
    widths = {text_config.hidden_size, text_config.intermediate_size, heads * head_dim}
    for size in INT4_GROUP_SIZES:
        if all(w % size == 0 for w in widths):
            return size
    raise ModelLoadError(f"--quantization int4 needs linear layers whose input widths ({sorted(widths)}) are "
                         f"multiples of {INT4_GROUP_SIZES[-1]}")


def _int4_config(quantization: str, group: int, device: str):
    """torchao's config for the int4 linears: gemlite's, tinygemm's tile-packed layout on CUDA, or the CPU one."""
    if quantization == "int4-gemlite":
        if not device.startswith("cuda"):
            raise ModelLoadError(f"--quantization int4-gemlite needs a CUDA GPU (gemlite's kernels are Triton), not "
                                 f"{device}: use --quantization int4")
        try:
            import gemlite  # noqa: F401
        except ImportError:
            raise ModelLoadError("--quantization int4-gemlite needs gemlite: pip install gemlite") from None
        from torchao.prototype.quantization.quant_api import UIntxWeightOnlyConfig

        # Inductor's settings stay rrm's own, so that every format compiles alike.
        return UIntxWeightOnlyConfig(group_size=group, bit_width=4, set_inductor_config=False)
    if device.startswith("cuda"):
        from torchao.quantization import Int4WeightOnlyConfig

        return Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d",
                                    int4_choose_qparams_algorithm="hqq")
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group, int4_choose_qparams_algorithm="hqq")


def torchao_config(text_config, device: str, quantization: str = "int4"):
    """transformers' TorchAoConfig for `int4` or `int4-gemlite`: int4 linears, int8 head and embedding."""
    try:
        from torchao.quantization import FqnToConfig, Int8WeightOnlyConfig
    except ImportError:
        raise ModelLoadError(f"--quantization {quantization} needs torchao: pip install torchao") from None
    from transformers import TorchAoConfig

    int4 = _int4_config(quantization, int4_group_size(text_config), device)
    rules = FqnToConfig(OrderedDict([(INT4_LINEARS, int4), (INT8_HEAD, Int8WeightOnlyConfig()),
                                     (INT8_EMBEDDING, Int8WeightOnlyConfig())]))
    return TorchAoConfig(rules, modules_to_not_convert=TOWERS, include_input_output_embeddings=True)


def bitsandbytes_config(quantization: str, compute):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"--quantization {quantization} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                                  bnb_4bit_use_double_quant=True, llm_int8_skip_modules=UNQUANTIZED_MODULES)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=UNQUANTIZED_MODULES)


def load_kwargs(quantization: str, device: str, config=None) -> dict:
    """from_pretrained's dtype, device map and quantization config; `config` (the model's) is needed for int4."""
    import torch

    # int4 computes in bf16 on CPU too: torchao's CPU int4 kernel, handed fp32 activations, took 12x a dense
    # layer's time for one token and 180x for 256 (a 896x4864 layer); in bf16, a fifth of bf16's for one token.
    compute = torch.bfloat16 if device.startswith("cuda") or quantization in TORCHAO else torch.float32
    kwargs = {"dtype": compute, "device_map": {"": device}}
    if quantization in TORCHAO:
        text = config.get_text_config() if config is not None else None
        if text is None:
            raise ModelLoadError(f"--quantization {quantization} needs the model's config to choose its group size")
        kwargs["quantization_config"] = torchao_config(text, device, quantization)
    elif quantization in BITSANDBYTES:
        kwargs["quantization_config"] = bitsandbytes_config(quantization, compute)
    return kwargs


__all__ = ["QUANTIZATIONS", "TORCHAO", "BITSANDBYTES", "TOWERS", "UNQUANTIZED_MODULES", "pick", "int4_group_size",
           "torchao_config", "load_kwargs"]
