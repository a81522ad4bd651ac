"""Exact values for the WebShop reward (`dreamgym.envs.webshop.reward`) and its text normalization.
Expected fuzzy scores are thefuzz's integers, worked out by hand (thefuzz is not installed): InDel
ratio 2*LCS/(len1+len2) over the processed, token-set combined strings, rounded with int(round())."""

import importlib.util
import os

import pytest
from rapidfuzz import fuzz

from dreamgym.envs.webshop.normalize import heuristic_nouns, normalize_color, tokenize
from dreamgym.envs.webshop.reward import (
    EXACT_MATCH_OPTS,
    HeuristicTitleScorer,
    TitleScorer,
    fuzzy_score,
    get_attribute_reward,
    get_option_reward,
    get_reward,
    get_type_reward,
    make_title_scorer,
)
from dreamgym.errors import DreamGymError

SAIREED = "Saireed UL Listed 2 Prong Power Cord for JBL Bar 3.1 Bar 2.1 Channel 4K Ultra HD Soundbar"
BRST = ("BRST AC Power Cord Outlet Socket Cable Plug Lead for Panasonic SC-HT830V DVD/VCR Combo "
        "Home Theater System")
MINKISSY = ("Minkissy 2pcs Stainless Steel Eyebrow Tweezers Blackhead Acne Remover Portable Makeup Tweezers "
            "(Silver)")


def product(**overrides):
    """A loaded product record (upstream engine.load_products shape) with neutral texts."""
    record = {"query": "hoodies", "product_category": "Clothing › Men › Hoodies",
              "name": "Pullover Hoodie", "Title": "Pullover Hoodie", "Attributes": [],
              "BulletPoints": [], "Description": ""}
    return {**record, **overrides}


def goal(**overrides):
    record = {"query": "hoodies", "product_category": "Clothing › Men › Hoodies",
              "name": "Pullover Hoodie", "attributes": ["machine wash"], "goal_options": {},
              "price_upper": 40.0}
    return {**record, **overrides}


class FixedNouns(TitleScorer):
    """A stand-in scorer: nouns are the whitespace-split words."""
    name = "fixed"

    def nouns(self, text):
        return text.lower().split()


# -- normalize_color -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", ""), ("black forest", "black"), ("violet lavender", "lavender"),   # upstream's own suite
    ("steelivy fuchsia", "fuchsia"), ("123alabaster", "alabaster"), ("webshop", "webshop"),
    ("navy blue", "blue"),        # first in COLOR_SET order wins, not first in the text
    ("light grey", "grey"), ("dark grey", "dark"), ("stonewash", "ash"), ("standard", "tan"),
    ("Black", "Black"),           # case-sensitive
])
def test_normalize_color(text, expected):
    assert normalize_color(text) == expected


# -- fuzzy scores equal thefuzz's integers --------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    ("Machine Wash", "machine wash", 100),        # processed to equal strings
    ("essential oil", "essential oils", 96),      # "essential oil" vs "essential oils": 26/27
    ("x-large", "xx-large", 93),                  # "large x" vs "large xx": 28/30
    ("tea bag", "tea tree", 60),                  # "tea" vs "tea bag": 6/10
    ("cool powder snow", "powder snow", 100),     # one token set inside the other
    ("café", "cafe", 86),                         # force_ascii deletes "é": "caf" vs "cafe" 6/7
    ("", "anything", 0), (None, "anything", 0),
])
def test_fuzzy_score_equals_thefuzz(a, b, expected):
    assert fuzzy_score(a, b) == expected
    assert fuzzy_score(b, a) == expected


def test_plain_rapidfuzz_would_differ():
    assert fuzz.token_set_ratio("Machine Wash", "machine wash") == pytest.approx(83.333, abs=1e-3)
    assert fuzz.token_set_ratio("café", "cafe") == 75.0                  # é kept: 6/8


