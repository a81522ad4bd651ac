"""Teacher reasoning annotation: the rationale R*_t of paper Eq. 5 for every offline real transition.

The teacher is shown the true next state and reward and explains why the action leads there; the
experience model is then trained to write that rationale before predicting the next state. Teachers:

* `rule` (CPU default): a deterministic rationale built from the transition itself — the action's
  kind, what the page was, what it became, the reward. A 135M model writes poor rationales at seconds
  per transition here, so this is the honest default; it is *not* an LLM's reasoning (say so in reports).
* `model`: any HF model (`annotate.model.*`, embedded SmolLM2 by default) prompted with the transition.
* `none`: the paper's "no reasoning" ablation (reasoning = null, so the SFT target has no think block).

Records (`transition_records`) are the SFT set's unit: the transition, its episode history and, when a
replay buffer is given, its top-k demonstrations (own trajectory excluded).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from dreamgym.types import Trajectory

__all__ = ["transition_records", "record_key", "rule_rationale", "purchase_evidence", "teacher_messages",
           "RULE_RATIONALES"]

_ACTION = re.compile(r"(.+?)\[(.+)\]$")


def transition_records(traj: Trajectory) -> list[dict]:
    """One SFT record per transition: transition fields + split + the episode's earlier (state, action)s."""
    records, history = [], []
    for tr in traj.transitions():
        rec = tr.to_dict()
        rec.update(split=traj.task.split, history=[list(h) for h in history], demos=[], reasoning=None)
        records.append(rec)
        history.append((tr.state, tr.action))
    return records


def record_key(rec: dict) -> str:
    """Stable identity of a transition record (the annotation cache key)."""
    return f"{rec['trajectory_id']}#{rec['step']}"


def rule_rationale(rec: dict) -> str:
    """Deterministic rationale for a transition, specialised per env where one is registered."""
    fn = RULE_RATIONALES.get(rec.get("env", ""), _generic_rationale)
    return fn(rec)


def teacher_messages(rec: dict, max_chars: int = 600) -> list[dict]:
    """Chat prompt for an LLM teacher: it sees the true outcome and explains it in 1-2 sentences."""
    def clip(s: str) -> str:
        return s if len(s) <= max_chars else s[: max_chars - 5] + " ..."

    user = (f"Task: {rec['instruction']}\nState: {clip(rec['state'])}\nAction: {rec['action']}\n"
            f"Next state: {clip(rec['next_state'])}\nReward: {rec['reward']}, done: {str(rec['done']).lower()}\n\n"
            "In one or two sentences, explain why this action in this state leads to that next state and "
            "reward. Do not copy the next state.")
    return [{"role": "system", "content": "You explain how a web environment reacts to an agent's actions."},
            {"role": "user", "content": user}]


# -- rule rationales ---------------------------------------------------------------------------

def _segments(page: str) -> list[str]:
    return [s.strip() for s in page.split(" [SEP] ") if s.strip()]


def _generic_rationale(rec: dict) -> str:
    nxt = rec["next_state"].strip()
    if nxt == rec["state"].strip():
        effect = "the state does not change (the action had no effect here)"
    else:
        effect = f"the environment shows: {nxt[:120]}" + ("..." if len(nxt) > 120 else "")
    end = "the episode ends" if rec["done"] else "the episode continues"
    return f"After '{rec['action']}', {effect}; reward {rec['reward']:g}, {end}."


