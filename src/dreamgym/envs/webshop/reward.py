"""WebShop's purchase reward (Yao et al. 2022), our reimplementation of upstream
`web_agent_site/engine/goal.py` (princeton-nlp/WebShop, the version with `EXACT_MATCH_OPTS`). The native
env calls `get_reward` on `Buy Now`; anything may call it on a loaded product record and a goal.

    reward = r_type * (attribute matches + option matches + price ok) / (|attributes| + |goal options| + 1)

Same signatures, argument shapes and quirks as upstream (see docs/webshop-reward.md), except: the
title score's nouns come from a pluggable `TitleScorer` (default: a deterministic heuristic, spaCy
optional); a goal with `price_upper <= 0` gets no price credit where upstream raises TypeError (int +
None); no goal attributes gives r_att 0.0 where upstream divides by zero. Fuzzy scores equal thefuzz's
`token_set_ratio` integers.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from dreamgym.envs.webshop.normalize import heuristic_nouns, normalize_color
from dreamgym.errors import DreamGymError

__all__ = [
    "EXACT_MATCH_OPTS",
    "FUZZY_THRESHOLD",
    "NOUN_TAGS",
    "SPACY_DEFAULT_MODEL",
    "TitleScorer",
    "HeuristicTitleScorer",
    "SpacyTitleScorer",
    "make_title_scorer",
    "fuzzy_score",
    "get_type_reward",
    "get_attribute_reward",
    "get_option_reward",
    "get_reward",
]

EXACT_MATCH_OPTS = ["size"]
"""option names (lower-cased) matched by exact equality instead of fuzzily"""
FUZZY_THRESHOLD = 85
"""an attribute or option matches when its thefuzz-style integer score is strictly above this"""
NOUN_TAGS = ("PNOUN", "NOUN", "PROPN")
"""spaCy POS tags counted as nouns (upstream's tuple; 'PNOUN' is no spaCy tag, kept as upstream has it)"""
SPACY_DEFAULT_MODEL = "en_core_web_lg"
"""the model upstream loads; used when `spacy_model` is None"""


class TitleScorer(ABC):
    """Upstream's title_score: distinct nouns shared by the goal and product names, divided by the
    goal name's noun count *with repeats* (upstream's arithmetic); 0.2 when the goal name has none."""

    name: str = ""

    @abstractmethod
    def nouns(self, text: str) -> list[str]:
        """Lower-cased noun tokens of `text`, in order, repeats kept."""

    def score(self, desired_name: str, purchased_name: str) -> float:
        desired = self.nouns(desired_name)
        if not desired:
            return 0.2
        return len(set(desired) & set(self.nouns(purchased_name))) / len(desired)


class HeuristicTitleScorer(TitleScorer):
    """No model: `normalize.heuristic_nouns` (word lists and suffix rules) approximates spaCy's tags."""

    name = "heuristic"

    def nouns(self, text: str) -> list[str]:
        return heuristic_nouns(text)


class SpacyTitleScorer(TitleScorer):
    """Upstream's tagging: tokens of `model` (a spaCy model name or package folder) tagged NOUN/PROPN.
    spaCy is imported here only; dreamgym does not depend on it (it pins numpy<2)."""

    name = "spacy"

    def __init__(self, model: str | None = None):
        self.model = model or SPACY_DEFAULT_MODEL
        self._nlp = _load_spacy(self.model)
        self._cache: dict[str, list[str]] = {}

    def nouns(self, text: str) -> list[str]:
        if text not in self._cache:
            if len(self._cache) >= 100_000:
                self._cache.clear()
            self._cache[text] = [t.text.lower() for t in self._nlp(text) if t.pos_ in NOUN_TAGS]
        return self._cache[text]


def make_title_scorer(name: str = "heuristic", spacy_model: str | None = None) -> TitleScorer:
    """The scorer named by `env.webshop.title_scorer` ('heuristic' or 'spacy'), built once per
    (name, spacy_model) and shared. Raises DreamGymError for an unknown name or a missing spaCy."""
    return _cached_title_scorer(name, spacy_model)


def fuzzy_score(s1: Any, s2: Any) -> int:
    """thefuzz's `fuzz.token_set_ratio(s1, s2)` with its defaults (force_ascii, full_process),
    computed by rapidfuzz: drop code points 128-255, keep letters/digits, lower-case, then round
    the float score the way thefuzz does (`int(round(x))`, half to even) -> int in [0, 100]."""
    if s1 is None or s2 is None:
        return 0
    return int(round(fuzz.token_set_ratio(s1, s2, processor=_thefuzz_process)))


def get_type_reward(purchased_product: dict, goal: dict,
                    title_scorer: TitleScorer | str | None = None) -> dict[str, Any]:
    """Is the purchase the right kind of product? -> {r_type, query_match, category_match,
    title_score}. r_type is 1.0; 0.5 unless the queries are equal, >= 2 distinct category levels
    overlap or title_score > 0.2; then 0.1 if title_score < 0.1 and 0.0 if it is 0 (both override)."""
    query_match = purchased_product["query"] == goal["query"]
    purchased_levels = {x.strip() for x in purchased_product["product_category"].split("›")}
    goal_levels = {x.strip() for x in goal["product_category"].split("›")}
    category_match = len(purchased_levels & goal_levels) >= 2
    title_score = _scorer(title_scorer).score(goal["name"], purchased_product["name"])

    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return dict(r_type=r_type, query_match=query_match, category_match=category_match,
                title_score=title_score)


def get_attribute_reward(purchased_product: dict, goal: dict) -> tuple[float, int]:
    """(share of goal attributes matched, number matched). A goal attribute matches a product
    attribute with fuzzy score > 85, else when it is a substring (as written, not lower-cased) of
    the lower-cased Title, space-joined BulletPoints or Description. No goal attributes -> 0.0
    (upstream divides by zero; its goals always have some)."""
    goal_attrs = goal["attributes"]
    matches = 0
    for g_attr in goal_attrs:
        if any(_fuzzy_match(p_attr, g_attr) for p_attr in purchased_product["Attributes"]):
            matches += 1
        elif _in_product_text(g_attr, purchased_product):
            matches += 1
    return (matches / len(goal_attrs) if goal_attrs else 0.0), matches


def get_option_reward(purchased_product: dict, goal_options: list[str],
                      purchased_options: dict[str, str]) -> tuple[float | None, int]:
    """(option matches / len(goal_options), option matches); None instead of the share when there
    are no goal options. Both sides pass `normalize_color`. Each purchased option counts once: an
    option named "size" (any case) must equal a goal option exactly, others need fuzzy > 85 against
    any goal option; failing that, it counts when its value is a substring of the lower-cased Title,
    BulletPoints or Description. Upstream's quirk kept: the count can exceed len(goal_options)."""
    goal_values = [normalize_color(o) for o in goal_options]
    matches = 0
    for key, value in purchased_options.items():
        value = normalize_color(value)
        if key.lower() in EXACT_MATCH_OPTS:
            matched = value in goal_values
        else:
            matched = any(_fuzzy_match(g, value) for g in goal_values)
        if matched or _in_product_text(value, purchased_product):
            matches += 1
    return (matches / len(goal_options) if goal_options else None), matches


def get_reward(purchased_product: dict, goal: dict, price: float, options: dict[str, str],
               verbose: bool = False, *, title_scorer: TitleScorer | str | None = None,
               **kwargs: Any) -> float | tuple[float, dict[str, Any]]:
    """Upstream's reward of buying `purchased_product` (a loaded product record) at `price` with the
    clicked `options` (name -> value) for `goal` (query, product_category, name, attributes,
    goal_options as dict or list, price_upper). Returns the reward, or (reward, info) when verbose;
    info has r_type, r_att, w_att, query_match, category_match, title_score, and r_option/w_option
    when the goal has options, r_price (a bool)/w_price when price_upper > 0. `title_scorer` (a
    TitleScorer or its name) defaults to the heuristic; other keywords are ignored, as upstream."""
    type_info = get_type_reward(purchased_product, goal, title_scorer)
    r_price = (price <= goal["price_upper"]) if goal["price_upper"] > 0 else None
    r_att, attr_matches = get_attribute_reward(purchased_product, goal)
    goal_options = goal["goal_options"]
    goal_values = list(goal_options.values()) if isinstance(goal_options, dict) else goal_options
    r_option, option_matches = get_option_reward(purchased_product, goal_values, options)

    n_parts = len(goal["attributes"]) + len(goal_options) + 1
    price_credit = int(r_price) if r_price is not None else 0
    reward = (attr_matches + option_matches + price_credit) / n_parts * type_info["r_type"]
    if not verbose:
        return reward
    info = {"r_type": type_info["r_type"], "r_att": r_att, "w_att": len(goal["attributes"]) / n_parts,
            "query_match": type_info["query_match"], "category_match": type_info["category_match"],
            "title_score": type_info["title_score"]}
    if r_option is not None:
        info.update(r_option=r_option, w_option=len(goal_options) / n_parts)
    if r_price is not None:
        info.update(r_price=r_price, w_price=1 / n_parts)
    return reward, info


# -- internals ---------------------------------------------------------------------------------

_LATIN1_SUPPLEMENT = dict.fromkeys(range(128, 256))
"""thefuzz's force_ascii deletes exactly these code points (it does not transliterate them)"""

_SPACY_HELP = (
    "env.webshop.title_scorer=spacy needs spaCy, which dreamgym does not install. Use a separate "
    "virtualenv: `python -m venv .venv-spacy && .venv-spacy/bin/pip install -e . 'spacy==3.8.*' && "
    ".venv-spacy/bin/python -m spacy download en_core_web_lg`, run dreamgym from it, or set "
    "env.webshop.title_scorer=heuristic. See docs/webshop-reward.md.")


def _thefuzz_process(text: Any) -> str:
    return default_process(str(text).translate(_LATIN1_SUPPLEMENT))


def _fuzzy_match(a: str, b: str) -> bool:
    return fuzzy_score(a, b) > FUZZY_THRESHOLD


def _in_product_text(value: str, product: dict) -> bool:
    """Upstream's fallback, short-circuit like it (records may lack the later fields)."""
    return (value in product["Title"].lower()
            or value in " ".join(product["BulletPoints"]).lower()
            or value in product["Description"].lower())


def _scorer(title_scorer: TitleScorer | str | None) -> TitleScorer:
    if isinstance(title_scorer, TitleScorer):
        return title_scorer
    return make_title_scorer(title_scorer or "heuristic")


@functools.lru_cache(maxsize=8)
def _cached_title_scorer(name: str, spacy_model: str | None) -> TitleScorer:
    if name == "heuristic":
        return HeuristicTitleScorer()
    if name == "spacy":
        return SpacyTitleScorer(spacy_model)
    raise DreamGymError(f"key 'env.webshop.title_scorer': got {name!r}, expected 'heuristic' or 'spacy'")


def _load_spacy(model: str) -> Any:
    try:
        import spacy
    except ImportError:
        raise DreamGymError(_SPACY_HELP) from None
    try:
        return spacy.load(model)
    except OSError as e:
        raise DreamGymError(f"key 'env.webshop.spacy_model': spaCy cannot load {model!r} (a model "
                            f"name installed in this environment or a model package folder): {e}") from None