def test_borderline_score_rounds_like_thefuzz():
    # sect "cancelling noise"; "cancelling noise charging" vs "cancelling noise hands":
    # LCS 17 + len("han") = 20 over 25 + 22 -> 85.106, which thefuzz reports as 85: no match
    a, b = "charging noise cancelling", "noise cancelling hands"
    assert fuzz.token_set_ratio(a, b) == pytest.approx(8000 / 94)
    assert fuzzy_score(a, b) == 85
    r_att, n = get_attribute_reward(product(Attributes=[a]), goal(attributes=[b]))
    assert (r_att, n) == (0.0, 0)
    assert get_attribute_reward(product(Attributes=["café"]), goal(attributes=["cafe"])) == (1.0, 1)


# -- heuristic nouns and title score -------------------------------------------------------------

def test_tokenize_splits_like_spacy_roughly():
    assert tokenize("Men's Unisex-Adult D.o.n. 3.1 DVD/VCR (Silver)") == [
        "men", "unisex", "adult", "d.o.n", "3.1", "dvd", "vcr", "silver"]


@pytest.mark.parametrize("title, nouns", [
    ("adidas Unisex-Adult D.o.n. Issue 2 Basketball Shoe",
     ["adidas", "unisex", "adult", "d.o.n", "issue", "basketball", "shoe"]),
    (SAIREED, ["saireed", "ul", "prong", "power", "cord", "jbl", "bar", "bar", "channel", "ultra", "hd",
               "soundbar"]),
    ("Rusticware 921ORB Kitchen and Bath Cabinet Knob", ["rusticware", "kitchen", "bath", "cabinet", "knob"]),
    (MINKISSY,
     ["minkissy", "steel", "eyebrow", "tweezers", "blackhead", "acne", "remover", "makeup", "tweezers",
      "silver"]),
    ("Men's Waterproof Hiking Boots with Memory Foam, Black, Size 10",
     ["men", "hiking", "boots", "memory", "foam", "size"]),
    ("Insulated 16 oz Stainless Steel Water Bottle for the Bed", ["steel", "water", "bottle", "bed"]),
])
def test_heuristic_nouns_on_product_titles(title, nouns):
    assert heuristic_nouns(title) == nouns


@pytest.mark.parametrize("desired, purchased, expected, upstream", [
    ("adidas Unisex-Adult D.o.n. Issue 2 Basketball Shoe",
     "adidas Unisex-Adult D.o.n. Issue 2 Indoor Court Shoe", 6 / 7, 0.85),
    (SAIREED + " Home Theater System Subwoofer", BRST, 5 / 16, 0.31),
    (SAIREED, BRST, 2 / 12, 0.17),                # "bar" twice: the denominator keeps repeats
    ("Rusticware 921ORB Kitchen and Bath Cabinet Knob",
     MINKISSY,
     0.0, 0.0),
    ("The Best of All", "Anything", 0.2, 0.2),   # no noun in the goal name
])
def test_heuristic_title_score_meets_upstream_spacy_tests(desired, purchased, expected, upstream):
    score = HeuristicTitleScorer().score(desired, purchased)
    assert score == expected
    assert score == pytest.approx(upstream, abs=1e-2)   # upstream's en_core_web_lg tolerance


def test_title_scorer_choice():
    assert make_title_scorer("heuristic", None) is make_title_scorer("heuristic", None)
    assert isinstance(make_title_scorer(), HeuristicTitleScorer)
    with pytest.raises(DreamGymError, match="env.webshop.title_scorer"):
        make_title_scorer("nltk", None)


@pytest.mark.skipif(importlib.util.find_spec("spacy") is not None, reason="spaCy is installed here")
def test_spacy_scorer_without_spacy_says_how_to_install():
    with pytest.raises(DreamGymError, match="spacy==3.8") as e:
        make_title_scorer("spacy", None)
    assert "separate virtualenv" in str(e.value)


def test_spacy_scorer_when_spacy_is_installed():
    """Runs only where spaCy is (a separate env); DREAMGYM_SPACY_MODEL names the model or its folder."""
    pytest.importorskip("spacy")
    try:
        scorer = make_title_scorer("spacy", os.environ.get("DREAMGYM_SPACY_MODEL"))
    except DreamGymError as e:
        pytest.skip(str(e))
    nouns = scorer.nouns("adidas Unisex-Adult D.o.n. Issue 2 Basketball Shoe")   # tags vary by model
    assert {"adult", "shoe"} <= set(nouns) and all(n == n.lower() for n in nouns) and "2" not in nouns
    assert get_type_reward(product(), goal(), scorer)["r_type"] == 1.0


