"""The `webarena` env offline (no WebArena server here): config validation and its messages, the split task ids,
the missing-URL error before any network access, the WA_* variables exported from the config, `make_env` from
the preset, and that it runs on MiniWoB's BrowserGym code (checked on a real MiniWoB page where the browser
stack is installed). What needs browsergym-webarena itself skips where it is missing."""

import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest

from dreamgym.config import CollectConfig, ConfigError, load_config
from dreamgym.config.envs import WEBARENA_SITES, WEBARENA_TASKS, WebArenaConfig
from dreamgym.envs.base import make_env, registered_envs
from dreamgym.envs.miniwob_env import BrowserGymEnv, MiniWoBEnv
from dreamgym.envs.webarena_env import WEBARENA_ACTIONS, WebArenaEnv
from dreamgym.errors import DreamGymError
from dreamgym.policies import make_policy

PRESET = Path(__file__).resolve().parents[1] / "configs" / "env" / "webarena.yaml"
VARIABLES = ["WA_SHOPPING", "WA_SHOPPING_ADMIN", "WA_REDDIT", "WA_GITLAB", "WA_WIKIPEDIA", "WA_MAP", "WA_HOMEPAGE"]
URLS = {"shopping": "http://wa.test:7770", "shopping_admin": "http://wa.test:7780/admin", "reddit": "http://wa.test:9999",
        "gitlab": "http://wa.test:8023", "wikipedia": "http://wa.test:8888/wikipedia_en_all_maxi_2022-05/A/Landing",
        "map": "http://wa.test:3000", "homepage": "http://wa.test:4399"}


@pytest.fixture
def no_wa_vars(monkeypatch):
    """No WA_* variable set (restored after the test, also those the env exports)."""
    for var in VARIABLES:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _bgwa_installed() -> bool:
    try:
        return importlib.util.find_spec("browsergym.webarena") is not None
    except ImportError:  # not even browsergym
        return False


def test_preset_builds_the_env_and_exports_the_urls(no_wa_vars):
    overrides = [f"env.webarena.{site}={url}" for site, url in URLS.items()]
    cfg = load_config(CollectConfig, [PRESET], overrides)
    assert (cfg.env.name, cfg.env.webarena.max_steps, cfg.env.webarena.test_tasks) == ("webarena", 30, None)
    assert "webarena" in registered_envs()
    env = make_env(cfg.env)
    assert type(env) is WebArenaEnv and env.urls == URLS
    assert {var: os.environ[var] for var in VARIABLES} == {
        "WA_SHOPPING": "http://wa.test:7770", "WA_SHOPPING_ADMIN": "http://wa.test:7780/admin",
        "WA_REDDIT": "http://wa.test:9999", "WA_GITLAB": "http://wa.test:8023",
        "WA_WIKIPEDIA": "http://wa.test:8888/wikipedia_en_all_maxi_2022-05/A/Landing", "WA_MAP": "http://wa.test:3000",
        "WA_HOMEPAGE": "http://wa.test:4399"}
    test = env.tasks("test")
    assert [t.id for t in test[:2]] == ["webarena:700", "webarena:701"] and len(test) == 112
    assert (test[0].env, test[0].split, test[0].goal) == ("webarena", "test", {"task_id": 700})
    assert env.gym_id(test[0]) == "browsergym/webarena.700"
    sibling = env.spawn()
    assert type(sibling) is WebArenaEnv and sibling.config == env.config and sibling.urls == URLS
    assert env.available_actions() == []
    with pytest.raises(DreamGymError, match=r"^webarena: step\(\) before reset\(\)"):
        env.step("noop()")
    assert env.oracle() is None
    with pytest.raises(DreamGymError, match=r"key 'policy': env WebArenaEnv has no scripted oracle"):
        make_policy("oracle", env)


