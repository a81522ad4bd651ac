"""The experience model's SFT data (paper Eq. 5): records -> token ids + loss mask -> length-bucketed batches.

Input: the annotated SFT set of `dreamgym annotate` (JSON lines, one record per real transition: the
transition fields, `split`, `history`, `demos`, `reasoning`), or, as the documented no-annotation
fallback, a raw trajectory file (schema 1, told apart by its `"schema"` key): records are then built
from `Trajectory.transitions()` with the episode's earlier turns as history, no demos and no reasoning.
Records of dev/test goals are refused (split hygiene, docs/contracts).

One example = the chat `build_messages(...)` rendered with the tokenizer's template and generation
prompt, then the ids of `format_target(...)` and the template's end-of-turn token. Prompt tokens never
get a label. Target tokens are split into parts by `target_spans` and the fast tokenizer's offsets:
1 reasoning (`<think>...</think>` and its newline), 2 next state (`<state>...</state>` and newline),
3 outcome (`<reward>..</reward>`, `<done>..</done>`, end-of-turn); the tags are in the loss, since the
model must learn to write them. `loss_on_reasoning` / `loss_on_reward` drop parts 1 / 3 from the labels.
Examples longer than `sft.max_seq_len` are dropped and counted, never truncated.

Batching: the train/val split is by trajectory id (seeded), never by transition. Training batches are
length-bucketed (shuffle, cut into megabatches of `bucket_megabatch` batches, sort each by length,
shuffle the batches; seeded per epoch) to cut padding; batches are right-padded. The train loader is
stateful for Lightning checkpoints (data epoch, batches done), so a resumed run sees the same batch
sequence as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from dreamgym.config import ExperiencePromptConfig, SFTSettings
from dreamgym.errors import DreamGymError
from dreamgym.experience.prompts import build_messages, format_target, target_spans, target_state
from dreamgym.models.distributed import shard_batches
from dreamgym.models.loading import chat_prompt_ids
from dreamgym.types import Transition, TrajectoryFileError, read_trajectories

__all__ = [
    "PART_NONE", "PART_REASONING", "PART_STATE", "PART_OUTCOME",
    "SFTExample", "answer_token_stats", "load_records", "trajectory_records", "tokenize_record", "end_of_turn_ids",
    "split_by_trajectory", "bucket_batches", "padding_tokens", "BucketBatchSampler", "ResumableLoader",
    "batches_done", "collate",
    "SFTDataModule",
]

PART_NONE, PART_REASONING, PART_STATE, PART_OUTCOME = 0, 1, 2, 3
"""per-token part ids: prompt/padding, reasoning block, next-state block, reward/done block + end-of-turn"""

_REQUIRED = ("trajectory_id", "step", "instruction", "state", "action", "next_state", "reward", "done", "split")


def answer_token_stats(lengths: list[int]) -> dict[str, int]:
    """answer_tokens_p50/p90/max: target lengths in tokens (end-of-turn included), nearest-rank percentiles;
    the synthetic env's `max_new_tokens` should cover the p90 (`synthetic_env.answer_budget_warning`)."""
    xs = sorted(lengths)
    if not xs:
        return {"answer_tokens_p50": 0, "answer_tokens_p90": 0, "answer_tokens_max": 0}
    rank = lambda q: xs[max(0, math.ceil(q * len(xs)) - 1)]  # noqa: E731
    return {"answer_tokens_p50": rank(0.5), "answer_tokens_p90": rank(0.9), "answer_tokens_max": xs[-1]}


@dataclass
class SFTExample:
    """One tokenized transition. `labels[i] = input_ids[i]` where the loss applies, else -100;
    `parts[i]` says which part of the target token i belongs to (PART_*; kept even where the config
    turns that part's loss off). input_ids[:prompt_len] is the generation prompt."""

    input_ids: list[int]
    labels: list[int]
    parts: list[int]
    prompt_len: int
    trajectory_id: str
    target: str
    source: str = "real"


def load_records(paths: Sequence[str | Path]) -> list[dict]:
    """All SFT records of annotated files and/or raw trajectory files, in file order. Raises
    DreamGymError naming file and line for a missing file, a bad line or a dev/test record."""
    records: list[dict] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DreamGymError(f"--data {path}: file not found")
        first = _first_record(path)
        if first is None:
            raise DreamGymError(f"--data {path}: file holds no records")
        if "schema" in first:  # a trajectory file: the no-annotation fallback
            try:
                for traj in read_trajectories(path):
                    if traj.task.split != "train":
                        raise DreamGymError(f"--data {path}: trajectory {traj.id} is from the {traj.task.split!r} "
                                            "split; SFT data must come from train goals only (split hygiene)")
                    records.extend(trajectory_records(traj))
            except TrajectoryFileError as e:
                raise DreamGymError(str(e)) from None
            continue
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    records.append(_check_record(line, path, lineno))
    return records


