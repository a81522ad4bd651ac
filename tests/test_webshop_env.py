"""Native WebShop env: page transitions, invalid actions, purchase reward, step limit, oracle/random."""

import json

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import EnvConfig, WebShopConfig
from dreamgym.envs.base import make_env
from dreamgym.envs.webshop.env import parse_action
from dreamgym.envs.webshop.reward import get_reward
from dreamgym.episodes import run_episode
from dreamgym.errors import DreamGymError
from dreamgym.policies import RandomPolicy
from dreamgym.types import Task, read_trajectories


@pytest.fixture(scope="module")
def env():
    return make_env(EnvConfig(name="webshop"))


def _goal_and_product(env, task):
    goal = env.catalog.goals[task.goal["index"]]
    return goal, env.catalog.product_by_asin[goal["asin"]]


def test_parse_action_is_upstreams():
    assert parse_action("search[red shoes]") == ("search", "red shoes")
    assert parse_action("click[< Prev]") == ("click", "< Prev")
    assert parse_action("search[]") == ("search[]", None)
    assert parse_action("buy") == ("buy", None)


def test_splits_are_fixed_and_disjoint(env):
    test, dev, train = (env.tasks(s) for s in ("test", "dev", "train"))
    assert (len(test), len(dev)) == (500, 1000) and len(train) >= 500
    assert test[0].id == "webshop:0" and dev[0].id == "webshop:500" and train[0].id == "webshop:1500"
    assert env.task_by_index(3) == test[3]
    assert [t.id for t in make_env(EnvConfig()).tasks("test")[:5]] == [t.id for t in test[:5]]


def test_full_navigation(env):
    task = env.tasks("test")[0]
    goal, product = _goal_and_product(env, task)
    r = env.reset(task)
    assert r.observation == f"WebShop [SEP] Instruction: [SEP] {goal['instruction_text']} [SEP] Search"
    assert env.available_actions() == ["search[...]"]
    r = env.step(f"search[{product['Title']}]")
    assert not r.done and r.reward == 0.0 and r.info == {}
    assert r.observation.startswith(f"Instruction: [SEP] {goal['instruction_text']} [SEP] Back to Search [SEP] Page 1")
    acts = env.available_actions()
    assert acts[0] == "click[back to search]" and f"click[{goal['asin'].lower()}]" in acts
    env.step(f"click[{goal['asin'].lower()}]")
    assert env.page_name == "item_page" and product["Title"] in env.observation
    env.step("click[description]")
    assert env.page_name == "item_sub_page" and env.available_actions() == ["click[back to search]", "click[< prev]"]
    env.step("click[< prev]")
    assert env.page_name == "item_page"
    name, values = next(iter(product["options"].items()))
    env.step(f"click[{values[0]}]")
    assert env._session["options"] == {name: values[0]}
    env.step("click[< prev]")  # back to results clears options, as upstream
    assert env.page_name == "search_results" and env._session["options"] == {}
    env.step("click[back to search]")
    assert env.page_name == "index"


def test_pagination(env):
    env.reset(env.tasks("test")[1])
    env.step("search[pack]")
    if "click[next >]" not in env.available_actions():
        pytest.skip("query returned a single page")
    first = env.observation
    env.step("click[next >]")
    assert "Page 2 (Total results:" in env.observation and "click[< prev]" in env.available_actions()
    env.step("click[< prev]")
    assert env.observation == first


def test_invalid_actions_leave_page_unchanged(env):
    env.reset(env.tasks("test")[2])
    before = env.observation
    for action, reason in [("search[]", "unparsable"), ("click[search]", "not allowed"),
                           ("click[buy now]", "not clickable"), ("jump[now]", "unknown action"),
                           ("hello", "unparsable"), ("search[   ]", "empty search")]:
        r = env.step(action)
        assert (r.observation, r.reward, r.done, r.info["invalid_action"]) == (before, 0.0, False, True)
        assert reason in r.info["reason"]


def test_purchase_reward_matches_get_reward_and_ends_episode(env):
    task = env.tasks("test")[3]
    goal, product = _goal_and_product(env, task)
    env.reset(task)
    env.step(f"search[{product['Title']}]")
    env.step(f"click[{goal['asin'].lower()}]")
    r = env.step("click[buy now]")  # no options chosen -> partial credit
    expected = get_reward(product, goal, price=env.catalog.prices[goal["asin"]], options={})
    assert r.done and r.reward == pytest.approx(expected) and 0.0 < r.reward < 1.0
    assert r.info["success"] is False and r.info["purchased_asin"] == goal["asin"]
    assert set(r.info["reward_info"]) >= {"r_type", "r_att", "w_att"}
    assert r.observation.endswith(f"Your score (min 0.0, max 1.0) [SEP] {r.reward} [SEP] Reward Details [SEP] None")
    again = env.step("click[buy now]")
    assert again.done and again.reward == 0.0 and again.info["reason"] == "episode is over"