# -- type reward ----------------------------------------------------------------------------------

def test_type_reward_exact_match():
    assert get_type_reward(product(), goal()) == dict(r_type=1.0, query_match=True, category_match=True,
                                                      title_score=1.0)


@pytest.mark.parametrize("category, match", [
    ("Hoodies › Clothing › Shirts", True),   # order ignored
    ("Toys › Games › Puzzles", False),
    ("Clothing › Toys › Men", True),
    ("Clothing › Clothing › Men", True),      # distinct levels: {Clothing, Men}
    ("Clothing › Clothing › Toys", False),    # only {Clothing}
    ("Clothing›Men", True),                   # levels are stripped
])
def test_category_match_needs_two_shared_levels(category, match):
    assert get_type_reward(product(product_category=category), goal())["category_match"] is match


SIX_NOUNS = "Apple Banana Cherry Date Elder Fig"


@pytest.mark.parametrize("query, category, desired, purchased, title_score, r_type", [
    ("hoodies", "Toys › Games", "The Best of All", "Pullover", 0.2, 1.0),    # no nouns; query match
    ("mugs", "Toys › Games", "The Best of All", "Pullover", 0.2, 0.5),       # 0.2 is not > 0.2
    ("mugs", "Toys › Games", SIX_NOUNS, "Apple Juice", 1 / 6, 0.5),
    ("mugs", "Clothing › Men", SIX_NOUNS, "Apple Juice", 1 / 6, 1.0),        # category match
    ("mugs", "Toys › Games", "Apple Banana Cherry Grape", "Apple Pie", 0.25, 1.0),   # > 0.2 alone
    ("hoodies", "Clothing › Men", SIX_NOUNS + " Guava Honeydew Kiwi Lemon Mango", "Apple", 1 / 11, 0.1),
    ("hoodies", "Clothing › Men", "Kitchen Cabinet Knob", "Eyebrow Tweezers", 0.0, 0.0),
])
def test_type_reward_levels(query, category, desired, purchased, title_score, r_type):
    result = get_type_reward(product(query=query, product_category=category, name=purchased),
                             goal(name=desired))
    assert (result["title_score"], result["r_type"]) == (title_score, r_type)


def test_type_reward_takes_a_scorer_object_or_name():
    p, g = product(name="Stainless Pullover"), goal(name="Stainless Hoodie")
    assert get_type_reward(p, g)["title_score"] == 0.0           # heuristic: "stainless" is no noun
    assert get_type_reward(p, g, "heuristic")["title_score"] == 0.0
    assert get_type_reward(p, g, FixedNouns())["title_score"] == 0.5


# -- attribute reward -----------------------------------------------------------------------------

TEA = ["tea tree", "essential oils", "natural ingredients"]


@pytest.mark.parametrize("purchased, expected", [
    (dict(Attributes=["tea tree", "essential oil", "natural ingredients"]), (1.0, 3)),   # fuzzy
    (dict(Attributes=["essential oil", "natural ingredients"], Title="", BulletPoints=[], Description=""),
     (2 / 3, 2)),
    (dict(Attributes=[], Title="", BulletPoints=["This shampoo has essential oils and smells like lemons"],
          Description="Best shampoo on the market, made with natural ingredients"), (2 / 3, 2)),
    (dict(Attributes=["tea bag", "earl gray", "lipton"], Title="English tea for breakfast",
          BulletPoints=["Soothing aroma", "Calming, great feeling"],
          Description="Best tea made by Lipton, great to pair with breakfast"), (0.0, 0)),
    (dict(Attributes=[], Title="Tea Tree Shampoo", BulletPoints=[], Description=""), (1 / 3, 1)),  # title
    (dict(Attributes=[], Title="", BulletPoints="essential oils", Description=""), (0.0, 0)),  # str joined
])
def test_attribute_reward(purchased, expected):
    assert get_attribute_reward(purchased, {"attributes": TEA}) == expected


