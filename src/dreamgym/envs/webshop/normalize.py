"""Text normalization behind the WebShop reward (`reward.py` is the only caller).

Two things live here:
- `normalize_color`: upstream `web_agent_site/engine/normalize.py`'s color mapping, same semantics: the
  *first* entry of the alphabetical `COLOR_SET` that occurs as a case-sensitive substring wins ("navy
  blue" -> "blue", "violet lavender" -> "lavender"), anything else comes back unchanged.
- `heuristic_nouns`: the spaCy-free stand-in for upstream's POS tagging (NOUN/PROPN tokens of a product
  name), used by the default title scorer. It is a documented approximation, deterministic and free
  of models; see docs/webshop-reward.md for the rules and how to switch spaCy on instead.
"""

from __future__ import annotations

import re

__all__ = ["COLOR_SET", "normalize_color", "tokenize", "heuristic_nouns"]

COLOR_SET: list[str] = [
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue",
    "blush", "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral",
    "cranberry", "cream", "crystal", "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia",
    "gold", "granite", "grape", "graphite", "grass", "gray", "green", "grey", "heather", "indigo",
    "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac", "lime", "magenta",
    "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom", "mustard",
    "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum", "purple",
    "rainbow", "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull",
    "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise",
    "violet", "walnut", "wheat", "white", "wine", "yellow",
]
"""upstream's base colors, in upstream's (alphabetical) order: the order decides which color wins"""


def normalize_color(color_string: str) -> str:
    """The first `COLOR_SET` color contained in `color_string` (case-sensitive substring test, so
    "stonewash" -> "ash" and "Black" stays "Black"), else `color_string` unchanged."""
    for color in COLOR_SET:
        if color in color_string:
            return color
    return color_string


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens, split roughly like spaCy: hyphens, slashes, brackets and other
    punctuation separate tokens; dots and apostrophes inside a token keep it whole ("d.o.n", "3.1");
    a possessive "'s" is dropped ("men's" -> "men")."""
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if token.endswith(("'s", "\u2019s")):
            token = token[:-2]
        if token:
            tokens.append(token)
    return tokens


def heuristic_nouns(text: str) -> list[str]:
    """The tokens of `text` that the heuristic counts as nouns, in order and with repeats (upstream
    divides by the count with repeats). Kept: tokens with a letter, not starting with a digit
    (numbers, "2pcs", "4k"), longer than one character, and not a function word, unit or common
    product-title adjective (shipped lists below), nor an adjectival past participle ("listed",
    "insulated": 5+ letters ending in -ed, except -eed and -bed)."""
    return [t for t in tokenize(text) if _is_noun(t)]


# -- internals ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+(?:['\u2019.][^\W_]+)*")


def _is_noun(token: str) -> bool:
    if len(token) < 2 or token[0].isdigit() or not any(c.isalpha() for c in token):
        return False
    if token in _FUNCTION_WORDS or token in _UNITS or token in _ADJECTIVES:
        return False
    return not _is_participle(token)


def _is_participle(token: str) -> bool:
    return len(token) >= 5 and token.endswith("ed") and not token.endswith(("eed", "bed"))


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FUNCTION_WORDS = _words("""
    a an the this that these those each every any all both either neither some no another such other
    own same few many much more most less least several enough
    about above across after against along amid among around as at before behind below beneath beside
    besides between beyond by despite down during except for from in inside into like near of off on
    onto out outside over past per plus since than through throughout to toward towards under
    underneath until up upon via vs with within without
    and or but nor so yet if because while whether although though unless when where whereas
    i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
    myself yourself itself themselves who whom whose which what
    is are was were be been being am do does did have has had can could will would shall should may
    might must get gets make makes use used uses include includes including
    not very too also just only even ever never always again here there then now how why
    fully easily quickly perfectly extremely highly completely
    one two three four five six seven eight nine ten eleven twelve twenty hundred thousand
    first second third
""")
"""determiners, prepositions, conjunctions, pronouns, auxiliaries, adverbs, number words"""

_UNITS = _words("""
    oz fl ounce ounces lb lbs pound pounds mg kg gram grams ml liter liters litre litres gallon gallons
    quart quarts inch inches ft feet cm mm meter meters yard yards pcs pc ct count pack packs watt
    watts volt volts mah gb tb mb hz
""")
"""measurement and quantity units: they say how much, not what kind of product"""

_ADJECTIVES = _words("""
    new old big small large little mini tiny huge long short tall high low wide narrow slim thin thick
    heavy lightweight soft hard smooth fine deep flat round square full half double single dual triple
    extra super premium professional portable adjustable waterproof resistant durable natural organic
    original classic modern vintage retro comfortable comfy casual formal elegant cute cool warm hot
    cold fresh clean dry wet easy quick fast best better good great perfect ideal beautiful pretty
    stylish fashionable compatible universal electric electronic digital automatic wireless
    rechargeable reusable disposable washable breathable foldable removable stretchy elastic loose
    tight sturdy strong safe healthy pure real genuine authentic stainless wooden metallic sweet free
    non anti multi multiple various assorted mixed indoor outdoor
    black white red blue green yellow pink purple orange brown gray grey beige navy ivory khaki tan
    teal maroon burgundy turquoise golden multicolor multicolored colorful clear transparent
    dark bright
""")
"""common adjectives of product titles (sizes, qualities, colors); "light", "ultra", "gold", "silver" and
material nouns ("cotton", "leather") are deliberately absent: they head or name products too"""
