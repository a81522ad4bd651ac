"""Policy SFT: examples have exactly the token layout of a rollout (ids and mask of the rollout's trace),
the loss counts action tokens only (exact value, zero gradient elsewhere), `sft-policy` end to end lowers
the loss, exports an adapter that `--policy sft` resolves to, and resumes."""

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import EnvConfig, ModelConfig, SFTPolicyConfig, load_config
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.models.loading import load_model, load_tokenizer
from dreamgym.pipelines.offline_policy import resolve_policy
from dreamgym.rl import offline as offline_module
from dreamgym.rl.context import ChatContext
from dreamgym.rl.offline import OfflinePolicy
from dreamgym.rl.rollout import RolloutSettings, run_rollouts
from dreamgym.rl.sft_data import collate_examples, episode_example
from dreamgym.types import read_trajectories
from dreamgym.metrics import check_metric_names
from tests.offline_fixtures import tb_scalars

CFG = "configs/policy/offline_debug.yaml"
CFG_ABS = Path(CFG).resolve()


def test_example_equals_the_rollout_trace_it_imitates():
    model, tok = load_model(ModelConfig(name="tiny-random"))
    env = make_env(EnvConfig(name="choice-corridor", kwargs={"turns": 3, "n_doors": 3, "num_tasks": 2}))
    ctx = ChatContext(tok)
    result = run_rollouts(model, tok, ctx, EnvPool(env), env.tasks("train") * 3,
                          RolloutSettings(max_turns=3, action_space="choice", seed=0))
    for i, ep in enumerate(result.episodes):
        traj = ep.trajectory("real", "choice-corridor", "policy", 0, i)
        ex = episode_example(ctx, traj, "choice", 4096)
        assert ex.ids == ep.trace.ids and ex.mask == ep.trace.mask, f"episode {i} differs from its rollout trace"
    assert {len(ep.steps) for ep in result.episodes} != {1}, "want multi-turn episodes in the check"


def test_example_masks_exactly_the_action_turns(offline_data):
    tok = load_tokenizer(ModelConfig(name="tiny-random"))
    ctx = ChatContext(tok)
    traj = next(t for t in read_trajectories(offline_data) if t.success)
    ex = episode_example(ctx, traj, "free", 4096)
    action_ids = [i for i, m in zip(ex.ids, ex.mask) if m]
    assert action_ids == [i for s in traj.steps for i in ctx.choice_ids([s.action])[0]]
    s0 = traj.steps[0]
    prompt = ctx.prompt_ids(traj.task.instruction, s0.observation, s0.available_actions)
    assert ex.ids[:len(prompt)] == prompt and not any(ex.mask[:len(prompt)])
    short = episode_example(ctx, traj, "free", len(ex.ids) - 1)  # the last turn no longer fits: cut before it
    assert sum(short.mask) == sum(ex.mask) - len(ctx.choice_ids([traj.steps[-1].action])[0])


def test_loss_is_the_token_mean_nll_of_action_tokens_only(monkeypatch):
    cfg = load_config(SFTPolicyConfig, [CFG], [])
    module = OfflinePolicy(cfg, *load_model(cfg.model, for_training=True))
    batch = collate_examples([([5, 6, 7, 8], [0, 1, 1, 0]), ([9, 10, 11], [0, 0, 1])], pad_id=0)
    logp = (-torch.rand(batch["input_ids"].shape)).requires_grad_()
    monkeypatch.setattr(offline_module, "policy_forward", lambda *a, **k: (logp, None, None))
    loss, stats = module.loss(batch)
    expected = -(logp[0, 1] + logp[0, 2] + logp[1, 2]) / 3
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert stats["tokens"] == 3.0
    context = ~batch["response_mask"].bool()
    assert logp.grad[context].abs().max() == 0 and (logp.grad[~context] != 0).all()


def _grads_of_one_batch(mode: str, budget: int, batch: dict) -> tuple[torch.Tensor, dict, list[torch.Tensor], int]:
    from dreamgym.config import DPOPolicyConfig

    kind = DPOPolicyConfig if mode == "dpo" else SFTPolicyConfig
    cfg = load_config(kind, [CFG], [f"train.micro_batch_tokens={budget}"])
    torch.manual_seed(0)
    module = OfflinePolicy(cfg, *load_model(cfg.model, for_training=True))
    for n, p in module.model.named_parameters():  # LoRA B starts at 0: give it values so A gets gradients too
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(1))
    passes = []
    loss, stats = module.accumulate_gradients(batch, lambda t: (passes.append(1), t.backward()))
    return loss, stats, [p.grad.clone() for p in module.model.parameters() if p.requires_grad], len(passes)


