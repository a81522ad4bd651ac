"""Choice mode (`rollout.action_space=choice`): samples are exactly one available action, behaviour log-probs
are over the renormalised allowed set and equal training's `policy_forward`, forced tokens score 0 with no
gradient, the candidates' probabilities at a branching step sum to 1, WebShop's search bar gets the task."""

import pytest
import torch

from dreamgym.config import EnvConfig, ModelConfig
from dreamgym.envs.base import make_env
from dreamgym.envs.toy import ChoiceCorridorEnv
from dreamgym.envs.vector import EnvPool
from dreamgym.models.generation import ChoiceTrie
from dreamgym.models.loading import load_model
from dreamgym.rl.batch import RolloutBatch, policy_forward
from dreamgym.rl.context import ChatContext, choice_action_text
from dreamgym.rl.rollout import RolloutSettings, run_rollouts


@pytest.fixture(scope="module")
def policy():
    return load_model(ModelConfig(name="tiny-random"), for_training=True)


@pytest.fixture(scope="module")
def corridor_rollout(policy):
    model, tok = policy
    env = ChoiceCorridorEnv(turns=3, n_doors=4)
    settings = RolloutSettings(max_turns=4, temperature=0.7, batch_size=8, seed=3, action_space="choice")
    result = run_rollouts(model, tok, ChatContext(tok), EnvPool(env), env.tasks("train") * 6, settings)
    batch = RolloutBatch.from_episodes(result.episodes, list(range(6)), tok.pad_token_id, 0)
    return result, batch, settings


def test_choice_trie():
    trie = ChoiceTrie([[5, 7, 2], [5, 8, 2], [6, 2]])
    assert trie.allowed([]) == [5, 6] and trie.allowed([5]) == [7, 8] and trie.allowed([5, 7]) == [2]
    assert trie.allowed([5, 7, 2]) == [] and trie.allowed([9]) == [] and trie.depth == 3


def test_every_sample_is_an_available_action(corridor_rollout):
    result, _, _ = corridor_rollout
    for ep in result.episodes:
        assert all(ep.parsed) and ep.steps
        for step in ep.steps:
            assert step.action in step.available_actions and not step.info.get("invalid_action")
        sampled = [i for i, m in enumerate(ep.trace.mask) if m]
        assert all(ep.trace.allowed[i] is not None for i in sampled)
        assert all(a is None for a, m in zip(ep.trace.allowed, ep.trace.mask) if not m)
    assert result.metrics()["rollout/invalid_action_rate"] == 0.0


def test_behaviour_logprobs_equal_the_renormalised_training_forward(policy, corridor_rollout):
    model, _ = policy
    _, batch, settings = corridor_rollout
    with torch.no_grad():
        logp, entropy, _ = policy_forward(model, batch.input_ids, batch.attention_mask, batch.response_mask,
                                          with_entropy=True, allowed_ids=batch.allowed_ids,
                                          temperature=settings.temperature)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(logp[mask], batch.rollout_logprobs[mask], rtol=0, atol=2e-4)
    sizes = (batch.allowed_ids >= 0).sum(-1)
    forced, branching = mask & (sizes == 1), mask & (sizes == 4)
    assert forced.any() and branching.any()
    assert (logp[forced] == 0.0).all() and (entropy[forced] == 0.0).all()
    assert (logp[branching] < 0).all() and (entropy[branching] <= torch.log(torch.tensor(4.0)) + 1e-5).all()
    # the unconstrained forward over the full vocabulary scores the same tokens much lower
    with torch.no_grad():
        free, _, _ = policy_forward(model, batch.input_ids, batch.attention_mask, batch.response_mask,
                                    temperature=settings.temperature)
    assert (free[branching] < logp[branching] - 3).all()


def test_candidates_at_a_branching_step_sum_to_one(policy, corridor_rollout):
    model, _ = policy
    _, batch, settings = corridor_rollout
    sizes = (batch.allowed_ids[0] >= 0).sum(-1)
    t = int((sizes == 4).nonzero()[0])                    # the colour token of room 1
    allowed = batch.allowed_ids[0, t].tolist()
    ids = batch.input_ids[0:1].repeat(len(allowed), 1)
    ids[:, t] = torch.tensor(allowed)                     # each candidate in the sampled one's place
    with torch.no_grad():
        logp, _, _ = policy_forward(model, ids, batch.attention_mask[0:1].repeat(len(allowed), 1),
                                    batch.response_mask[0:1].repeat(len(allowed), 1),
                                    allowed_ids=batch.allowed_ids[0:1].repeat(len(allowed), 1, 1),
                                    temperature=settings.temperature)
    torch.testing.assert_close(logp[:, t].exp().sum(), torch.tensor(1.0), rtol=0, atol=1e-5)


def test_forced_tokens_get_no_gradient(policy, corridor_rollout):
    model, _ = policy
    _, batch, settings = corridor_rollout
    mask = batch.response_mask.bool()
    forced = mask & ((batch.allowed_ids >= 0).sum(-1) == 1)
    params = [p for p in model.parameters() if p.requires_grad]
    logp, entropy, _ = policy_forward(model, batch.input_ids, batch.attention_mask, batch.response_mask,
                                      with_entropy=True, allowed_ids=batch.allowed_ids,
                                      temperature=settings.temperature)
    grads = torch.autograd.grad((logp[forced] + entropy[forced]).sum(), params, allow_unused=True, retain_graph=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    grads = torch.autograd.grad(logp[mask].sum(), params, allow_unused=True)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads)


def test_webshop_search_bar_becomes_the_task_instruction(policy):
    model, tok = policy
    assert choice_action_text("search[...]", "red shoes") == "search[red shoes]"
    assert choice_action_text("click[buy now]", "red shoes") == "click[buy now]"
    env = make_env(EnvConfig())
    task = env.tasks("train")[0]
    settings = RolloutSettings(max_turns=1, batch_size=2, seed=0, action_space="choice")
    ep = run_rollouts(model, tok, ChatContext(tok), EnvPool(env), [task], settings).episodes[0]
    assert ep.steps[0].available_actions == ["search[...]"]
    assert ep.steps[0].action == f"search[{task.instruction}]" and ep.parsed == [True]
    sampled = [lp for lp, m in zip(ep.trace.logprobs, ep.trace.mask) if m]
    assert sampled and all(lp == 0.0 for lp in sampled)  # one candidate: every token forced
