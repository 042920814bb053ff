"""Self-consistency (Wang et al. 2023; as a confidence score, Xiong et al. 2024): k answers
sampled at temperature T (seeded, one seed per item and sample), scored by how many agree with the model's greedy answer.

Agreement uses the one grader (:func:`metacog.data.grading.grade_short`) both ways: a sample
agrees with the greedy answer when either one, used as the alias, is found in the other
(so "Paris" and "The capital is Paris." agree). Score = agreeing samples / k. Multiple-choice
items have no free answer to sample: their score is the probability of the chosen option
under softmax(option log-likelihood / T), the expected agreement of one sample.

Public entry: the registered method ``self_consistency`` (:data:`METHOD`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.readout.values import parse_answer
from metacog.data.grading import grade_short
from metacog.core.settings import stable_hash
from metacog.methods.registry import Method, MethodResult, register


def agrees(sample: str, greedy: str) -> bool:
    """The sample and the greedy answer agree (the grader, in either direction)."""
    return bool(grade_short(sample, [greedy]) or grade_short(greedy, [sample]))


def sample_seed(seed: int, item_id: str, j: int) -> int:
    """The seed of sample ``j`` of item ``item_id``: a stable hash of (seed, id, j) as an int in
    [0, 2**63 - 1), so a sample does not depend on batch composition or order."""
    return int(stable_hash("sc", seed, item_id, j, n=12), 16) % (2**63 - 1)


def compute(ctx) -> MethodResult:
    """Self-consistency (Wang et al. 2023; as a confidence, Xiong et al. 2024): for each short-answer
    pool item, ``k_samples`` seeded samples at ``temperature``; score = share agreeing with the greedy
    answer (in [0, 1], steps of 1/k). Multiple-choice items: softmax(option log-likelihood / T) of
    the chosen option. Columns row, score, n_agree (-1 for MC), samples."""
    from metacog.stages.answers import stop_first_line, stop_inline, option_logliks
    from metacog.model.generation import generate
    from metacog.methods.store import method_key

    lm = ctx.lm()
    s = ctx.settings
    pool = ctx.pool
    tok = lm.tokenizer
    k, T = s.k_samples, float(s.temperature)
    style = ctx.study.prompt_style
    stop = stop_first_line if style == "plain" else stop_inline
    is_mc = pool["kind"].eq("mc").to_numpy()
    key = method_key(ctx, METHOD)
    work = {"prompt_tokens": 0, "generated_tokens": 0}

    def part(a, b):
        sub = pool.iloc[a:b]
        recs = []
        short = sub[~is_mc[a:b]]
        if len(short):
            pr, seeds = [], []
            for it in short.itertuples():
                pr.append(prompts.encode_answer_prompt(tok, lm.is_chat, it.question, None, style).ids)
                seeds.extend(sample_seed(s.seed, it.id, j) for j in range(k))
            # the k samples of an item share one prefill of its prompt (generation.greedy_batch, repeat=k)
            texts = generate(lm, pr, ctx.study.max_new_tokens, max(s.batch_size, 32), stop=stop, temperature=T, seeds=seeds,
                             should_stop=ctx.should_stop, repeat=k)
            work["prompt_tokens"] += sum(len(p) for p in pr)
            work["generated_tokens"] += sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
            for n, it in enumerate(short.itertuples()):
                samples = [parse_answer(t) for t in texts[n * k:(n + 1) * k]]
                agree = [agrees(x, str(it.answer or "")) for x in samples]
                recs.append({"row": int(it.row), "score": float(np.mean(agree)), "n_agree": int(sum(agree)),
                             "samples": samples})
        mc = sub[is_mc[a:b]]
        if len(mc):
            pids = [prompts.encode_answer_prompt(tok, lm.is_chat, q, list(c), style).ids for q, c in zip(mc["question"], mc["choices"])]
            ll = option_logliks(lm, pids, [list(c) for c in mc["choices"]], s.batch_size)
            for it, l in zip(mc.itertuples(), ll):
                z = np.asarray(l) / T
                p = np.exp(z - z.max())
                p /= p.sum()
                ch = [str(c) for c in it.choices].index(str(it.answer)) if str(it.answer) in [str(c) for c in it.choices] else int(np.argmax(l))
                recs.append({"row": int(it.row), "score": float(p[ch]), "n_agree": -1, "samples": []})
        return pd.DataFrame.from_records(recs)

    df = ctx.chunked("self_consistency", key, len(pool), part, chunk=max(4, 64 // k), what=f"self-consistency: {k} samples/item")
    n_short = int((~is_mc).sum())  # token counts below: the chunks computed in this call (a resume counts its new ones)
    return MethodResult(df.sort_values("row").reset_index(drop=True),
                        {"forward_passes": f"{k} generations per item (one shared prefill)", "generations": int(k * n_short),
                         "k": k, "temperature": T, "prompt_tokens": work["prompt_tokens"],
                         "generated_tokens": work["generated_tokens"],
                         "token_forwards_shared": work["prompt_tokens"] + work["generated_tokens"],
                         "token_forwards_unshared": k * work["prompt_tokens"] + work["generated_tokens"]})


METHOD = register(Method(name="self_consistency", label="self-consistency", family="sampling",
                         cost="k sampled generations per item (answer length)", compute=compute,
                         settings=("k_samples", "temperature", "seed", "batch_size"), order=40))
