"""Experience-model SFT data and module (paper Eq. 5): the loss mask covers exactly the target tokens
(reasoning/reward parts switchable), length bucketing cuts padding, the split is by trajectory,
dev/test records are refused, one step moves lora_B and not the base, and the saved adapter reloads
to identical logits. Data come from the real native WebShop env played by its oracle; model tiny-random."""

from __future__ import annotations

import json

import pytest
import torch

from dreamgym.config import EnvConfig, FitWorldModelConfig, load_config
from dreamgym.config.loading import ConfigError
from dreamgym.errors import DreamGymError
from dreamgym.experience.prompts import build_messages, target_spans
from dreamgym.experience.sft_data import (
    PART_NONE, PART_OUTCOME, PART_REASONING, PART_STATE, BucketBatchSampler, SFTDataModule, bucket_batches,
    load_records, padding_tokens, tokenize_record, trajectory_records,
)
from dreamgym.models.loading import chat_prompt_ids, load_adapter
from dreamgym.types import write_trajectories

DEBUG = "configs/world_model/debug.yaml"
REASONING = "The click opens the product page of the chosen item, so its options and price show."


def oracle_trajectories(n: int, split: str = "train", max_turns: int = 10) -> list:
    """n episodes of the native WebShop env played by its oracle (real pages, real rewards)."""
    from dreamgym.envs.base import make_env
    from dreamgym.episodes import run_episode

    env = make_env(EnvConfig())
    oracle = env.oracle()
    trajs = [run_episode(env, oracle, task, max_turns) for task in env.tasks(split)[:n]]
    env.close()
    return trajs


@pytest.fixture(scope="module")
def cfg() -> FitWorldModelConfig:
    return load_config(FitWorldModelConfig, [DEBUG], [])


@pytest.fixture(scope="module")
def records() -> list[dict]:
    recs = [r for t in oracle_trajectories(6) for r in trajectory_records(t)]
    recs[1] = {**recs[1], "reasoning": REASONING}
    return recs


@pytest.fixture(scope="module")
def tokenizer(cfg):
    from dreamgym.models.loading import load_tokenizer

    return load_tokenizer(cfg.model)


def labelled_text(tok, ex) -> str:
    return tok.decode([i for i in ex.labels if i != -100])


def test_loss_mask_covers_exactly_the_target_tokens(cfg, records, tokenizer):
    rec = records[1]
    ex = tokenize_record(rec, tokenizer, cfg.prompt, cfg.sft)
    assert ex is not None and ex.target.startswith(f"<think>{REASONING}</think>\n<state>")
    messages = build_messages(rec["instruction"], [tuple(h) for h in rec["history"]], rec["state"], rec["action"],
                              [], cfg.prompt)
    assert ex.input_ids[:ex.prompt_len] == chat_prompt_ids(tokenizer, messages)   # the generation prompt, as is
    assert all(label == -100 for label in ex.labels[:ex.prompt_len])              # no prompt token has a label
    assert set(ex.parts[:ex.prompt_len]) == {PART_NONE}
    assert all(label != -100 for label in ex.labels[ex.prompt_len:])              # every target token has one
    assert labelled_text(tokenizer, ex) == ex.target + "<|im_end|>"                # tags and end-of-turn included
    by_part = {p: tokenizer.decode([i for i, q in zip(ex.input_ids, ex.parts) if q == p])
               for p in (PART_REASONING, PART_STATE, PART_OUTCOME)}
    spans = target_spans(ex.target)
    assert by_part[PART_REASONING] == ex.target[:spans["state_block"][0]]
    assert by_part[PART_STATE] == ex.target[spans["state_block"][0]:spans["outcome"][0]]
    assert by_part[PART_OUTCOME] == ex.target[spans["outcome"][0]:] + "<|im_end|>"


