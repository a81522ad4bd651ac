"""Native WebShop text environment, faithful to the original benchmark's text mode (observation_mode
'text', as AgentGym serves it), without a browser, Flask or Java.

Pages, transitions and the available-actions listing follow upstream's `WebAgentTextEnv` + `SimServer`:
`search[keywords]` from any page runs a BM25 search (50 results, 10 per page); `click[x]` works on the
current page's clickables (lower-cased button texts, product ASINs, option values; never `search`);
`Back to Search` returns to the start page, `Next >`/`< Prev` page through results, `< Prev` on an item
returns to the results (clearing chosen options, as upstream) and on a sub-page to the item; option
clicks set that option; `Buy Now` ends the episode with upstream's reward. Invalid actions leave the
page unchanged with reward 0 and `info["invalid_action"] = True` plus `info["reason"]`. Differences
from upstream are listed in docs/webshop.md (episode step limit, step after done, empty text nodes).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from dreamgym.envs.base import Env, register_env
from dreamgym.envs.webshop import pages as P
from dreamgym.envs.webshop.catalog import Catalog
from dreamgym.envs.webshop.reward import get_reward, make_title_scorer
from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

__all__ = ["WebShopEnv", "parse_action", "task_from_goal", "BASE_URL"]

BASE_URL = "http://127.0.0.1:3000"
_ACTION = re.compile(r"(.+)\[(.+)\]")


def parse_action(action: str) -> tuple[str, str | None]:
    """Upstream's parser: `name[arg]` via regex `(.+)\\[(.+)\\]`; anything else -> (action, None)."""
    m = _ACTION.match(action)
    return (action, None) if m is None else (m.group(1), m.group(2))


def task_from_goal(index: int, goal: dict, split: str) -> Task:
    """A catalog goal as a Task; `goal` keeps what the reward and the oracle read."""
    keep = ("asin", "category", "query", "name", "product_category", "attributes", "goal_options", "price_upper")
    g = {k: goal[k] for k in keep if k in goal}
    g["index"] = index
    return Task(id=f"webshop:{index}", instruction=goal["instruction_text"], env="webshop", split=split, goal=g)


