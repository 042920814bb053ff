"""The answers stage: answer each question, grade it, elicit verbal confidence two ways.

- short-answer items: greedy generation on the answer prompt; the reply gives the answer
  (first line) and the *inline* verbal confidence;
- multiple-choice items: the option with the highest summed log-likelihood is the answer
  (letters are useless on small models); the inline verbal confidence is the greedy
  continuation after that option;
- *two-pass*: a second prompt shows the question and the model's answer and asks for its
  confidence; the greedy reply is parsed.

Work is done in chunks saved atomically under ``answers_parts/<key>/``, so a killed run
resumes where it stopped; the finished table is ``answers.parquet``.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from .arch import input_device
from . import prompts
from .confidence import left_pad, parse_confidence, parse_inline
from .generation import generate
from .grading import grade_mc, grade_short, grade_short_detail
from .verbal import parse_inline_verbal, parse_verbal
from .runtime import ProgressFn, StopFn, check_stop
from .settings import StudySettings, stable_hash
from .workspace import Workspace, remove_tree

ANSWERS_VERSION = 2  # bump when prompts or parsing change
INLINE_VERBAL_TOKENS = 8  # " 100%" and a little slack after the forced "Confidence:"
FORCED_MARK = prompts.INLINE_CONF_PREFIX  # "\nConfidence:" joins the reply and the forced continuation in answer_text


def items_fingerprint(items: pd.DataFrame) -> str:
    cols = [c for c in ("id", "question", "answers", "choices", "answer_index") if c in items.columns]
    recs = items[cols].astype(str).values.tolist()
    return stable_hash(recs, n=16)


def items_key(items: pd.DataFrame) -> str:
    """Key of an item set with its splits: what answers.parquet records as the items it was
    built from (:func:`metacog.study.verify_lineage`)."""
    return stable_hash("items", items_fingerprint(items), items["split"].astype(str).tolist())


def answers_key(lm, items: pd.DataFrame, study: StudySettings) -> str:
    return stable_hash(
        "answers",
        ANSWERS_VERSION,
        lm.weights_hash,
        lm.is_chat,
        items_fingerprint(items),
        study.max_new_tokens,
        study.confidence_max_new_tokens,
        study.prompt_style,
    )


def _number_complete(text: str) -> bool:
    """The reply does not end inside a number or a scale ("9/", "8 out of")."""
    t = text.rstrip()
    return bool(t) and not (t[-1].isdigit() or t[-1] in "./-" or t.lower().endswith((" out", " out of")))


def _stop_inline(text: str) -> bool:
    _, conf = parse_inline(text)
    return conf is not None and _number_complete(text)


def _stop_first_line(text: str) -> bool:
    """The answer is the first non-empty line: stop once it has ended."""
    return "\n" in text.lstrip()


def _stop_two_pass(text: str) -> bool:
    return parse_confidence(text, allow_trailing=False) is not None and _number_complete(text)


@torch.no_grad()
def option_logliks(lm, prompt_ids: list[list[int]], options: list[list[str]], batch_size: int = 32) -> list[list[float]]:
    """Summed log-probability of each option's tokens after its prompt."""
    tok, model = lm.tokenizer, lm.model
    dev = input_device(model)
    seqs, owner, spans = [], [], []
    for i, (p, opts) in enumerate(zip(prompt_ids, options)):
        for j, o in enumerate(opts):
            ids = tok(prompts.answer_sep(lm.is_chat) + str(o), add_special_tokens=False)["input_ids"]
            seqs.append(list(p) + list(ids))
            owner.append((i, j))
            spans.append(len(ids))
    out = [[0.0] * len(o) for o in options]
    for s in range(0, len(seqs), batch_size):
        batch = seqs[s : s + batch_size]
        ids, att, pos = left_pad(batch, tok.pad_token_id, dev)
        logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits.float()
        lsm = torch.log_softmax(logits[:, :-1], -1)
        tgt = ids[:, 1:]
        lp = lsm.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
        for k in range(len(batch)):
            n = spans[s + k]
            i, j = owner[s + k]
            out[i][j] = float(lp[k, -n:].sum()) if n else float("-inf")
    return out