def test_attribute_fallback_does_not_lowercase_the_goal_attribute():
    p = product(Title="Tea Tree Shampoo")
    assert get_attribute_reward(p, goal(attributes=["Tea Tree"])) == (0.0, 0)
    assert get_attribute_reward(product(Attributes=["tea tree"]), goal(attributes=["Tea Tree"])) == (1.0, 1)


# -- option reward --------------------------------------------------------------------------------

@pytest.mark.parametrize("purchased, goal_options, expected", [
    ({"amount": "pack of 12", "color": "grey", "size": "xl"}, ["grey", "xl", "pack of 12"], (1.0, 3)),
    ({"amount": "pack of 12", "color": "blue", "size": "xl"}, ["grey", "xl", "pack of 12"], (2 / 3, 2)),
    ({"amount": "pack of 12", "style": "powder snow"}, ["cool powder snow", "pack of 12"], (1.0, 2)),
    ({"size": "x-large"}, ["xx-large"], (0.0, 0)),      # size: exact only (fuzzy would give 93)
    ({"Size": "x-large"}, ["xx-large"], (0.0, 0)),      # option name compared lower-cased
    ({"fit": "x-large"}, ["xx-large"], (1.0, 1)),       # any other option: fuzzy
    ({"size": "x-large"}, ["x-large"], (1.0, 1)),
    ({"color": "navy blue"}, ["light blue"], (1.0, 1)),  # both normalize to "blue"
    ({"color": "dark grey"}, ["dark green"], (1.0, 1)),  # both normalize to "dark"
    ({"color": "dark grey"}, ["dark blue"], (0.0, 0)),   # "dark" vs "blue" ("blue" < "dark")
    ({"color": "navy"}, ["navy blue"], (0.0, 0)),        # "navy" vs "blue"
    ({"size": "navy blue"}, ["blue"], (1.0, 1)),         # normalized before the exact test too
    ({"color": "grey"}, [], (None, 0)),
    ({}, ["grey", "xl"], (0.0, 0)),
])
def test_option_reward(purchased, goal_options, expected):
    assert get_option_reward(product(), goal_options, purchased) == expected


def test_option_found_only_in_product_text():
    for field in (dict(Title="Whey Protein Vanilla 2 lb"), dict(BulletPoints=["vanilla flavor"]),
                  dict(Description="Tastes of VANILLA")):
        assert get_option_reward(product(**field), ["chocolate"], {"flavor": "vanilla"}) == (1.0, 1)
    assert get_option_reward(product(Title="Hoodie XL"), ["l"], {"size": "XL"}) == (0.0, 0)  # value as is
    assert get_option_reward(product(Title="Hoodie Navy"), ["grey"], {"color": "navy blue"}) == (0.0, 0)


def test_option_count_can_exceed_goal_options_like_upstream():
    p = product(Title="Large Pullover Hoodie")
    assert get_option_reward(p, ["grey"], {"color": "grey", "size": "large"}) == (2.0, 2)
    assert get_option_reward(p, [], {"size": "large"}) == (None, 1)
    assert EXACT_MATCH_OPTS == ["size"]


# -- price and the full reward ---------------------------------------------------------------------

HOODIE_GOAL = goal(attributes=["machine wash", "long sleeve"],
                   goal_options={"color": "navy blue", "size": "large"}, price_upper=40.0)
HOODIE = product(Attributes=["Machine Wash", "polyester"], BulletPoints=["Kangaroo pocket"],
                 Description="A warm pullover.")


