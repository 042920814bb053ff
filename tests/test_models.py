"""Model resolution: every bad spec fails fast with a message that says what to do."""
import time

import pytest

from metacog.models import ModelError, resolve_source, cpu_supports_bf16, resolve_dtype
from metacog.settings import ModelSettings


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
    assert dt == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
