"""The mlx-lm backend on a tiny run (mlx[cpu] on Linux): same plan and loss as peft, its
own adapter format plus a PEFT copy that reproduces its logits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from finetune_helpers import tiny_lm_fixture, tiny_ws_fixture

from metacog.finetune import FinetuneSettings, create_run, execute
from metacog.finetune.backends import mlx_backend

OK, WHY = mlx_backend.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"mlx cannot be used here: {WHY}")


lm = tiny_lm_fixture("m")
ws = tiny_ws_fixture("m", 40)


def test_mlx_loads_transformers5_checkpoint_with_rope_fix(lm):
    import mlx.core as mx

    cfg = json.loads((mlx_backend.hf_dir(lm) / "config.json").read_text())
    assert "rope_theta" not in cfg  # transformers 5 keeps it under rope_parameters
    model, fix = mlx_backend.load_base(lm)
    assert fix == {"rope_theta": float(cfg["rope_parameters"]["rope_theta"])}
    ids = [1, 5, 9, 22, 40, 7, 3]
    a = np.array(model(mx.array([ids])).astype(mx.float32))
    with torch.no_grad():
        b = lm.model(input_ids=torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_tiny_mlx_run_and_peft_copy(ws, lm):
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters

    from metacog.finetune.backends.peft_backend import load_adapter_model

    kw = dict(epochs=None, max_updates=3, batch_size=4, grad_accum=2, lr=1e-2, dropout=0.0, checkpoint_every=2, val_fraction=0.1)
    run = create_run(ws, FinetuneSettings(backend="mlx", **kw))
    st = execute(ws, run.id, lm=lm)
    assert st["status"] == "done" and st["updates_run"] == 3
    log = run.read_log().query("kind == 'train'")
    assert log["update"].tolist() == [1, 2, 3]
    # mlx-lm's own format, loadable by mlx-lm
    cfg = json.loads((run.path / "adapter_mlx" / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["rank"] == 16 and cfg["lora_parameters"]["scale"] == 2.0
    model, _ = mlx_backend.load_base(lm)
    load_adapters(model, str(run.path / "adapter_mlx"))
    model.eval()
    ids = [1, 5, 9, 22, 40, 7]
    a = np.array(model(mx.array([ids])).astype(mx.float32))
    # ... and the converted PEFT copy gives the same logits in torch
    ft = load_adapter_model(lm, run.adapter_dir)
    with torch.no_grad():
        b = ft.model(input_ids=torch.tensor([ids])).logits.numpy()
        base = lm.model(input_ids=torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert np.abs(b - base).max() > 1e-3
    # same data order and loss definition as the peft backend: the first update's loss
    # (LoRA B starts at zero, so it is the base model's loss) agrees
    ref = create_run(ws, FinetuneSettings(backend="peft", amp="off", **kw))  # float32, as mlx trains here
    execute(ws, ref.id, lm=lm)
    lp = ref.read_log().query("kind == 'train'")
    assert lp["tokens"].tolist() == log["tokens"].tolist()
    assert lp["loss"].iloc[0] == pytest.approx(log["loss"].iloc[0], rel=1e-4)