def test_step_limit_truncates():
    env = make_env(EnvConfig(webshop=WebShopConfig(max_steps=2)))
    env.reset(env.tasks("train")[0])
    assert not env.step("search[soap]").done
    r = env.step("click[back to search]")
    assert r.done and r.reward == 0.0 and r.info["truncated"] is True


def test_custom_task_goal_and_missing_fields(env):
    goal, product = _goal_and_product(env, env.tasks("train")[0])
    task = Task(id="webshop:variation-1", instruction="find " + product["Title"], env="webshop", split="train",
                goal={k: goal[k] for k in ("asin", "attributes", "goal_options", "price_upper")})
    assert env.reset(task).observation.endswith(f"find {product['Title']} [SEP] Search")
    with pytest.raises(DreamGymError, match="goal lacks"):
        env.reset(Task(id="x", instruction="y", env="webshop", split="train", goal={}))


def test_oracle_and_random_success_rates(env):
    tasks = env.tasks("test")[:40]
    oracle = env.oracle()
    wins = [run_episode(env, oracle, t, max_turns=15).success for t in tasks]
    assert sum(wins) / len(wins) >= 0.95
    rand = RandomPolicy(seed=0)
    trajs = [run_episode(env, rand, t, max_turns=15) for t in tasks]
    assert sum(t.success for t in trajs) / len(trajs) < 0.05
    assert trajs[0] == run_episode(env, RandomPolicy(seed=0), tasks[0], max_turns=15)  # replayable


def test_collect_command_end_to_end(tmp_path):
    out = tmp_path / "demo.jsonl"
    result = CliRunner().invoke(app, ["collect", "-c", "configs/debug.yaml", "--policy", "oracle", "--episodes", "4",
                                      "--split", "train", "--out", str(out), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"episodes", "transitions", "real_transitions", "success_rate", "success_rate_ci95", "mean_reward",
            "steps_per_s", "command", "run_dir", "wall_clock_s", "seed", "config_path"} <= summary.keys()
    trajs = list(read_trajectories(out))
    assert len(trajs) == summary["episodes"] == 4 and summary["success_rate"] == 1.0
    assert summary["transitions"] == sum(len(t.steps) for t in trajs)
    first = trajs[0]
    assert first.id == "webshop-train-01500-oracle-0" and first.task.split == "train"
    assert first.steps[0].observation.startswith("WebShop [SEP] Instruction:")
    assert first.steps[-1].action == "click[buy now]" and first.final_observation.startswith("Thank you")


def test_bad_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DreamGymError, match=str(tmp_path / "nowhere")):
        make_env(EnvConfig(webshop=WebShopConfig(data_dir=str(tmp_path / "nowhere"))))


def test_noisy_oracle_makes_near_misses_failed_purchases_with_partial_reward(env):
    from dreamgym.policies import NoisyPolicy, make_policy

    tasks = env.tasks("test")[:40]
    trajs = [run_episode(env, make_policy("noisy-oracle", env, seed=0, epsilon=0.3), t, max_turns=15) for t in tasks]
    ended = [t for t in trajs if t.steps[-1].done and not t.steps[-1].info.get("truncated")]
    failed = [t for t in ended if not t.success]
    assert (sum(t.success for t in trajs), len(ended), len(failed)) == (28, 39, 11)   # seeded: exact
    assert all(0.0 < t.final_reward < 1.0 for t in failed)                            # partial credit purchases
    assert all(t.steps[-1].action == "click[buy now]" for t in failed)
    again = run_episode(env, make_policy("noisy-oracle", env, seed=0, epsilon=0.3), tasks[3], max_turns=15)
    assert again == trajs[3]                                                          # replayable per task
    # epsilon 0 is the oracle, epsilon 1 the random policy (seed + 1)
    for eps, ref in ((0.0, env.oracle()), (1.0, RandomPolicy(seed=1))):
        for t in tasks[:5]:
            a = run_episode(env, NoisyPolicy(env.oracle(), eps, seed=0), t, max_turns=15)
            b = run_episode(env, ref, t, max_turns=15)
            assert [s.action for s in a.steps] == [s.action for s in b.steps]
    with pytest.raises(DreamGymError, match="epsilon"):
        NoisyPolicy(env.oracle(), 1.5)


def test_collect_noisy_oracle_counts_failed_endings(tmp_path):
    from dreamgym.config import CollectConfig, load_config

    with pytest.raises(Exception, match="epsilon"):
        load_config(CollectConfig, [], ["policy=noisy-oracle", "epsilon=2"])
    result = CliRunner().invoke(app, ["collect", "-c", "configs/debug.yaml", "--policy", "noisy-oracle", "--episodes",
                                      "12", "--split", "train", "--run-dir", str(tmp_path / "run"), "epsilon=0.5"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["policy"] == "noisy-oracle" and summary["episodes"] == 12
    assert 0 < summary["failed_endings"] <= 12 - round(summary["success_rate"] * 12)
