"""Real-environment and data-collection configs: WebShop, the AgentGym HTTP client, TextWorld, native ALFWorld,
MiniWoB++, WebArena, `collect`, `serve-env`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from dreamgym.config.loading import ConfigError, SPLITS

__all__ = ["WebShopConfig", "HttpConfig", "TextWorldConfig", "AlfWorldNativeConfig", "ALFWORLD_TASK_TYPES",
           "MiniWoBConfig", "WebArenaConfig", "WEBARENA_SITES",
           "WEBARENA_TASKS", "EnvConfig", "CollectConfig", "ServeEnvConfig"]


@dataclass
class WebShopConfig:
    """The native WebShop text environment (`envs/webshop`)."""

    data_dir: Optional[str] = None
    """folder with WebShop data files in the original schema (items_shuffle*.json, items_ins_v2*.json,
    items_human_ins.json, optionally reviews.json; plain or .gz): the real files when you have them,
    or a catalog made by `python -m dreamgym.envs.webshop.generate`. None = the bundled generated catalog"""
    human_goals: bool = True
    """with data_dir: use the human instructions (items_human_ins.json) rather than the synthetic ones"""
    num_products: Optional[int] = None
    """keep only the first N products of the catalog (None = all)"""
    test_goals: int = 500
    """goals [0, test_goals) of the fixed shuffled goal list form the test split (upstream: 500)"""
    dev_goals: int = 1000
    """the next dev_goals goals form the dev split (upstream: 1000); the rest is train"""
    max_steps: int = 15
    """episode step limit: the env ends an episode after this many actions (reward 0, truncated)"""
    search_return_n: int = 50
    """products a search returns (upstream SEARCH_RETURN_N)"""
    products_per_page: int = 10
    """results shown per page (upstream PRODUCT_WINDOW)"""
    title_scorer: str = "heuristic"
    """how the reward's title score finds nouns: 'heuristic' (no extra deps, documented
    approximation) or 'spacy' (needs the optional spaCy model, see docs)"""
    spacy_model: Optional[str] = None
    """with title_scorer=spacy: a spaCy model name or package folder"""
    seed: int = 233
    """seed of the fixed goal shuffle and of sampled prices for price ranges (upstream: 233)"""

    def __post_init__(self) -> None:
        if self.title_scorer not in ("heuristic", "spacy"):
            raise ConfigError(f"key 'env.webshop.title_scorer': got {self.title_scorer!r}, "
                              "expected 'heuristic' or 'spacy'")
        for key in ("test_goals", "dev_goals", "max_steps", "search_return_n", "products_per_page"):
            if getattr(self, key) < (0 if key.endswith("goals") else 1):
                raise ConfigError(f"key 'env.webshop.{key}': got {getattr(self, key)}, expected a positive int")


@dataclass
class HttpConfig:
    """Client for an environment served over AgentGym's HTTP protocol (`env.name=http`)."""

    url: str = "http://127.0.0.1:36001"
    """base URL of the env server"""
    flavour: str = "webshop"
    """protocol flavour: 'webshop' (env_idx, bare-int create) or 'alfworld' (id-based)"""
    env_name: str = "webshop"
    """name recorded in tasks/trajectories for the served env"""
    timeout_s: float = 10.0
    """timeout of one request in seconds (never hang on a dead server)"""
    retries: int = 5
    """attempts per request on connection errors or non-200 answers (upstream client: 5)"""
    backoff_s: float = 0.2
    """sleep before retry i is backoff_s * 2**i"""
    num_tasks: Optional[int] = None
    """how many session ids (goal indices) the server has; None = ask the wrapped split sizes"""
    test_goals: int = 500
    """session ids [0, test_goals) form the test split (WebShop convention)"""
    dev_goals: int = 1000
    """the next dev_goals session ids form the dev split"""

    def __post_init__(self) -> None:
        if self.flavour not in ("webshop", "alfworld"):
            raise ConfigError(f"key 'env.http.flavour': got {self.flavour!r}, expected 'webshop' or 'alfworld'")
        if self.timeout_s <= 0 or self.retries < 1:
            raise ConfigError("keys 'env.http.timeout_s'/'env.http.retries': expected timeout_s > 0 and retries >= 1")