def _answer_chunk(lm, chunk: pd.DataFrame, study: StudySettings, tick=None, should_stop=None) -> pd.DataFrame:
    """Answer one chunk. ``tick(fraction)`` reports progress through its three generation
    passes (answers, inline confidence, two-pass confidence); ``should_stop`` is checked
    between generation batches (a stopped chunk is discarded; finished chunks are kept)."""
    tok, chat, style = lm.tokenizer, lm.is_chat, study.prompt_style
    done = {"k": 0}

    def gen(prompts_, n_tokens, stop, pass_no, total):
        def prog(k):
            done["k"] += k
            if tick:
                tick((pass_no + done["k"] / max(total, 1)) / 3.0)

        done["k"] = 0
        return generate(lm, prompts_, n_tokens, study.batch_size, stop=stop, progress=prog, should_stop=should_stop)

    n = len(chunk)
    is_mc = chunk["kind"].eq("mc").to_numpy()
    questions = chunk["question"].tolist()
    choices = [c if mc else None for c, mc in zip(chunk["choices"], is_mc)]
    prompt_ids = [prompts.encode_answer_prompt(tok, chat, q, c, style).ids for q, c in zip(questions, choices)]
    raw = [""] * n
    answer = [""] * n
    v_inline: list[float | None] = [None] * n
    source = ["forced"] * n
    logliks: list[list[float] | None] = [None] * n
    short = [i for i in range(n) if not is_mc[i]]
    if short:
        stop = _stop_first_line if style == "plain" else _stop_inline
        texts = gen([prompt_ids[i] for i in short], study.max_new_tokens, stop, 0, len(short))
        for i, t in zip(short, texts):
            raw[i] = t
            answer[i], v_inline[i] = parse_inline(t)
            if v_inline[i] is not None:
                source[i] = "free"
    mc = [i for i in range(n) if is_mc[i]]
    if mc:
        ll = option_logliks(lm, [prompt_ids[i] for i in mc], [list(choices[i]) for i in mc], study.batch_size)
        for i, l in zip(mc, ll):
            logliks[i] = l
            answer[i] = raw[i] = str(choices[i][int(np.argmax(l))])
    # inline verbal confidence where the reply stated none: same assistant turn, the answer
    # then "\nConfidence:" (the readout's prefix), and the model's greedy continuation
    need = [i for i in range(n) if v_inline[i] is None]
    if need:
        forced = [prompts.encode_inline(tok, chat, questions[i], answer[i], choices[i], style).ids for i in need]
        texts = gen(forced, INLINE_VERBAL_TOKENS, _stop_two_pass, 1, len(forced))
        for i, t in zip(need, texts):
            raw[i] = raw[i] + FORCED_MARK + t
            v_inline[i] = parse_confidence(FORCED_MARK.strip() + t)
    two = [prompts.encode_two_pass_prompt(tok, chat, q, a).ids for q, a in zip(questions, answer)]
    t2 = gen(two, study.confidence_max_new_tokens, _stop_two_pass, 2, len(two))
    recs = []
    for k, (_, it) in enumerate(chunk.iterrows()):
        if is_mc[k]:
            chosen, correct = grade_mc(logliks[k], int(it["answer_index"]))
        else:
            chosen, correct = -1, grade_short(answer[k], list(it["answers"]))
        recs.append(
            {
                "row": int(it["row"]),
                "id": it["id"],
                "answer_text": raw[k],
                "answer": answer[k],
                "correct": bool(correct),
                "chosen_index": int(chosen),
                "verbal_inline": _nan(v_inline[k]),
                "verbal_inline_source": source[k],
                "text_two_pass": t2[k],
                "verbal_two_pass": _nan(parse_confidence(t2[k])),
            }
        )
    return pd.DataFrame.from_records(recs)


REPARSED = ["verbal_inline", "verbal_inline_rule", "verbal_two_pass", "verbal_two_pass_rule", "correct", "grade_guard"]