def test_config_wins_over_a_variable_and_a_variable_fills_a_missing_site(no_wa_vars, monkeypatch):
    monkeypatch.setenv("WA_SHOPPING", "http://old.test:1")
    monkeypatch.setenv("WA_HOMEPAGE", "http://home.test:4399")
    env = WebArenaEnv(**{site: url for site, url in URLS.items() if site != "homepage"})
    assert env.urls["homepage"] == "http://home.test:4399"
    assert (os.environ["WA_SHOPPING"], os.environ["WA_HOMEPAGE"]) == ("http://wa.test:7770", "http://home.test:4399")


def test_missing_urls_fail_before_any_import_or_network(no_wa_vars, no_network):
    imported = "browsergym.webarena" in sys.modules
    with pytest.raises(DreamGymError) as err:
        make_env(load_config(CollectConfig, [PRESET], []).env)
    assert str(err.value) == (
        "env 'webarena' needs the URL of each of your WebArena servers; missing: "
        "env.webarena.shopping (or $WA_SHOPPING), env.webarena.shopping_admin (or $WA_SHOPPING_ADMIN), "
        "env.webarena.reddit (or $WA_REDDIT), env.webarena.gitlab (or $WA_GITLAB), "
        "env.webarena.wikipedia (or $WA_WIKIPEDIA), env.webarena.map (or $WA_MAP), "
        "env.webarena.homepage (or $WA_HOMEPAGE). Set them in the config or on the command line, e.g. "
        "env.webarena.shopping=http://HOST:7770 (see configs/env/webarena.yaml), or export the WA_* variables")
    with pytest.raises(DreamGymError, match=r"missing: env\.webarena\.map \(or \$WA_MAP\)\. Set them"):
        WebArenaEnv(**{site: url for site, url in URLS.items() if site != "map"})
    assert ("browsergym.webarena" in sys.modules) == imported
    assert not any(var in os.environ for var in VARIABLES)  # nothing exported from a half config


@pytest.mark.parametrize("override, message", [
    ("env.webarena.test_tasks=[5,812]",
     "key 'env.webarena.test_tasks': got [812], expected WebArena task ids, integers in 0..811"),
    ("env.webarena.dev_tasks=[-1]", "key 'env.webarena.dev_tasks': got [-1], expected WebArena task ids, integers in 0..811"),
    ("env.webarena.train_tasks=[3,4,3]", "key 'env.webarena.train_tasks': task ids [3] appear twice, expected each once"),
    ("env.webarena.reddit=wa.test:9999", "key 'env.webarena.reddit': got 'wa.test:9999', expected an http:// or https:// "
                                         "URL without a trailing slash (WebArena's task file appends paths to it)"),
    ("env.webarena.shopping=http://wa.test:7770/", "key 'env.webarena.shopping': got 'http://wa.test:7770/', expected an "
     "http:// or https:// URL without a trailing slash (WebArena's task file appends paths to it)"),
    ("env.webarena.max_steps=0", "key 'env.webarena.max_steps': got 0, expected a positive int"),
])
def test_bad_values_name_the_key_and_what_is_expected(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CollectConfig, [PRESET], [override])
    assert str(err.value) == message


def test_explicit_splits_must_be_disjoint():
    with pytest.raises(ConfigError) as err:
        WebArenaConfig(train_tasks=[1, 2, 3], test_tasks=[3, 4])
    assert str(err.value) == ("key 'env.webarena.test_tasks': task id 3 is also in 'env.webarena.train_tasks', "
                              "expected disjoint splits")
    with pytest.raises(ConfigError, match=r"key 'env.webarena.homepage': got 'ftp://x'"):
        WebArenaConfig(homepage="ftp://x")