def test_reasoning_off_and_reward_off_masks_are_exact(cfg, records, tokenizer):
    rec = records[1]
    full = tokenize_record(rec, tokenizer, cfg.prompt, cfg.sft)
    spans = target_spans(full.target)
    state_start, outcome_start = spans["state_block"][0], spans["outcome"][0]
    cases = {(False, True): full.target[state_start:] + "<|im_end|>",
             (True, False): full.target[:outcome_start],
             (False, False): full.target[state_start:outcome_start]}
    for (on_reasoning, on_reward), expected in cases.items():
        sft = load_config(FitWorldModelConfig, [DEBUG], [f"sft.loss_on_reasoning={on_reasoning}",
                                                          f"sft.loss_on_reward={on_reward}"]).sft
        ex = tokenize_record(rec, tokenizer, cfg.prompt, sft)
        assert ex.input_ids == full.input_ids and ex.parts == full.parts   # only the labels change
        assert labelled_text(tokenizer, ex) == expected, (on_reasoning, on_reward)
    no_think = load_config(FitWorldModelConfig, [DEBUG], ["prompt.reasoning=false"])  # no-reasoning ablation
    ex = tokenize_record(rec, tokenizer, no_think.prompt, no_think.sft)
    assert "<think>" not in ex.target and PART_REASONING not in ex.parts
    assert labelled_text(tokenizer, ex) == ex.target + "<|im_end|>"


def test_too_long_examples_are_dropped_and_counted(cfg, records, tokenizer):
    short = load_config(FitWorldModelConfig, [DEBUG], ["sft.max_seq_len=520"])
    lengths = [len(tokenize_record(r, tokenizer, cfg.prompt, cfg.sft).input_ids) for r in records]
    dm = SFTDataModule(records, tokenizer, short.prompt, short.sft, seed=0)
    dm.setup()
    assert dm.dropped_too_long == sum(n > 520 for n in lengths) > 0
    assert len(dm.train) + len(dm.val) == sum(n <= 520 for n in lengths)


def test_bucketing_reduces_padding_exact_counts():
    lengths = [1, 9, 2, 8, 3, 7, 4, 6]
    plain = bucket_batches(lengths, batch_size=2, megabatch=1, shuffle=False)
    assert plain == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert padding_tokens(plain, lengths) == 8 + 6 + 4 + 2
    bucketed = bucket_batches(lengths, batch_size=2, megabatch=4, seed=3, epoch=1, shuffle=True)
    assert sorted(i for b in bucketed for i in b) == list(range(8))        # a permutation, nothing lost
    assert sorted(map(sorted, bucketed)) == [[0, 2], [1, 3], [4, 6], [5, 7]]  # pairs (1,2) (9,8) (3,4) (7,6)
    assert padding_tokens(bucketed, lengths) == 4
    shuffled = bucket_batches(lengths, batch_size=2, megabatch=1, seed=3, epoch=1, shuffle=True)
    assert padding_tokens(shuffled, lengths) > 4
    assert bucket_batches(lengths, 2, 4, seed=3, epoch=1) == bucketed           # seeded
    assert bucket_batches(lengths, 2, 1, seed=3, epoch=2) != shuffled           # a new order per epoch


def test_sampler_resume_continues_the_interrupted_epoch():
    lengths, epoch = list(range(1, 12)), [0]
    sampler = BucketBatchSampler(lengths, 2, 2, seed=1, epoch_fn=lambda: epoch[0])
    first = list(sampler)
    assert list(sampler) == first                                # same epoch, same order
    epoch[0] = 1
    second = list(sampler)
    assert second != first and len(first) == len(sampler) == 6
    epoch[0] = 1            # Lightning counts an epoch cut by max_steps as done: its counter says 1 on resume
    resumed = BucketBatchSampler(lengths, 2, 2, seed=1, epoch_fn=lambda: epoch[0])
    resumed.resume(0, 4)                                         # 4 batches of data epoch 0 were trained
    assert list(resumed) == first[4:]
    epoch[0] = 2
    assert list(resumed) == second                               # then data epoch 1, as without the stop
    at_end = BucketBatchSampler(lengths, 2, 2, seed=1, epoch_fn=lambda: 1)
    at_end.resume(0, 6)                                          # epoch 0 was complete: go on with epoch 1
    assert list(at_end) == second


