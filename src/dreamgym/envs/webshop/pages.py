"""WebShop's pages as element lists, rendered to the benchmark's text observation and a small HTML.

Each function mirrors one upstream template (the version AgentGym and ReAct observe: search page,
results page with pagination, item page with options, description/features/reviews sub-pages, done
page) as the sequence of visible text nodes a browser would see. `Page.observation` joins them with
` [SEP] ` exactly like upstream's `convert_html_to_text(simple=True)`; `Page.clickables` lists the
clickable names in upstream's order (buttons and product links by document order, then option values).
Empty text nodes are dropped (upstream can emit empty ` [SEP]  [SEP] ` runs for blank descriptions).
"""

from __future__ import annotations

import html as _html
import json
import re
from dataclasses import dataclass, field

__all__ = ["Element", "Page", "search_page", "results_page", "item_page", "sub_page", "done_page", "actions_from_text",
           "END_BUTTON", "NEXT_PAGE", "PREV_PAGE", "BACK_TO_SEARCH", "SUB_PAGES"]

END_BUTTON = "Buy Now"
NEXT_PAGE = "Next >"
PREV_PAGE = "< Prev"
BACK_TO_SEARCH = "Back to Search"
SUB_PAGES = ("Description", "Features", "Reviews")


@dataclass(frozen=True)
class Element:
    """One visible text node. kind: text | button | product | option (a radio input + its label)."""

    text: str
    kind: str = "text"
    option_name: str | None = None


@dataclass
class Page:
    name: str  # index | search_results | item_page | item_sub_page | done
    elements: list[Element] = field(default_factory=list)
    has_search_bar: bool = False

    @property
    def observation(self) -> str:
        return " [SEP] ".join(e.text.strip() for e in self.elements if e.text.strip())

    @property
    def clickables(self) -> list[str]:
        """Upstream's text_to_clickable keys: button/product texts lower-cased, then option values."""
        names = [e.text.lower() for e in self.elements if e.kind in ("button", "product")]
        names += [e.text for e in self.elements if e.kind == "option"]
        return list(dict.fromkeys(names))

    def option_group(self, value: str) -> str | None:
        """The option name a clickable option value belongs to (last one wins, like upstream's dict)."""
        group = None
        for e in self.elements:
            if e.kind == "option" and e.text == value:
                group = e.option_name
        return group

    def html(self) -> str:
        """A minimal HTML rendering with upstream's ids/classes (search_input, btn, product-link, radio)."""
        out = ["<html><body>"]
        for e in self.elements:
            t = _html.escape(e.text)
            if e.kind == "button":
                out.append(f'<button type="submit" class="btn">{t}</button>')
            elif e.kind == "product":
                out.append(f'<a class="product-link">{t}</a>')
            elif e.kind == "option":
                name = _html.escape(e.option_name or "", quote=True)
                out.append(f'<input type="radio" name="{name}" value="{_html.escape(e.text, quote=True)}">'
                           f"<label>{t}</label>")
            else:
                out.append(f"<p>{t}</p>")
        if self.has_search_bar:
            out.append('<input id="search_input" type="text" name="search_query">')
        out.append("</body></html>")
        return "\n".join(out)


def _instruction(instruction_text: str) -> list[Element]:
    return [Element("Instruction:"), Element(instruction_text)]


def search_page(instruction_text: str) -> Page:
    elements = [Element("WebShop"), *_instruction(instruction_text), Element("Search", "button")]
    return Page("index", elements, has_search_bar=True)


def results_page(instruction_text: str, products: list[dict], page: int, total: int, per_page: int) -> Page:
    """`products` are the records shown on this page (already sliced)."""
    elements = [*_instruction(instruction_text), Element(BACK_TO_SEARCH, "button"),
                Element(f"Page {page} (Total results: {total})")]
    if page > 1:
        elements.append(Element(PREV_PAGE, "button"))
    if page * per_page < total:
        elements.append(Element(NEXT_PAGE, "button"))
    for p in products:
        elements += [Element(p["asin"], "product"), Element(p["Title"]), Element(p["Price"])]
    return Page("search_results", elements)


def item_page(instruction_text: str, product: dict) -> Page:
    elements = [*_instruction(instruction_text), Element(BACK_TO_SEARCH, "button"), Element(PREV_PAGE, "button")]
    for option_name, values in product.get("options", {}).items():
        elements.append(Element(option_name))
        elements += [Element(v, "option", option_name=option_name) for v in values]
    elements += [Element(product["Title"]), Element(f"Price: {product['Price']}"),
                 Element(f"Rating: {product.get('Rating', 'N.A.')}")]
    elements += [Element(name, "button") for name in SUB_PAGES]
    elements.append(Element(END_BUTTON, "button"))
    return Page("item_page", elements)


def sub_page(instruction_text: str, product: dict, which: str) -> Page:
    """Description, Features (bullet points) or Reviews of the current product."""
    elements = [*_instruction(instruction_text), Element(BACK_TO_SEARCH, "button"), Element(PREV_PAGE, "button")]
    if which == "Description":
        elements.append(Element(product.get("Description") or ""))
    elif which == "Features":
        elements += [Element(b) for b in product.get("BulletPoints") or []]
    elif which == "Reviews":
        reviews = product.get("Reviews") or []
        if not reviews:
            elements.append(Element("No reviews found"))
        for r in reviews:
            elements += [Element(f'"{r.get("title", "")}"'), Element(str(r.get("score", ""))),
                         Element(str(r.get("body", "")))]
    else:
        raise ValueError(f"unknown sub page {which!r}, expected one of {SUB_PAGES}")
    return Page("item_sub_page", elements)


def done_page(asin: str, options: dict, reward: float) -> Page:
    """Upstream's done page as text mode sees it (its hidden debug block included, goal fields empty)."""
    texts = ["Thank you for shopping with us!", "Your code:", "None", "(Paste it in your MTurk interface.)",
             "Purchased", "asin", asin, "options", json.dumps(options), "attrs", "None", "category", "None",
             "query", "None", "product category", "None", "Target", "asin", "options", "attrs", "price upper",
             "instuction text", "category", "product category", "query", "Goal", "None", "Reward",
             "Your score (min 0.0, max 1.0)", str(reward), "Reward Details", "None"]
    return Page("done", [Element(t) for t in texts])


_BUTTONS = {b.lower() for b in (BACK_TO_SEARCH, PREV_PAGE, NEXT_PAGE, END_BUTTON, *SUB_PAGES)}
_ASIN = re.compile(r"B[0-9A-Z]{9}")


def actions_from_text(observation: str) -> list[str]:
    """Best-effort available actions of a page known only as text (a synthetic state): `search[...]`
    on a page ending in the Search button, known buttons, ASIN-like segments, and on an item page the
    segments between `< Prev` and the title (option names and values: text alone cannot tell them
    apart, so option names are listed too). Exact for real pages' buttons and products."""
    segs = [x.strip() for x in observation.split(" [SEP] ") if x.strip()]
    if segs and segs[-1] == "Search":
        return ["search[...]"]
    clicks = [x.lower() for x in segs if x.lower() in _BUTTONS or _ASIN.fullmatch(x)]
    if END_BUTTON in segs and PREV_PAGE in segs:
        price = next((i for i, x in enumerate(segs) if x.startswith("Price:")), None)
        if price is not None:
            clicks += segs[segs.index(PREV_PAGE) + 1: max(price - 1, 0)]
    return [f"click[{c}]" for c in dict.fromkeys(clicks)]
