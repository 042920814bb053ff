"""What differs between model architectures, in one place.

Every stage of the workbench works on "a Hugging Face causal LM whose decoder blocks form a
``ModuleList``". What differs between families — where that list sits, what its attention and
MLP sub-layers are called, which attention implementation loads, which LoRA targets exist,
whether a 4D (tree) attention mask is honoured, which tokens end a turn — is declared here,
one :class:`Family` entry per ``config.model_type`` (in the spirit of pyvene's
per-architecture dicts and TransformerLens' architecture adapters). A model type without an
entry gets :data:`GENERIC`, whose look-ups search: the decoder list is the ``ModuleList``
whose length is ``config.num_hidden_layers``, sub-layers are found by the usual names.

Adding a family is one entry in :data:`FAMILIES` plus its tiny-model test
(tests/unit/model/test_families.py); a family that cannot be supported gets ``refuse="reason"`` and is
refused at load with that one line.

Public functions (all take a model, a PEFT wrapper of one, or a config where noted):

- :func:`family`, :func:`model_type`, :func:`text_config`
- :func:`check_supported` — raises :class:`ArchError` with the family's reason
- :func:`attn_implementation` — ``"sdpa"`` where the model class supports it, else ``"eager"``
- :func:`decoder_layers`, :func:`sublayer`, :func:`final_norm`, :func:`body_and_head`
- :func:`tree_mask_ok` — whether the exact readout's tree-masked forward is exact for a
  sequence of a given length (no ALiBi, no sliding window shorter than sequence + trie)
- :func:`sliding_window` — the shortest attention window in effect (None = full attention)
- :func:`lora_targets` — default LoRA target modules (peft's per-architecture map, else
  ``all-linear``); :func:`linear_dims` — (in, out) features of a Linear or GPT-2 ``Conv1D``
- :func:`stop_token_strings` — chat end-of-turn tokens that stop generation
- :func:`kv_kwargs`, :func:`kv_cache` — pass and read a KV cache under the keyword this
  transformers version uses (``cache`` since 5.2x; ``past_key_values`` before, removed in 5.40)
- :func:`load_options`, :func:`parse_max_memory` — sharded (accelerate) / quantized
  (bitsandbytes, CUDA only) loading; :func:`input_device`, :func:`kv_bytes_per_token`,
  :func:`free_memory` — where inputs go and what a batch costs

Public entry: :func:`family` (the rest are look-ups through it).
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch

AUTO = "auto"  # LoRA targets: the family's default (see lora_targets)
ALL_LINEAR = "all-linear"


class ArchError(RuntimeError):
    """An architecture that cannot be used, with a one-line reason."""


@dataclass(frozen=True)
class Family:
    """How one architecture is laid out. Paths are dotted attribute paths; ``None`` = search.

    - ``layers``: the decoder ``ModuleList``, from the top ``*ForCausalLM`` module.
    - ``attn`` / ``mlp``: candidate paths inside one block of the module whose *output* is the
      sub-layer's contribution to the residual stream (before the residual add). ``()`` =
      the family has no such sub-layer to patch.
    - ``norm``: the final norm, from the decoder body (``body_and_head(model)[0]``).
    - ``alibi``: position bias built from a 2D padding mask (a 4D tree mask breaks it).
    - ``lora``: default LoRA targets; ``None`` = peft's map for the model type, else all-linear.
    - ``refuse``: a reason this family cannot be used (refused at load).
    """

    layers: str | None = None
    attn: tuple[str, ...] = ("self_attn", "attn", "attention", "self_attention")
    mlp: tuple[str, ...] = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
    norm: str | None = None
    alibi: bool = False
    lora: tuple[str, ...] | None = None
    stop_tokens: tuple[str, ...] = ()
    refuse: str | None = None


GENERIC = Family()
_LLAMA_LIKE = Family(layers="model.layers", attn=("self_attn",), mlp=("mlp",), norm="norm")

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "mixtral": Family(layers="model.layers", attn=("self_attn",), mlp=("mlp", "block_sparse_moe"), norm="norm"),
    "qwen2_moe": _LLAMA_LIKE,
    "qwen3_moe": _LLAMA_LIKE,
    "gemma": Family(layers="model.layers", attn=("self_attn",), mlp=("mlp",), norm="norm", stop_tokens=("<end_of_turn>",)),
    "gemma2": Family(layers="model.layers", attn=("self_attn",), mlp=("mlp",), norm="norm", stop_tokens=("<end_of_turn>",)),
    "gemma3_text": Family(layers="model.layers", attn=("self_attn",), mlp=("mlp",), norm="norm", stop_tokens=("<end_of_turn>",)),
    "gemma3": Family(layers="model.language_model.layers", attn=("self_attn",), mlp=("mlp",), norm="norm",
                     stop_tokens=("<end_of_turn>",)),
    "phi": Family(layers="model.layers", attn=("self_attn",), mlp=("mlp",), norm="final_layernorm"),
    "gpt2": Family(layers="transformer.h", attn=("attn",), mlp=("mlp",), norm="ln_f"),
    "gptj": Family(layers="transformer.h", attn=("attn",), mlp=("mlp",), norm="ln_f"),
    "gpt_neox": Family(layers="gpt_neox.layers", attn=("attention",), mlp=("mlp",), norm="final_layer_norm"),
    # OPT has no MLP module: fc2's output is the MLP's contribution (dropout is off in eval)
    "opt": Family(layers="model.decoder.layers", attn=("self_attn",), mlp=("fc2",), norm="final_layer_norm"),
    # Bloom's attention and MLP modules add the residual themselves: their dense output
    # projections are the contributions. ALiBi is built from the 2D mask.
    "bloom": Family(layers="transformer.h", attn=("self_attention.dense",), mlp=("mlp.dense_4h_to_h",), norm="ln_f", alibi=True),
    "falcon": Family(layers="transformer.h", attn=("self_attention",), mlp=("mlp",), norm="ln_f"),
    "mpt": Family(layers="transformer.blocks", attn=("attn",), mlp=("ffn",), norm="norm_f", alibi=True),
}

_CHAT_STOPS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


# --------------------------------------------------------------------------------------
# configs and families
# --------------------------------------------------------------------------------------
def base_model(model):
    """The model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _config(obj):
    return obj if not isinstance(obj, torch.nn.Module) else base_model(obj).config