@dataclass
class TextWorldConfig:
    """TextWorld games generated locally by the `textworld` package (`envs/textworld_env.py`)."""

    levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    """difficulty levels to draw games from (1-4: rooms/objects/quest length 1/3/1, 2/5/2, 3/8/4, 6/12/8)"""
    train_games: int = 20
    """games per level in the train split"""
    dev_games: int = 5
    """games per level in the dev split"""
    test_games: int = 10
    """games per level in the test split"""
    seed: int = 0
    """base of the fixed game seeds (splits use disjoint seed ranges)"""
    max_steps: int = 50
    """episode step limit: the env ends an episode after this many actions (truncated)"""
    cache_dir: Optional[str] = None
    """where generated games are kept; None = $DREAMGYM_CACHE/textworld or ~/.cache/dreamgym/textworld"""


ALFWORLD_TASK_TYPES = ("pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
                       "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place")
"""ALFWorld's six task types (its TASK_TYPES 1-6)"""


@dataclass
class AlfWorldNativeConfig:
    """ALFWorld's text games played in-process by ALFWorld's own engine (`envs/alfworld_native.py`)."""

    data_dir: Optional[str] = None
    """games: None = the 24 small games shipped with dreamgym; else a folder searched for `game.tw-pddl`
    files, e.g. the official data '$ALFWORLD_DATA/json_2.1.1' (its train/valid_seen/valid_unseen folders
    become the train/dev/test splits); `~` and `$VARS` are expanded"""
    task_types: list[str] = field(default_factory=lambda: list(ALFWORLD_TASK_TYPES))
    """which of ALFWorld's task types to keep"""
    seed: int = 0
    """fixes the split assignment of a folder without train/valid_seen/valid_unseen, and the task order"""
    dev_fraction: float = 0.25
    """share of each task type's games in the dev split (folders without official splits)"""
    test_fraction: float = 0.25
    """share of each task type's games in the test split (folders without official splits)"""
    max_games: int = 0
    """at most this many games per split (the first ones in the fixed task order); 0 = all"""
    max_steps: int = 50
    """episode step limit: the env ends an episode after this many actions (truncated; ALFWorld uses 50)"""

    def __post_init__(self) -> None:
        unknown = [t for t in self.task_types if t not in ALFWORLD_TASK_TYPES]
        if unknown or not self.task_types:
            raise ConfigError(f"key 'env.alfworld_native.task_types': got {list(self.task_types)!r}, expected a "
                              f"non-empty list of {', '.join(ALFWORLD_TASK_TYPES)}")
        for key in ("dev_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"key 'env.alfworld_native.{key}': got {getattr(self, key)}, expected 0 <= x < 1")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ConfigError("keys 'env.alfworld_native.dev_fraction'/'test_fraction': their sum must stay below 1 "
                              "(the rest is the train split)")
        if self.max_games < 0:
            raise ConfigError(f"key 'env.alfworld_native.max_games': got {self.max_games}, expected an int >= 0")
        if self.max_steps < 1:
            raise ConfigError(f"key 'env.alfworld_native.max_steps': got {self.max_steps}, expected a positive int")


@dataclass
class MiniWoBConfig:
    """MiniWoB++ tasks in headless Chromium through BrowserGym (`envs/miniwob_env.py`)."""

    tasks: list[str] = field(default_factory=lambda: ["click-button", "click-test", "enter-text", "focus-text"])
    """MiniWoB task names (browsergym/miniwob.<name>)"""
    train_episodes: int = 50
    """seeded episodes per task in the train split"""
    dev_episodes: int = 10
    """seeded episodes per task in the dev split"""
    test_episodes: int = 20
    """seeded episodes per task in the test split"""
    seed: int = 0
    """base of the episode seeds (splits use disjoint seed ranges)"""
    max_steps: int = 10
    """episode step limit (the env ends the episode, truncated)"""
    chromium: Optional[str] = None
    """Chromium executable; None = Playwright's own build if installed, else `chromium` on PATH"""
    base_url: Optional[str] = None
    """where the MiniWoB HTML pages are; None = the copy inside the `miniwob` package (file://)"""
    headless: bool = True
    """run the browser without a window"""


