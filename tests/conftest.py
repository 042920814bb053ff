"""Shared fixtures: a tiny random-initialised Llama with a tiny tokenizer built in the test
(no download), and the real embedded model for end-to-end tests (marked ``e2e``)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "You are answering trivia questions. After your answer, state your confidence as a percentage from 0 to 100.",
    "Question: What is the capital of France? The capital of France is Paris. Confidence: 73%",
    "You answered the following trivia question. Your answer: How confident are you that your answer is correct?",
    "State your confidence as a percentage from 0 to 100. Options: A. B. C. D. Reply with the text of the correct option.",
    "What is the chemical symbol for gold? Au. Which country is Lima in? Peru. 0.99 1.0 100 50 0",
    "The atomic number of carbon is 6. Kenya Nairobi Tokyo Japan Berlin Germany helium oxygen",
]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tk.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(_CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_llama(tok, n_layers: int = 3, d: int = 32, seed: int = 0, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    # a larger init spreads probability away from uniform, so tests see real structure
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    model.config._attn_implementation = "sdpa"
    return model


@pytest.fixture(scope="session")
def tiny_tok():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tiny_tok):
    from metacog.model.loading import wrap

    torch.set_num_threads(1)
    return wrap(make_tiny_llama(tiny_tok), tiny_tok, spec="tiny", name="tiny-llama", weights_hash="tiny0")


def tiny_items(n: int = 24, mc: int = 0):
    import pandas as pd

    from metacog.data import assign_splits

    caps = [("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Kenya", "Nairobi"), ("Peru", "Lima")]
    rows = []
    for i in range(n):
        c, a = caps[i % len(caps)]
        rows.append(dict(id=f"t{i}", question=f"What is the capital of {c}? ({i})", answers=[a], category=f"cat{i % 2}",
                         difficulty="easy", choices=None, answer_index=-1, kind="short"))
    for i in range(mc):
        c, a = caps[i % len(caps)]
        choices = [x[1] for x in caps[:4]]
        rows.append(dict(id=f"m{i}", question=f"What is the capital of {c}?", answers=[a] if a in choices else [choices[0]],
                         category="mc", difficulty="easy", choices=choices,
                         answer_index=choices.index(a) if a in choices else 0, kind="mc"))
    df = pd.DataFrame(rows)
    df["split"] = assign_splits(df["id"], seed=0).to_numpy()
    df["row"] = range(len(df))
    return df


@pytest.fixture(scope="session")
def real_lm():
    """The embedded default model (SmolLM2-135M-Instruct), float32 for exact comparisons."""
    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings

    return load_model(ModelSettings(dtype="float32"))


@pytest.fixture(scope="session")
def real_study(tmp_path_factory):
    """One real-model study (32 world-facts items, every stage, float32, one thread), run once
    per test session through the CLI (``metacog study``) and shared by the end-to-end tests
    (tests/unit/stages/test_study.py checks its summary). Tests that add to a workspace (runs, sweeps,
    methods) work on a copy: ``copy_workspace(real_study, tmp_path / "w")``."""
    from metacog.cli import main as cli_main

    root = tmp_path_factory.mktemp("real-study") / "smol"
    rc = cli_main(["study", "--model", "default", "--dataset", "world-facts", "--limit", "32", "--seed", "0",
                   "--workspace", str(root), "--quiet", "--max-new-tokens", "16", "--batch-size", "16",
                   "--dtype", "float32", "--threads", "1"])
    assert rc == 0
    return root


def copy_workspace(src, dst):
    """A private copy of a workspace directory (its artifacts are small for test-sized studies)."""
    import shutil

    from metacog.core.workspace import Workspace

    shutil.copytree(src, dst)
    return Workspace(dst)