def trajectory_records(traj: Any) -> list[dict]:
    """SFT records of one raw trajectory: each transition with the episode's earlier (state, action)
    turns as history, no demos, reasoning None."""
    out, history = [], []
    for tr in traj.transitions():
        out.append({**tr.to_dict(), "split": traj.task.split, "history": [list(h) for h in history],
                    "demos": [], "reasoning": None})
        history.append((tr.state, tr.action))
    return out


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Ids the chat template writes after an assistant message's content (e.g. `<|im_end|>`; trailing
    whitespace dropped); the tokenizer's eos when the template writes nothing recognisable."""
    marker = "\x00dreamgym-end-probe\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "u"}, {"role": "assistant", "content": marker}],
                                         tokenize=False)
    suffix = text.split(marker, 1)[1].strip() if isinstance(text, str) and marker in text else ""
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    return list(ids) or [int(tokenizer.eos_token_id)]


def tokenize_record(rec: dict, tokenizer: Any, prompt: ExperiencePromptConfig, sft: SFTSettings,
                    end_ids: list[int] | None = None) -> SFTExample | None:
    """The example of one record, or None when it is longer than sft.max_seq_len. Reasoning is left
    out of the target when prompt.reasoning is false (the no-reasoning ablation) or the record has none."""
    demos = [d if isinstance(d, Transition) else Transition.from_dict(d) for d in rec.get("demos") or []]
    history = [(str(s), str(a)) for s, a in rec.get("history") or []]
    messages = build_messages(rec["instruction"], history, rec["state"], rec["action"], demos, prompt)
    prompt_ids = chat_prompt_ids(tokenizer, messages, add_generation_prompt=True)
    reasoning = rec.get("reasoning") if prompt.reasoning else None
    target = format_target(target_state(rec["next_state"], prompt), float(rec["reward"]), bool(rec["done"]), reasoning)
    end_ids = end_of_turn_ids(tokenizer) if end_ids is None else end_ids
    enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    target_ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    if len(prompt_ids) + len(target_ids) + len(end_ids) > sft.max_seq_len:
        return None
    spans = target_spans(target)
    state_start, outcome_start = spans["state_block"][0], spans["outcome"][0]
    target_parts = [PART_REASONING if start < state_start else PART_STATE if start < outcome_start else PART_OUTCOME
                    for start, _ in offsets]
    parts = [PART_NONE] * len(prompt_ids) + target_parts + [PART_OUTCOME] * len(end_ids)
    trained = {PART_STATE} | ({PART_REASONING} if sft.loss_on_reasoning else set()) | (
        {PART_OUTCOME} if sft.loss_on_reward else set())
    input_ids = prompt_ids + target_ids + list(end_ids)
    labels = [i if p in trained else -100 for i, p in zip(input_ids, parts)]
    return SFTExample(input_ids=input_ids, labels=labels, parts=parts, prompt_len=len(prompt_ids),
                      trajectory_id=str(rec["trajectory_id"]), target=target, source=str(rec.get("source", "real")))


def split_by_trajectory(trajectory_ids: Sequence[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train ids, val ids): distinct trajectory ids shuffled with `seed`; round(val_fraction * n) go to
    val (at least one when val_fraction > 0 and there are >= 2 trajectories, never all of them)."""
    ids = sorted(set(trajectory_ids))
    random.Random(seed).shuffle(ids)
    n_val = round(val_fraction * len(ids))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    else:
        n_val = 0
    return set(ids[n_val:]), set(ids[:n_val])


def bucket_batches(lengths: Sequence[int], batch_size: int, megabatch: int, seed: int = 0, epoch: int = 0,
                   shuffle: bool = True) -> list[list[int]]:
    """Batches of example indices. shuffle: a seeded (seed, epoch) permutation cut into megabatches of
    `megabatch * batch_size` examples, each sorted by length (longest first) and cut into batches, whose
    order is then shuffled; megabatch=1 is plain random batching. shuffle=False: no permutation, no
    batch shuffle (with megabatch >= len/batch_size: every example sorted by length, for validation)."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(idx)
    size = batch_size * max(1, megabatch)
    batches: list[list[int]] = []
    for start in range(0, len(idx), size):
        chunk = idx[start:start + size]
        if megabatch > 1:
            chunk.sort(key=lambda i: -lengths[i])
        batches.extend(chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size))
    if shuffle and megabatch > 1:
        rng.shuffle(batches)
    return batches