WEBARENA_SITES = ("shopping", "shopping_admin", "reddit", "gitlab", "wikipedia", "map", "homepage")
"""the WebArena sites, in BrowserGym's order; site `x` is exported as the variable WA_<X>"""
WEBARENA_TASKS = 812
"""WebArena has the tasks 0..811 (test.raw.json)"""
_WEBARENA_SPLITS = {"train": range(0, 650), "dev": range(650, 700), "test": range(700, 812)}


@dataclass
class WebArenaConfig:
    """WebArena tasks on the user's own WebArena servers through BrowserGym (`envs/webarena_env.py`)."""

    train_tasks: Optional[list[int]] = None
    """WebArena task ids (0-811) of the train split; None = 0..649, less the ids another split lists"""
    dev_tasks: Optional[list[int]] = None
    """task ids of the dev split; None = 650..699, less the ids another split lists"""
    test_tasks: Optional[list[int]] = None
    """task ids of the test split; None = 700..811, less the ids another split lists"""
    shopping: Optional[str] = None
    """URL of the shopping site (OneStopShop; WebArena's port 7770), exported as WA_SHOPPING;
    None = keep WA_SHOPPING from the environment"""
    shopping_admin: Optional[str] = None
    """URL of the shopping admin panel (port 7780, path /admin), exported as WA_SHOPPING_ADMIN"""
    reddit: Optional[str] = None
    """URL of the reddit-like forum (Postmill; port 9999), exported as WA_REDDIT"""
    gitlab: Optional[str] = None
    """URL of the GitLab server (port 8023), exported as WA_GITLAB"""
    wikipedia: Optional[str] = None
    """URL of the Kiwix Wikipedia (port 8888, path /wikipedia_en_all_maxi_2022-05/A/User:The_other_Kiwix_guy/Landing),
    exported as WA_WIKIPEDIA"""
    map: Optional[str] = None
    """URL of the OpenStreetMap server (port 3000), exported as WA_MAP"""
    homepage: Optional[str] = None
    """URL of the homepage that lists the sites (port 4399), exported as WA_HOMEPAGE"""
    max_steps: int = 30
    """episode step limit (the env ends the episode, truncated)"""
    chromium: Optional[str] = None
    """Chromium executable; None = Playwright's own build if installed, else `chromium` on PATH"""
    headless: bool = True
    """run the browser without a window"""

    def __post_init__(self) -> None:
        for split in SPLITS:
            key, ids = f"{split}_tasks", getattr(self, f"{split}_tasks")
            if ids is None:
                continue
            bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < WEBARENA_TASKS]
            if bad:
                raise ConfigError(f"key 'env.webarena.{key}': got {bad[:5]}, expected WebArena task ids, "
                                  f"integers in 0..{WEBARENA_TASKS - 1}")
            dup = sorted(i for i, n in Counter(ids).items() if n > 1)
            if dup:
                raise ConfigError(f"key 'env.webarena.{key}': task ids {dup[:5]} appear twice, expected each once")
        seen: dict[int, str] = {}
        for split in SPLITS:
            for i in getattr(self, f"{split}_tasks") or []:
                if i in seen:
                    raise ConfigError(f"key 'env.webarena.{split}_tasks': task id {i} is also in "
                                      f"'env.webarena.{seen[i]}_tasks', expected disjoint splits")
                seen[i] = split
        for site in WEBARENA_SITES:
            url = getattr(self, site)
            if url is not None and (not str(url).startswith(("http://", "https://")) or str(url).endswith("/")):
                raise ConfigError(f"key 'env.webarena.{site}': got {url!r}, expected an http:// or https:// URL "
                                  "without a trailing slash (WebArena's task file appends paths to it)")
        if self.max_steps < 1:
            raise ConfigError(f"key 'env.webarena.max_steps': got {self.max_steps}, expected a positive int")

    def task_ids(self, split: str) -> list[int]:
        """The task ids of `split` ('train', 'dev' or 'test'): the configured list, or else the default
        range less the ids the other splits list (so the three stay disjoint)."""
        if split not in _WEBARENA_SPLITS:
            raise ConfigError(f"split {split!r}: expected one of {', '.join(_WEBARENA_SPLITS)}")
        ids = getattr(self, f"{split}_tasks")
        if ids is not None:
            return list(ids)
        taken = {i for other in _WEBARENA_SPLITS if other != split for i in getattr(self, f"{other}_tasks") or []}
        return [i for i in _WEBARENA_SPLITS[split] if i not in taken]

    def urls(self) -> dict[str, Optional[str]]:
        """Site -> configured URL (None where the config leaves it to the WA_* variable)."""
        return {site: getattr(self, site) for site in WEBARENA_SITES}


