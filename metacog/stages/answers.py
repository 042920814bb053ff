"""The answers stage: answer each question, grade it, elicit verbal confidence two ways.

- short-answer items: greedy generation on the answer prompt; the reply gives the answer
  (first line) and the *inline* verbal confidence;
- multiple-choice items: every option's log-likelihood after the prompt and after a neutral
  prompt is stored, and the option with the best score under ``StudySettings.mc_scoring``
  (``mc_option_scores``; summed, per token, per character or PMI, docs/SCIENCE.md) is the
  answer (letters are useless on small models); the inline verbal confidence is the greedy
  continuation after that option;
- *two-pass* (only with ``StudySettings.two_pass``; otherwise its columns are absent): a
  second prompt shows the question and the model's answer and asks for its confidence; the
  greedy reply is parsed.

Items are taken in order of prompt length (so a long item pads only its neighbours in
length) in chunks of at most ``ANSWER_CHUNK`` items, each saved atomically under
``answers_parts/<key>/`` once done, so a killed run redoes at most one chunk; the chunks
are a fixed partition of the length order, so a resumed run batches every item exactly as
a clean run does. The finished table is ``answers.parquet``. A prompt longer than
``StudySettings.max_prompt_tokens`` is refused before any model work
(``check_prompt_lengths``).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from metacog.model.arch import input_device
from metacog.data import prompts
from metacog.readout.values import left_pad, parse_confidence, parse_inline
from metacog.model.generation import batches_by_length, generate
from metacog.data.grading import grade_mc, grade_short, grade_short_detail
from metacog.readout.verbal import parse_inline_verbal, parse_verbal
from metacog.core.runtime import ProgressFn, StopFn, check_stop
from metacog.core.settings import MC_SCORINGS, StudySettings, stable_hash
from metacog.core.workspace import Workspace, remove_tree
from metacog.core.files import read_table

ANSWERS_VERSION = 3  # bump when prompts or parsing change (3: per-option MC scores, length-ordered chunks)
ANSWER_CHUNK = 64  # items per saved chunk (at most this many are redone after a kill)


def generation_rows(batch_size: int) -> int:
    """Rows of an answers-stage generation batch (and items per saved chunk):
    ``min(ANSWER_CHUNK, 2 × batch_size)``. Decode steps are overhead-bound, not compute-bound, so
    more rows cost little more per step: on SmolLM2 in bf16, 2 threads, 192 items' answers took
    41.8–43.3 s in 32-row batches and 35.0–36.9 s in 64 (docs/PERFORMANCE.md, session 7),
    the texts identical. Twice the readout's rows fit in its memory: a generation row holds its
    prompt plus ``max_new_tokens`` of KV cache, a readout row its prompt plus the ~300-token value
    trie and float32 hidden states (``study.check_memory`` checks both)."""
    return max(1, min(ANSWER_CHUNK, 2 * int(batch_size)))
NEUTRAL_QUESTION = "Answer:"  # the question of the neutral prompt PMI divides by (lm-eval-harness' context)
INLINE_VERBAL_TOKENS = 8  # " 100%" and a little slack after the forced "Confidence:"
FORCED_MARK = prompts.INLINE_CONF_PREFIX  # "\nConfidence:" joins the reply and the forced continuation in answer_text


def items_fingerprint(items: pd.DataFrame) -> str:
    """A 16-hex-digit hash of the items' content (id, question, answers, choices, answer_index where
    present; not the split), so answers are reused only for the same items."""
    cols = [c for c in ("id", "question", "answers", "choices", "answer_index") if c in items.columns]
    recs = items[cols].astype(str).values.tolist()
    return stable_hash(recs, n=16)


def items_key(items: pd.DataFrame) -> str:
    """Key of an item set with its splits: what answers.parquet records as the items it was
    built from (:func:`metacog.stages.study.verify_lineage`)."""
    return stable_hash("items", items_fingerprint(items), items["split"].astype(str).tolist())


def answers_key(lm, items: pd.DataFrame, study: StudySettings) -> str:
    """Cache key of the answers stage: a hash of ANSWERS_VERSION, the model weights, chat mode, the
    items' fingerprint, the generation settings that change a reply (token budgets, prompt style,
    MC scoring) and the numerics (dtype and attention) when they are not float32 SDPA, so a study
    resumed in another precision recomputes instead of mixing the two (float32 keeps the keys of
    the studies made before the numerics were part of the key)."""
    return stable_hash(
        "answers",
        ANSWERS_VERSION,
        lm.weights_hash,
        lm.is_chat,
        items_fingerprint(items),
        study.max_new_tokens,
        study.confidence_max_new_tokens,
        study.prompt_style,
        study.mc_scoring,
        *(() if study.two_pass else ("inline-only",)),  # two_pass=True keeps the keys of studies before the setting
        *numerics_key(lm),
    )


def numerics_key(lm) -> tuple:
    """``()`` for float32 (any attention: its batch dependence is below the stored precision),
    else ``(dtype, attention implementation)``, and under ragged attention its layout version
    (:data:`metacog.model.ragged.LAYOUT`): what decides an item's numbers beyond the weights."""
    dt = str(lm.dtype).replace("torch.", "")
    if dt == "float32":
        return ()
    from metacog.model import ragged
    from metacog.model.arch import attention_implementation

    impl = attention_implementation(lm.model)
    return (dt, impl) + ((f"layout{ragged.LAYOUT}",) if impl == ragged.NAME and ragged.LAYOUT > 1 else ())


