"""WebShop catalog: bundled generated data, the upstream-schema loader, its errors, determinism, the
generator's reproducibility and BM25 search quality."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from dreamgym.config import WebShopConfig
from dreamgym.envs.webshop import generate
from dreamgym.envs.webshop.catalog import Catalog, CatalogError, clear_cache, find_data_files
from dreamgym.envs.webshop.search import SearchEngine
from dreamgym.envs.webshop.vocab import PRODUCT_TYPES, upstream_normalize_color

DATA = Path(generate.__file__).with_name("data")


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return Catalog.load()


# -- bundled catalog -------------------------------------------------------------------------------
def test_bundled_catalog_sizes_splits_and_goals(bundled):
    assert len(bundled.products) >= 1000 and len(bundled.goals) >= 3500
    assert {p["category"] for p in bundled.products} == {"beauty", "electronics", "fashion", "food", "furniture"}
    n = len(bundled.goals)
    assert len(bundled.split_indices("test", 500, 1000)) == 500
    assert len(bundled.split_indices("dev", 500, 1000)) == 1000
    assert bundled.split_indices("train", 500, 1000) == range(1500, n)
    for g in bundled.goals:
        product = bundled.product_by_asin[g["asin"]]
        values = {v for vs in product["options"].values() for v in vs}
        assert isinstance(g["goal_options"], list) and 1 <= len(g["goal_options"]) <= 2
        assert set(g["goal_options"]) <= values, (g["asin"], g["goal_options"])
        assert 1 <= len(g["attributes"]) <= 3 and set(g["attributes"]) <= set(product["Attributes"])
        assert bundled.prices[g["asin"]] <= g["price_upper"]
        named = g["query"] in g["instruction_text"]            # the type, or its noun in the title
        assert named or any(w in g["instruction_text"] for w in re.findall(r"[\w-]+", product["name"].lower()))
        assert g["weight"] == 1 and g["name"] == product["name"]
    with pytest.raises(CatalogError, match="unknown split"):
        bundled.split_indices("val")


def test_bundled_products_are_upstream_records(bundled):
    keys = {"asin", "name", "Title", "category", "query", "product_category", "pricing", "Price", "options",
            "option_to_image", "Attributes", "BulletPoints", "Description", "Reviews", "Rating", "MainImage",
            "instructions"}
    for p in bundled.products:
        assert keys <= p.keys() and "brand" not in p and "product_information" not in p
        assert re.fullmatch(r"B0[A-Z0-9]{8}", p["asin"])
        assert 2 <= len(p["Attributes"]) <= 4 and len(p["product_category"].split(" › ")) >= 3
        assert p["Price"] in (f"${p['pricing'][0]}", f"${p['pricing'][0]} to ${p['pricing'][-1]}")
        assert p["pricing"][0] <= bundled.prices[p["asin"]] <= p["pricing"][-1]


def test_generated_text_never_leaks_foreign_attributes_or_own_option_values(bundled):
    """Upstream's reward also finds attributes and (color-normalized) option values as substrings of the
    bought product's text: the generator keeps both out, so only the real attributes/options count."""
    pool = {t.query: t.attributes for t in PRODUCT_TYPES}
    for p in bundled.products:
        text = " ".join([p["Title"], *p["BulletPoints"], p["Description"]]).lower()
        assert all(a in text for a in p["Attributes"])
        assert not [a for a in pool[p["query"]] if a not in p["Attributes"] and a in text]
        assert not [v for vs in p["options"].values() for v in vs if upstream_normalize_color(v) in text]


def test_loads_are_cached_deterministic_and_seeded(bundled):
    assert Catalog.load() is bundled and Catalog.from_config(WebShopConfig()) is bundled
    clear_cache()
    again = Catalog.load()
    assert again is not bundled
    assert [g["instruction_text"] for g in again.goals] == [g["instruction_text"] for g in bundled.goals]
    assert again.prices == bundled.prices
    other = Catalog.load(seed=1)
    assert [g["asin"] for g in other.goals] != [g["asin"] for g in bundled.goals]
    small = Catalog.load(num_products=100)
    assert [p["asin"] for p in small.products] == [p["asin"] for p in bundled.products[:100]]
    synthetic = Catalog.load(human_goals=False)
    assert synthetic.goals and all(isinstance(g["goal_options"], dict) for g in synthetic.goals)