def padding_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> int:
    """Pad tokens the batches need when each is padded to its longest example."""
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches if b)


class BucketBatchSampler(Sampler[list[int]]):
    """`bucket_batches` as a DataLoader batch sampler, one epoch per `__iter__`, seeded by (seed, epoch).
    The epoch is `epoch_fn()` (the trainer's) when given, else what `set_epoch` set; iterating twice in
    one epoch gives the same order. `resume` continues a data epoch after the batches already trained,
    whatever the trainer's epoch counter says now (Lightning counts an epoch cut by max_steps as done)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, megabatch: int, seed: int, shuffle: bool = True,
                 epoch_fn: Callable[[], int] | None = None, rank: int = 0, world_size: int = 1):
        self.lengths, self.batch_size, self.megabatch = list(lengths), batch_size, megabatch
        self.seed, self.shuffle, self.epoch_fn = seed, shuffle, epoch_fn
        self.rank, self.world_size = rank, world_size
        """multi-process training: this process takes every world_size-th batch from `rank` (shard_batches)"""
        self.epoch, self.offset, self.skip_epoch, self.skip = 0, 0, -1, 0
        self.iterating_epoch = 0
        """the data epoch of the latest `__iter__` (what a checkpoint records)"""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Next iterations continue data epoch `epoch` after its first `batches_done` batches."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.offset = self._counter() - epoch
        self.skip_epoch, self.skip = epoch, batches_done

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.iterating_epoch = self._counter() - self.offset
        batches = bucket_batches(self.lengths, self.batch_size, self.megabatch, self.seed, epoch, self.shuffle)
        batches = shard_batches(batches, self.rank, self.world_size)
        return iter(batches[self.skip:] if epoch == self.skip_epoch else batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size // self.world_size

    def _counter(self) -> int:
        return self.epoch_fn() if self.epoch_fn is not None else self.epoch


def collate(examples: list[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) tensors: input_ids, attention_mask, labels (-100 on padding), parts (0 on padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    parts = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
        parts[row, :n] = torch.tensor(e.parts)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "parts": parts}


class SFTDataModule(L.LightningDataModule):
    """Records -> tokenized train/val examples (split by trajectory) -> bucketed right-padded batches."""

    def __init__(self, records: list[dict], tokenizer: Any, prompt: ExperiencePromptConfig, sft: SFTSettings,
                 seed: int = 0):
        super().__init__()
        self.records, self.tokenizer, self.prompt, self.sft, self.seed = records, tokenizer, prompt, sft, seed
        self.train: list[SFTExample] | None = None
        self.val: list[SFTExample] = []
        self.dropped_too_long = 0
        self.terminal_train = 0
        """distinct terminal (done) transitions in the train split (before terminal_repeats)"""
        self.failed_terminal_train = 0
        """of those, the ones with reward below 1 (repeated failed_terminal_repeats times)"""
        self.train_trajectories: set[str] = set()
        self.val_trajectories: set[str] = set()

    def setup(self, stage: str | None = None) -> None:
        """Tokenize and split once (idempotent: validate and fit share the result)."""
        if self.train is not None:
            return
        if not self.records:
            raise DreamGymError("--data: no SFT records to train on")
        self.train_trajectories, self.val_trajectories = split_by_trajectory(
            [str(r["trajectory_id"]) for r in self.records], self.sft.val_fraction, self.seed)
        end_ids = end_of_turn_ids(self.tokenizer)
        self.train, self.val = [], []
        self.terminal_train = self.failed_terminal_train = 0
        for rec in self.records:
            ex = tokenize_record(rec, self.tokenizer, self.prompt, self.sft, end_ids)
            if ex is None:
                self.dropped_too_long += 1
            else:
                held_out = ex.trajectory_id in self.val_trajectories
                (self.val if held_out else self.train).append(ex)
                if rec.get("done") and not held_out:
                    self.terminal_train += 1
                    self.failed_terminal_train += float(rec["reward"]) < 1.0
                    self.train.extend([ex] * (self._repeats(rec) - 1))  # oversampled outcome steps
        if not self.train:
            raise DreamGymError(f"key 'sft.max_seq_len': all {len(self.records)} training examples are longer than "
                                f"{self.sft.max_seq_len} tokens; raise it or lower the prompt's char limits")

    def _repeats(self, rec: dict) -> int:
        failed = self.sft.failed_terminal_repeats
        return failed if failed is not None and float(rec["reward"]) < 1.0 else self.sft.terminal_repeats

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        epoch_fn = (lambda: trainer.current_epoch) if trainer is not None else None
        # each process trains on its share of the batches (validation: every process scores the same ones)
        sampler = BucketBatchSampler([len(e.input_ids) for e in self.train], self.sft.batch_size,
                                     self.sft.bucket_megabatch, self.seed, shuffle=True, epoch_fn=epoch_fn,
                                     rank=trainer.global_rank if trainer else 0,
                                     world_size=trainer.world_size if trainer else 1)
        return ResumableLoader(self.train, batch_sampler=sampler, collate_fn=self._collate, num_workers=0,
                               batches_done=lambda: batches_done(self.trainer))

    def val_dataloader(self) -> DataLoader:
        # the same bucketed, seeded order at every check (epoch pinned at 0): `limit_val_batches` then
        # always scores the same representative subset, not just the longest examples
        sampler = BucketBatchSampler([len(e.input_ids) for e in self.val], self.sft.batch_size,
                                     self.sft.bucket_megabatch, seed=self.seed, shuffle=True)
        return DataLoader(self.val, batch_sampler=sampler, collate_fn=self._collate, num_workers=0)

    def sample_examples(self, k: int) -> list[SFTExample]:
        """The first k validation examples (the same ones at every check), train ones if there is no val set."""
        return (self.val or self.train or [])[:k]

    def summary(self) -> dict:
        """Counts for summary.json: examples, trajectories, dropped, real transitions, planned padding."""
        train, val = self.train or [], self.val
        distinct = list({id(e): e for e in train + val}.values())  # terminal_repeats repeats the same objects
        lengths = [len(e.input_ids) for e in train]
        tokens = sum(lengths)
        planned = bucket_batches(lengths, self.sft.batch_size, self.sft.bucket_megabatch, self.seed)
        random_batches = bucket_batches(lengths, self.sft.batch_size, 1, self.seed)

        def share(pad: int) -> float:
            return pad / (pad + tokens) if tokens else 0.0

        return {"train_examples": len(train), "val_examples": len(val), "dropped_too_long": self.dropped_too_long,
                "train_trajectories": len(self.train_trajectories), "val_trajectories": len(self.val_trajectories),
                "terminal_train_transitions": self.terminal_train, "terminal_repeats": self.sft.terminal_repeats,
                "failed_terminal_train_transitions": self.failed_terminal_train,
                "failed_terminal_repeats": self.sft.failed_terminal_repeats,
                "real_transitions": sum(e.source == "real" for e in distinct),
                "examples_with_reasoning": sum(e.target.startswith("<think>") for e in distinct),
                "planned_padding_share": round(share(padding_tokens(planned, lengths)), 4),
                "random_batching_padding_share": round(share(padding_tokens(random_batches, lengths)), 4),
                "mean_example_tokens": round(tokens / len(train), 1) if train else 0.0,
                **answer_token_stats([len(e.input_ids) - e.prompt_len for e in distinct])}

    def _collate(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        return collate(examples, int(self.tokenizer.pad_token_id))


class ResumableLoader(DataLoader):
    """The train loader, stateful for Lightning: its (epoch, batches trained in it) ride in checkpoints,
    so a mid-epoch resume continues that epoch's batch order instead of replaying its start."""

    def __init__(self, *args: Any, batches_done: Callable[[], int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.iterating_epoch, "batches_done": self._batches_done()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["batches_done"]))