def test_split_task_ids(no_wa_vars):
    default = WebArenaConfig()
    ids = {split: default.task_ids(split) for split in ("train", "dev", "test")}
    assert ids == {"train": list(range(650)), "dev": list(range(650, 700)), "test": list(range(700, WEBARENA_TASKS))}
    picked = WebArenaConfig(test_tasks=[2, 660, 800, 1])
    assert picked.task_ids("test") == [2, 660, 800, 1]  # as given, in order
    assert picked.task_ids("train") == [0] + list(range(3, 650))  # defaults less what another split lists
    assert picked.task_ids("dev") == [i for i in range(650, 700) if i != 660]
    own = WebArenaConfig(train_tasks=[10, 11], dev_tasks=[], test_tasks=[12])
    assert [own.task_ids(s) for s in ("train", "dev", "test")] == [[10, 11], [], [12]]
    with pytest.raises(ConfigError, match=r"split 'valid': expected one of train, dev, test"):
        default.task_ids("valid")
    env = WebArenaEnv(WebArenaConfig(test_tasks=[12], **URLS))
    assert [t.id for t in env.tasks("test")] == ["webarena:12"] and len(env.tasks("train")) == 649


def test_webarena_runs_on_the_miniwob_browsergym_code():
    assert issubclass(WebArenaEnv, BrowserGymEnv) and issubclass(MiniWoBEnv, BrowserGymEnv)
    for method in ("reset", "step", "available_actions", "close", "_axtree", "_observation"):
        assert getattr(WebArenaEnv, method) is getattr(MiniWoBEnv, method) is getattr(BrowserGymEnv, method), method
    assert MiniWoBEnv.extra_actions == ()
    assert WebArenaEnv.extra_actions == WEBARENA_ACTIONS == ("send_msg_to_user('...')", "go_back()", "scroll(0, 500)")


def test_actions_and_observation_on_a_real_browsergym_page(no_wa_vars):
    """A real BrowserGym observation (a MiniWoB page; no WebArena server here) read by a WebArenaEnv."""
    pytest.importorskip("browsergym.miniwob", reason="browsergym-miniwob is not installed (pip install 'dreamgym[miniwob]')")
    pytest.importorskip("miniwob", reason="miniwob is not installed (pip install 'dreamgym[miniwob]')")
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    miniwob = MiniWoBEnv(["click-button"], test_episodes=1, max_steps=3)
    webarena = WebArenaEnv(**URLS)
    try:
        first = miniwob.reset(miniwob.tasks("test")[0])
        webarena._obs, webarena._goal, webarena._done = miniwob._obs, miniwob._goal, False
        page = miniwob.available_actions()
        assert page and all(a.startswith("click('") for a in page)
        assert webarena.available_actions() == page + list(WEBARENA_ACTIONS)
        assert webarena._observation() == first.observation and first.observation.startswith("Goal: Click on")
    finally:
        miniwob.close()


def test_reset_without_browsergym_webarena_names_the_install(no_wa_vars, no_network):
    if _bgwa_installed():
        pytest.skip("browsergym-webarena is installed: reset would go to the (absent) servers")
    env = WebArenaEnv(WebArenaConfig(test_tasks=[7], **URLS))
    with pytest.raises(DreamGymError, match=r"env 'webarena' needs browsergym-webarena and libwebarena \(No module "
                                            r"named .*pip install 'dreamgym\[webarena\]'"):
        env.reset(env.tasks("test")[0])
    assert env._env is None and env.available_actions() == []


def test_browsergym_webarena_reads_the_variables_the_env_sets():
    if not _bgwa_installed():
        pytest.skip("browsergym-webarena is not installed (pip install 'dreamgym[webarena]', then the --no-deps step "
                    "in pyproject.toml)")
    try:
        from browsergym.webarena import config, instance
    except (LookupError, OSError, ValueError) as e:  # its __init__ fetches NLTK's punkt_tab
        pytest.skip(f"browsergym.webarena does not import here: {e}")
    assert tuple(f"WA_{v}" for v in instance.ENV_VARS) == tuple(f"WA_{s.upper()}" for s in WEBARENA_SITES)
    assert list(config.TASK_IDS) == list(range(WEBARENA_TASKS))
