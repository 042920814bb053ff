"""Mixed-precision training (``FinetuneSettings.amp``, issue 15): bfloat16 autocast where the
device has bf16 arithmetic, LoRA weights and AdamW in float32, the precision recorded when a run
starts and kept when it resumes, and runs made before the setting existed unchanged."""
from __future__ import annotations

import json

import pytest
import torch

import metacog.model.loading as loading
from finetune_helpers import tiny_lm_fixture, tiny_ws_fixture

from metacog.finetune import FinetuneSettings, create_run, execute
from metacog.finetune.backends.common import latest_checkpoint
from metacog.finetune.backends.peft_backend import resolve_amp
from metacog.finetune.runs import get_run

FAST = dict(batch_size=4, grad_accum=2, lr=5e-3, checkpoint_every=2, val_fraction=0.1, epochs=2)


lm = tiny_lm_fixture("amp")
ws = tiny_ws_fixture("amp", 40)


def _adapter(run):
    from safetensors.torch import load_file

    return load_file(str(run.adapter_dir / "adapter_model.safetensors"))


def test_resolve_amp_follows_the_hardware_and_the_weights(lm, monkeypatch):
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    assert resolve_amp("auto", lm.model) is torch.bfloat16
    assert resolve_amp("off", lm.model) is None
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    assert resolve_amp("auto", lm.model) is None
    assert resolve_amp("bfloat16", lm.model) is torch.bfloat16  # asked for: runs anywhere (slowly without bf16 units)
    half = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert resolve_amp("bfloat16", half) is None  # 16-bit weights: nothing to mix


def test_autocast_run_keeps_a_float32_adapter_and_resumes_in_the_precision_it_started(ws, lm, monkeypatch):
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    s = FinetuneSettings(**FAST)  # amp auto
    plain = create_run(ws, s, name="amp-auto-without-bf16")
    execute(ws, plain.id, lm=lm)
    assert plain.settings()["training_precision"]["autocast"] is None
    assert plain.status()["result"]["autocast"] is None

    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    mixed = create_run(ws, s, name="amp-auto-with-bf16")
    execute(ws, mixed.id, lm=lm)
    tp = mixed.settings()["training_precision"]
    assert tp == {"amp": "auto", "autocast": "bfloat16", "weights": "float32", "adapter": "float32"}
    assert "bfloat16 autocast" in mixed.status()["message"]
    wp, wm = _adapter(plain), _adapter(mixed)
    assert all(v.dtype == torch.float32 for v in wm.values())
    # bf16 matmuls: the same first loss to bf16 precision, not bit for bit
    lp = plain.read_log().query("kind == 'train'")["loss"].to_numpy()
    lm_ = mixed.read_log().query("kind == 'train'")["loss"].to_numpy()
    assert lp[0] != lm_[0] and abs(lp[0] - lm_[0]) < 0.02 * lp[0]
    assert any(not torch.equal(wp[k], wm[k]) for k in wp)

    # started without bf16 units, killed after checkpoint 2, resumed on a machine with them:
    # it finishes in the precision it started in, exactly the uninterrupted run
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    b = create_run(ws, s, name="amp-resumed-elsewhere")

    def crash(update):
        if update == 2:
            raise RuntimeError("simulated kill")
    with pytest.raises(RuntimeError, match="simulated kill"):
        execute(ws, b.id, lm=lm, hooks_extra={"on_checkpoint": crash})
    assert latest_checkpoint(b.path)[0] == 2
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    execute(ws, b.id, lm=lm)
    assert get_run(ws, b.id).settings()["training_precision"]["autocast"] is None
    wb = _adapter(b)
    assert all(torch.equal(wp[k], wb[k]) for k in wp)


def test_runs_made_before_the_setting_train_and_hash_as_before(ws):
    run = create_run(ws, FinetuneSettings(**{**FAST, "amp": "off"}), name="legacy")
    d = json.loads(run.file("settings.json").read_text())
    del d["finetune"]["amp"]  # a settings.json written before amp existed
    run.file("settings.json").write_text(json.dumps(d))
    s = get_run(ws, run.id).finetune_settings()
    assert s.amp == "off" and s.key() == d["settings_key"]
    assert FinetuneSettings(**FAST).key() != s.key()  # the new default (auto) is another run


def test_amp_is_validated():
    from metacog.finetune import SettingsError

    with pytest.raises(SettingsError, match="amp must be one of"):
        FinetuneSettings(amp="fp8")
    with pytest.raises(SettingsError, match="peft backend only"):
        FinetuneSettings(amp="bfloat16", backend="mlx")