def reparse(items: pd.DataFrame, ans: pd.DataFrame) -> pd.DataFrame:
    """Re-derive verbal confidences and grades from the stored texts with the current
    parser and grader (cheap; generation is what the stage key caches). The answer string
    itself is kept as generated, since the later sequences were built on it.

    Also records, per row, the parse rule that read each verbal confidence
    (``verbal_inline_rule``, ``verbal_two_pass_rule``: one of :data:`metacog.verbal.RULES`)
    and the grader guard that refused a short answer's alias match (``grade_guard``: one of
    :data:`metacog.grading.GUARDS`, "" when none fired or the item is multiple choice)."""
    ans = ans.copy()
    it = items.set_index("row").loc[ans["row"]]
    v_in, r_in = [], []
    for text, src in zip(ans["answer_text"], ans.get("verbal_inline_source", ["forced"] * len(ans))):
        if src == "forced" and FORCED_MARK in text:
            p = parse_verbal(FORCED_MARK.strip() + text.rsplit(FORCED_MARK, 1)[1])
        else:
            p = parse_inline_verbal(text)[1]
        v_in.append(_nan(p.value))
        r_in.append(p.rule)
    ans["verbal_inline"] = v_in
    ans["verbal_inline_rule"] = r_in
    two = [parse_verbal(t) for t in ans["text_two_pass"]]
    ans["verbal_two_pass"] = [_nan(p.value) for p in two]
    ans["verbal_two_pass_rule"] = [p.rule for p in two]
    is_mc = it["kind"].eq("mc").to_numpy()
    correct, guard = [], []
    for a, al, ci, ai, mc in zip(ans["answer"], it["answers"], ans["chosen_index"], it["answer_index"], is_mc):
        if mc:
            correct.append(bool(ci == int(ai)))
            guard.append("")
        else:
            g = grade_short_detail(a, list(al))
            correct.append(bool(g.correct))
            guard.append(g.guard or "")
    ans["correct"] = correct
    ans["grade_guard"] = guard
    return ans


def _nan(x):
    return np.nan if x is None else float(x)


def run_answers(
    ws: Workspace,
    lm,
    items: pd.DataFrame,
    study: StudySettings,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """Answer every item (resuming finished chunks); write and return answers.parquet."""
    key = answers_key(lm, items, study)
    lineage = {"key": key, "items": items_key(items)}
    if ws.stage_fresh("answers", key) and ws.path("answers.parquet").exists() \
            and (ws.lineage("answers.parquet") or {}).get("key") == key:
        old = ws.read_parquet("answers.parquet")
        new = reparse(items, old)
        if any(c not in old.columns for c in REPARSED) or not new[REPARSED].equals(old[REPARSED]) \
                or ws.lineage("answers.parquet") != lineage:
            ws.write_parquet("answers.parquet", new, lineage=lineage)
        return new
    t0 = time.time()
    parts = ws.path("answers_parts", key)
    parts.mkdir(parents=True, exist_ok=True)
    chunk_size = chunk_size or max(study.batch_size * 2, 32)
    n = len(items)
    frames = [pd.read_parquet(f) for f in sorted(parts.glob("part-*.parquet"))]
    done_rows = set().union(*(set(f["row"].tolist()) for f in frames)) if frames else set()
    todo = items[~items["row"].isin(done_rows)]
    finished = n - len(todo)
    if progress:
        progress(finished, n, "answering")
    for s in range(0, len(todo), chunk_size):
        check_stop(should_stop)
        chunk = todo.iloc[s : s + chunk_size]
        tick = (lambda f, base=finished, size=len(chunk): progress(base + int(f * size), n, "answering")) if progress else None
        df = _answer_chunk(lm, chunk, study, tick=tick, should_stop=should_stop)
        ws.write_parquet(str((parts / f"part-{int(chunk['row'].iloc[0]):07d}.parquet").relative_to(ws.root)), df)
        frames.append(df)
        finished += len(chunk)
        if progress:
            progress(finished, n, "answering")
    ans = pd.concat(frames, ignore_index=True).drop_duplicates("row").sort_values("row").reset_index(drop=True)
    ans = reparse(items, ans)
    meta = items.set_index("row").loc[ans["row"], ["split", "category"]].reset_index(drop=True)
    ans.insert(2, "split", meta["split"].to_numpy())
    ans.insert(3, "category", meta["category"].to_numpy())
    ws.write_parquet("answers.parquet", ans, lineage=lineage)
    ws.mark_stage("answers", key, seconds=round(time.time() - t0, 1), n=int(len(ans)))
    remove_tree(ws.path("answers_parts"))
    return ans


def answer_items(lm, items: pd.DataFrame, study: StudySettings) -> pd.DataFrame:
    """Answer, grade and elicit verbal confidence for ``items`` (the item columns plus ``row``)
    in memory, exactly as the answers stage does, without a workspace (the Playground's path).
    Returns the answers.parquet columns, re-parsed with the current parser and grader."""
    return reparse(items, _answer_chunk(lm, items, study))