def attention_implementation(obj) -> str | None:
    """The transformers attention implementation a model (or its config) runs: ``sdpa``,
    ``eager``, ``metacog_ragged`` (:mod:`metacog.model.ragged`), …; None where unset."""
    return getattr(_config(obj), "_attn_implementation", None)


def text_config(obj):
    """The text (decoder) config of a model or config (multimodal configs have one inside)."""
    cfg = _config(obj)
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def model_type(obj) -> str:
    """``config.model_type`` of a model, PEFT wrapper or config (``""`` when it has none);
    the key of :data:`FAMILIES`."""
    return str(getattr(_config(obj), "model_type", "") or "")


def family(obj) -> Family:
    """The family entry of a model or config (:data:`GENERIC` when it has none)."""
    return FAMILIES.get(model_type(obj), FAMILIES.get(str(getattr(text_config(obj), "model_type", "")), GENERIC))


def check_supported(obj) -> None:
    """Raise :class:`ArchError` for a family declared unusable, or one that is not a
    decoder-only causal LM (encoder-decoder models have no single decoder stream here)."""
    fam = family(obj)
    if fam.refuse:
        raise ArchError(f"{model_type(obj)}: {fam.refuse}")
    cfg = _config(obj)
    if getattr(cfg, "is_encoder_decoder", False):
        raise ArchError(f"{model_type(obj)} is an encoder-decoder model; metacog reads one decoder-only stream")


