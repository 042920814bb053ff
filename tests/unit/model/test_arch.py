"""Large-model paths of the architecture adapter, as far as a CPU can test them: a model
split by accelerate (``device_map="auto"`` with a ``max_memory`` cap, the rest offloaded to
disk) gives the same readout, captured states and patching cells as the same model in one
piece; quantized loading is refused without CUDA; the memory estimate refuses with numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tokenizer
from families import save

from metacog.model import arch
from metacog import patching as P
from metacog.data import prompts
from metacog.readout.values import read_values
from metacog.model.loading import ModelError, clear_loaded, load_model
from metacog.core.settings import ModelSettings

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save("llama", make_tokenizer(), tmp_path_factory.mktemp("shard") / "llama")


@pytest.fixture(scope="module")
def whole_and_split(model_dir, tmp_path_factory):
    clear_loaded()
    whole = load_model(ModelSettings(model=str(model_dir), device="cpu", dtype="float32", threads=1))
    # ~260 KiB of CPU: the embeddings stay in memory, the blocks, norm and head go to disk
    split = load_model(ModelSettings(model=str(model_dir), device="cpu", dtype="float32", threads=1, device_map="auto",
                                     max_memory="cpu=260KiB", offload_dir=str(tmp_path_factory.mktemp("offload"))))
    return whole, split


def test_split_model_really_is_split(whole_and_split):
    _, split = whole_and_split
    placed = set(split.model.hf_device_map.values())
    assert "disk" in placed and "cpu" in placed
    assert split.device == torch.device("cpu")  # inputs go where the embeddings are


def test_split_model_reads_the_same_values_and_states(whole_and_split):
    whole, split = whole_and_split
    tok = whole.tokenizer
    pre = [tok.encode("Question: What is the capital of Peru? Answer: Lima. Confidence: "), tok.encode("Confidence: ")]
    cap = [[1, 3], [0, 1]]
    a, b = read_values(whole, pre, capture=cap), read_values(split, pre, capture=cap)
    np.testing.assert_allclose(b.probs, a.probs, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(b.states, a.states, rtol=1e-5, atol=1e-6)


def test_split_model_patches_the_same_cells(whole_and_split):
    whole, split = whole_and_split

    def pair(lm):
        def side(q, a, label):
            e = prompts.encode_inline(lm.tokenizer, lm.is_chat, q, a)
            return P.Side(lm, list(e.ids), dict(e.positions), label, item_id=label)

        return P.Pair(0, side("What is the capital of France?", "Paris", "a"), side("What is the capital of Japan?", "Tokyo", "b"), "item")

    spec = P.PatchSpec(layers=(0, 1, 2), positions=("confidence", "last_prompt"), components=("resid", "attn", "mlp"))
    ref = P.patch_pair(pair(whole), spec, "reference").sort_values(["component", "layer", "position"])
    for method in ("fast", "reference"):
        got = P.patch_pair(pair(split), spec, method).sort_values(["component", "layer", "position"])
        np.testing.assert_allclose(np.stack(got["probs"]), np.stack(ref["probs"]), rtol=1e-4, atol=1e-12)


def test_quantized_loading_needs_cuda(model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    clear_loaded()
    with pytest.raises(ModelError, match="4bit quantization .* needs a CUDA GPU"):
        load_model(ModelSettings(model=str(model_dir), device="cpu", dtype="float32", threads=1, quantize="4bit"))


@pytest.mark.parametrize("text,msg", [("cpu:2GiB", "DEVICE=SIZE"), ("cpu=lots", "number and a unit"), ("gpu0=2GiB", "GPU index"),
                                      ("", "empty")])
def test_bad_max_memory_is_refused(text, msg):
    with pytest.raises(ValueError, match=msg):
        arch.parse_max_memory(text)


def test_max_memory_needs_device_map():
    with pytest.raises(ValueError, match="device_map auto"):
        ModelSettings(max_memory="cpu=1GiB")
    assert arch.parse_max_memory("0=70GiB, 1=70GiB,cpu=200GiB") == {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}


def test_kv_bytes_and_memory_refusal(whole_and_split, monkeypatch):
    from metacog.stages.study import check_memory
    from metacog.core.workspace import WorkspaceError

    whole, _ = whole_and_split
    cfg = whole.model.config  # 2 layers, 2 KV heads of 16 dims, float32
    assert arch.kv_bytes_per_token(whole.model) == 2 * 2 * 2 * 16 * 4
    need = check_memory(whole, batch_size=8, n_tokens=100)
    assert need > 0 and cfg.num_hidden_layers == 2
    monkeypatch.setattr(arch, "free_memory", lambda device: need - 1)
    with pytest.raises(WorkspaceError, match=r"not enough memory on cpu .* GiB is free; use a smaller --batch-size"):
        check_memory(whole, batch_size=8, n_tokens=100)
    # a long prompt: the answers stage's generation batch (twice the rows, prompt + new tokens)
    # needs more than the readout batch, and the launch check says which one does not fit
    from metacog.stages.answers import generation_rows

    assert generation_rows(8) == 16 and generation_rows(32) == 64 and generation_rows(1000) == 64
    monkeypatch.setattr(arch, "free_memory", lambda device: 1 << 40)
    read = check_memory(whole, batch_size=8, n_tokens=2000)
    both = check_memory(whole, batch_size=8, n_tokens=2000, max_new_tokens=512)
    assert both > read
    assert check_memory(whole, batch_size=8, n_tokens=100, max_new_tokens=32) == need  # short prompts: the readout decides
    monkeypatch.setattr(arch, "free_memory", lambda device: both - 1)
    with pytest.raises(WorkspaceError, match=r"for a generation batch: .* \(16 prompts × ~2512 tokens"):
        check_memory(whole, batch_size=8, n_tokens=2000, max_new_tokens=512)