def test_train_val_split_is_by_trajectory(cfg, records, tokenizer):
    dm = SFTDataModule(records, tokenizer, cfg.prompt, cfg.sft, seed=0)
    dm.setup()
    train_ids, val_ids = {e.trajectory_id for e in dm.train}, {e.trajectory_id for e in dm.val}
    assert train_ids and val_ids and not train_ids & val_ids
    assert dm.val_trajectories == val_ids and not dm.train_trajectories & dm.val_trajectories
    assert len(dm.train) + len(dm.val) + dm.dropped_too_long == len(records)
    again = SFTDataModule(records, tokenizer, cfg.prompt, cfg.sft, seed=0)
    again.setup()
    assert again.val_trajectories == dm.val_trajectories                       # seeded
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "parts"}
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()       # padding never labelled


def test_terminal_repeats_oversample_train_outcome_steps_only(cfg, records, tokenizer):
    from dataclasses import replace

    plain = SFTDataModule(records, tokenizer, cfg.prompt, cfg.sft, seed=0)
    plain.setup()
    heavy = SFTDataModule(records, tokenizer, cfg.prompt, replace(cfg.sft, terminal_repeats=3), seed=0)
    heavy.setup()
    terminal_train = sum(1 for r in records if r["done"] and str(r["trajectory_id"]) not in plain.val_trajectories)
    assert plain.terminal_train == heavy.terminal_train == terminal_train > 0
    assert len(heavy.train) == len(plain.train) + 2 * terminal_train and len(heavy.val) == len(plain.val)
    assert heavy.summary()["real_transitions"] == plain.summary()["real_transitions"] == len(records)
    done_targets = [e for e in heavy.train if "<done>true</done>" in e.target]
    assert len(done_targets) == 3 * terminal_train


def test_dev_and_test_records_are_refused(tmp_path, records):
    annotated = tmp_path / "sft.jsonl"
    rows = [dict(records[0]), {**records[1], "split": "dev"}]
    annotated.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DreamGymError, match=r"sft\.jsonl:2: .*'dev' split"):
        load_records([annotated])
    trajs = tmp_path / "test_trajs.jsonl"
    write_trajectories(trajs, oracle_trajectories(1, split="test"))
    with pytest.raises(DreamGymError, match="'test' split"):
        load_records([trajs])


@pytest.fixture(scope="module")
def trained(cfg, records):
    """An ExperienceModel after one optimizer step (weight_decay 0), with its weights before."""
    import lightning as L

    from dreamgym.experience.module import ExperienceModel

    one = load_config(FitWorldModelConfig, [DEBUG], ["sft.weight_decay=0.0", "sft.max_steps=1",
                                                    "sft.warmup_steps=0", "sft.gradient_clip_val=0.0"])
    L.seed_everything(0)
    module = ExperienceModel(one)
    dm = SFTDataModule(records, module.tokenizer, one.prompt, one.sft, seed=0)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=dm)
    return module, before, dm


def test_one_step_moves_lora_b_and_not_the_base(trained):
    module, before, _ = trained
    assert module.counters["tokens_trained"] > 0 and len(module.train_losses) == 1
    moved = 0
    for n, p in module.named_parameters():
        if "lora_B" in n:
            assert not torch.equal(before[n], p), f"{n} did not change after one step"
            moved += 1
        elif "lora_" not in n:
            torch.testing.assert_close(before[n], p, rtol=0, atol=0, msg=f"frozen base weight {n} changed")
    assert moved > 0


def test_loss_on_kept_logits_equals_the_plain_causal_lm_loss(trained):
    module, _, dm = trained
    batch = dm._collate(dm.val[:2] + dm.train[:1])               # ragged lengths: right padding in play
    with torch.no_grad():
        ours, stats = module.loss(batch)
        plain = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"]).loss
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    n = int((batch["labels"] != -100).sum())
    assert sum(int(stats[f"{p}_n"]) for p in ("reasoning", "state", "outcome")) == n == int(stats["weight"])


