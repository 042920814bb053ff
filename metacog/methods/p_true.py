"""P(True) (Kadavath et al. 2022, "Language Models (Mostly) Know What They Know"): ask
whether the proposed answer (the model's own) is correct and read the probability of the reply "True" against "False", exactly for multi-token labels
(:func:`metacog.readout.values.read_labels`: product of conditional token probabilities of each
label's full token sequence, normalised over the two labels).

Public entry: the registered method ``p_true`` (:data:`METHOD`)."""
from __future__ import annotations

import pandas as pd

from metacog.data import prompts
from metacog.readout.values import read_labels
from metacog.methods.registry import Method, MethodResult, register

LABELS = ("True", "False")


def score_query(ctx, lm, labels, name: str, key: str) -> pd.DataFrame:
    """p(labels[0]) for every pool item, from the uncertainty query about its own answer."""
    pool = ctx.pool
    tok = lm.tokenizer
    enc = [prompts.encode_uncertainty_query(tok, lm.is_chat, q, str(a or ""), labels).ids
           for q, a in zip(pool["question"], pool["answer"])]

    def part(s, e):
        p = read_labels(lm, enc[s:e], labels, batch_size=ctx.settings.batch_size)
        return pd.DataFrame({"row": pool["row"].to_numpy()[s:e], "score": p[:, 0]})

    return ctx.chunked(name, key, len(enc), part, chunk=max(ctx.settings.batch_size * 4, 32), what=f"{name}: scoring")


def compute(ctx) -> MethodResult:
    """P(True) (Kadavath et al. 2022) of every pool item: row, score = p("True") normalised over
    {"True", "False"} (a probability in [0, 1]); ``info.forward_passes`` counts the forwards."""
    from metacog.methods.store import method_key

    lm = ctx.lm()
    df = score_query(ctx, lm, LABELS, "p_true", method_key(ctx, METHOD))
    n_fw = len(df) * (1 if all(len(x) == 1 for x in _ids(lm, LABELS)) else len(LABELS))
    return MethodResult(df, {"forward_passes": int(n_fw), "labels": list(LABELS)})


def _ids(lm, labels):
    from metacog.readout.values import label_ids

    return label_ids(lm.tokenizer, labels, lm.is_chat)


METHOD = register(Method(name="p_true", label="P(True)", family="prompting",
                         cost="1 forward per item (2 if a label spans several tokens)", compute=compute,
                         settings=("batch_size",), order=30))
