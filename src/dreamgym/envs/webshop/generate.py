"""Deterministic generator of a WebShop-style product catalog, written in WebShop's ORIGINAL raw file
schema so that `catalog.Catalog.load` reads our files and the real ones alike.

Writes four gzipped JSON files (gzip mtime 0, so the bytes depend only on the seed):
- `items_shuffle.json.gz`: list of raw items (asin, name, category, query, product_category, pricing,
  customization_options, full_description, small_description, images, brand, product_information);
- `items_ins_v2.json.gz`: {asin: {"attributes", "instruction", "instruction_attributes"}} (synthetic
  instructions, and the attributes the reward checks);
- `items_human_ins.json.gz`: {asin: [{"instruction", "instruction_attributes", "instruction_options"}]}
  (human-style instructions; instruction_options are the *loaded* option values: lower case, '/' -> ' | ');
- `reviews.json.gz`: [{"asin", "reviews": [{"title", "stars", "review"}], "average_rating"}].

Products are spread evenly over `vocab.PRODUCT_TYPES` (40 types in 5 categories), so every type has
~30 near-duplicate competitors sharing attributes and option values; brand names are rare words, so
searching a product's exact title finds it first. The bundled catalog in `data/` was made with

    python -m dreamgym.envs.webshop.generate --out src/dreamgym/envs/webshop/data --products 1250 --seed 0

and `tests/test_webshop_catalog.py` checks that regenerating it gives the same content.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import string
from pathlib import Path
from typing import Any

from dreamgym.envs.webshop.vocab import (ACRONYMS, BRAND_HEADS, BRAND_TAILS, FILLERS, INSTRUCTION_TEMPLATES,
                                         PRODUCT_TYPES, REVIEW_BODIES, REVIEW_TITLES, TITLE_WORDS,
                                         ProductType, upstream_normalize_color)

__all__ = ["FILE_NAMES", "DEFAULT_PRODUCTS", "DEFAULT_SEED", "generate", "write", "main"]

FILE_NAMES = ("items_shuffle.json.gz", "items_ins_v2.json.gz", "items_human_ins.json.gz", "reviews.json.gz")
DEFAULT_PRODUCTS = 1250
DEFAULT_SEED = 0
INSTRUCTIONS_PER_PRODUCT = 3


def generate(num_products: int = DEFAULT_PRODUCTS, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Build the catalog in memory: {file name: JSON-serialisable object}, same seed -> same objects."""
    rng = random.Random(seed)
    asins: set[str] = set()
    titles: set[str] = set()
    items, ins_v2, human, reviews = [], {}, {}, []
    for i in range(num_products):
        ptype = PRODUCT_TYPES[i % len(PRODUCT_TYPES)]
        item, attrs, options, noun = _product(rng, ptype, asins, titles)
        items.append(item)
        ins_v2[item["asin"]] = _synthetic_instruction(rng, ptype, attrs)
        human[item["asin"]] = _human_instructions(rng, ptype, noun, attrs, options)
        if rng.random() < 0.85:
            reviews.append(_reviews(rng, ptype, item["asin"]))
    rng.shuffle(items)                              # upstream's items_shuffle: products in random order
    return {"items_shuffle.json.gz": items, "items_ins_v2.json.gz": ins_v2,
            "items_human_ins.json.gz": human, "reviews.json.gz": reviews}