def test_gradient_clipping_hook_logs_the_norm_before_clipping_and_clips_like_torch(trained, monkeypatch):
    """One norm per optimizer step serves both the `wm/grad_norm` log and the clip (sft.gradient_clip_val)."""
    module, _, dm = trained
    params = [p for p in module.model.parameters() if p.requires_grad]
    module.model.zero_grad(set_to_none=True)
    module.loss(dm._collate(dm.train[:2]))[0].backward()
    ref = [p.grad.clone() for p in params]
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.configure_gradient_clipping(None, gradient_clip_val=0.01, gradient_clip_algorithm="norm")
    ref_params = [torch.nn.Parameter(torch.zeros_like(g)) for g in ref]
    for rp, g in zip(ref_params, ref):
        rp.grad = g.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(ref_params, 0.01)
    assert set(logged) == {"wm/grad_norm"} and float(logged["wm/grad_norm"]) > 0.01
    torch.testing.assert_close(logged["wm/grad_norm"], torch_norm, rtol=1e-5, atol=0)
    for p, rp in zip(params, ref_params):
        torch.testing.assert_close(p.grad, rp.grad, rtol=1e-5, atol=1e-9)
    logged.clear()
    module.configure_gradient_clipping(None, gradient_clip_val=None, gradient_clip_algorithm="norm")  # no limit
    torch.testing.assert_close(logged["wm/grad_norm"], torch.linalg.vector_norm(torch.stack(
        [rp.grad.norm() for rp in ref_params])), rtol=1e-5, atol=0)                              # only logged
    module.model.zero_grad(set_to_none=True)


def test_adapter_saves_and_reloads_to_identical_logits(trained, tmp_path):
    module, _, dm = trained
    adapter = module.save_weights(tmp_path / "adapter")
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    reloaded, _ = load_adapter(module.cfg.model, adapter)
    ids = torch.tensor([dm.val[0].input_ids[:160]])
    module.model.eval()
    with torch.no_grad():
        want, got = module.model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_lr_schedule_warmup_then_decay_to_floor():
    from dreamgym.experience.module import lr_factor

    assert [lr_factor(s, 3, 10, "cosine", 0.1) for s in range(3)] == [0.25, 0.5, 0.75]
    assert lr_factor(3, 3, 10, "cosine", 0.1) == 1.0
    assert lr_factor(10, 3, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 3, 10, "linear", 0.0) == 0.0 and lr_factor(5, 0, 10, "constant", 0.1) == 1.0


def test_answer_token_stats_nearest_rank():
    from dreamgym.experience.sft_data import answer_token_stats

    assert answer_token_stats([]) == {"answer_tokens_p50": 0, "answer_tokens_p90": 0, "answer_tokens_max": 0}
    assert answer_token_stats([5]) == {"answer_tokens_p50": 5, "answer_tokens_p90": 5, "answer_tokens_max": 5}
    xs = list(range(100, 0, -1))                          # 1..100 in any order
    assert answer_token_stats(xs) == {"answer_tokens_p50": 50, "answer_tokens_p90": 90, "answer_tokens_max": 100}
    assert answer_token_stats([10, 20, 30, 40]) == {"answer_tokens_p50": 20, "answer_tokens_p90": 40,
                                                    "answer_tokens_max": 40}


def test_failed_terminal_repeats_oversample_failed_outcomes_apart(cfg, records, tokenizer):
    from dataclasses import replace

    records = [dict(r) for r in records]
    terminal = [r for r in records if r["done"]]
    for r in terminal[::2]:  # every other outcome becomes a failed one (reward below 1)
        r["reward"] = 0.25
    plain = SFTDataModule(records, tokenizer, cfg.prompt, cfg.sft, seed=0)
    plain.setup()
    sft = replace(cfg.sft, terminal_repeats=2, failed_terminal_repeats=5)
    heavy = SFTDataModule(records, tokenizer, cfg.prompt, sft, seed=0)
    heavy.setup()
    train = [r for r in terminal if str(r["trajectory_id"]) not in plain.val_trajectories]
    failed = sum(float(r["reward"]) < 1.0 for r in train)
    assert 0 < failed < len(train) and heavy.failed_terminal_train == failed
    assert len(heavy.train) == len(plain.train) + (len(train) - failed) * 1 + failed * 4
    s = heavy.summary()
    assert (s["failed_terminal_train_transitions"], s["failed_terminal_repeats"]) == (failed, 5)
    with pytest.raises(ConfigError, match="sft.failed_terminal_repeats"):
        replace(cfg.sft, failed_terminal_repeats=0)