def batches_done(trainer: Any) -> int:
    """Training batches of the current epoch `trainer` has processed (0 outside a fit)."""
    if trainer is None:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


# -- internals ---------------------------------------------------------------------------------

def _first_record(path: Path) -> dict | None:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DreamGymError(f"--data {path}:{lineno}: not JSON: {e}") from None
                if not isinstance(rec, dict):
                    raise DreamGymError(f"--data {path}:{lineno}: expected a JSON object per line")
                return rec
    return None


def _check_record(line: str, path: Path, lineno: int) -> dict:
    """One annotated record, validated: required keys present, split 'train'."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DreamGymError(f"--data {path}:{lineno}: not JSON: {e}") from None
    if not isinstance(rec, dict):
        raise DreamGymError(f"--data {path}:{lineno}: expected a JSON object per line")
    missing = [k for k in _REQUIRED if k not in rec]
    if missing:
        raise DreamGymError(f"--data {path}:{lineno}: SFT record lacks keys {missing} (expected the records of "
                            "`dreamgym annotate` or a trajectory file)")
    if rec["split"] != "train":
        raise DreamGymError(f"--data {path}:{lineno}: record of trajectory {rec['trajectory_id']} is from the "
                            f"{rec['split']!r} split; SFT data must come from train goals only (split hygiene)")
    return rec
