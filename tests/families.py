"""Tiny random models of every major decoder-only family, built from transformers config
classes (width 64, 2 layers, the in-test tokenizer of conftest.make_tokenizer)."""
from __future__ import annotations

import torch

D, L, H = 64, 2, 4

# Mistral's window is set below prompt + trie, so the readout must leave the tree path
SMALL_WINDOW = 24


def _common(tok) -> dict:
    return dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _llama_like(cls_cfg, tok, **kw):
    c = _common(tok)
    c.update(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2,
             max_position_embeddings=512, tie_word_embeddings=False)
    c.update(kw)
    return cls_cfg(**c)


def config(name: str, tok):
    import transformers as T

    c = _common(tok)
    if name == "llama":
        return _llama_like(T.LlamaConfig, tok)
    if name == "qwen2":
        return _llama_like(T.Qwen2Config, tok)
    if name == "qwen3":
        return _llama_like(T.Qwen3Config, tok, head_dim=16)
    if name == "gemma2":
        return _llama_like(T.Gemma2Config, tok, head_dim=16, sliding_window=4096, query_pre_attn_scalar=16)
    if name == "gemma3":
        return _llama_like(T.Gemma3TextConfig, tok, head_dim=16, sliding_window=SMALL_WINDOW, query_pre_attn_scalar=16,
                           layer_types=["sliding_attention", "full_attention"])
    if name == "mistral":
        return _llama_like(T.MistralConfig, tok, sliding_window=SMALL_WINDOW)
    if name == "mixtral":
        return _llama_like(T.MixtralConfig, tok, num_local_experts=4, num_experts_per_tok=2)
    if name == "qwen2_moe":
        return _llama_like(T.Qwen2MoeConfig, tok, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=D,
                           shared_expert_intermediate_size=D, decoder_sparse_step=1)
    if name == "phi3":
        return _llama_like(T.Phi3Config, tok, pad_token_id=tok.pad_token_id)
    if name == "gpt2":
        c.update(n_embd=D, n_layer=L, n_head=H, n_positions=512, initializer_range=0.1)
        return T.GPT2Config(**c)
    if name == "gpt_neox":
        c.update(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=L, num_attention_heads=H, max_position_embeddings=512,
                 tie_word_embeddings=False)
        return T.GPTNeoXConfig(**c)
    if name == "opt":
        c.update(hidden_size=D, ffn_dim=2 * D, num_hidden_layers=L, num_attention_heads=H, max_position_embeddings=512,
                 word_embed_proj_dim=D, init_std=0.1)
        return T.OPTConfig(**c)
    if name == "bloom":
        c.update(hidden_size=D, n_layer=L, n_head=H, initializer_range=0.3)  # else every answer is punctuation
        return T.BloomConfig(**c)
    raise KeyError(name)


FAMILY_NAMES = ["llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "mixtral", "qwen2_moe", "phi3", "gpt2", "gpt_neox",
                "opt", "bloom"]


def build(name: str, tok, seed: int = 0):
    """A random model of family ``name`` (float32, eval mode, the loader's attention choice)."""
    from transformers import AutoModelForCausalLM

    from metacog.model import arch

    cfg = config(name, tok)
    cfg._attn_implementation = arch.attn_implementation(cfg)
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation=arch.attn_implementation(cfg), dtype=torch.float32)
    with torch.no_grad():  # random init is tiny: spread the logits so the readout is not flat
        for p in m.parameters():
            if p.dim() >= 2:
                p.mul_(2.0)
    return m.eval()


def save(name: str, tok, d):
    m = build(name, tok)
    m.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d
