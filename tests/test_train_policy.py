"""train-policy end to end on tiny models (synthetic GRPO with curriculum, real PPO), the update step
moves LoRA-B and not the base, the next rollout samples with the updated weights (and a stale one is
refused), masked positions get zero gradient, resume continues and refuses changes."""

import json

import pytest
import torch
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import EnvConfig, ModelConfig, ReplayConfig, TrainPolicyConfig, load_config
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.episodes import run_episode
from dreamgym.metrics import check_metric_names, read_scalars
from dreamgym.models.loading import load_model, save_adapter
from dreamgym.pipelines.train_policy import build_train_policy
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.embed import build_encoder
from dreamgym.rl import module as rl_module
from dreamgym.rl.batch import RolloutBatch, policy_forward
from dreamgym.rl.context import ChatContext
from dreamgym.rl.module import PolicyRL
from dreamgym.rl.rollout import RolloutSettings, run_rollouts
from dreamgym.runs import RunDir

DEBUG = "configs/policy/debug.yaml"
TOY = "configs/policy/toy_choice.yaml"


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("wm")
    model, _ = load_model(ModelConfig(name="tiny-random", seed=1), for_training=True)
    save_adapter(model, d / "adapter")
    env = make_env(EnvConfig())
    buf = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    buf.add_trajectories([run_episode(env, env.oracle(), t, 15) for t in env.tasks("train")[:4]])
    buf.save(d / "buffer")
    return d


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def test_grpo_in_synthetic_env_cli(tmp_path, world_model):
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train-policy", "-c", DEBUG, "--algo", "grpo", "--env", "synthetic", "--world-model",
                                   str(world_model / "adapter"), "--buffer", str(world_model / "buffer"),
                                   "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    s = _summary(run)
    assert {"algo", "env", "iterations", "success_rate_first", "success_rate_last", "checkpoint", "adapter_dir",
            "real_transitions", "synthetic_transitions", "tokens_generated", "tokens_trained", "gpu_hours"} <= s.keys()
    assert (s["algo"], s["train_env"], s["iterations"], s["real_transitions"]) == ("grpo", "synthetic", 2, 0)
    assert s["synthetic_transitions"] > 0 and (run / "checkpoints" / "adapter" / "adapter_config.json").is_file()
    assert list(run.glob("tb/events.out.tfevents.*")) and (run / "checkpoints" / "last.ckpt").is_file()
    lines = (run / "rollouts.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["source"] == "synthetic" for x in lines)
    saved = ReplayBuffer.load(run / "checkpoints" / "buffer")
    assert saved.counts()["synthetic"] > 0  # synthetic experience written back


def test_ppo_in_real_env_and_resume(tmp_path):
    run = tmp_path / "ppo"
    args = ["train-policy", "-c", DEBUG, "--algo", "ppo", "--env", "webshop", "--run-dir", str(run)]
    res = CliRunner().invoke(app, args + ["max_iterations=1"])
    assert res.exit_code == 0, res.output
    s = _summary(run)
    assert (s["train_env"], s["iterations"], s["synthetic_transitions"]) == ("real", 1, 0) and s["real_transitions"] > 0
    tags = set(read_scalars(run / "tb"))
    assert {"ppo/grad_norm", "ppo/policy_loss", "ppo/value_loss", "ppo/lr", "ppo/advantage_std", "ppo/return_mean",
            "ppo/value_mean"} <= tags and check_metric_names(tags) == []
    res = CliRunner().invoke(app, args + ["--resume", "max_iterations=2"])
    assert res.exit_code == 0, res.output
    s2 = _summary(run)
    assert s2["iterations"] == 2 and s2["real_transitions"] > s["real_transitions"]
    res = CliRunner().invoke(app, args + ["--resume", "model.lora.r=4"])
    assert res.exit_code != 0 and "model" in str(res.exception) and "differ" in str(res.exception)


@pytest.fixture(scope="module")
def policy_and_batch():
    cfg = load_config(TrainPolicyConfig, [DEBUG], ["algo.weight_decay=0.0"])
    model, tok = load_model(cfg.model, for_training=True)
    module = PolicyRL(cfg, model, tok)
    env = make_env(EnvConfig())
    task = env.tasks("train")[0]
    result = run_rollouts(model, tok, ChatContext(tok), EnvPool(env), [task, task],
                          RolloutSettings(max_turns=2, max_new_tokens=6, seed=0))
    result.episodes[0].turn_rewards[-1] = 1.0  # one success in the group: non-zero GRPO advantages
    result.episodes[0].done, result.episodes[0].truncated = True, False
    batch = RolloutBatch.from_episodes(result.episodes, [0, 0], tok.pad_token_id, module.policy_version)
    return module, batch


def _without_trainer(module: PolicyRL) -> PolicyRL:
    """Let `PolicyRL.update` run outside `trainer.fit`: a plain optimizer and backward (it clips itself)."""
    opt = module.configure_optimizers()
    module.optimizers = lambda: opt
    module.manual_backward = lambda loss: loss.backward()
    return module


def test_one_update_moves_lora_b_and_not_the_base(policy_and_batch):
    module, batch = policy_and_batch
    _without_trainer(module)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    stats = module.update(batch)
    assert stats["grpo/updates"] >= 1 and stats["grpo/zero_var_groups"] == 0.0 and stats["grpo/grad_norm"] > 0
    assert stats["grpo/group_reward_std"] > 0 and check_metric_names(stats) == []   # every name is declared
    moved = [n for n, p in module.named_parameters() if "lora_B" in n and not torch.equal(before[n], p)]
    assert moved, "no lora_B weight changed after one update"
    for n, p in module.named_parameters():
        if "lora_" not in n:
            torch.testing.assert_close(before[n], p, msg=f"frozen base weight {n} changed")
    assert module.policy_version == stats["grpo/updates"]


def test_stale_rollout_is_refused(policy_and_batch):
    module, batch = policy_and_batch
    batch.policy_version = module.policy_version + 1
    with pytest.raises(AssertionError, match="stale weights"):
        module.training_step(iter([(batch, 0, 0)]))


def test_next_rollout_uses_the_updated_weights(tmp_path):
    cfg = load_config(TrainPolicyConfig, [TOY], ["algo.group_size=4", "algo.update_epochs=1", "max_iterations=3"])
    module, data, _, _ = build_train_policy(cfg, RunDir.open("test", tmp_path, cfg), progress=False)
    _without_trainer(module)
    batch = data.make_batch()
    batch.scores[0] = 1.0 - batch.scores[0]  # a group with a success and a failure: a real update
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert module.update(batch)["grpo/updates"] >= 1
    nxt = data.make_batch()
    assert nxt.policy_version == module.policy_version > batch.policy_version

    def score() -> torch.Tensor:
        with torch.no_grad():
            return policy_forward(module.model, nxt.input_ids, nxt.attention_mask, nxt.response_mask,
                                  allowed_ids=nxt.allowed_ids, temperature=cfg.rollout.temperature)[0]

    mask = nxt.response_mask.bool()
    torch.testing.assert_close(score()[mask], nxt.rollout_logprobs[mask], rtol=0, atol=2e-4)
    params = dict(module.named_parameters())
    with torch.no_grad():
        after = {n: params[n].detach().clone() for n in before}
        for n, w in before.items():
            params[n].copy_(w)
        stale = score()
        for n, w in after.items():
            params[n].copy_(w)
    branching = mask & ((nxt.allowed_ids >= 0).sum(-1) > 1)
    assert (stale[branching] - nxt.rollout_logprobs[branching]).abs().max() > 1e-3, "sampled with the old weights"


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_masked_positions_get_zero_gradient_and_cannot_move_the_loss(algo, monkeypatch):
    cfg = load_config(TrainPolicyConfig, [DEBUG], [f"algo.name={algo}", "algo.entropy_coef=0.01", "algo.kl_coef=0.1"])
    model, tok = load_model(cfg.model, for_training=True)
    module = PolicyRL(cfg, model, tok)
    env = make_env(EnvConfig())
    task = env.tasks("train")[0]
    result = run_rollouts(model, tok, ChatContext(tok), EnvPool(env), [task, task],
                          RolloutSettings(max_turns=2, max_new_tokens=6, seed=0))
    result.episodes[0].turn_rewards[-1] = 1.0
    result.episodes[0].done, result.episodes[0].truncated = True, False
    batch = RolloutBatch.from_episodes(result.episodes, [0, 0], tok.pad_token_id, 0)
    with torch.no_grad():
        old_logp, _, old_values = policy_forward(model, batch.input_ids, batch.attention_mask, batch.response_mask,
                                                 module.value_head)
        ref_logp = module._reference_logp(batch)
    adv, returns, _, _ = module._advantages(batch, old_values)
    outputs = []

    def spy(*args, **kwargs):  # PolicyRL's own forward, with the per-token tensors kept for their gradients
        out = policy_forward(*args, **kwargs)
        for t in out:
            if t is not None:
                t.retain_grad()
        outputs.append(out)
        return out

    monkeypatch.setattr(rl_module, "policy_forward", spy)
    rows = torch.arange(len(batch))
    loss, _ = module._loss(batch, rows, old_logp, old_values, ref_logp, adv, returns)
    loss.backward()
    context = ~batch.response_mask.bool()  # prompt, observations, template glue, padding
    for t in outputs[0]:
        if t is not None:
            assert t.grad[context].abs().max() == 0 and t.grad[~context].abs().sum() > 0

    def garbage(x):
        return None if x is None else x + 1e3 * torch.randn_like(x) * context

    noisy, _ = module._loss(batch, rows, garbage(old_logp), garbage(old_values), garbage(ref_logp), garbage(adv),
                            garbage(returns))
    torch.testing.assert_close(noisy, loss, rtol=0, atol=0)


@pytest.mark.parametrize("algo,aggregation", [("grpo", "token-mean"), ("grpo", "seq-mean-token-mean"),
                                              ("ppo", "seq-mean-token-sum")])
def test_micro_batches_accumulate_the_whole_minibatch_gradient(algo, aggregation):
    cfg = load_config(TrainPolicyConfig, [DEBUG], [f"algo.name={algo}", f"algo.aggregation={aggregation}",
                                                   "algo.entropy_coef=0.01", "algo.kl_coef=0.1"])
    model, tok = load_model(cfg.model, for_training=True)
    module = PolicyRL(cfg, model, tok)
    env = make_env(EnvConfig())
    tasks = env.tasks("train")[:2]
    result = run_rollouts(model, tok, ChatContext(tok), EnvPool(env), [tasks[0]] * 2 + [tasks[1]] * 2,
                          RolloutSettings(max_turns=2, max_new_tokens=6, seed=0))
    for e in result.episodes[::2]:  # one success per group: non-zero GRPO advantages
        e.turn_rewards[-1], e.done, e.truncated = 1.0, True, False
    batch = RolloutBatch.from_episodes(result.episodes, [0, 0, 1, 1], tok.pad_token_id, 0)
    cut = int(batch.attention_mask[1].sum()) - 7  # row 1 shorter than the rest: unequal lengths, real padding
    for t, fill in ((batch.attention_mask, 0), (batch.response_mask, 0), (batch.input_ids, tok.pad_token_id)):
        t[1, cut:] = fill
    with torch.no_grad():
        old_logp, old_values = module._score(batch, reference=False)
        ref_logp = module._reference_logp(batch)
    adv, returns, _, _ = module._advantages(batch, old_values)
    rows = torch.arange(len(batch))
    longest = int(batch.attention_mask.sum(-1).max())

    def grads(micro_batch_tokens: int):
        module.cfg.algo.micro_batch_tokens = micro_batch_tokens
        module.zero_grad()
        calls = []
        stats = module.accumulate_gradients(batch, rows, old_logp, old_values, ref_logp, adv, returns,
                                            lambda loss: (calls.append(1), loss.backward()))
        return {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}, stats, len(calls)

    whole, whole_stats, passes = grads(0)
    assert passes == 1
    for budget, expected_passes in ((2 * longest, 2), (1, 4)):
        split, split_stats, passes = grads(budget)
        assert passes == expected_passes
        for n, g in whole.items():
            torch.testing.assert_close(split[n], g, rtol=1e-4, atol=1e-6, msg=n)
        for k, v in whole_stats.items():
            assert split_stats[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
