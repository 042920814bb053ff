"""What to patch: the components, layers and positions of a patching grid, checked before any
model work (:class:`PatchSpec`), and the parsers of their command-line forms.

Layers are hidden-state indices as everywhere in metacog (:mod:`metacog.model.hooks`): ``h = 0``
is the input of block 0 (the embeddings), ``h >= 1`` the output of block ``h-1`` — the
residual stream TransformerLens calls ``blocks.{h-1}.hook_resid_post``. Components: ``resid``
(the residual stream at ``h``), ``attn`` / ``mlp`` (the sub-layer outputs of block ``h-1``,
TransformerLens's ``hook_attn_out`` / ``hook_mlp_out``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


COMPONENTS = ("resid", "attn", "mlp")


NAMED = ("confidence", "last_prompt", "last_answer")


KINDS = ("confidence", "last_prompt", "last_answer", "random", "token")


DEFAULT_MIN_DENOMINATOR = 1.0  # points on the 0–100 scale (the study: 0.01 on 0–1)


PATCHING_VERSION = 2  # 2: random positions drawn from the item's own tokens by default (random_from)


POSITION_CLASSES = ("question", "answer", "template")


RANDOM_FROM = {"item": ("question", "answer"), "template": ("template",), "all": POSITION_CLASSES}


class PatchError(ValueError):
    """Bad patching input; the message says what to change. Raised before any model work."""


@dataclass(frozen=True)
class PatchSpec:
    """What to patch. ``layers=None`` means every block output (1..L).

    Raises:
        PatchError: unknown ``random_from``, position or component, or ``min_denominator`` not a
            number >= 0 (points on the 0–100 scale).
    """

    layers: tuple[int, ...] | None = None
    positions: tuple[str, ...] = ("confidence", "random:3")
    components: tuple[str, ...] = ("resid",)
    seed: int = 0
    min_denominator: float = DEFAULT_MIN_DENOMINATOR
    check_answer: bool = True
    random_from: str = "item"  # item (question + answer tokens) | template | all: where random:K draws

    def __post_init__(self):
        if self.random_from not in RANDOM_FROM:
            raise PatchError(f"random_from must be one of {', '.join(RANDOM_FROM)} (item: the question and answer tokens; "
                             f"template: chat template, system prompt, instruction and Confidence: suffix), not {self.random_from!r}")
        object.__setattr__(self, "positions", parse_positions(self.positions))
        comps = tuple(dict.fromkeys(c.strip().lower() for c in (self.components.split(",") if isinstance(self.components, str) else self.components)))
        bad = [c for c in comps if c not in COMPONENTS]
        if bad or not comps:
            raise PatchError(f"unknown component(s) {', '.join(bad) or '(none)'}: use {', '.join(COMPONENTS)}")
        object.__setattr__(self, "components", comps)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted(set(int(x) for x in self.layers))))
        if not (isinstance(self.min_denominator, (int, float)) and self.min_denominator >= 0):
            raise PatchError(f"min_denominator must be a number >= 0, not {self.min_denominator!r}")

    def layer_list(self, n_layers: int, component: str) -> list[int]:
        """The hidden-state indices patched for ``component`` in a model of ``n_layers`` blocks: every
        block output ``1..L`` when ``layers`` is None; else ``layers`` (``attn``/``mlp`` need ``h >= 1``)."""
        lo = 0 if component == "resid" else 1
        if self.layers is None:
            return list(range(1, n_layers + 1))
        return [h for h in self.layers if h >= lo]

    def n_random(self) -> int:
        """K of ``random:K`` (0 when no random positions are asked for)."""
        return sum(int(p.split(":")[1]) for p in self.positions if p.startswith("random:"))


def parse_positions(spec) -> tuple[str, ...]:
    """``"confidence,last-prompt,random:3,token:17"`` (or a list) → normalised names.

    Raises:
        PatchError: an unknown position, ``random:K`` with K outside 1..64, a negative or
            non-integer token index, ``random:K`` given twice, or no position at all.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in items:
        p = str(raw).strip().lower().replace(" ", "")
        if not (p.startswith("token:") or p.startswith("tok:")):
            p = p.replace("-", "_")
        if not p:
            continue
        if p in ("conf", "confidence_slot", "slot"):
            p = "confidence"
        if p in NAMED:
            out.append(p)
        elif p.startswith("random"):
            k = p.split(":", 1)[1] if ":" in p else "1"
            if not k.isdigit() or not 1 <= int(k) <= 64:
                raise PatchError(f"'{raw}': random positions are written random:K with K from 1 to 64")
            out.append(f"random:{int(k)}")
        elif p.startswith("token:") or p.startswith("tok:"):
            k = p.split(":", 1)[1]
            if k.startswith("-") and k[1:].isdigit():
                raise PatchError(f"'{raw}' is outside the target sequence: token indices count from 0 (the first token of the prompt)")
            if not k.isdigit():
                raise PatchError(f"'{raw}': a picked token is written token:I with I a token index of the target")
            out.append(f"token:{int(k)}")
        else:
            raise PatchError(f"unknown position '{raw}': use confidence, last-prompt, last-answer, random:K or token:I")
    out = list(dict.fromkeys(out))
    if sum(p.startswith("random:") for p in out) > 1:
        raise PatchError("give random:K once")
    if not out:
        raise PatchError("no positions given")
    return tuple(out)


def parse_layers(spec, n_layers: int) -> tuple[int, ...] | None:
    """``all`` (block outputs 1..L) | ``0-30`` | ``1,5,10`` | ``every:3``; checked against the model.

    Raises:
        PatchError: an unreadable spec, ``every:K`` with K < 1, an index outside ``0..n_layers``,
            or no layer selected.
    """
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        vals = [int(x) for x in spec]
    else:
        s = str(spec).strip().lower()
        if s in ("all", ""):
            return None
        vals = []
        for part in s.split(","):
            part = part.strip()
            if part.startswith("every:"):
                k = int(part.split(":")[1])
                if k < 1:
                    raise PatchError("every:K needs K >= 1")
                vals += list(range(k, n_layers + 1, k))
            elif "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                vals += list(range(int(a), int(b) + 1))
            else:
                try:
                    vals.append(int(part))
                except ValueError:
                    raise PatchError(f"cannot read layers '{spec}': use all, A-B, a comma list, or every:K") from None
    bad = [h for h in vals if not 0 <= h <= n_layers]
    if bad:
        raise PatchError(
            f"layer(s) {', '.join(map(str, sorted(set(bad))))} outside this model: hidden-state indices run 0..{n_layers} "
            f"(0 = embeddings, h = output of block h-1; the model has {n_layers} blocks)"
        )
    if not vals:
        raise PatchError(f"no layers selected by '{spec}'")
    return tuple(sorted(set(vals)))


def spec_dict(spec: PatchSpec) -> dict:
    """``spec`` as a JSON-ready dict (tuples as lists), as written to ``spec.json``/``patching.json``."""
    d = dataclasses.asdict(spec)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
