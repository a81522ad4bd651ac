"""Multi-turn rollouts: exact sampled ids and log-probs, masks, template-consistent appending, metrics."""

import pytest
import torch

from dreamgym.config import EnvConfig, ModelConfig
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.models.loading import load_model
from dreamgym.rl.context import ChatContext, parse_action_text
from dreamgym.rl.rollout import RolloutSettings, run_rollouts


@pytest.fixture(scope="module")
def policy():
    model, tok = load_model(ModelConfig(name="tiny-random"), for_training=False)
    return model, tok


@pytest.fixture(scope="module")
def env():
    return make_env(EnvConfig())


def test_parse_action_text():
    assert parse_action_text("Search[red shoes]\nthanks") == ("search[red shoes]", True)
    assert parse_action_text("I will click[Buy Now] now") == ("click[Buy Now]", True)
    assert parse_action_text("  buy it\nplease") == ("buy it", False)
    assert parse_action_text("") == ("", False)


def test_appended_context_equals_the_chat_template(policy):
    _, tok = policy
    ctx = ChatContext(tok)
    ids = ctx.prompt_ids("buy soap", "WebShop [SEP] Search", ["search[...]"])
    action = tok("search[soap]", add_special_tokens=False)["input_ids"] + [ctx.end_id]
    ids = ids + action + ctx.observation_ids("Page 1", ["click[b0]"])
    msgs = [{"role": "system", "content": ctx.settings.system_prompt},
            {"role": "user", "content": ctx.user_content("WebShop [SEP] Search", ["search[...]"], "buy soap")},
            {"role": "assistant", "content": "search[soap]"},
            {"role": "user", "content": ctx.user_content("Page 1", ["click[b0]"])}]
    assert tok.decode(ids) == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def test_rollout_keeps_exact_ids_logprobs_and_masks(policy, env):
    model, tok = policy
    ctx = ChatContext(tok)
    tasks = env.tasks("train")[:3]
    settings = RolloutSettings(max_turns=3, max_new_tokens=6, batch_size=4, seed=0)
    result = run_rollouts(model, tok, ctx, EnvPool(env), tasks, settings)
    assert len(result.episodes) == 3 and result.tokens_generated > 0
    for ep in result.episodes:
        t = ep.trace
        assert len(t.ids) == len(t.mask) == len(t.logprobs)
        assert 1 <= len(ep.steps) <= 3 and ep.done and len(ep.turn_ends) == len(ep.steps)
        assert all(t.mask[i] == 1 for i in ep.turn_ends)
        assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.mask) if m == 0)
        # behaviour log-probs equal a fresh forward pass over the whole trace at the sampled positions
        with torch.no_grad():
            logits = model(torch.tensor([t.ids])).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(t.ids[1:]).unsqueeze(-1)).squeeze(-1)
        sampled = [i for i, m in enumerate(t.mask) if m == 1]
        torch.testing.assert_close(lp[[i - 1 for i in sampled]], torch.tensor([t.logprobs[i] for i in sampled]),
                                   rtol=0, atol=2e-4)
    m = result.metrics()
    assert set(m) >= {"rollout/success_rate", "rollout/repeated_action_rate", "rollout/invalid_action_rate",
                      "rollout/action_parse_fail_rate", "perf/tokens_per_s"}
    assert m["rollout/success_rate"] == 0.0 and 0.0 <= m["rollout/invalid_action_rate"] <= 1.0
    traj = result.episodes[0].trajectory("real", "webshop", "policy", 0, 0)
    assert traj.steps[0].observation.startswith("WebShop [SEP] Instruction:")


def test_context_limit_truncates(policy, env):
    model, tok = policy
    ctx = ChatContext(tok)
    task = env.tasks("train")[0]
    first = len(ctx.prompt_ids(task.instruction, env.reset(task).observation, env.available_actions()))
    settings = RolloutSettings(max_turns=5, max_new_tokens=4, max_context_tokens=first + 60, seed=1)
    result = run_rollouts(model, tok, ctx, EnvPool(env), [task, task], settings)
    for ep in result.episodes:  # one action fits, the next observation turn does not
        assert ep.truncated and len(ep.steps) == 1 and len(ep.trace.ids) <= settings.max_context_tokens