class PromptTooLong(ValueError):
    """An item's answer prompt is longer than ``max_prompt_tokens`` (message names it)."""


def check_prompt_lengths(ids: list, prompt_lens: list[int], max_prompt_tokens: int) -> None:
    """Refuse, before any model work, items whose answer prompt has more than
    ``max_prompt_tokens`` tokens: one message naming the longest offenders (id and length),
    how many there are, and how to raise the cap (``--max-prompt-tokens``). Every prompt of a
    batch is padded to its longest, so one such item costs its whole batch that length."""
    over = sorted(((n, str(i)) for i, n in zip(ids, prompt_lens) if n > max_prompt_tokens), reverse=True)
    if not over:
        return
    shown = ", ".join(f"{i!r} ({n:,} tokens)" for n, i in over[:3])
    more = f" and {len(over) - 3} more" if len(over) > 3 else ""
    raise PromptTooLong(
        f"{len(over)} item(s) have an answer prompt over the {max_prompt_tokens:,}-token cap: {shown}{more}; "
        f"shorten or drop them, or raise the cap with --max-prompt-tokens N (setting max_prompt_tokens)"
    )


def check_items_prompt_lengths(lm, items: pd.DataFrame, study: StudySettings) -> list[int]:
    """:func:`check_prompt_lengths` for ``items`` with ``lm``'s tokenizer and the study's prompt
    style (tokenisation only, no forward); returns the prompt lengths. Raises :class:`PromptTooLong`."""
    tok = lm.tokenizer
    is_mc = items["kind"].eq("mc").to_numpy()
    plen = [len(prompts.encode_answer_prompt(tok, lm.is_chat, q, c if mc else None, study.prompt_style).ids)
            for q, c, mc in zip(items["question"], items["choices"], is_mc)]
    check_prompt_lengths(items["id"].tolist(), plen, study.max_prompt_tokens)
    return plen


