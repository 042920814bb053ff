"""The KV cache travels under the keyword this transformers version uses (``cache`` since
5.2x; ``past_key_values`` before, removed in 5.40): generation, the exact readout (tree and
shared-prefix paths) and both patching paths run without the deprecation warning, and the
keyword is read per class, so a class that still takes ``past_key_values`` gets it."""
from __future__ import annotations

import warnings

import torch

from metacog.model import arch


class _Old(torch.nn.Module):
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return input_ids


class _New(torch.nn.Module):
    def forward(self, input_ids=None, cache=None, use_cache=None):
        return input_ids


def test_keyword_follows_the_class_signature(tiny_lm):
    assert arch.kv_kwargs(_Old(), "C") == {"past_key_values": "C"}
    assert arch.kv_kwargs(_New(), "C") == {"cache": "C"}
    import inspect

    body, _ = arch.body_and_head(tiny_lm.model)
    names = inspect.signature(type(body).forward).parameters
    assert list(arch.kv_kwargs(body, None)) == ["cache" if "cache" in names else "past_key_values"]


def test_outputs_cache_is_read_under_either_name():
    from transformers.modeling_outputs import BaseModelOutputWithPast

    fields = BaseModelOutputWithPast.__dataclass_fields__
    key = "cache" if "cache" in fields else "past_key_values"
    assert arch.kv_cache(BaseModelOutputWithPast(**{key: "C"})) == "C"
    assert arch.kv_cache(BaseModelOutputWithPast()) is None


def test_stages_pass_the_cache_without_deprecation_warnings(tiny_lm):
    from metacog.model.generation import generate
    from metacog.readout.values import read_values

    tok = tiny_lm.tokenizer
    prompts = [tok.encode("the capital of France is"), tok.encode("two and two make four, and five")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = generate(tiny_lm, prompts, max_new_tokens=4, batch_size=2)
        r = read_values(tiny_lm, [p + tok.encode(" Confidence:") for p in prompts])
    assert len(out) == 2 and r.probs.shape == (2, 101)
    bad = [str(w.message) for w in caught if "past_key_values" in str(w.message) or "cache_params" in str(w.message)]
    assert not bad, bad[:2]
