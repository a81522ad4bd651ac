"""Bounded structured decoding of experience-model answers: a runaway block is closed at its budget and the
rest of the format is generated, instead of the whole answer becoming a `truncated` parse failure.

Why: a small experience model decoded greedily often loops inside `<state>` (WebShop item pages: "[SEP] 11 fl
oz [SEP] 12 fl oz [SEP] ...") until `max_new_tokens` runs out. Measured on the CPU study's model (90 LoRA
steps, greedy, 240 new tokens): 8 of 16 answers ran on that way, so every one of those synthetic steps was a
no-op with reward 0 and the GRPO groups had no variance to learn from.

The model was trained on next states clipped to `next_state_chars` = N characters the way
`prompts.target_state` clips them: at most N characters, a longer page kept as head (2/3) + " ... " + tail. So
a state block that has already passed N characters is certainly running away, and the format says what comes
next. `plan_edit` (pure) looks at the answer so far and says where to cut it and what to append:

  think_closed    a <think> block still open when the token budget ran out (no state yet):
                  keep it, append "</think>\\n<state>", generate the state
  state_clipped   the state passed N characters without " ...": cut it at the head length, append " ...",
                  generate the tail (what the model learned to write after the marker), reward and done with a
                  token budget sized to the tail's characters at the answer's own characters-per-token rate
  state_closed    the state passed N characters after its " ..." (cut at N), or the token budget ran out
                  inside it: append "</state>\\n<reward>", generate reward and done (`outcome_tokens`)
  outcome_opened  the state block is closed but no <reward> follows and the token budget ran out:
                  cut after "</state>", append "\\n<reward>", generate reward and done

An answer the model ended itself (end token) is never edited: a malformed finished answer is a real parse
failure. `complete_answers` applies the edits in rounds (at most `max_rounds`), each round one batched
generation of the edited rows (up to the largest budget among them: a row whose answer is complete stops) whose prompt is prompt + kept ids + appended ids: the sampled ids before the cut
are kept as they are, and the KV engine reuses their cached prefix, so a round prefills only the appended
tokens. The predictor counts the edits by kind (`wm/forced/<kind>`: share of answers that needed it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Edit", "FORCED_KINDS", "ELLIPSIS", "MARKER", "head_chars", "plan_edit", "cut_index", "complete_answers"]

ELLIPSIS = " ... "
"""what `prompts.target_state` puts between the head and the tail of a clipped state"""
MARKER = ELLIPSIS.rstrip()
"""what `state_clipped` appends (" ..."): the tail's first word brings its own leading space, as in training"""
FORCED_KINDS: tuple[str, ...] = ("think_closed", "state_clipped", "state_closed", "outcome_opened")

_OPEN_THINK = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_CLOSE_THINK = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_OPEN_STATE = re.compile(r"<\s*state\s*>", re.IGNORECASE)
_CLOSE_STATE = re.compile(r"<\s*/\s*state\s*>", re.IGNORECASE)
_OPEN_REWARD = re.compile(r"<\s*reward\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Edit:
    """Cut the answer text at character `cut`, append `append`, then generate at most `tokens` more."""

    kind: str
    cut: int
    append: str
    tokens: int


def head_chars(n: int) -> int:
    """Length of the head `prompts.target_state` keeps of a state clipped to n characters."""
    return (n - len(ELLIPSIS)) * 2 // 3


def plan_edit(text: str, stopped: bool, state_chars: int, new_tokens: int, outcome_tokens: int,
              chars_per_token: float = 0.0) -> Edit | None:
    """The edit the answer-so-far `text` needs (None: leave it). `stopped`: the model wrote its end token;
    `state_chars`: the trained next-state budget N (0 = unbounded: only the token budget closes a state);
    `new_tokens`: what a round that generates a state may use; `chars_per_token` (> 0: the answer's own rate
    so far) sizes a tail round to its remaining characters plus the outcome: ceil(1.25 * chars / rate) + 4 +
    outcome_tokens tokens, at most new_tokens. Rules: module docstring."""
    if stopped:
        return None
    state_open = _OPEN_STATE.search(text)
    if state_open is None:
        think_open = _OPEN_THINK.search(text)
        if think_open is None or _CLOSE_THINK.search(text, think_open.end()):
            return None
        return Edit("think_closed", len(text.rstrip()), "</think>\n<state>", new_tokens)
    start = state_open.end()
    state_close = _CLOSE_STATE.search(text, start)
    if state_close is None:
        content = text[start:]
        if state_chars and len(content) > state_chars:
            if MARKER not in content[:state_chars]:
                head = content[:head_chars(state_chars)].rstrip()
                tail = state_chars - len(head) - len(ELLIPSIS)
                tokens = min(new_tokens, math.ceil(1.25 * tail / chars_per_token) + 4 + outcome_tokens) \
                    if chars_per_token > 0 else new_tokens
                return Edit("state_clipped", start + len(head), MARKER, tokens)
            return Edit("state_closed", start + len(content[:state_chars].rstrip()), "</state>\n<reward>",
                        outcome_tokens)
        return Edit("state_closed", start + len(content.rstrip()), "</state>\n<reward>", outcome_tokens)
    if _OPEN_REWARD.search(text, state_close.end()):
        return None
    return Edit("outcome_opened", state_close.end(), "\n<reward>", outcome_tokens)


def cut_index(tokenizer, ids: list[int], chars: int) -> int:
    """The largest j such that the text of ids[:j] has at most `chars` characters (binary search; the
    decoded length grows with j)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) <= chars:
            lo = mid
        else:
            hi = mid - 1
    return lo


def complete_answers(generate, tokenizer, prompts: list[list[int]], outs: list[list[int]], first_budget: int,
                     state_chars: int, outcome_tokens: int = 24,
                     max_rounds: int = 4) -> tuple[list[list[int]], list[tuple[str, ...]], int]:
    """Apply `plan_edit` rounds to the answers `outs` (new ids per prompt, end token excluded; an answer is
    unfinished when it used all of `first_budget`). `generate(prompts, max_new_tokens)` returns new ids per
    prompt the same way. Returns (the completed answers' ids, the edit kinds each answer got in order, tokens
    generated by the rounds)."""
    outs = [list(o) for o in outs]
    stopped = [len(o) < first_budget for o in outs]
    kinds: list[list[str]] = [[] for _ in outs]
    generated = 0
    for _ in range(max_rounds):
        rows, new_prompts, budgets = [], [], []
        for i, ids in enumerate(outs):
            if stopped[i]:  # finished by the model: never edited (plan_edit's first rule), so not decoded either
                continue
            text = tokenizer.decode(ids, skip_special_tokens=True)
            edit = plan_edit(text, stopped[i], state_chars, first_budget, outcome_tokens,
                             chars_per_token=len(text) / len(ids) if ids else 0.0)
            if edit is None:
                continue
            outs[i] = ids[:cut_index(tokenizer, ids, edit.cut)] + tokenizer.encode(edit.append, add_special_tokens=False)
            kinds[i].append(edit.kind)
            rows.append(i)
            new_prompts.append(prompts[i] + outs[i])
            budgets.append(edit.tokens)
        if not rows:
            break
        budget = max(budgets)  # one batched call per round: a row that is done early stops early
        for i, extra in zip(rows, generate(new_prompts, budget)):
            outs[i] = outs[i] + list(extra)
            stopped[i] = len(extra) < budget
            generated += len(extra)
    return outs, [tuple(k) for k in kinds], generated
