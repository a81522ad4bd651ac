"""Scripted WebShop oracle: completes a goal from its goal record, seeing only what an agent sees
(observation text + available actions) plus the task's goal (target ASIN, options, product name).

Plan: search the instruction (price clause dropped); if the target ASIN is listed, click it, else page
with `Next >` through the results; if it never shows up, search the product's exact name. On the item
page click each goal option (the product's option value that best matches it, fuzzy > 85 as the reward
does; ties go to the first listed), then `Buy Now`. Used by `collect --policy oracle` to make demonstrations for SFT and the buffer.
"""

from __future__ import annotations

import re

from dreamgym.envs.webshop.reward import FUZZY_THRESHOLD, fuzzy_score
from dreamgym.types import Task

__all__ = ["WebShopOracle", "search_query"]

_PRICE_CLAUSE = re.compile(r",?\s*and price lower than [\d.]+ dollars\s*$")


def search_query(instruction: str) -> str:
    """The instruction without its trailing price clause, as the oracle's first search."""
    return _PRICE_CLAUSE.sub("", instruction).strip()


class WebShopOracle:
    name = "oracle"

    def __init__(self, max_pages: int = 5):
        self.max_pages = max_pages
        self.task: Task | None = None

    def reset(self, task: Task) -> None:
        self.task = task
        self._searched_title = False
        self._pages_seen = 0
        self._chosen: set[str] = set()
        self._opened: str | None = None  # the item page shows no ASIN: remember which one we clicked

    def act(self, observation: str, available_actions: list[str]) -> str:
        assert self.task is not None, "reset(task) first"
        goal = self.task.goal
        clicks = [a[len("click["):-1] for a in available_actions if a.startswith("click[")]
        if "search[...]" in available_actions:
            if self._pages_seen and not self._searched_title:
                self._searched_title = True
                return f"search[{goal.get('name') or search_query(self.task.instruction)}]"
            return f"search[{search_query(self.task.instruction)}]"
        target = str(goal.get("asin", "")).lower()
        if "buy now" in clicks:  # item page
            if self._opened != target:
                return "click[< prev]"
            for value in self._options_to_click(clicks):
                self._chosen.add(value)
                return f"click[{value}]"
            return "click[buy now]"
        if target in clicks:
            self._opened = target
            return f"click[{target}]"
        if "next >" in clicks and self._pages_seen + 1 < self.max_pages:
            self._pages_seen += 1
            return "click[next >]"
        self._pages_seen = max(self._pages_seen, 1)
        if not self._searched_title:
            return "click[back to search]"
        return "click[back to search]" if "back to search" in clicks else available_actions[0]

    def _options_to_click(self, clicks: list[str]) -> list[str]:
        """For each goal option not yet chosen, the best-matching clickable option value."""
        goal_options = self.task.goal.get("goal_options") or []
        wanted = list(goal_options.values()) if isinstance(goal_options, dict) else list(goal_options)
        out = []
        for w in wanted:
            w = str(w).lower()
            if w in clicks:
                best = w
            else:
                scored = [(fuzzy_score(w, c), -i, c) for i, c in enumerate(clicks)]
                score, _, best = max(scored, default=(0, 0, None))
                if score <= FUZZY_THRESHOLD:
                    continue
            if best not in self._chosen:
                out.append(best)
        return out