# -- generator ---------------------------------------------------------------------------------------
def test_regenerating_with_the_documented_command_reproduces_the_bundled_files():
    assert f"--products {generate.DEFAULT_PRODUCTS} --seed {generate.DEFAULT_SEED}" in generate.__doc__
    files = generate.generate(generate.DEFAULT_PRODUCTS, generate.DEFAULT_SEED)
    for name in generate.FILE_NAMES:
        raw = (DATA / name).read_bytes()
        assert raw[4:8] == b"\0\0\0\0", f"{name}: gzip mtime must be 0"
        assert json.loads(gzip.decompress(raw)) == files[name], f"{name} is stale: regenerate it"
    assert sum((DATA / n).stat().st_size for n in generate.FILE_NAMES) < 3_000_000


def test_generator_cli_is_byte_identical_and_loadable(tmp_path):
    for out in ("a", "b"):
        generate.main(["--out", str(tmp_path / out), "--products", "80", "--seed", "7"])
    for name in generate.FILE_NAMES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    catalog = Catalog.load(tmp_path / "a")
    assert len(catalog.products) == 80 and len(catalog.goals) == 240


# -- loader on hand-written upstream files -----------------------------------------------------------
def _item(asin: str, **kw) -> dict:
    item = {"asin": asin, "name": f"Acme {asin}", "category": "beauty", "query": "deodorant",
            "product_category": "Beauty › Care › Deodorant", "pricing": "$5.00", "customization_options": {},
            "full_description": "plain text", "small_description": ["first bullet"], "images": ["img.jpg"]}
    return {**item, **kw}