def write(out_dir: str | Path, files: dict[str, Any]) -> list[Path]:
    """Write each object as compact, gzipped JSON with a fixed gzip header (mtime 0, no file name)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, obj in files.items():
        raw = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        path = out / name
        path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dreamgym.envs.webshop.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the four .json.gz files into")
    parser.add_argument("--products", type=int, default=DEFAULT_PRODUCTS, help="number of products")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    if args.products < 1:
        parser.error("--products must be >= 1")
    for path in write(args.out, generate(args.products, args.seed)):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


# -- internals ---------------------------------------------------------------------------------
def _product(rng: random.Random, ptype: ProductType, asins: set[str], titles: set[str]
             ) -> tuple[dict[str, Any], list[str], dict[str, list[str]], str]:
    """One raw item plus its attributes, options and title noun."""
    asin = _asin(rng, asins)
    attrs = rng.sample(ptype.attributes, rng.randint(2, min(4, len(ptype.attributes))))
    others = [a for a in ptype.attributes if a not in attrs]
    fillers = [f for f in FILLERS[ptype.category] if not any(a in f.lower() for a in ptype.attributes)]
    for _ in range(100):       # redraw the text until it is unique and leaks no foreign attribute
        noun = rng.choice(ptype.nouns)
        brand = rng.choice(BRAND_HEADS) + rng.choice(BRAND_TAILS)
        shown = [_title_case(a) for a in attrs[:rng.randint(1, 2)]]
        title = f"{brand} {rng.choice(TITLE_WORDS)} {noun}, {', '.join(shown)}"
        bullets = [f"{a.upper()}: {s}" for a, s in zip(attrs, _attribute_lines(rng, ptype, noun, fillers, attrs))]
        bullets.append(f"WHAT YOU GET: 1 x {brand} {noun}. {rng.choice(fillers)}")
        description = (f"{brand} {noun.lower()} {ptype.blurb}. Highlights: {_join(attrs)}. "
                       f"{' '.join(rng.sample(fillers, 2))}")
        text = " ".join([title, *bullets, description]).lower()
        # option values whose normalized form the text contains would always score as matched
        clean = {name: [v for v in pool if upstream_normalize_color(_loaded_value(v)) not in text]
                 for name, pool in ptype.options}
        if (title not in titles and not any(a in text for a in others)
                and len(clean[ptype.options[0][0]]) >= 2):
            break
    else:
        raise RuntimeError(f"could not compose a clean product text for type {ptype.query!r}")
    titles.add(title)
    options: dict[str, list[str]] = {}
    for j, (name, pool) in enumerate(ptype.options):
        if clean[name] and (j == 0 or rng.random() < 0.7):
            n = rng.randint(min(2, len(clean[name])), min(5, len(clean[name])))
            options[name] = sorted(rng.sample(clean[name], n), key=pool.index)   # keep display order
    low, high = ptype.price
    price = round(rng.uniform(low, high)) - rng.choice((0.01, 0.05, 0.51))
    pricing = f"${price:.2f}"
    if rng.random() < 0.3:                          # a price range over option variants
        pricing += f" - ${round(price * rng.uniform(1.1, 1.5)) - 0.01:.2f}"
    item = {
        "asin": asin, "name": title, "category": ptype.category, "query": ptype.query,
        "product_category": ptype.path, "pricing": pricing,
        "customization_options": {k: [{"value": v, "image": None} for v in vs] for k, vs in options.items()},
        "full_description": description, "small_description": bullets,
        "images": [f"https://m.media-amazon.com/images/I/{_code(rng, 11)}.jpg"],
        "brand": brand, "product_information": {"Manufacturer": brand},
    }
    return item, attrs, options, noun


def _attribute_lines(rng: random.Random, ptype: ProductType, noun: str, fillers: list[str],
                     attrs: list[str]) -> list[str]:
    lines = [f"This {noun.lower()} {ptype.blurb}."]
    lines += rng.sample(fillers, len(attrs) - 1)
    rng.shuffle(lines)
    return lines


def _synthetic_instruction(rng: random.Random, ptype: ProductType, attrs: list[str]) -> dict[str, Any]:
    chosen = rng.sample(attrs, rng.randint(1, min(2, len(attrs))))
    noun = ptype.query
    return {"attributes": attrs, "instruction": f"i need {_article(noun, _join(chosen))}{_join(chosen)} {noun}",
            "instruction_attributes": chosen}


def _human_instructions(rng: random.Random, ptype: ProductType, title_noun: str, attrs: list[str],
                        options: dict[str, list[str]]) -> list[dict[str, Any]]:
    out, seen = [], set()
    for _ in range(20):
        if len(out) == INSTRUCTIONS_PER_PRODUCT:
            break
        chosen = rng.sample(attrs, rng.randint(1, min(3, len(attrs))))
        names = rng.sample(list(options), rng.randint(1, min(2, len(options))))
        picked = [(name, rng.choice(options[name])) for name in names]
        key = (frozenset(chosen), frozenset(picked))
        if key in seen:
            continue
        seen.add(key)
        noun = ptype.query if rng.random() < 0.6 else title_noun.lower()   # the type, or the title's noun
        opts = "".join(_option_phrase(rng, name, value, k) for k, (name, value) in enumerate(picked))
        attr_text = _join(chosen)
        text = rng.choice(INSTRUCTION_TEMPLATES).format(a=_article(noun, attr_text), attrs=attr_text, noun=noun,
                                                        opts=opts)
        out.append({"instruction": text, "instruction_attributes": chosen,
                    "instruction_options": [_loaded_value(v) for _, v in picked]})
    return out


def _option_phrase(rng: random.Random, name: str, value: str, k: int) -> str:
    v = value.lower()
    glue = " and" if k else ""
    label = _option_label(name)
    if v.startswith(("with ", "without ")):
        return f"{glue} {v}"
    if label in ("color", "flavor", "scent", "style"):
        return rng.choice((f"{glue} in {v} {label}", f"{glue} in the {v} {label}", f"{glue} with {v} {label}"))
    return rng.choice((f"{glue} in size {v}", f"{glue} in {v} size", f"{glue} in {v}"))


def _reviews(rng: random.Random, ptype: ProductType, asin: str) -> dict[str, Any]:
    entries, used = [], set()
    for _ in range(rng.randint(1, 4)):
        stars = rng.choices((5, 4, 3, 2, 1), weights=(45, 25, 15, 8, 7))[0]
        body = rng.choice(REVIEW_BODIES[stars])
        if body in used:
            continue
        used.add(body)
        entries.append({"title": rng.choice(REVIEW_TITLES[stars]), "stars": stars,
                        "review": body.format(noun=ptype.nouns[0].lower())})
    average = round(sum(e["stars"] for e in entries) / len(entries), 1)
    return {"asin": asin, "reviews": entries, "average_rating": average}


def _asin(rng: random.Random, taken: set[str]) -> str:
    while True:
        asin = "B0" + _code(rng, 8).upper()
        if asin not in taken:
            taken.add(asin)
            return asin


def _code(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _option_label(name: str) -> str:
    return name.lower().replace(" name", "")


def _loaded_value(value: str) -> str:
    return value.strip().replace("/", " | ").lower()    # what the loader (and upstream) makes of it


def _article(noun: str, following: str) -> str:
    if noun.endswith("s") and not noun.endswith("ss"):
        return ""                                   # plural nouns: 'i need gluten free potato chips'
    return "an " if following[0] in "aeiou" else "a "


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _title_case(phrase: str) -> str:
    return " ".join(w.upper() if w in ACRONYMS else w.capitalize() for w in phrase.split())


if __name__ == "__main__":
    main()
