"""The `miniwob` env (BrowserGym + headless system Chromium): the action parser to exact values always;
with the browser stack installed, oracle episodes on three tasks, an invalid action and random play
(each reset starts Chromium: ~5 s an episode)."""

import shutil

import pytest

from dreamgym.config import EnvConfig
from dreamgym.envs.base import registered_envs
from dreamgym.envs.miniwob_env import parse_axtree_actions

TREE = """RootWebArea 'Enter Text Task', focused, url='file:///x/enter-text.html'
\tStaticText 'Enter "Kasie" into the text field and press Submit.'
\t[14] textbox ''
\t[15] button 'Submit'
\t[16] link 'more'
\t\t[17] generic"""


def test_available_actions_from_the_tree_exact():
    assert parse_axtree_actions(TREE) == ["fill('14', '...')", "click('15')", "click('16')"]
    assert "miniwob" in registered_envs()


def _env(tasks):
    pytest.importorskip("browsergym.miniwob", reason="browsergym-miniwob is not installed (pip install 'dreamgym[miniwob]')")
    pytest.importorskip("miniwob", reason="miniwob is not installed (pip install 'dreamgym[miniwob]')")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    from dreamgym.envs.base import make_env

    cfg = EnvConfig(name="miniwob")
    cfg.miniwob.tasks, cfg.miniwob.test_episodes, cfg.miniwob.max_steps = tasks, 1, 3
    return make_env(cfg)


def test_oracle_solves_and_invalid_actions_are_flagged():
    from dreamgym.episodes import run_episode
    from dreamgym.policies import RandomPolicy

    env = _env(["click-button", "enter-text", "focus-text"])
    try:
        tasks = env.tasks("test")
        assert [t.id for t in tasks] == ["miniwob:test-click-button-0", "miniwob:test-enter-text-0",
                                         "miniwob:test-focus-text-0"]
        for task in tasks:
            traj = run_episode(env, env.oracle(), task, max_turns=3)
            assert traj.success and traj.final_reward == 1.0, (task.id, [s.action for s in traj.steps])
            assert traj.steps[0].observation.startswith("Goal: ")
        first = env.reset(tasks[0])
        assert "button" in first.observation and all(a.startswith("click('") for a in env.available_actions())
        bad = env.step("click('9999')")
        assert (bad.reward, bad.done, bad.info["invalid_action"]) == (0.0, False, True)
        assert "Last action error" in bad.observation
        traj = run_episode(env, RandomPolicy(seed=0), tasks[0], max_turns=3)
        assert 1 <= len(traj.steps) <= 3 and all(s.action in s.available_actions for s in traj.steps)
    finally:
        env.close()
