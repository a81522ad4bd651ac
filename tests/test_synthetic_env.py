"""Synthetic env on a tiny random model: batched well-formed StepResults, counted parse fallbacks,
step limit, synthetic trajectories with reasoning fields, write-back to the buffer (train only)."""

import pytest

from dreamgym.config import EnvConfig, ModelConfig, ReplayConfig, SyntheticEnvConfig
from dreamgym.envs.base import make_env
from dreamgym.experience.synthetic_env import SyntheticEnv, SyntheticVectorEnv, build_predictor
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.embed import build_encoder


@pytest.fixture(scope="module")
def real_env():
    return make_env(EnvConfig())


@pytest.fixture(scope="module")
def predictor():
    return build_predictor(_cfg())


def _cfg(**kw):
    base = dict(model=ModelConfig(name="tiny-random"), max_new_tokens=12, batch_size=4, max_steps=3)
    base.update(kw)
    return SyntheticEnvConfig(**base)


def test_batched_steps_are_well_formed_and_fallbacks_counted(real_env, predictor):
    buffer = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    predictor.buffer = buffer
    vec = SyntheticVectorEnv(predictor, _cfg(), "webshop", real_env=real_env, buffer=buffer)
    tasks = real_env.tasks("train")[:3] + real_env.tasks("dev")[:1]
    first = vec.reset(tasks)
    assert [r.observation for r in first] == [real_env.reset(t).observation for t in tasks]
    assert vec.available_actions() == [["search[...]"]] * 4
    steps = 0
    while vec.running:
        results = vec.step(["search[red shoes]"] * len(vec.running))
        steps += 1
        for r in results:
            assert isinstance(r.observation, str) and 0.0 <= r.reward <= 1.0 and isinstance(r.done, bool)
    assert steps <= 3
    trajs = vec.trajectories()
    assert len(trajs) == 4 and all(t.source == "synthetic" and 1 <= len(t.steps) <= 3 for t in trajs)
    # a random 2-layer model writes no valid tags: every step is the counted no-op fallback
    fallbacks = [s.parse_fallback for t in trajs for s in t.steps]
    assert all(fallbacks) and all(s.reasoning is not None for t in trajs for s in t.steps)
    m = vec.metrics()
    assert m["wm/parse_fail_rate"] == 1.0 and m["cost/synthetic_transitions"] == len(fallbacks)
    assert all(t.steps[-1].done for t in trajs)
    d = trajs[0].to_dict()
    assert "reasoning" in d["steps"][0] and "parse_fallback" in d["steps"][0]
    # write-back: train episodes only (split hygiene)
    unique = {(t.task.instruction, tr.state, tr.action, tr.next_state, tr.reward, tr.done)
              for t in trajs if t.task.split == "train" for tr in t.transitions()}
    assert buffer.counts()["synthetic"] == len(unique)  # identical transitions are stored once


def test_single_episode_env_protocol(real_env, predictor):
    env = SyntheticEnv(SyntheticVectorEnv(predictor, _cfg(max_steps=2), "webshop",
                                          real_env=real_env), task_source=real_env)
    task = env.tasks("train")[0]
    assert env.reset(task).observation.startswith("WebShop [SEP] Instruction:")
    assert env.available_actions() == ["search[...]"]
    assert not env.step("search[x]").done
    assert env.step("click[y]").done  # step limit 2
    after = env.step("click[y]")
    assert after.done and after.info["invalid_action"]


def test_template_initial_state_and_action_count_check(predictor):
    cfg = _cfg(initial_state="template")
    vec = SyntheticVectorEnv(predictor, cfg, "textgame")
    from dreamgym.types import Task

    r = vec.reset([Task(id="g:1", instruction="open the door", env="textgame", split="train")])
    assert r[0].observation == "Instruction: [SEP] open the door" and vec.available_actions() == [[]]
    with pytest.raises(ValueError, match="2 actions for 1 running"):
        vec.step(["a", "b"])


def test_answer_budget_warning_reads_the_fit_world_model_summary(tmp_path):
    import json

    from dreamgym.experience.synthetic_env import answer_budget_warning

    run = tmp_path / "wm"
    (run / "checkpoints" / "adapter").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"command": "fit-world-model", "answer_tokens_p90": 196,
                                                  "answer_tokens_max": 210}))
    for where in (run, run / "checkpoints" / "adapter"):  # the run dir or its adapter
        msg = answer_budget_warning(160, where)
        assert msg is not None and "synthetic.max_new_tokens=160" in msg and ">= 196" in msg
        assert answer_budget_warning(196, where) is None
    (run / "summary.json").write_text(json.dumps({"command": "eval-world-model", "answer_tokens_p90": 196}))
    assert answer_budget_warning(160, run) is None                           # not a fit-world-model summary
    (run / "summary.json").write_text("{broken")
    assert answer_budget_warning(160, run) is None                           # unreadable: no warning, no crash
    assert answer_budget_warning(160, tmp_path / "missing") is None


def test_prompt_mismatch_warning_names_each_key_that_differs_from_the_fit(tmp_path):
    from dreamgym.config import ExperiencePromptConfig, FitWorldModelConfig, to_yaml
    from dreamgym.experience.synthetic_env import prompt_mismatch_warning

    run = tmp_path / "wm"
    (run / "checkpoints" / "adapter").mkdir(parents=True)
    fitted = FitWorldModelConfig(prompt=ExperiencePromptConfig(reasoning=True, demos_k=2))
    (run / "config.yaml").write_text(to_yaml(fitted))
    same = ExperiencePromptConfig(reasoning=True, demos_k=2)
    for where in (run, run / "checkpoints" / "adapter"):
        assert prompt_mismatch_warning(same, where) is None
    msg = prompt_mismatch_warning(ExperiencePromptConfig(reasoning=False, demos_k=3), run)
    assert msg is not None and "synthetic.prompt.reasoning=False (fitted with True)" in msg
    assert "synthetic.prompt.demos_k=3 (fitted with 2)" in msg and "history_turns" not in msg
    ablation = prompt_mismatch_warning(ExperiencePromptConfig(reasoning=False, demos_k=2), run, ablation=True)
    assert ablation is None                                                  # reasoning off on purpose
    (run / "config.yaml").write_text("prompt: [broken")
    assert prompt_mismatch_warning(same, run) is None                        # unreadable: no warning, no crash
    assert prompt_mismatch_warning(same, tmp_path / "missing") is None