def _webshop_rationale(rec: dict) -> str:
    action, state, nxt = rec["action"].strip(), rec["state"], rec["next_state"]
    m = _ACTION.match(action)
    name, arg = (m.group(1), m.group(2).lower()) if m else (action, "")
    segs = _segments(nxt)
    if nxt == state and not rec["done"] and name == "click" and arg in _page_options(_segments(state)):
        return (f"Clicking the option '{arg}' selects it for the purchase; the page text stays the same (the item "
                "page does not mark the chosen option) and the reward is 0.")
    if nxt == state and not rec["done"]:
        return (f"'{action}' is not a valid action on this page (only the listed buttons, options and a search "
                "where there is a search bar work), so the page stays the same and the reward is 0.")
    if rec["done"] and name == "click" and arg == "buy now":
        r = rec["reward"]
        verdict = ("it matches every requested attribute, option and the price limit" if r >= 1.0 else
                   "it matches the request only partly (some attribute, option, type or price is off)" if r > 0
                   else "it does not match the requested product type")
        return (f"{purchase_evidence(rec)} Buying ends the episode; the purchased item earns reward {r:g} "
                f"because {verdict}.")
    if rec["done"]:
        return "The step limit is reached, so the episode ends without a purchase and the reward is 0."
    if name == "search":
        total = next((s for s in segs if s.startswith("Page ")), "a results page")
        first = next((s for s in segs[segs.index(total) + 1:] if re.fullmatch(r"B[0-9A-Z]{9}", s)), None) \
            if total in segs else None
        lead = f", led by {first}" if first else ""
        return f"Searching '{arg}' returns the results ranked by relevance to the query: {total}{lead}."
    if arg == "back to search":
        return "Back to Search returns to the start page with the search bar; nothing is kept."
    if arg == "next >":
        return "Next > shows the following page of the same search results."
    if arg == "< prev":
        where = ("the item page" if "Buy Now" in segs else "the previous results page" if any(
            s.startswith("Page ") for s in segs) else "the previous page")
        return f"< Prev goes back to {where}."
    if arg in ("description", "features", "reviews"):
        return f"Clicking {arg} opens the product's {arg} sub-page with its text; the chosen options are kept."
    if re.fullmatch(r"b[0-9a-z]{9}", arg):
        title = next((s for s in segs if s.startswith("Price:")), None)
        i = segs.index(title) if title else 0
        name_seg = segs[i - 1] if i > 0 else arg.upper()
        return f"Clicking {arg.upper()} opens its item page: {name_seg}, with its price, options and buttons."
    return f"Clicking the option '{arg}' selects it; the item page reloads with that option chosen."


_STOPWORDS = frozenset("a an and the for with in of to me i need want looking please get find buy my that "
                       "is are be it its this size color price lower than dollars up under".split())
_BUTTONS = frozenset({"back to search", "< prev", "next >", "description", "features", "reviews", "buy now"})
_WORD = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_PRICE = re.compile(r"\$\s*([0-9]+(?:\.[0-9]+)?)")
_LIMIT = re.compile(r"(?:lower|less) than\s*\$?\s*([0-9]+(?:\.[0-9]+)?)\s*dollars")


def _page_options(segs: list[str]) -> set[str]:
    """A page's clickable texts other than its fixed buttons (lowercased): the item options, among others."""
    return {seg.lower() for seg in segs} - _BUTTONS


def purchase_evidence(rec: dict) -> str:
    """What a purchase's reward depends on, read off the prompt's own inputs (instruction, item page,
    the options clicked earlier in the episode): the item, its price against the limit, the chosen options
    and which of the request's words its title carries. The rationale states this evidence *before* the
    reward, so the model learns to compare request and item rather than to guess the number."""
    segs = _segments(rec["state"])
    price_at = next((i for i, seg in enumerate(segs) if seg.startswith("Price:")), None)
    title = segs[price_at - 1] if price_at else "the item"
    price = _PRICE.search(segs[price_at]) if price_at is not None else None
    instruction = rec.get("instruction", "").lower()
    limit = _LIMIT.search(instruction)
    if price and limit:
        within = float(price.group(1)) <= float(limit.group(1))
        cost = f"${price.group(1)} ({'within' if within else 'over'} the ${limit.group(1)} limit)"
    else:
        cost = f"${price.group(1)}" if price else "an unknown price"
    on_page = _page_options(segs)
    chosen: list[str] = []
    for _, action in rec.get("history") or []:  # option clicks since this item was opened
        m = _ACTION.match(str(action).strip())
        arg = m.group(2).lower() if m and m.group(1) == "click" else ""
        if re.fullmatch(r"b[0-9a-z]{9}", arg) or arg == "back to search":
            chosen = []
        elif arg in on_page and arg not in chosen:
            chosen.append(arg)

    def requested(option: str) -> bool:  # as a whole phrase: option "8" is not in "18 inch"
        return re.search(rf"(?<![a-z0-9]){re.escape(option)}(?![a-z0-9])", instruction) is not None

    options = ", ".join(f"{o} ({'requested' if requested(o) else 'not requested'})" for o in chosen)
    wanted = [w for w in dict.fromkeys(_WORD.findall(instruction))
              if w not in _STOPWORDS and len(w) > 1 and not w.replace(".", "").isdigit()]
    have = set(_WORD.findall(title.lower()))
    matched = [w for w in wanted if w in have]
    return (f"The item is '{title}' at {cost}; options chosen: {options or 'none'}; request words in "
            f"its title: {', '.join(matched) or 'none'} ({len(matched)} of {len(wanted)}).")


RULE_RATIONALES: dict[str, Callable[[dict], str]] = {"webshop": _webshop_rationale}


def iter_unannotated(records: Iterable[dict], done_keys: set[str]) -> Iterable[dict]:
    """Records whose key is not in the cache yet (resume support)."""
    return (r for r in records if record_key(r) not in done_keys)