@dataclass
class EnvConfig:
    """Which real environment to build: a registered name or an import path `pkg.module:Class`."""

    name: str = "webshop"
    """registered env name (webshop, http, ...) or `pkg.module:Class` of a user's own env"""
    webshop: WebShopConfig = field(default_factory=WebShopConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    textworld: TextWorldConfig = field(default_factory=TextWorldConfig)
    alfworld_native: AlfWorldNativeConfig = field(default_factory=AlfWorldNativeConfig)
    miniwob: MiniWoBConfig = field(default_factory=MiniWoBConfig)
    webarena: WebArenaConfig = field(default_factory=WebArenaConfig)
    kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments for a user env class given as `pkg.module:Class`"""


@dataclass
class CollectConfig:
    """`dreamgym collect`: run a scripted policy in a real env and write trajectories."""

    env: EnvConfig = field(default_factory=EnvConfig)
    policy: str = "oracle"
    """scripted policy: 'oracle' (the env's own, reads the goal record), 'random', or 'noisy-oracle' (the
    oracle taking a random action with probability `epsilon` each step: near misses, failed purchases)"""
    epsilon: float = 0.2
    """noisy-oracle: per-step probability of a uniformly random available action"""
    episodes: int = 100
    """episodes to run; tasks of the split are taken in order, cycling if there are fewer"""
    split: str = "train"
    """task split: train, dev or test"""
    max_turns: int = 15
    """turns after which an episode is cut (WebShop default 15)"""
    seed: int = 0
    """seed of the random policy and of task order shuffling (none by default)"""
    shuffle_tasks: bool = False
    """draw tasks in a seeded random order instead of the split's fixed order"""
    progress: bool = True
    """show a rich progress bar"""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"key 'split': got {self.split!r}, expected one of {', '.join(SPLITS)}")
        if self.policy not in ("oracle", "random", "noisy-oracle"):
            raise ConfigError(f"key 'policy': got {self.policy!r}, expected 'oracle', 'random' or 'noisy-oracle'")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"key 'epsilon': got {self.epsilon}, expected a probability in [0, 1]")
        if self.episodes < 1 or self.max_turns < 1:
            raise ConfigError("keys 'episodes'/'max_turns': expected positive integers")


@dataclass
class ServeEnvConfig:
    """`dreamgym serve-env`: serve a native env over AgentGym's HTTP protocol."""

    env: EnvConfig = field(default_factory=EnvConfig)
    host: str = "127.0.0.1"
    """interface to bind"""
    port: int = 36001
    """TCP port (0 = any free port, printed at start)"""
    max_envs: int = 4096
    """most concurrent env instances; /create beyond it answers an error"""
    seed: int = 0
    """unused by the server itself; recorded for provenance"""