def attn_implementation(config) -> str:
    """``"sdpa"`` when the causal-LM class of ``config`` declares ``_supports_sdpa``, else
    ``"eager"`` (Gemma 2 and Bloom: asking them for SDPA fails to load). Unknown classes
    (remote code) get ``"sdpa"`` when they say so, else eager."""
    from transformers import AutoModelForCausalLM

    try:
        cls = AutoModelForCausalLM._model_mapping[type(config)]
    except Exception:
        return "eager"
    return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"


# --------------------------------------------------------------------------------------
# module look-ups
# --------------------------------------------------------------------------------------
def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks: the family's declared path, else the ``ModuleList`` whose length is
    ``num_hidden_layers`` (the first in module order). Raises :class:`ArchError`."""
    m = base_model(model)
    fam = family(m)
    if fam.layers:
        try:
            obj = _get(m, fam.layers)
            if isinstance(obj, torch.nn.ModuleList):
                return obj
        except AttributeError:
            pass
    n = getattr(text_config(m), "num_hidden_layers", None)
    for _, mod in m.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and (n is None or len(mod) == int(n)) and len(mod):
            return mod
    raise ArchError(f"cannot find the decoder layers of {type(m).__name__} (no ModuleList of num_hidden_layers={n} blocks)")


def sublayer(block, component: str, fam: Family | None = None):
    """The module of ``block`` whose output is the ``component`` ('attn' or 'mlp')
    contribution to the residual stream, or None where the family has none."""
    names = (fam or GENERIC).attn if component == "attn" else (fam or GENERIC).mlp
    for name in names:
        try:
            m = _get(block, name)
        except AttributeError:
            continue
        if isinstance(m, torch.nn.Module):
            return m
    return None


def as_btd(h: torch.Tensor, batch: int | None) -> torch.Tensor:
    """A sub-layer output as ``[batch, tokens, d]``: 3D outputs as they are; 2D outputs (OPT
    runs its MLP on the flattened ``[batch * tokens, d]``) viewed back with ``batch`` rows."""
    if h.dim() == 2 and batch:
        return h.view(batch, -1, h.shape[-1])
    return h


def body_and_head(model):
    """(decoder body returning ``last_hidden_state``, function hidden ``[..., d]`` -> float
    logits ``[..., V]`` with the family's final-logit soft-capping)."""
    m = base_model(model)
    body = m.get_decoder() if hasattr(m, "get_decoder") else m.model
    head = m.get_output_embeddings()
    cap = getattr(text_config(m), "final_logit_softcapping", None)

    def to_logits(h: torch.Tensor) -> torch.Tensor:
        z = head(h).float()
        if cap:
            z = torch.tanh(z / cap) * cap
        return z

    return body, to_logits


def final_norm(model, body=None):
    """The body's final norm module (its output is the state the LM head reads), or None."""
    body = body if body is not None else body_and_head(model)[0]
    fam = family(model)
    for name in ((fam.norm,) if fam.norm else ()) + ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f"):
        m = getattr(body, name, None)
        if isinstance(m, torch.nn.Module):
            return m
    return None


# --------------------------------------------------------------------------------------
# attention masks
# --------------------------------------------------------------------------------------
def sliding_window(model) -> int | None:
    """The shortest sliding attention window of any layer (None = every layer attends to the
    whole sequence). Mistral-style configs set ``sliding_window`` (unless ``use_sliding_window``
    is False); Gemma 2/3 and Qwen mark layers with ``layer_types``."""
    cfg = text_config(model)
    w = getattr(cfg, "sliding_window", None)
    if not w:
        return None
    if getattr(cfg, "use_sliding_window", True) is False:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None and not any("sliding" in str(t) for t in types):
        return None
    return int(w)


def tree_mask_ok(model, n_keys: int) -> bool:
    """Whether a forward with a custom 4D attention mask over ``n_keys`` keys (prefix + trie
    nodes + look-ahead slots) computes exactly what the plain sequences would: not for ALiBi
    families (their position bias comes from a 2D mask), and not where a sliding window could
    drop keys the mask spans (the cache keeps only ``window - 1`` keys)."""
    if family(model).alibi:
        return False
    w = sliding_window(model)
    return w is None or n_keys < w - 1


# --------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------
def linear_dims(m) -> tuple[int, int] | None:
    """(in_features, out_features) of a ``torch.nn.Linear`` or a GPT-2-style ``Conv1D``
    (weight ``[in, out]``), else None."""
    if isinstance(m, torch.nn.Linear):
        return int(m.in_features), int(m.out_features)
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # pragma: no cover
        Conv1D = ()
    if Conv1D and isinstance(m, Conv1D):
        return int(m.weight.shape[0]), int(m.weight.shape[1])
    base = getattr(m, "base_layer", None)  # a PEFT LoRA layer around one
    if isinstance(base, torch.nn.Module) and base is not m:
        return linear_dims(base)
    return None


def default_lora_targets(mtype: str, available) -> tuple[str, ...]:
    """Default LoRA targets of a model type given the last names of its linear layers: the
    family's own, else peft's per-architecture map
    (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``) when every name it lists is
    there (Phi-3 and Qwen2-MoE have no entry; fused-QKV models list their fused name), else
    ``("all-linear",)``. Shared by the PEFT and the mlx backends."""
    fam = FAMILIES.get(mtype, GENERIC)
    if fam.lora:
        return tuple(fam.lora)
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP
    except Exception:  # pragma: no cover
        MAP = {}
    want = MAP.get(mtype)
    if want and all(w in set(available) for w in want):
        return tuple(want)
    return (ALL_LINEAR,)


def lora_targets(model) -> tuple[str, ...]:
    """:func:`default_lora_targets` of a Hugging Face model."""
    have = {n.rsplit(".", 1)[-1] for n, m in base_model(model).named_modules() if linear_dims(m) is not None}
    mtype = model_type(model) if model_type(model) in FAMILIES else str(getattr(text_config(model), "model_type", ""))
    return default_lora_targets(mtype, have)


def resolve_targets(model, modules) -> tuple[str, ...]:
    """``modules`` with ``auto`` replaced by :func:`lora_targets`."""
    mods = tuple(modules)
    return lora_targets(model) if mods == (AUTO,) else mods


# --------------------------------------------------------------------------------------
# placement: sharded (accelerate) and quantized (bitsandbytes) loading
# --------------------------------------------------------------------------------------
def parse_max_memory(text: str) -> dict:
    """``"0=70GiB,1=70GiB,cpu=200GiB"`` → ``{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}`` (the
    ``max_memory`` of ``from_pretrained``: GPU indices, ``cpu``, ``mps`` or ``disk``).
    Raises ValueError naming the bad part."""
    out: dict = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"max_memory parts are DEVICE=SIZE (e.g. 0=20GiB,cpu=64GiB), not {part!r}")
        dev, size = (x.strip() for x in part.split("=", 1))
        import re

        if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", size):
            raise ValueError(f"max_memory size {size!r} for {dev!r}: a number and a unit such as 500MiB or 20GiB")
        if dev.isdigit():
            out[int(dev)] = size
        elif dev in ("cpu", "mps", "disk"):
            out[dev] = size
        else:
            raise ValueError(f"max_memory device {dev!r}: a GPU index (0, 1, ...), cpu, mps or disk")
    if not out:
        raise ValueError("max_memory is empty")
    return out