def test_micro_batches_give_the_one_pass_gradient_loss_and_stats_sft_and_dpo():
    """`train.micro_batch_tokens` bounds the tokens of one forward/backward pass; the step's gradient, loss and
    stats are those of one pass over the whole batch (SFT weighs parts by action tokens, DPO by pairs)."""
    g = torch.Generator().manual_seed(0)
    rows = [(torch.randint(5, 400, (n,), generator=g).tolist(), [0] * (n // 2) + [1] * (n - n // 2))
            for n in (9, 23, 14, 30, 5, 17)]
    sft_batch = collate_examples(rows, pad_id=0)
    dpo_batch = dict(sft_batch, ref_chosen=torch.tensor([-3.0, -7.5, -1.0]), ref_rejected=torch.tensor([-4.0, -2.0, -9.0]))
    for mode, batch in (("sft", sft_batch), ("dpo", dpo_batch)):
        whole = _grads_of_one_batch(mode, 0, batch)
        assert whole[3] == 1
        # SFT lengths 30 23 17 14 9 5, DPO pairs (2 x the longer row) 60 46 34. Budget 30: SFT 30 | 23 | 17 | 14+9 | 5,
        # DPO one pair per pass; budget 100: SFT 30+23+17 | 14+9+5, DPO 60 | 46+34
        for budget, passes in ((30, {"sft": 5, "dpo": 3}), (100, {"sft": 2, "dpo": 2})):
            part = _grads_of_one_batch(mode, budget, batch)
            assert part[3] == passes[mode]
            torch.testing.assert_close(part[0], whole[0], rtol=1e-5, atol=1e-6)
            assert part[1].keys() == whole[1].keys() and part[1]["tokens"] == whole[1]["tokens"] == 51.0
            for k in whole[1]:
                assert abs(part[1][k] - whole[1][k]) <= 1e-5 * max(1.0, abs(whole[1][k])), (mode, budget, k)
            for a, b in zip(part[2], whole[2]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_sft_policy_cli_lowers_the_loss_exports_resolves_and_resumes(tmp_path, offline_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["sft-policy", "-c", str(CFG_ABS), "--data", str(offline_data), "--run-dir", str(run)]
    res = CliRunner().invoke(app, args + ["--export", "checkpoints/sft", "train.lr=0.02", "train.max_epochs=4"])
    assert res.exit_code == 0, res.output
    s = json.loads((run / "summary.json").read_text())
    assert s["mode"] == "sft" and s["skipped_trajectories"] == {"failed": 8} and s["demonstrations"] == 8
    assert s["train_examples"] == 6 and s["val_examples"] == 2  # split by task id, val_fraction 0.25
    assert s["train_loss"] < s["train_loss_first"] - 0.05 and s["val_loss"] < s["val_loss_first"]
    assert s["tokens_trained"] > 0 and s["real_transitions"] == 0 and s["offline_transitions"] > 0
    assert (tmp_path / "checkpoints" / "sft" / "adapter_config.json").is_file()
    assert resolve_policy("sft") == "checkpoints/sft" and resolve_policy("base") is None
    assert (run / "provenance.json").is_file() and s["adapter_dir"] == str(run / "checkpoints" / "adapter")
    scalars = tb_scalars(run)
    assert {"sft/loss", "sft/val_loss", "sft/tokens_trained", "sft/grad_norm"} <= scalars
    assert check_metric_names(scalars) == []
    res = CliRunner().invoke(app, args + ["--resume", "train.max_epochs=5"])
    assert res.exit_code == 0, res.output
    s2 = json.loads((run / "summary.json").read_text())
    assert s2["global_step"] == s["global_step"] + 3 and s2["epochs"] == 5  # one more epoch of 6 / 2 batches
    res = CliRunner().invoke(app, args + ["--resume", "model.lora.r=4"])
    assert res.exit_code != 0 and "model" in str(res.exception)


def test_sft_policy_killed_in_its_second_epoch_resumes_from_the_first(tmp_path, offline_data, monkeypatch):
    """`checkpoints/last.ckpt` is written at every epoch end (Lightning writes `last` only beside a top-k
    save, so `save_top_k=0` never wrote it): a run that dies in epoch 2 resumes there, not from scratch."""
    import lightning as L

    from dreamgym.pipelines import offline_policy

    class DieInSecondEpoch(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise RuntimeError("killed")

    build = offline_policy.build_offline_policy

    def build_and_die(*args, **kwargs):
        module, datamodule, trainer = build(*args, **kwargs)
        trainer.callbacks.append(DieInSecondEpoch())
        return module, datamodule, trainer

    run = tmp_path / "run"
    args = ["sft-policy", "-c", str(CFG_ABS), "--data", str(offline_data), "--run-dir", str(run), "train.max_epochs=3"]
    monkeypatch.setattr(offline_policy, "build_offline_policy", build_and_die)
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "killed" in str(res.exception)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert saved["global_step"] == 3 and saved["epoch"] == 0  # 6 train examples / batch 2: one epoch done
    monkeypatch.setattr(offline_policy, "build_offline_policy", build)
    res = CliRunner().invoke(app, args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "summary.json").read_text())["global_step"] == 9


def test_sft_policy_stopped_mid_epoch_resumes_at_its_step_checkpoint_in_the_same_batch_order(
        tmp_path, offline_data, monkeypatch):
    """A run stopped mid-epoch (a chunk's `timeout`; here an exception at a batch start) resumes from the last
    `train.checkpoint_every_n_steps` checkpoint, not from scratch, and trains the rest of that epoch's batches in
    the order an uninterrupted run trains them (the loader's position rides in the checkpoint)."""
    import lightning as L

    from dreamgym.pipelines import offline_policy

    class Record(L.Callback):
        def __init__(self, seen, die_at=None):
            self.seen, self.die_at = seen, die_at

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == self.die_at:
                raise RuntimeError("killed")
            self.seen.append((trainer.global_step, [int(v) for v in batch["input_ids"].sum(dim=1)]))

    build = offline_policy.build_offline_policy

    def patched(seen, die_at=None):
        def build_and_record(*args, **kwargs):
            module, datamodule, trainer = build(*args, **kwargs)
            trainer.callbacks.append(Record(seen, die_at))
            return module, datamodule, trainer
        return build_and_record

    common = ["-c", str(CFG_ABS), "--data", str(offline_data), "train.max_epochs=2", "train.checkpoint_every_n_steps=2"]
    reference: list = []
    monkeypatch.setattr(offline_policy, "build_offline_policy", patched(reference))
    res = CliRunner().invoke(app, ["sft-policy", "--run-dir", str(tmp_path / "ref")] + common)
    assert res.exit_code == 0, res.output
    assert [s for s, _ in reference] == [0, 1, 2, 3, 4, 5]  # 6 train examples / batch 2: 3 steps per epoch

    run, first, second = tmp_path / "run", [], []
    monkeypatch.setattr(offline_policy, "build_offline_policy", patched(first, die_at=5))
    res = CliRunner().invoke(app, ["sft-policy", "--run-dir", str(run)] + common)
    assert res.exit_code != 0 and "killed" in str(res.exception)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert saved["global_step"] == 4 and saved["epoch"] == 1  # the step-4 save, one batch into epoch 2
    monkeypatch.setattr(offline_policy, "build_offline_policy", patched(second))
    res = CliRunner().invoke(app, ["sft-policy", "--run-dir", str(run), "--resume"] + common)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "summary.json").read_text())["global_step"] == 6
    assert first[:4] + second == reference[:4] + reference[4:]  # steps 4 and 5 redone as the reference did them
    assert [s for s, _ in second] == [4, 5]


def test_sft_alias_falls_back_to_the_newest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stamp in ("20250101-000000", "20250102-000000"):
        (tmp_path / "logs" / "sft-policy" / stamp).mkdir(parents=True)
        (tmp_path / "logs" / "sft-policy" / stamp / "summary.json").write_text("{}")
    assert resolve_policy("sft") == "logs/sft-policy/20250102-000000"
    for bad in ("oracle", "random"):
        try:
            resolve_policy(bad)
        except ValueError as e:
            assert "scripted" in str(e)
        else:
            raise AssertionError(f"--policy {bad} accepted as weights")