def test_reward_partial_credit_exact():
    reward, info = get_reward(HOODIE, HOODIE_GOAL, 30.0, {"color": "black", "size": "large"}, verbose=True)
    assert reward == 0.6                                  # (1 attribute + 1 option + price) / 5
    assert info == {"r_type": 1.0, "r_att": 0.5, "w_att": 0.4, "query_match": True, "category_match": True,
                    "title_score": 1.0, "r_option": 0.5, "w_option": 0.4, "r_price": True, "w_price": 0.2}
    assert get_reward(HOODIE, HOODIE_GOAL, 30.0, {"color": "black", "size": "large"}) == 0.6
    other = dict(HOODIE, query="sweaters", product_category="Clothing › Women")   # 1 shared level
    g = dict(HOODIE_GOAL, name="Hoodie " + " ".join(SIX_NOUNS.split()[:5]))       # 1 of 6 nouns found
    reward, info = get_reward(other, g, 30.0, {"color": "black", "size": "large"}, verbose=True)
    assert (reward, info["r_type"], info["title_score"]) == (0.3, 0.5, 1 / 6)


def test_reward_price():
    options = {"color": "navy", "size": "large"}           # "navy" -> no color credit
    assert get_reward(HOODIE, HOODIE_GOAL, 40.0, options) == 0.6                     # price == upper is ok
    reward, info = get_reward(HOODIE, HOODIE_GOAL, 40.01, options, verbose=True)
    assert (reward, info["r_price"], info["w_price"]) == (0.4, False, 0.2)
    reward, info = get_reward(HOODIE, dict(HOODIE_GOAL, price_upper=0), 5.0, options, verbose=True)
    assert reward == 0.4                                   # no price credit; upstream: TypeError
    assert "r_price" not in info and "w_price" not in info and info["w_att"] == 0.4


def test_reward_list_goal_options_equal_dict():
    human = dict(HOODIE_GOAL, goal_options=["navy blue", "large"])
    options = {"color": "light blue", "size": "large"}
    assert get_reward(HOODIE, human, 30.0, options) == get_reward(HOODIE, HOODIE_GOAL, 30.0, options) == 0.8


def test_reward_without_goal_options_has_no_option_keys():
    reward, info = get_reward(HOODIE, goal(), 10.0, {}, verbose=True)
    assert reward == 1.0
    assert info == {"r_type": 1.0, "r_att": 1.0, "w_att": 0.5, "query_match": True, "category_match": True,
                    "title_score": 1.0, "r_price": True, "w_price": 0.5}


def test_reward_title_scorer_keyword_and_ignored_kwargs():
    p = dict(HOODIE, query="x", product_category="A › B", name="Stainless Pullover")
    g = dict(HOODIE_GOAL, name="Stainless Hoodie")
    options = {"color": "blue", "size": "large"}
    assert get_reward(p, g, 30.0, options) == 0.0                           # heuristic: title score 0
    assert get_reward(p, g, 30.0, options, title_scorer=FixedNouns(), unused=1) == 0.8   # 1/2 > 0.2
    assert isinstance(get_reward(p, g, 30.0, options), float)


def test_upstream_get_reward_sequence():
    g = {"query": "Query 1", "product_category": "a › b › c",
         "name": "Mens D.O.N. Issue 2 Gca Basketball Sneakers Shoes Casual - Off White",
         "attributes": TEA, "goal_options": {"color": "grey", "size": "XL"}, "price_upper": 40.00}
    p = {"query": "Query 1", "product_category": "a › b › c", "name": g["name"],
         "Attributes": ["tea tree", "essential oil", "natural ingredients"], "Title": "", "BulletPoints": [],
         "Description": "", "goal_options": {"color": "grey", "size": "XL"}}
    assert get_reward(p, g, 35, p["goal_options"]) == 1.0
    p.update(Attributes=[], BulletPoints="This shampoo has essential oils and smells like lemons",
             Description="Best shampoo on the market, made with natural ingredients")
    assert get_reward(p, g, 35, p["goal_options"]) == 4 / 6      # a str BulletPoints is joined per char
    g["goal_options"] = {"color": "grey", "size": "XL", "amount": "pack of 12"}
    assert get_reward(p, g, 35, p["goal_options"]) == 4 / 7
    g["name"], p["name"] = SAIREED, BRST
    p.update(query="Query 2", product_category="a › d › e")
    assert get_reward(p, g, 35, p["goal_options"]) == 4 / 7 * 0.5   # title score 2/12: r_type 0.5