def load_options(settings, device: torch.device, dtype: torch.dtype) -> dict:
    """Extra ``from_pretrained`` arguments for ``settings`` (a ModelSettings): ``{}`` for the
    plain load (the caller moves the model to ``device``); with ``device_map="auto"`` the
    layers are spread by accelerate over GPUs, then CPU, then disk (``max_memory`` caps each,
    ``offload_dir`` holds what fits nowhere); with ``quantize`` 8bit/4bit a bitsandbytes
    config (NF4 with ``dtype`` compute for 4-bit, the QLoRA setting). Quantization needs CUDA
    and bitsandbytes: refused with :class:`ArchError` otherwise.

    Raises:
        ArchError: ``quantize`` without a CUDA device, or without the bitsandbytes package."""
    kw: dict = {}
    q = getattr(settings, "quantize", None)
    if q:
        if not torch.cuda.is_available() or device.type != "cuda":
            raise ArchError(f"{q} quantization (bitsandbytes) needs a CUDA GPU; this run has device {device}. "
                            "Load unquantized (a smaller dtype: --dtype bfloat16) or shard with --device-map auto")
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ArchError(f"{q} quantization needs the bitsandbytes package: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if q == "8bit" else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True))
        kw["device_map"] = "auto" if getattr(settings, "device_map", None) == "auto" else {"": device.index or 0}
    if getattr(settings, "device_map", None) == "auto":
        kw["device_map"] = "auto"
        if settings.max_memory:
            kw["max_memory"] = parse_max_memory(settings.max_memory)
        if settings.offload_dir:
            kw["offload_folder"] = str(settings.offload_dir)
    return kw


def kv_bytes_per_token(model) -> int:
    """Bytes of keys + values one token adds to the KV cache over all layers:
    ``2 × layers × kv_heads × head_dim × element size`` (the cache's dtype = the model's)."""
    cfg = text_config(model)
    L = int(cfg.num_hidden_layers)
    heads = int(getattr(cfg, "num_attention_heads", 1) or 1)
    kvh = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hd = int(getattr(cfg, "head_dim", None) or int(cfg.hidden_size) // heads)
    el = next(base_model(model).parameters()).element_size() if isinstance(model, torch.nn.Module) else 2
    return 2 * L * kvh * hd * max(int(el), 2)


def free_memory(device: torch.device) -> int | None:
    """Free bytes where ``device``'s tensors live: CUDA ``mem_get_info``; CPU (and Apple's
    unified memory) ``MemAvailable`` of /proc/meminfo or the page count; None if unknown."""
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def input_device(model) -> torch.device:
    """Where a model's inputs go: the input embedding's device (the first shard), which for a
    model on one device is its only device."""
    m = base_model(model)
    try:
        dev = m.get_input_embeddings().weight.device
    except Exception:
        dev = next(m.parameters()).device
    if dev.type == "meta":  # offloaded to disk by accelerate: it runs on the main device
        hooked = getattr(getattr(m.get_input_embeddings(), "_hf_hook", None), "execution_device", None)
        dev = torch.device(hooked if hooked is not None else "cpu")
    return dev


# --------------------------------------------------------------------------------------
# generation (TransformerLens hook names: metacog.model.lens)
# --------------------------------------------------------------------------------------
def stop_token_strings(model=None) -> tuple[str, ...]:
    """End-of-turn token strings that end a generated answer (those the tokenizer has)."""
    fam = family(model) if model is not None else GENERIC
    return tuple(dict.fromkeys(fam.stop_tokens + _CHAT_STOPS))


def describe(model) -> dict:
    """The adapter's view of a model, for model.json and error messages."""
    return {
        "model_type": model_type(model),
        "family": next((k for k, v in FAMILIES.items() if v is family(model)), "generic"),
        "sliding_window": sliding_window(model),
        "alibi": family(model).alibi,
        "attn_implementation": attention_implementation(model),
    }


@functools.lru_cache(maxsize=None)
def _cache_keyword(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def kv_kwargs(module, cache) -> dict:
    """``{"cache": cache}`` or ``{"past_key_values": cache}``: the keyword under which
    ``module``'s forward (a model, its body or one decoder block) takes a KV cache.
    transformers renamed ``past_key_values`` to ``cache`` (5.2x warns on the old name on every
    call and removes it in 5.40, where it would fall silently into ``**kwargs`` of a decoder
    block); the keyword is read from the class's own signature, once per class."""
    return {_cache_keyword(type(module)): cache}


def kv_cache(out):
    """The KV cache a forward returned: ``out.cache`` (transformers ≥ 5.2x) or
    ``out.past_key_values`` (before); None when it returned none."""
    c = out.get("cache") if hasattr(out, "get") else None
    return c if c is not None else getattr(out, "past_key_values", None)