def mc_option_scores(loglik, n_tokens, n_chars, loglik_neutral, scoring: str) -> np.ndarray:
    """Score of each option of one item under ``scoring`` (higher = chosen).

    Inputs are per-option arrays of equal length: ``loglik`` the summed log-probability
    (natural log) of the option's tokens after the item's prompt, ``n_tokens`` and
    ``n_chars`` the option's length in tokens and characters, ``loglik_neutral`` the summed
    log-probability of the same tokens after the neutral prompt (the item's template with the
    question replaced by ``NEUTRAL_QUESTION``). Scorings (docs/SCIENCE.md):

    - ``sum``: ``loglik`` (favours short options: each token costs probability);
    - ``per_token``: ``loglik / n_tokens``;
    - ``per_char``: ``loglik / n_chars`` (lm-eval-harness ``acc_norm``);
    - ``pmi``: ``loglik - loglik_neutral`` (Holtzman et al. 2021, "surface form
      competition"; lm-eval-harness ``acc_mutual_info``).

    An option with no tokens or characters scores -inf. Raises ValueError for an unknown
    scoring or arrays of different lengths."""
    ll = np.asarray(loglik, dtype=float)
    nt, nc = np.asarray(n_tokens, dtype=float), np.asarray(n_chars, dtype=float)
    ln = np.asarray(loglik_neutral, dtype=float)
    if not (ll.shape == nt.shape == nc.shape == ln.shape) or ll.ndim != 1:
        raise ValueError(f"option arrays differ in shape: {ll.shape}, {nt.shape}, {nc.shape}, {ln.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        if scoring == "sum":
            out = ll.copy()
        elif scoring == "per_token":
            out = np.where(nt > 0, ll / nt, -np.inf)
        elif scoring == "per_char":
            out = np.where(nc > 0, ll / nc, -np.inf)
        elif scoring == "pmi":
            out = ll - ln
        else:
            raise ValueError(f"unknown mc_scoring {scoring!r}; one of {', '.join(MC_SCORINGS)}")
    return np.where(nt > 0, out, -np.inf)


def mc_accuracy_by_scoring(answers: pd.DataFrame, items: pd.DataFrame, split: str | None = None) -> dict:
    """Multiple-choice accuracy under every scoring in ``MC_SCORINGS``, from the per-option
    columns that ``run_answers`` stores (``option_loglik``, ``option_tokens``,
    ``option_chars``, ``option_loglik_neutral``). Joins on ``row``; ``split`` restricts to
    one split. Returns ``{"n": items scored, "<scoring>": accuracy or None}`` (None: no
    multiple-choice item, or answers from before these columns existed). Ties go to the
    lowest option index (``grading.grade_mc``)."""
    out: dict = {"n": 0, **{sc: None for sc in MC_SCORINGS}}
    need = ("option_loglik", "option_tokens", "option_chars", "option_loglik_neutral")
    if "kind" not in items or not all(c in answers for c in need):
        return out
    it = items.set_index("row")
    a = answers[answers["row"].isin(it.index[it["kind"].eq("mc")])]
    if split is not None:
        a = a[it.loc[a["row"], "split"].to_numpy() == split]
    if a.empty:
        return out
    truth = it.loc[a["row"], "answer_index"].astype(int).to_numpy()
    out["n"] = int(len(a))
    for sc in MC_SCORINGS:
        hits = [grade_mc(mc_option_scores(ll, nt, nc, ln, sc), t)[1]
                for ll, nt, nc, ln, t in zip(a["option_loglik"], a["option_tokens"], a["option_chars"],
                                             a["option_loglik_neutral"], truth)]
        out[sc] = float(np.mean(hits))
    return out


def _number_complete(text: str) -> bool:
    """The reply does not end inside a number or a scale ("9/", "8 out of")."""
    t = text.rstrip()
    return bool(t) and not (t[-1].isdigit() or t[-1] in "./-" or t.lower().endswith((" out", " out of")))


def stop_inline(text: str) -> bool:
    """Stop rule of one-pass generation with an inline confidence: True once the reply holds a complete
    inline confidence (``parse_inline`` finds one and the text does not end inside a number or a
    scale such as "9/" or "8 out of")."""
    _, conf = parse_inline(text)
    return conf is not None and _number_complete(text)


def stop_first_line(text: str) -> bool:
    """Stop rule of plain answers: the answer is the first non-empty line, so True once that line
    has ended (a newline follows non-blank text)."""
    return "\n" in text.lstrip()


def stop_two_pass(text: str) -> bool:
    """Stop rule of the second (confidence) pass: True once the reply starts with a complete confidence
    (``parse_confidence(text, allow_trailing=False)`` finds one and the text does not end inside a
    number or a scale)."""
    return parse_confidence(text, allow_trailing=False) is not None and _number_complete(text)


@torch.no_grad()
def option_token_logliks(lm, prompt_ids: list[list[int]], options: list[list[str]], batch_size: int = 32
                         ) -> tuple[list[list[float]], list[list[int]]]:
    """Summed log-probability (natural log) of each option's tokens after its prompt, and the
    option's token count: two lists shaped like ``options``. Sequences run in batches of
    similar length (``batches_by_length``); an option with no tokens scores -inf."""
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
    ntok = [[0] * len(o) for o in options]
    for idx in batches_by_length(seqs, batch_size):
        ids, att, pos = left_pad([seqs[k] for k in idx], tok.pad_token_id, dev)
        logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits.float()
        lsm = torch.log_softmax(logits[:, :-1], -1)
        tgt = ids[:, 1:]
        lp = lsm.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
        for b, k in enumerate(idx):
            n = spans[k]
            i, j = owner[k]
            out[i][j] = float(lp[b, -n:].sum()) if n else float("-inf")
            ntok[i][j] = n
    return out, ntok


def option_logliks(lm, prompt_ids: list[list[int]], options: list[list[str]], batch_size: int = 32) -> list[list[float]]:
    """Summed log-probability of each option's tokens after its prompt."""
    return option_token_logliks(lm, prompt_ids, options, batch_size)[0]


def option_scores(lm, questions: list[str], options: list[list[str]], style: str, batch_size: int = 32) -> list[dict]:
    """Per item, the per-option numbers every scoring needs (``mc_option_scores``):
    ``option_loglik`` after the item's answer prompt, ``option_loglik_neutral`` after the
    neutral prompt (same template and option list, question ``NEUTRAL_QUESTION``),
    ``option_tokens`` and ``option_chars``."""
    tok, chat = lm.tokenizer, lm.is_chat
    p_item = [prompts.encode_answer_prompt(tok, chat, q, c, style).ids for q, c in zip(questions, options)]
    p_neutral = [prompts.encode_answer_prompt(tok, chat, NEUTRAL_QUESTION, c, style).ids for c in options]
    ll, nt = option_token_logliks(lm, p_item + p_neutral, list(options) + list(options), batch_size)
    n = len(options)
    return [{"option_loglik": ll[i], "option_loglik_neutral": ll[n + i], "option_tokens": nt[i],
             "option_chars": [len(str(o)) for o in options[i]]} for i in range(n)]


def _answer_chunk(lm, chunk: pd.DataFrame, study: StudySettings, tick=None, should_stop=None) -> pd.DataFrame:
    """Answer one chunk. ``tick(fraction)`` reports progress through its generation passes
    (answers, inline confidence, and with ``study.two_pass`` the two-pass confidence; without
    it the records have no two-pass columns); ``should_stop`` is checked between generation
    batches (a stopped chunk is discarded; finished chunks are kept)."""
    tok, chat, style = lm.tokenizer, lm.is_chat, study.prompt_style
    done = {"k": 0}
    n_passes = 3.0 if study.two_pass else 2.0

    def gen(prompts_, n_tokens, stop, pass_no, total):
        def prog(k):
            done["k"] += k
            if tick:
                tick((pass_no + done["k"] / max(total, 1)) / n_passes)

        done["k"] = 0
        return generate(lm, prompts_, n_tokens, generation_rows(study.batch_size), stop=stop, progress=prog,
                        should_stop=should_stop)

    n = len(chunk)
    is_mc = chunk["kind"].eq("mc").to_numpy()
    questions = chunk["question"].tolist()
    choices = [c if mc else None for c, mc in zip(chunk["choices"], is_mc)]
    prompt_ids = [prompts.encode_answer_prompt(tok, chat, q, c, style).ids for q, c in zip(questions, choices)]
    raw = [""] * n
    answer = [""] * n
    v_inline: list[float | None] = [None] * n
    source = ["forced"] * n
    mcs: list[dict | None] = [None] * n
    short = [i for i in range(n) if not is_mc[i]]
    if short:
        stop = stop_first_line if style == "plain" else stop_inline
        texts = gen([prompt_ids[i] for i in short], study.max_new_tokens, stop, 0, len(short))
        for i, t in zip(short, texts):
            raw[i] = t
            answer[i], v_inline[i] = parse_inline(t)
            if v_inline[i] is not None:
                source[i] = "free"
    mc = [i for i in range(n) if is_mc[i]]
    if mc:
        sc = option_scores(lm, [questions[i] for i in mc], [list(choices[i]) for i in mc], style, study.batch_size)
        for i, d in zip(mc, sc):
            mcs[i] = d
            pick, _ = grade_mc(mc_option_scores(d["option_loglik"], d["option_tokens"], d["option_chars"],
                                                d["option_loglik_neutral"], study.mc_scoring), 0)
            answer[i] = raw[i] = str(choices[i][pick])
    # inline verbal confidence where the reply stated none: same assistant turn, the answer
    # then "\nConfidence:" (the readout's prefix), and the model's greedy continuation
    need = [i for i in range(n) if v_inline[i] is None]
    if need:
        forced = [prompts.encode_inline(tok, chat, questions[i], answer[i], choices[i], style).ids for i in need]
        texts = gen(forced, INLINE_VERBAL_TOKENS, stop_two_pass, 1, len(forced))
        for i, t in zip(need, texts):
            raw[i] = raw[i] + FORCED_MARK + t
            v_inline[i] = parse_confidence(FORCED_MARK.strip() + t)
    t2 = None
    if study.two_pass:
        two = [prompts.encode_two_pass_prompt(tok, chat, q, a).ids for q, a in zip(questions, answer)]
        t2 = gen(two, study.confidence_max_new_tokens, stop_two_pass, 2, len(two))
    recs = []
    for k, (_, it) in enumerate(chunk.iterrows()):
        d = mcs[k] or {}
        if is_mc[k]:
            chosen, correct = grade_mc(mc_option_scores(d["option_loglik"], d["option_tokens"], d["option_chars"],
                                                        d["option_loglik_neutral"], study.mc_scoring),
                                       int(it["answer_index"]))
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
                **({"text_two_pass": t2[k], "verbal_two_pass": _nan(parse_confidence(t2[k]))} if t2 is not None else {}),
                # per-option numbers of every MC scoring (empty for short-answer items)
                "option_loglik": [float(x) for x in d.get("option_loglik", [])],
                "option_loglik_neutral": [float(x) for x in d.get("option_loglik_neutral", [])],
                "option_tokens": [int(x) for x in d.get("option_tokens", [])],
                "option_chars": [int(x) for x in d.get("option_chars", [])],
            }
        )
    return pd.DataFrame.from_records(recs)