def _write_upstream(folder: Path, items: list | None = None, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items = items if items is not None else [
        _item("B000000001", name="Acme Fresh Deodorant", query=" Deodorant ", pricing="$12.99 - $15.49",
              customization_options={"Color": [{"value": "Black/White ", "image": "c.jpg"},
                                               {"value": "Navy Blue", "image": None}], "Size": None},
              full_description="Keeps you fresh.", small_description=["LONG LASTING: all day"],
              images=["main.jpg", "side.jpg"], brand="Acme", seller_name="x"),
        _item("B000000002", pricing="", small_description="one bullet"),
        _item("nan"), _item("B000000001", name="duplicate"), _item("B0000000033"),
        _item("B000000004", pricing="$7.50"),
    ]
    files = {
        "items_shuffle_1000.json": items,
        "items_ins_v2_1000.json": {
            "B000000001": {"attributes": ["long lasting", "aluminum free"], "instruction": "i need a long lasting deodorant",
                           "instruction_attributes": ["long lasting"]},
            "B000000004": {"attributes": ["long lasting"], "instruction": "i want a deodorant",
                           "instruction_attributes": ["long lasting"]}},
        "items_human_ins.json": {"B000000001": [
            {"instruction": "i want a long lasting deodorant in black.", "instruction_attributes": ["long lasting"],
             "instruction_options": ["black | white"]},
            {"instruction": "no attributes here", "instruction_attributes": [], "instruction_options": []}]},
        "reviews.json": [{"asin": "B000000001", "average_rating": 3.0,
                          "reviews": [{"title": "ok", "stars": 4, "review": "fine"}, {"title": "meh", "stars": 2}]}],
    }
    files.update(overrides)
    for name, obj in files.items():
        (folder / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return folder


def test_loader_reads_upstream_files_exactly(tmp_path):
    catalog = Catalog.load(_write_upstream(tmp_path / "ws"))
    assert [p["asin"] for p in catalog.products] == ["B000000001", "B000000002", "B000000004"]
    p = catalog.products[0]
    expected = {
        "Title": "Acme Fresh Deodorant", "query": "deodorant", "pricing": [12.99, 15.49], "Price": "$12.99 to $15.49",
        "options": {"color": ["black | white", "navy blue"]},
        "option_to_image": {"black | white": "c.jpg", "navy blue": None},
        "Attributes": ["long lasting", "aluminum free"], "BulletPoints": ["LONG LASTING: all day"],
        "Description": "Keeps you fresh.", "Rating": 3.0, "MainImage": "main.jpg",
        "Reviews": [{"title": "ok", "score": 4, "body": "fine"}, {"title": "meh", "score": 2, "body": ""}],
    }
    assert {k: p[k] for k in expected} == expected
    assert "brand" not in p and "seller_name" not in p and len(p["instructions"]) == 2
    q = catalog.product_by_asin["B000000002"]
    assert (q["pricing"], q["Price"], q["Attributes"], q["BulletPoints"]) == ([100.0], "$100.0", ["DUMMY_ATTR"], ["one bullet"])
    assert (q["Reviews"], q["Rating"], q["options"]) == ([], "N.A.", {})
    assert catalog.product_by_asin["B000000004"]["Price"] == "$7.5"
    assert catalog.prices["B000000002"] == 100.0 and 12.99 <= catalog.prices["B000000001"] <= 15.49
    [goal] = catalog.goals                                  # the attribute-less instruction is skipped
    assert goal["price_upper"] in (30.0, 40.0, 50.0) and goal["goal_options"] == ["black | white"]
    assert goal["instruction_text"] == f"i want a long lasting deodorant in black, and price lower than {goal['price_upper']:.2f} dollars"
    assert (goal["name"], goal["query"], goal["attributes"], goal["weight"]) == ("Acme Fresh Deodorant", "deodorant", ["long lasting"], 1)


def test_loader_synthetic_goals_follow_upstream(tmp_path):
    catalog = Catalog.load(_write_upstream(tmp_path / "ws"), human_goals=False)
    texts = sorted(g["instruction_text"].split(", and price")[0] for g in catalog.goals)
    assert texts == ["i need a long lasting deodorant with color: black | white",
                     "i need a long lasting deodorant with color: navy blue", "i want a deodorant"]
    assert all(g["weight"] == pytest.approx(1 / 3) for g in catalog.goals)
    assert {type(g["goal_options"]) for g in catalog.goals} == {dict}


@pytest.mark.parametrize("case, pattern", [
    ("no_folder", r"does not exist"),
    ("no_products", r"missing items_shuffle"),
    ("bad_json", r"items_ins_v2_1000\.json: invalid JSON"),
    ("missing_key", r"items_shuffle_1000\.json: item 0 \(asin 'B000000009'\) is missing key 'name'"),
    ("human_key", r"items_human_ins\.json: asin B000000001: instruction missing key 'instruction_options'"),
    ("bad_top_level", r"items_shuffle_1000\.json: expected a JSON list"),
    ("ambiguous", r"several items_shuffle"),
])
def test_catalog_errors_name_the_file(tmp_path, case, pattern):
    folder = tmp_path / "ws"
    if case != "no_folder":
        _write_upstream(folder)
    if case == "no_products":
        (folder / "items_shuffle_1000.json").unlink()
    elif case == "bad_json":
        (folder / "items_ins_v2_1000.json").write_text("{not json")
    elif case == "missing_key":
        item = _item("B000000009")
        del item["name"]
        _write_upstream(folder, items=[item])
    elif case == "human_key":
        _write_upstream(folder, **{"items_human_ins.json": {"B000000001": [{"instruction": "x", "instruction_attributes": ["a"]}]}})
    elif case == "bad_top_level":
        (folder / "items_shuffle_1000.json").write_text("{}")
    elif case == "ambiguous":
        (folder / "items_shuffle_1000.json").rename(folder / "items_shuffle_a.json")
        (folder / "items_shuffle_b.json").write_text("[]")
    with pytest.raises(CatalogError, match=pattern):
        Catalog.load(folder)


def test_find_data_files_prefers_upstream_default_and_gz(tmp_path):
    _write_upstream(tmp_path)
    (tmp_path / "items_shuffle.json").write_text("[]")      # the full catalog beside the 1k one
    found = find_data_files(tmp_path)
    assert found["products"].name == "items_shuffle_1000.json" and found["reviews"].name == "reviews.json"
    assert find_data_files(DATA)["products"].name == "items_shuffle.json.gz"


# -- search -----------------------------------------------------------------------------------------
def test_search_finds_titles_first_and_instruction_targets(bundled):
    engine = bundled.search_engine
    assert engine is bundled.search_engine and len(engine) == len(bundled.products)
    assert all(engine.search(p["Title"], k=1) == [p["asin"]] for p in bundled.products)
    test_goals = [bundled.goals[i] for i in bundled.split_indices("test")][:200]
    hits = sum(g["asin"] in engine.search(g["instruction_text"], k=50) for g in test_goals)
    assert hits / len(test_goals) >= 0.9
    results = engine.search(test_goals[0]["instruction_text"])
    assert len(results) == 50 and len(set(results)) == 50
    assert results == engine.search(test_goals[0]["instruction_text"])


def test_search_edge_cases_ties_and_prefixes(bundled):
    engine = bundled.search_engine
    assert engine.search("") == [] and engine.search("   ") == [] and engine.search("the of and") == []
    assert engine.search("qwertyzzz") == [] and engine.search("deodorant", k=0) == []
    twins = [{"asin": a, "Title": "Red Mug", "Description": "a mug", "BulletPoints": ["mug"], "options": {}}
             for a in ("B3", "B1", "B2")]
    assert SearchEngine(twins).search("red mug") == ["B3", "B1", "B2"]      # ties keep catalog order
    assert SearchEngine([]).search("mug") == []
    food = engine.search("<c> food", k=2000)
    assert food == [p["asin"] for p in bundled.products if p["category"] == "food"]
    assert {bundled.product_by_asin[a]["query"] for a in engine.search("<q> coffee table", k=2000)} == {"coffee table"}
    assert len(engine.search("<r>", k=7)) == 7
