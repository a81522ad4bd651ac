"""Offline policy data: trajectory JSON lines -> behaviour-cloning examples (SFT) and preference pairs (DPO),
tokenized in exactly the layout the rollout loop builds (`rl/rollout.py` + `rl/context.py`), so a policy
trained here sees at RL time what it was trained on:

    prompt_ids(instruction, obs_0, actions_0) | a_0 ids + end | observation_ids(obs_1, actions_1) | a_1 ids + end | ...

Action turns (the action text's ids followed by the assistant end token, `ChatContext.choice_ids`) have
mask 1, everything else 0; the loss applies to mask-1 tokens only. An episode is cut before the turn that
would exceed `max_context_tokens` (the rollout loop cuts there too). With `action_space='choice'` an action
that fills a free-text slot (WebShop `search[...]`) is trained as choice mode offers it: the slot filled
with the task instruction (`choice_action_text`).

Split hygiene (docs/contracts): only train-split, real trajectories are used; dev/test and synthetic ones
are skipped and counted. With `only_success`, failed trajectories are not demonstrations (DPO still uses
them as sources of rejected actions).

Preference pairs (`preference_pairs`): at every step t of a demonstration, chosen = the demonstrated action;
rejected = (rejected_from='failed_then_random') an action a failed train trajectory of the same task took
at the same observation text, when one differs from chosen (a seeded choice among them), else a seeded
random choice among the other available actions (slots filled with
the instruction). When chosen fills a slot, no other filling of that slot is a candidate, failed or random:
another search query may be as good. A step with no candidate gives no pair (counted `no_alternative`). Pair context = the
demonstration's history up to t, in the layout above.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from dreamgym.rl.context import ChatContext, choice_action_text
from dreamgym.types import Trajectory

__all__ = ["PolicyExample", "PreferencePair", "TokenizedPair", "select_trajectories", "action_as_offered",
           "episode_turns", "episode_example", "preference_pairs", "tokenize_pairs", "collate_examples",
           "collate_pairs"]


@dataclass
class PolicyExample:
    """One demonstration episode as the policy saw it: ids and mask (1 = action token, trained on)."""

    ids: list[int]
    mask: list[int]
    trajectory_id: str
    task_id: str


@dataclass
class PreferencePair:
    """At step t of a demonstration: prefer `chosen` over `rejected` (texts as the policy writes them)."""

    trajectory_id: str
    task_id: str
    t: int
    chosen: str
    rejected: str
    source: str
    """where the rejected action comes from: 'failed' (a failed trajectory's action here) or 'random'"""


@dataclass
class TokenizedPair:
    prefix: list[int]
    chosen: list[int]
    rejected: list[int]
    pair: PreferencePair
    ref_chosen: float = 0.0
    """sum of the reference policy's log-probs of the chosen action tokens (filled before training)"""
    ref_rejected: float = 0.0


def select_trajectories(trajectories: Iterable[Trajectory], only_success: bool
                        ) -> tuple[list[Trajectory], list[Trajectory], dict[str, int]]:
    """(demonstrations, failed train trajectories, skipped counts by reason: dev, test, synthetic, failed)."""
    demos, failed, skipped = [], [], defaultdict(int)
    for traj in trajectories:
        if traj.task.split != "train":
            skipped[traj.task.split] += 1
        elif traj.source != "real":
            skipped["synthetic"] += 1
        elif traj.success or not only_success:
            demos.append(traj)
        else:
            failed.append(traj)
            skipped["failed"] += 1
    return demos, failed, dict(skipped)


def action_as_offered(action: str, available: list[str], instruction: str, action_space: str) -> str:
    """The action as the policy would produce it: as is in free mode; in choice mode an action filling a
    free-text slot `name[...]` of the available actions becomes that slot filled with the instruction."""
    if action_space != "choice" or action in available:
        return action
    for a in available:
        if a.endswith("[...]") and action.startswith(a[: -len("...]")]):
            return choice_action_text(a, instruction)
    return action


def episode_turns(ctx: ChatContext, traj: Trajectory, action_space: str, max_context_tokens: int
                  ) -> Iterator[tuple[int, list[int], list[int]]]:
    """(t, context ids before turn t's action, turn t's action ids + end token) for each turn that fits;
    the context grows by appending exactly like a rollout's token trace."""
    if not traj.steps:
        return
    s0 = traj.steps[0]
    context = ctx.prompt_ids(traj.task.instruction, s0.observation, s0.available_actions)
    for i, step in enumerate(traj.steps):
        action = action_as_offered(step.action, step.available_actions, traj.task.instruction, action_space)
        resp = ctx.choice_ids([action])[0]
        if len(context) + len(resp) > max_context_tokens:
            return
        yield step.t, list(context), resp
        if i + 1 == len(traj.steps):
            return
        nxt = traj.steps[i + 1]
        context = context + resp + ctx.observation_ids(nxt.observation, nxt.available_actions)


def episode_example(ctx: ChatContext, traj: Trajectory, action_space: str, max_context_tokens: int
                    ) -> PolicyExample | None:
    """The whole demonstration as one sequence (None when not even its first action fits)."""
    ids: list[int] = []
    mask: list[int] = []
    for _, context, resp in episode_turns(ctx, traj, action_space, max_context_tokens):
        glue = context[len(ids):]  # the previous action's ids are already in `ids`
        ids += glue + resp
        mask += [0] * len(glue) + [1] * len(resp)
    if not ids:
        return None
    return PolicyExample(ids, mask, traj.id, traj.task.id)


def preference_pairs(demos: list[Trajectory], failed: list[Trajectory], action_space: str,
                     rejected_from: str = "failed_then_random", seed: int = 0
                     ) -> tuple[list[PreferencePair], dict[str, int]]:
    """Text-level pairs (see the module docstring) and counts by rejected source (+ no_alternative)."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    if rejected_from == "failed_then_random":
        for traj in failed:
            for s in traj.steps:
                seen[(traj.task.id, s.observation)].add(
                    action_as_offered(s.action, s.available_actions, traj.task.instruction, action_space))
    pairs, counts = [], {"failed": 0, "random": 0, "no_alternative": 0}
    for traj in demos:
        instr = traj.task.instruction
        for s in traj.steps:
            chosen = action_as_offered(s.action, s.available_actions, instr, action_space)
            rng = random.Random(f"{seed}:{traj.id}:{s.t}")
            slots = [a[: -len("...]")] for a in s.available_actions if a.endswith("[...]")]
            same_slot = [x for x in slots if chosen.startswith(x)]  # other fillings of chosen's slot: no candidates
            ok = lambda a: a != chosen and not any(a.startswith(x) for x in same_slot)  # noqa: E731
            bad = sorted(a for a in seen.get((traj.task.id, s.observation), ()) if ok(a))
            if bad:
                pairs.append(PreferencePair(traj.id, traj.task.id, s.t, chosen, rng.choice(bad), "failed"))
                counts["failed"] += 1
                continue
            pool = [a for a in dict.fromkeys(choice_action_text(a, instr) for a in s.available_actions) if ok(a)]
            if not pool:
                counts["no_alternative"] += 1
                continue
            pairs.append(PreferencePair(traj.id, traj.task.id, s.t, chosen, rng.choice(pool), "random"))
            counts["random"] += 1
    return pairs, counts


def tokenize_pairs(ctx: ChatContext, demos: list[Trajectory], pairs: list[PreferencePair], action_space: str,
                   max_context_tokens: int) -> tuple[list[TokenizedPair], int]:
    """(tokenized pairs, how many were dropped because prefix + the longer answer exceed the context)."""
    by_traj = {t.id: t for t in demos}
    prefixes: dict[str, dict[int, list[int]]] = {}
    out, dropped = [], 0
    for p in pairs:
        if p.trajectory_id not in prefixes:
            traj = by_traj[p.trajectory_id]
            prefixes[p.trajectory_id] = {t: c for t, c, _ in episode_turns(ctx, traj, action_space, max_context_tokens)}
        prefix = prefixes[p.trajectory_id].get(p.t)
        chosen, rejected = ctx.choice_ids([p.chosen, p.rejected])
        if prefix is None or len(prefix) + max(len(chosen), len(rejected)) > max_context_tokens:
            dropped += 1
            continue
        out.append(TokenizedPair(prefix, chosen, rejected, p))
    return out, dropped


def collate_examples(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(ids, mask) rows -> right-padded input_ids, attention_mask, response_mask (B, T)."""
    width = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width))
    for i, (ids, mask) in enumerate(rows):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        resp[i, : len(ids)] = torch.tensor(mask, dtype=torch.float)
    return {"input_ids": ids_t, "attention_mask": attn, "response_mask": resp}


def collate_pairs(pairs: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """2N rows, chosen and rejected interleaved (row 2i chosen, 2i + 1 rejected), plus the reference sums."""
    rows = []
    for p in pairs:
        rows.append((p.prefix + p.chosen, [0] * len(p.prefix) + [1] * len(p.chosen)))
        rows.append((p.prefix + p.rejected, [0] * len(p.prefix) + [1] * len(p.rejected)))
    batch = collate_examples(rows, pad_id)
    batch["ref_chosen"] = torch.tensor([p.ref_chosen for p in pairs])
    batch["ref_rejected"] = torch.tensor([p.ref_rejected for p in pairs])
    return batch
