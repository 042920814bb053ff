"""The adapter structural check reads every tensor kind peft saves (lora_A/B,
lora_embedding_A/B, modules_to_save, saved embed_tokens/lm_head) and refuses an adapter from a
model whose vocabulary was resized in one line saying what differs (issue 11)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from conftest import make_tiny_llama, make_tokenizer


def _adapter(path, extra_tokens: int, target, modules_to_save=None, save_embedding_layers=False, d: int = 32):
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer()
    m = make_tiny_llama(tok, d=d)
    if extra_tokens:
        m.resize_token_embeddings(len(tok) + extra_tokens, mean_resizing=False)
    pm = get_peft_model(m, LoraConfig(r=4, target_modules=target, modules_to_save=modules_to_save))
    pm.save_pretrained(str(path), save_embedding_layers=save_embedding_layers)
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        return sorted(f.keys())


CASES = {
    "lora_embedding": dict(target=["q_proj", "embed_tokens"]),
    "saved_embedding_layers": dict(target=["q_proj", "embed_tokens"], save_embedding_layers=True),
    "modules_to_save_lm_head": dict(target=["q_proj"], modules_to_save=["lm_head"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resized_vocabulary_is_refused_in_one_line(tiny_lm, tmp_path, case):
    from metacog.finetune.evaluate import check_adapter
    from metacog.finetune.runs import RunError

    keys = _adapter(tmp_path, 3, **CASES[case])
    kinds = {"lora_embedding": "lora_embedding_A", "saved_embedding_layers": "embed_tokens.base_layer.weight",
             "modules_to_save_lm_head": "lm_head.weight"}
    assert any(kinds[case] in k for k in keys), keys  # the tensor kind under test is really saved
    n = len(tiny_lm.tokenizer)
    with pytest.raises(RunError) as ei:
        check_adapter(tmp_path, tiny_lm.weights_hash, tiny_lm)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"vocabulary of {n + 3} tokens" in msg and f"has {n}" in msg, msg


def test_patching_check_refuses_resized_vocabulary(tiny_lm, tmp_path):
    from metacog import patching as P

    _adapter(tmp_path, 3, target=["q_proj", "embed_tokens"], save_embedding_layers=True)
    with pytest.raises(P.PatchError, match="vocabulary of"):
        P.check_adapter(tiny_lm, tmp_path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matching_adapter_with_every_tensor_kind_passes_and_loads(tiny_lm, tmp_path, case):
    from peft import PeftModel

    from metacog.finetune.evaluate import check_adapter

    _adapter(tmp_path, 0, **CASES[case])
    check_adapter(tmp_path, tiny_lm.weights_hash, tiny_lm)
    base = make_tiny_llama(tiny_lm.tokenizer)
    model = PeftModel.from_pretrained(base, str(tmp_path))  # and peft agrees: it loads
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == len(tiny_lm.tokenizer)


def test_hidden_size_mismatch_still_named(tiny_lm, tmp_path):
    from metacog.finetune.evaluate import check_adapter
    from metacog.finetune.runs import RunError

    _adapter(tmp_path, 0, target=["q_proj", "embed_tokens"], d=48)
    with pytest.raises(RunError, match="another base model"):
        check_adapter(tmp_path, tiny_lm.weights_hash, tiny_lm)
