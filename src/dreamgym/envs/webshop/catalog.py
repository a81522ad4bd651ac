"""WebShop catalog: products, prices and the fixed shuffled goal list, loaded from WebShop's original
data files (the real ones, or ours from `generate.py`; plain `.json` or `.json.gz`). The WebShop env
and its server build one per config via `Catalog.from_config` (cached per path and options, so treat
the records as read-only).

Semantics follow upstream `web_agent_site` (engine.load_products, engine.generate_product_prices,
goal.get_human_goals / get_synthetic_goals, SimServer's goal shuffle) with every random draw taken
from a seeded `random.Random` instead of the global one:
- prices: `random.Random(seed)` draws a uniform price inside each price range, in catalog order;
- goals: a second `random.Random(seed)` samples each goal's price_upper, a third shuffles the list
  (seed 233 = upstream's `random.seed(233); random.shuffle(goals)`);
- splits: goals [0, test) are test, [test, test + dev) dev, the rest train (upstream: 500 / 1000).

Files found in the folder by upstream name: `items_shuffle*.json[.gz]` (products, required),
`items_ins_v2*.json[.gz]` (attributes + synthetic instructions, required), `items_human_ins*.json[.gz]`
(required for human goals), `reviews*.json[.gz]` (optional). Where several files match (upstream's
folder can hold `items_shuffle_1000.json` and `items_shuffle.json`), the `_1000` one, upstream's
default, is used; any other ambiguity is an error.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import random
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from dreamgym.errors import DreamGymError

if TYPE_CHECKING:
    from dreamgym.config import WebShopConfig
    from dreamgym.envs.webshop.search import SearchEngine

__all__ = ["Catalog", "CatalogError", "PRICE_RANGE", "find_data_files", "clear_cache"]

PRICE_RANGE = [10.0 * i for i in range(1, 100)]
"""upstream goal.PRICE_RANGE: the candidate price caps of a goal"""
NO_PRICE_CAP = 1000000
_REQUIRED_ITEM_KEYS = ("asin", "name", "category", "query", "product_category", "full_description",
                       "small_description", "customization_options", "images")
_HUMAN_KEYS = ("instruction", "instruction_attributes", "instruction_options")
_DROPPED_KEYS = ("product_information", "brand", "brand_url", "list_price", "availability_quantity",
                 "availability_status", "total_reviews", "total_answered_questions", "seller_id",
                 "seller_name", "fulfilled_by_amazon", "fast_track_message", "aplus_present",
                 "small_description_old")          # upstream clean_product_keys


class CatalogError(DreamGymError):
    """A WebShop data folder or file is missing or malformed; the message names the file (and asin/key)."""


@dataclass(eq=False)
class Catalog:
    """Loaded products (upstream's record shape), their prices and the shuffled goal list."""

    products: list[dict] = field(repr=False)
    product_by_asin: dict[str, dict] = field(repr=False)
    prices: dict[str, float] = field(repr=False)
    goals: list[dict] = field(repr=False)
    data_dir: str = ""
    human_goals: bool = True
    seed: int = 233

    def split_indices(self, split: str, test_goals: int = 500, dev_goals: int = 1000) -> range:
        """Goal indices of a split: test [0, test), dev [test, test + dev), train the rest."""
        n = len(self.goals)
        bounds = {"test": (0, test_goals), "dev": (test_goals, test_goals + dev_goals),
                  "train": (test_goals + dev_goals, n)}
        if split not in bounds:
            raise CatalogError(f"unknown split {split!r}: expected 'train', 'dev' or 'test'")
        lo, hi = bounds[split]
        return range(min(lo, n), min(hi, n))

    @functools.cached_property
    def search_engine(self) -> "SearchEngine":
        """BM25 engine over the products, built on first use and kept with the (cached) catalog."""
        from dreamgym.envs.webshop.search import SearchEngine
        return SearchEngine(self.products)

    @classmethod
    def load(cls, data_dir: str | Path | None = None, human_goals: bool = True,
             num_products: Optional[int] = None, seed: int = 233) -> "Catalog":
        """Load a folder of WebShop data files (None = the bundled generated catalog); cached."""
        folder = Path(data_dir).expanduser().resolve() if data_dir not in (None, "") else _bundled_dir()
        return _load_cached(str(folder), bool(human_goals), num_products, int(seed))

    @classmethod
    def from_config(cls, cfg: "WebShopConfig") -> "Catalog":
        return cls.load(cfg.data_dir, human_goals=cfg.human_goals, num_products=cfg.num_products, seed=cfg.seed)

    def __repr__(self) -> str:
        return (f"Catalog({len(self.products)} products, {len(self.goals)} "
                f"{'human' if self.human_goals else 'synthetic'} goals, data_dir={self.data_dir!r})")


def find_data_files(folder: str | Path) -> dict[str, Optional[Path]]:
    """Map 'products', 'attributes', 'human', 'reviews' to the matching file of `folder` (or None)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogError(f"WebShop data folder {str(folder)!r} does not exist or is not a folder")
    found = {}
    for role, stem in (("products", "items_shuffle"), ("attributes", "items_ins_v2"),
                       ("human", "items_human_ins"), ("reviews", "reviews")):
        hits = sorted(p for p in folder.iterdir()
                      if p.name.startswith(stem) and p.name.endswith((".json", ".json.gz")) and p.is_file())
        if len(hits) > 1:
            default = [p for p in hits if p.name.split(".json")[0] == f"{stem}_1000"]
            if len(default) != 1:
                raise CatalogError(f"{folder}: several {stem}*.json files ({', '.join(p.name for p in hits)}); "
                                   f"keep one per folder")
            hits = default
        found[role] = hits[0] if hits else None
    return found


def clear_cache() -> None:
    """Forget cached catalogs (after editing data files in place)."""
    _load_cached.cache_clear()


# -- internals ---------------------------------------------------------------------------------
def _bundled_dir() -> Path:
    return Path(str(resources.files("dreamgym.envs.webshop").joinpath("data")))


@functools.lru_cache(maxsize=8)
def _load_cached(folder: str, human_goals: bool, num_products: Optional[int], seed: int) -> Catalog:
    files = find_data_files(folder)
    for role, stem in (("products", "items_shuffle"), ("attributes", "items_ins_v2")) + \
            ((("human", "items_human_ins"),) if human_goals else ()):
        if files[role] is None:
            raise CatalogError(f"{folder}: missing {stem}.json (or {stem}*.json[.gz]), needed for the catalog")
    products = _read_json(files["products"], list)
    attributes = _read_json(files["attributes"], dict)
    human = _read_json(files["human"], dict) if human_goals else {}
    reviews = _read_json(files["reviews"], list) if files["reviews"] is not None else []
    records = _load_products(products, attributes, human, reviews, files, num_products, human_goals)
    prices = _generate_prices(records, random.Random(seed))
    if human_goals:
        goals = _human_goals(records, prices, random.Random(seed), files["human"])
    else:
        goals = _synthetic_goals(records, prices, random.Random(seed))
    random.Random(seed).shuffle(goals)
    return Catalog(records, {p["asin"]: p for p in records}, prices, goals, folder, human_goals, seed)


def _read_json(path: Path, kind: type) -> Any:
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        data = json.loads(raw)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise CatalogError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise CatalogError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, kind):
        raise CatalogError(f"{path}: expected a JSON {'list' if kind is list else 'object'} at the top level, "
                           f"got {type(data).__name__}")
    return data


def _load_products(products: list, attributes: dict, human: dict, reviews: list, files: dict,
                   num_products: Optional[int], human_goals: bool) -> list[dict]:
    """Upstream load_products, minus its global state; raw records are copied, not mutated."""
    pfile = files["products"]
    all_reviews, all_ratings = {}, {}
    for r in reviews:
        if not isinstance(r, dict) or "asin" not in r or "reviews" not in r:
            raise CatalogError(f"{files['reviews']}: each entry needs 'asin' and 'reviews' (got {str(r)[:80]})")
        all_reviews[r["asin"]] = r["reviews"]
        all_ratings[r["asin"]] = r.get("average_rating", "N.A.")
    if num_products is not None:
        products = products[:num_products]              # items_shuffle is already shuffled
    records, seen = [], set()
    for i, raw in enumerate(products):
        if not isinstance(raw, dict):
            raise CatalogError(f"{pfile}: item {i} is not a JSON object")
        missing = [k for k in _REQUIRED_ITEM_KEYS if k not in raw]
        if missing:
            raise CatalogError(f"{pfile}: item {i} (asin {raw.get('asin', '?')!r}) is missing key "
                               f"{missing[0]!r}")
        asin = str(raw["asin"])
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        p = {k: v for k, v in raw.items() if k not in _DROPPED_KEYS}
        p["Title"] = p["name"]
        p["Description"] = p["full_description"]
        p["Reviews"] = [_review(r) for r in all_reviews.get(asin, [])]
        p["Rating"] = all_ratings.get(asin, "N.A.")
        bullets = p["small_description"]
        p["BulletPoints"] = list(bullets) if isinstance(bullets, list) else [bullets]
        p["pricing"], p["Price"] = _parse_pricing(p.get("pricing"), pfile, asin)
        p["options"], p["option_to_image"] = _parse_options(p["customization_options"], pfile, asin)
        entry = attributes.get(asin)
        entry = entry if isinstance(entry, dict) else {}
        p["Attributes"] = list(entry["attributes"]) if "attributes" in entry else ["DUMMY_ATTR"]
        if human_goals:
            if asin in human:
                p["instructions"] = _check_human(human[asin], files["human"], asin)
        else:
            p["instruction_text"] = entry.get("instruction")
            p["instruction_attributes"] = entry.get("instruction_attributes")
        p["MainImage"] = p["images"][0] if p["images"] else None
        p["query"] = str(p["query"]).lower().strip()
        records.append(p)
    return records


def _review(r: dict) -> dict:
    r = dict(r)
    if "score" not in r:
        r["score"] = r.pop("stars", None)
    r["body"] = r.pop("review", "")               # upstream: body '' when there is no review text
    return r


def _parse_pricing(pricing: Any, path: Path, asin: str) -> tuple[list[float], str]:
    if not pricing:
        return [100.0], "$100.0"
    try:
        values = [float(Decimal(re.sub(r"[^\d.]", "", part))) for part in str(pricing).split("$")[1:]]
    except InvalidOperation:
        raise CatalogError(f"{path}: asin {asin}: cannot parse pricing {pricing!r}") from None
    if not values:
        raise CatalogError(f"{path}: asin {asin}: pricing {pricing!r} has no '$' amount")
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


def _parse_options(custom: Any, path: Path, asin: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    options: dict[str, list[str]] = {}
    option_to_image: dict[str, Any] = {}
    if not custom:
        return options, option_to_image
    if not isinstance(custom, dict):
        raise CatalogError(f"{path}: asin {asin}: customization_options must be an object")
    for name, contents in custom.items():
        if contents is None:
            continue
        values = []
        for c in contents:
            if not isinstance(c, dict) or "value" not in c:
                raise CatalogError(f"{path}: asin {asin}: option {name!r} entry without key 'value'")
            value = str(c["value"]).strip().replace("/", " | ").lower()
            values.append(value)
            option_to_image[value] = c.get("image")
        options[name.lower()] = values
    return options, option_to_image


def _check_human(entries: Any, path: Path, asin: str) -> list[dict]:
    if not isinstance(entries, list):
        raise CatalogError(f"{path}: asin {asin}: expected a list of instructions")
    for e in entries:
        missing = [k for k in _HUMAN_KEYS if not isinstance(e, dict) or k not in e]
        if missing:
            raise CatalogError(f"{path}: asin {asin}: instruction missing key {missing[0]!r}")
        if not isinstance(e["instruction"], str) or not all(isinstance(e[k], list) for k in _HUMAN_KEYS[1:]):
            raise CatalogError(f"{path}: asin {asin}: expected a string instruction and lists of "
                               f"instruction_attributes / instruction_options")
    return entries


def _generate_prices(records: list[dict], rng: random.Random) -> dict[str, float]:
    prices = {}
    for p in records:
        pricing = p["pricing"]
        if not pricing:
            prices[p["asin"]] = 100.0
        elif len(pricing) == 1:
            prices[p["asin"]] = pricing[0]
        else:
            prices[p["asin"]] = rng.uniform(*pricing[:2])
    return prices


def _price_cap(price: float, rng: random.Random) -> tuple[float, str]:
    candidates = [c for c in PRICE_RANGE if c > price][:4]
    if len(candidates) < 2:
        return NO_PRICE_CAP, ""
    _, upper = sorted(rng.sample(candidates, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def _human_goals(records: list[dict], prices: dict[str, float], rng: random.Random, path: Path) -> list[dict]:
    goals = []
    for item in records:
        for ins in item.get("instructions", []):
            if len(ins["instruction_attributes"]) == 0:
                continue                            # upstream skips goals without attributes
            upper, price_text = _price_cap(prices[item["asin"]], rng)
            goals.append({
                "asin": item["asin"], "category": item["category"], "query": item["query"],
                "name": item["name"], "product_category": item["product_category"],
                "instruction_text": ins["instruction"].strip(".") + price_text,
                "attributes": ins["instruction_attributes"], "price_upper": upper,
                "goal_options": ins["instruction_options"], "weight": 1,
            })
    return goals


def _synthetic_goals(records: list[dict], prices: dict[str, float], rng: random.Random) -> list[dict]:
    goals, counts = [], defaultdict(int)
    for p in records:
        if p.get("instruction_text") is None:
            continue
        attrs = p["instruction_attributes"] or []
        if not attrs:
            continue                                # upstream asserts; we skip such products
        upper, price_text = _price_cap(prices[p["asin"]], rng)
        names = sorted(p["options"])
        for combo in itertools.product(*(p["options"][n] for n in names)):
            goal_options = dict(zip(names, combo))
            option_text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
            option_text = f" with {option_text}" if option_text else ""
            goals.append({
                "asin": p["asin"], "category": p["category"], "query": p["query"], "name": p["Title"],
                "product_category": p["product_category"],
                "instruction_text": f"{p['instruction_text']}{option_text}{price_text}",
                "attributes": attrs, "price_upper": upper, "goal_options": goal_options,
            })
            for a in attrs:
                counts[a] += 1
    for g in goals:
        g["weight"] = sum(1.0 / counts[a] for a in g["attributes"]) / len(g["attributes"])
    return goals