REPARSED = ["verbal_inline", "verbal_inline_rule", "verbal_two_pass", "verbal_two_pass_rule", "correct", "grade_guard"]


def reparse(items: pd.DataFrame, ans: pd.DataFrame) -> pd.DataFrame:
    """Re-derive verbal confidences and grades from the stored texts with the current
    parser and grader (cheap; generation is what the stage key caches). The answer string
    itself is kept as generated, since the later sequences were built on it.

    Also records, per row, the parse rule that read each verbal confidence
    (``verbal_inline_rule``, ``verbal_two_pass_rule``: one of :data:`metacog.readout.verbal.RULES`)
    and the grader guard that refused a short answer's alias match (``grade_guard``: one of
    :data:`metacog.data.grading.GUARDS`, "" when none fired or the item is multiple choice)."""
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
    if "text_two_pass" in ans:  # absent where the study ran without two_pass
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
        cols = [c for c in REPARSED if c in new.columns]
        if any(c not in old.columns for c in cols) or not new[cols].equals(old[cols]) \
                or ws.lineage("answers.parquet") != lineage:
            ws.write_parquet("answers.parquet", new, lineage=lineage)
        return new
    t0 = time.time()
    is_mc = items["kind"].eq("mc").to_numpy()
    plen = check_items_prompt_lengths(lm, items, study)
    parts = ws.path("answers_parts", key)
    parts.mkdir(parents=True, exist_ok=True)
    chunk_size = chunk_size or generation_rows(study.batch_size)
    n = len(items)
    frames = [read_table(f) for f in sorted(parts.glob("part-*.parquet"))]
    done_rows = set().union(*(set(f["row"].tolist()) for f in frames)) if frames else set()
    # a fixed partition of the items in prompt-length order: a long item pads only items of
    # about its length, and a resumed run batches every item as a clean run does
    order = sorted(range(n), key=lambda i: (plen[i], int(items["row"].iloc[i])))
    chunks = [order[s : s + chunk_size] for s in range(0, n, chunk_size)]
    todo = [c for c in chunks if not all(int(items["row"].iloc[i]) in done_rows for i in c)]
    finished = n - sum(len(c) for c in todo)
    if progress:
        progress(finished, n, "answering")
    for idx in todo:
        check_stop(should_stop)
        chunk = items.iloc[idx]
        tick = (lambda f, base=finished, size=len(chunk): progress(base + int(f * size), n, "answering")) if progress else None
        df = _answer_chunk(lm, chunk, study, tick=tick, should_stop=should_stop)
        name = f"part-{int(chunk['row'].min()):07d}-{len(chunk):04d}.parquet"  # unique per chunk of the partition
        ws.write_parquet(str((parts / name).relative_to(ws.root)), df)
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
    extra = {}
    if is_mc.any():
        extra["mc_scoring"] = study.mc_scoring
        extra["mc_accuracy_by_scoring"] = mc_accuracy_by_scoring(ans, items)
    ws.mark_stage("answers", key, seconds=round(time.time() - t0, 1), n=int(len(ans)), **extra)
    remove_tree(ws.path("answers_parts"))
    return ans


def answer_items(lm, items: pd.DataFrame, study: StudySettings) -> pd.DataFrame:
    """Answer, grade and elicit verbal confidence for ``items`` (the item columns plus ``row``)
    in memory, exactly as the answers stage does, without a workspace (the Playground's path).
    Returns the answers.parquet columns, re-parsed with the current parser and grader."""
    return reparse(items, _answer_chunk(lm, items, study))