@register_env("webshop")
class WebShopEnv(Env):
    """One WebShop session. Build with `WebShopEnv.from_config(env_cfg)` or `WebShopEnv(catalog, ...)`."""

    name = "webshop"

    def __init__(self, catalog: Catalog, max_steps: int = 15, search_return_n: int = 50,
                 products_per_page: int = 10, test_goals: int = 500, dev_goals: int = 1000,
                 title_scorer: str = "heuristic", spacy_model: str | None = None):
        self.catalog = catalog
        self.max_steps = max_steps
        self.search_return_n = search_return_n
        self.per_page = products_per_page
        self.split_sizes = (test_goals, dev_goals)
        self.title_scorer = make_title_scorer(title_scorer, spacy_model)
        self.search_engine = catalog.search_engine  # one BM25 index per loaded catalog
        self._clear_episode()

    @classmethod
    def from_config(cls, env_cfg: Any) -> "WebShopEnv":
        c = env_cfg.webshop
        catalog = Catalog.load(c.data_dir, human_goals=c.human_goals, num_products=c.num_products, seed=c.seed)
        return cls(catalog, max_steps=c.max_steps, search_return_n=c.search_return_n,
                   products_per_page=c.products_per_page, test_goals=c.test_goals, dev_goals=c.dev_goals,
                   title_scorer=c.title_scorer, spacy_model=c.spacy_model)

    def spawn(self) -> "WebShopEnv":
        """A fresh env on the same loaded catalog, BM25 index and title scorer (cheap: no reloading)."""
        env = copy.copy(self)
        env._clear_episode()
        return env

    # -- Env protocol ---------------------------------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        idx = self.catalog.split_indices(split, *self.split_sizes)
        return [task_from_goal(i, self.catalog.goals[i], split) for i in idx]

    def task_by_index(self, index: int) -> Task:
        """Task of goal `index` in the fixed shuffled goal list (AgentGym's session id)."""
        if not 0 <= index < len(self.catalog.goals):
            raise DreamGymError(f"goal index {index} out of range [0, {len(self.catalog.goals)})")
        test, dev = self.split_sizes
        split = "test" if index < test else "dev" if index < test + dev else "train"
        return task_from_goal(index, self.catalog.goals[index], split)

    def reset(self, task: Task) -> StepResult:
        self.task, self._goal = task, self._goal_of(task)
        self._session = {"keywords": None, "page": None, "asin": None, "options": {}, "asins": set()}
        self.steps, self.done = 0, False
        self._show(P.search_page(self.instruction_text), f"{BASE_URL}/{self._session_id}")
        return StepResult(self.observation, 0.0, False, {"task_id": task.id})

    def step(self, action: str) -> StepResult:
        if self._page is None:
            raise RuntimeError("call reset(task) before step()")
        if self.done:
            return StepResult(self.observation, 0.0, True, {"invalid_action": True, "reason": "episode is over"})
        self.steps += 1
        name, arg = parse_action(action.strip())
        arg = arg.lower() if arg is not None else None
        reward, done, info = 0.0, False, {}
        if name == "search" and arg and arg.strip():
            self._search(arg.split(" "), page=1)
        elif name == "click" and arg is not None and arg != "search" and arg in self._page.clickables:
            reward, done, info = self._click(arg)
        else:
            info = {"invalid_action": True, "reason": _why_invalid(name, arg, self._page)}
        if not done and self.steps >= self.max_steps:
            done, info["truncated"] = True, True
        self.done = done
        return StepResult(self.observation, float(reward), done, info)

    def available_actions(self) -> list[str]:
        d = self.page_actions()
        acts = ["search[...]"] if d["has_search_bar"] else []
        return acts + [f"click[{c}]" for c in d["clickables"] if c != "search"]

    def close(self) -> None:
        self._page = None

    def oracle(self):
        from dreamgym.envs.webshop.oracle import WebShopOracle

        return WebShopOracle()

    # -- upstream's extra views (used by the AgentGym HTTP server) -----------------------------
    def page_actions(self) -> dict:
        """Upstream get_available_actions(): {'has_search_bar': bool, 'clickables': [str]}."""
        if self._page is None:
            return {"has_search_bar": False, "clickables": []}
        return {"has_search_bar": self._page.has_search_bar, "clickables": self._page.clickables}

    @property
    def observation(self) -> str:
        return self._page.observation if self._page is not None else ""

    @property
    def instruction_text(self) -> str:
        return self._goal["instruction_text"] if self._goal else ""

    @property
    def page_name(self) -> str:
        return self._page.name if self._page is not None else ""

    def state(self) -> dict:
        """Upstream's `state` property: url, html and instruction text."""
        return {"url": self._url, "html": self._page.html() if self._page else "",
                "instruction_text": self.instruction_text}

    # -- transitions ----------------------------------------------------------------------------
    @property
    def _session_id(self) -> str:
        return self.task.id.replace(":", "_") if self.task else "session"

    def _show(self, page: P.Page, url: str) -> None:
        self._page, self._url = page, url

    def _search(self, keywords: list[str], page: int) -> None:
        s = self._session
        s.update(keywords=keywords, page=page, asin=None, options={})
        asins = self.search_engine.search(" ".join(keywords), k=self.search_return_n)
        shown = [self.catalog.product_by_asin[a] for a in asins[(page - 1) * self.per_page: page * self.per_page]]
        self._show(P.results_page(self.instruction_text, shown, page, len(asins), self.per_page),
                   f"{BASE_URL}/search_results/{self._session_id}/{'+'.join(keywords)}/{page}")

    def _item(self) -> None:
        s = self._session
        product = self.catalog.product_by_asin[s["asin"]]
        self._show(P.item_page(self.instruction_text, product),
                   f"{BASE_URL}/item_page/{self._session_id}/{s['asin']}/{'+'.join(s['keywords'] or [])}/"
                   f"{s['page']}/{s['options']}")

    def _click(self, name: str) -> tuple[float, bool, dict]:
        page, s = self._page, self._session
        if name == P.END_BUTTON.lower():
            return self._buy()
        if name == P.BACK_TO_SEARCH.lower():
            self._session.update(keywords=None, page=None, asin=None, options={})
            self._show(P.search_page(self.instruction_text), f"{BASE_URL}/{self._session_id}")
        elif name == P.NEXT_PAGE.lower() and page.name == "search_results":
            self._search(s["keywords"], s["page"] + 1)
        elif name == P.PREV_PAGE.lower() and page.name == "search_results":
            self._search(s["keywords"], s["page"] - 1)
        elif name == P.PREV_PAGE.lower() and page.name == "item_sub_page":
            self._item()
        elif name == P.PREV_PAGE.lower() and page.name == "item_page":
            self._search(s["keywords"], s["page"])
        elif name in (x.lower() for x in P.SUB_PAGES):
            which = next(x for x in P.SUB_PAGES if x.lower() == name)
            product = self.catalog.product_by_asin[s["asin"]]
            self._show(P.sub_page(self.instruction_text, product, which),
                       f"{BASE_URL}/item_sub_page/{self._session_id}/{s['asin']}/{which}")
        elif page.name == "search_results":  # a product link
            s["asin"] = name.upper()
            s["asins"].add(s["asin"])
            self._item()
        else:  # an option value on the item page
            s["options"][page.option_group(name)] = name
            self._item()
        return 0.0, False, {}

    def _buy(self) -> tuple[float, bool, dict]:
        s = self._session
        product = self.catalog.product_by_asin[s["asin"]]
        price = self.catalog.prices.get(s["asin"])
        reward, details = get_reward(product, self._goal, price=price, options=s["options"], verbose=True,
                                     title_scorer=self.title_scorer)
        reward = float(reward)
        self._show(P.done_page(s["asin"], s["options"], reward),
                   f"{BASE_URL}/done/{self._session_id}/{s['asin']}/{s['options']}")
        info = {"purchased_asin": s["asin"], "options": dict(s["options"]), "success": reward >= 1.0,
                "reward_info": {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in details.items()}}
        return reward, True, info

    def _clear_episode(self) -> None:
        self.task: Task | None = None
        self._goal: dict | None = None
        self._page: P.Page | None = None
        self._session: dict[str, Any] = {}
        self._url = ""
        self.steps = 0
        self.done = False

    def _goal_of(self, task: Task) -> dict:
        """The full goal record of a task: the catalog's for catalog tasks, else the task's own."""
        g = task.goal or {}
        idx = g.get("index")
        if isinstance(idx, int) and 0 <= idx < len(self.catalog.goals):
            goal = self.catalog.goals[idx]
            if goal["instruction_text"] == task.instruction:
                return goal
        missing = [k for k in ("asin", "attributes", "goal_options", "price_upper") if k not in g]
        if missing:
            raise DreamGymError(f"task {task.id!r}: goal lacks {', '.join(missing)} and is not a catalog goal")
        product = self.catalog.product_by_asin.get(g["asin"], {})
        return {"query": product.get("query", ""), "product_category": product.get("product_category", ""),
                "name": product.get("name", ""), **g, "instruction_text": task.instruction}


# -- internals ---------------------------------------------------------------------------------

def _why_invalid(name: str, arg: str | None, page: P.Page) -> str:
    if arg is None:
        return "unparsable action: expected search[keywords] or click[element]"
    if name == "search":
        return "empty search text"
    if name == "click":
        return "click[search] is not allowed" if arg == "search" else f"{arg!r} is not clickable on this page"
    return f"unknown action {name!r}: expected search or click"

