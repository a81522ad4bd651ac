"""The experience model's prompt and output format (paper Eq. 4) and its never-raising parser.

Input (`build_messages`): a system message stating the output format, then one user message with the
task instruction, the top-k retrieved real transitions, the last `history_turns` (state, action) turns
and the current state and action. Every text is whitespace-compacted (spaces collapsed per line, empty
lines dropped; WebShop's one-line ' [SEP] ' pages stay as they are) and clipped to its budget by
keeping the head and tail around a " ... " marker; actions are clipped to 200 characters.

Output (what M_exp writes, `format_target` builds the SFT target the same way):

    <think>why the action leads there</think>
    <state>the next state</state>
    <reward>0.0</reward>
    <done>false</done>

(without the think line in no-reasoning mode). Reward: up to 3 decimals, trailing zeros trimmed,
at least one decimal ("1.0", "0.75", "0.333"). `target_spans` gives the character spans of each
part for the Eq. 5 loss mask (reasoning + next state (+ reward/done)).

Parsing (`parse_transition`) never raises. Lenient: tag case and inner spaces (`< /STATE >`), text
before/after/between blocks, state/reward/done in any order, think anywhere (tags inside the think
block are ignored), a bare `...</think>` when the chat template already opened `<think>`, rewards
like "1" or "0.50", done as true/false/yes/no/1/0, a `<state>` left open but followed by `<reward>` (small
models forget `</state>`: the state ends where `<reward>` begins). When a block is repeated, the FIRST complete one
counts (small models loop after answering; this also makes a stop string at `</done>` change
nothing). Rewards within 1e-6 outside [0, 1] are float noise and clamped; anything further out is
`bad_reward` (never clipped silently). The next state is stripped and capped at `max_state_chars`.
Checks run block by block (state, reward, done, then reasoning); the first failure names the reason:
  missing_tags      no <state> block at all (and nothing was cut off)
  truncated         the output ends inside a block: a <state>, <reward> or <done> that is needed is
                    opened but never closed, or there is no state and an unclosed <think> runs to the
                    end (a repeated block cut off after a complete answer is ignored, not truncated)
  empty_state       the state block is empty or whitespace
  bad_reward        no <reward> block, or not a plain number, NaN/inf, or outside [0, 1] (+-1e-6)
  bad_done          no <done> block, or not true/false/yes/no/1/0 (any case)
  missing_reasoning reasoning required but the think block is absent, unclosed or empty
A failure gives the no-op step: previous state, reward 0.0, not done, reasoning = text[:500].

The curriculum task generator shares M_exp's weights: `build_task_messages` asks for harder/easier
variations of seed tasks, `parse_task_variations` turns its list back into instructions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from dreamgym.config import ExperiencePromptConfig
from dreamgym.experience.bounded_decoding import FORCED_KINDS
from dreamgym.types import Transition

__all__ = [
    "target_state",
    "PARSE_FAIL_REASONS",
    "REWARD_TOLERANCE",
    "ExperiencePromptConfig",
    "PromptConfig",
    "Prediction",
    "ParseStats",
    "build_messages",
    "system_prompt",
    "format_reward",
    "format_target",
    "target_spans",
    "parse_transition",
    "build_task_messages",
    "parse_task_variations",
]

PromptConfig = ExperiencePromptConfig
PARSE_FAIL_REASONS: tuple[str, ...] = (
    "missing_tags", "empty_state", "bad_reward", "bad_done", "missing_reasoning", "truncated")
REWARD_TOLERANCE = 1e-6
"""rewards in [-tol, 1 + tol] are accepted (and clamped to [0, 1]); anything further out is bad_reward"""

_FORMAT = "<state>the next state</state>\n<reward>0.0</reward>\n<done>false</done>"
_SYSTEM = ("You simulate the environment of a text-based agent task. Given the task, recent history, "
           "the current state and the agent's action, predict what the environment shows next. "
           "Real example transitions are shown for reference.\nAnswer in exactly this format:\n{fmt}\n"
           "reward is in [0, 1] and non-zero only when the episode ends (1.0 = task fully achieved); "
           "done is true or false. An invalid action gets reward 0.0.")


@dataclass
class Prediction:
    """One parsed experience-model output: the synthetic env's step. `parse_fallback` names the
    reason when the output was unusable and this is the no-op step (see PARSE_FAIL_REASONS)."""

    next_state: str
    reward: float
    done: bool
    reasoning: str | None = None
    parse_fallback: str | None = None
    forced: tuple[str, ...] = ()
    """edits bounded decoding made to the answer before parsing (`experience.bounded_decoding`), in order"""


@dataclass
class ParseStats:
    """Counts of parsed outputs, of fallbacks by reason and of bounded-decoding edits by kind (answers that
    needed one); feeds the `wm/parse_fail*` and `wm/forced*` metrics."""

    total: int = 0
    failed: Counter = field(default_factory=Counter)
    forced: Counter = field(default_factory=Counter)
    forced_any: int = 0

    def rate(self) -> float:
        """Share of outputs replaced by the fallback (0.0 when nothing was parsed)."""
        return sum(self.failed.values()) / self.total if self.total else 0.0

    def as_metrics(self, prefix: str = "wm/") -> dict[str, float]:
        """{prefix}parse_fail_rate plus {prefix}parse_fail/<reason> for every reason: the share of all
        outputs that failed for that reason (the reasons sum to the rate; 0.0 when nothing was parsed);
        {prefix}forced_rate (share of outputs bounded decoding edited) and {prefix}forced/<kind> per kind."""
        share = (lambda k: k / self.total) if self.total else (lambda k: 0.0)
        out = {f"{prefix}parse_fail_rate": self.rate()}
        for reason in PARSE_FAIL_REASONS:
            out[f"{prefix}parse_fail/{reason}"] = share(self.failed[reason])
        out[f"{prefix}forced_rate"] = share(self.forced_any)
        for kind in FORCED_KINDS:
            out[f"{prefix}forced/{kind}"] = share(self.forced[kind])
        return out

    def count_forced(self, kinds: tuple[str, ...]) -> None:
        """Count one output's bounded-decoding edits (each kind once)."""
        if kinds:
            self.forced_any += 1
            self.forced.update(set(kinds))

    def merge(self, other: "ParseStats") -> "ParseStats":
        """Add another worker's counts into this one (in place); returns self."""
        self.total += other.total
        self.failed.update(other.failed)
        self.forced.update(other.forced)
        self.forced_any += other.forced_any
        return self


def system_prompt(cfg: ExperiencePromptConfig | None = None) -> str:
    """The system message: cfg.system_prompt when set, else the built-in one for cfg.reasoning."""
    cfg = cfg or ExperiencePromptConfig()
    if cfg.system_prompt is not None:
        return cfg.system_prompt
    fmt = ("<think>short reasoning about the action's effect</think>\n" if cfg.reasoning else "") + _FORMAT
    return _SYSTEM.format(fmt=fmt)


def build_messages(instruction: str, history: list[tuple[str, str]], state: str, action: str,
                   demos: list[Transition], cfg: ExperiencePromptConfig | None = None) -> list[dict]:
    """Chat messages [system, user] asking M_exp for the step (state, action) -> next state, reward,
    done. `history` is every earlier (state, action) turn of the episode, oldest first (only the last
    cfg.history_turns are shown); `demos` are retrieved transitions, best first (the first cfg.demos_k
    are shown). Deterministic: same inputs, same text."""
    cfg = cfg or ExperiencePromptConfig()
    parts = [f"Task: {_compact(instruction)}"]
    shown_demos = demos[:cfg.demos_k]
    if shown_demos:
        lines = ["Examples:"]
        for i, d in enumerate(shown_demos, 1):
            lines += [f"{i}. State: {_clip(d.state, cfg.demo_state_chars)}",
                      f"Action: {_clip(d.action, _ACTION_CHARS)}",
                      f"Next state: {_clip(d.next_state, cfg.demo_state_chars)}",
                      f"Reward: {format_reward(d.reward)}, done: {'true' if d.done else 'false'}"]
        parts.append("\n".join(lines))
    shown_history = history[-cfg.history_turns:] if cfg.history_turns else []
    if shown_history:
        lines = ["History:"]
        for s, a in shown_history:
            lines += [f"State: {_clip(s, cfg.history_state_chars)}", f"Action: {_clip(a, _ACTION_CHARS)}"]
        parts.append("\n".join(lines))
    parts.append(f"Current state: {_clip(state, cfg.state_chars)}\nAction: {_clip(action, _ACTION_CHARS)}")
    return [{"role": "system", "content": system_prompt(cfg)}, {"role": "user", "content": "\n\n".join(parts)}]


def format_reward(reward: float) -> str:
    """Reward as written in prompts and targets: 3 decimals at most, trailing zeros trimmed, one kept."""
    text = f"{round(float(reward), 3) + 0.0:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def target_state(next_state: str, cfg: ExperiencePromptConfig) -> str:
    """The next state as the model learns to write it: whole, or compacted and clipped to
    `cfg.next_state_chars` (head 2/3 + " ... " + tail) when that is set."""
    return _clip(next_state, cfg.next_state_chars) if cfg.next_state_chars else next_state


def format_target(next_state: str, reward: float, done: bool, reasoning: str | None = None) -> str:
    """The SFT target (assistant message) for one real transition. States and reasoning are compacted
    like prompt texts and our tags are removed from them; the state is not clipped (clip before if
    needed). reasoning=None writes no think block. Raises ValueError for a reward outside [0, 1]:
    that is a data bug, not model output."""
    r = float(reward)
    if not -REWARD_TOLERANCE <= r <= 1 + REWARD_TOLERANCE:  # NaN fails too
        raise ValueError(f"reward {reward!r} outside [0, 1]")
    think = f"<think>{_compact(reasoning)}</think>\n" if reasoning is not None else ""
    return (f"{think}<state>{_compact(next_state)}</state>\n<reward>{format_reward(min(1.0, max(0.0, r)))}"
            f"</reward>\n<done>{'true' if done else 'false'}</done>")


def target_spans(target: str) -> dict[str, tuple[int, int]]:
    """Half-open character spans [start, end) in a `format_target` string: contents "reasoning" (only
    with a think block), "state", "reward", "done"; with their tags "reasoning_block" and "state_block";
    "outcome" = from "<reward>" to the end (reward and done with tags). Raises ValueError otherwise."""
    m = _TARGET.fullmatch(target)
    if m is None:
        raise ValueError(f"not a format_target string: {target[:80]!r}")
    spans = {k: m.span(k) for k in ("state", "reward", "done")}
    if m["reasoning"] is not None:
        spans["reasoning"] = m.span("reasoning")
        spans["reasoning_block"] = (m.start("reasoning") - len("<think>"), m.end("reasoning") + len("</think>"))
    spans["state_block"] = (m.start("state") - len("<state>"), m.end("state") + len("</state>"))
    spans["outcome"] = (m.start("reward") - len("<reward>"), len(target))
    return spans


def parse_transition(text: str, prev_state: str, stats: ParseStats, require_reasoning: bool = True,
                     max_state_chars: int = 4000) -> Prediction:
    """Model text -> Prediction. Never raises: unusable text -> the no-op step (prev_state, reward 0.0,
    not done, reasoning = text[:500]) with `parse_fallback` set to the reason, counted in `stats`.
    Rules and reasons: module docstring."""
    text = text if isinstance(text, str) else str(text)
    stats.total += 1
    reasoning, think_unclosed, answer = _split_think(text)
    state, state_open = _block(answer, "state")
    if state is None and state_open:  # a state left open but followed by <reward>: it ends there
        opened = list(_OPEN["state"].finditer(answer))[-1]
        reward_open = _OPEN["reward"].search(answer, opened.end())
        if reward_open is not None:
            state, state_open = answer[opened.end():reward_open.start()], False
    reward_text, reward_open = _block(answer, "reward")
    done_text, done_open = _block(answer, "done")
    reward = _as_unit_float(reward_text)
    done = _as_bool(done_text)
    reason = None
    if state is None:
        reason = "truncated" if state_open or think_unclosed else "missing_tags"
    elif not state.strip():
        reason = "empty_state"
    elif reward is None:
        reason = "truncated" if reward_text is None and reward_open else "bad_reward"
    elif done is None:
        reason = "truncated" if done_text is None and done_open else "bad_done"
    elif require_reasoning and not reasoning:
        reason = "missing_reasoning"
    if reason is not None:
        stats.failed[reason] += 1
        return Prediction(prev_state, 0.0, False, reasoning=text[:500], parse_fallback=reason)
    return Prediction(state.strip()[:max_state_chars], reward, done, reasoning=reasoning or None)


def build_task_messages(seed_instructions: list[str], n: int, harder: bool | None,
                        env_hint: str = "") -> list[dict]:
    """Chat messages [system, user] asking the task generator (M_exp's weights) for `n` new tasks
    that vary the seed tasks: harder=True (more/stricter requirements), False (fewer/looser), None
    (similar difficulty). `env_hint` says in a few words what the environment is."""
    hint = _compact(env_hint)
    system = (f"You write tasks for an agent in this environment: {hint}." if hint
              else "You write tasks for an agent in a text-based environment.")
    kind = {True: "harder (more or stricter requirements)", False: "easier (fewer or looser requirements)",
            None: "similar"}[harder]
    seeds = "\n".join(f"{i}. {_compact(s)}" for i, s in enumerate(seed_instructions, 1))
    user = (f"Example tasks:\n{seeds}\n\nWrite {n} new tasks that are {kind} variations of these. Keep each "
            "realistic, feasible and in the same style. Reply with a numbered list, one task per line, "
            "nothing else.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_task_variations(text: str, min_chars: int = 10, max_chars: int = 300,
                          exclude: Iterable[str] = ()) -> list[str]:
    """Generated text -> new task instructions, in order. Never raises. Drops a reasoning block; when
    any line is numbered or bulleted only those lines count (so preambles like "Here are 3 tasks" go),
    else every line does. Strips list markers, "Task:" labels and quotes; compacts whitespace; drops
    lines shorter than min_chars, longer than max_chars or ending with ':'; dedupes (case-insensitive,
    first kept) and drops any case-insensitive copy of `exclude` (e.g. the seed tasks)."""
    text = text if isinstance(text, str) else str(text)
    text = _THINK_BLOCK.sub("\n", text)
    if _CLOSE["think"].search(text):
        text = text[_CLOSE["think"].search(text).end():]
    lines = text.splitlines()
    if any(_LIST_MARKER.match(line) for line in lines):
        lines = [line for line in lines if _LIST_MARKER.match(line)]
    seen = {" ".join(e.split()).casefold() for e in exclude}
    out = []
    for line in lines:
        line = _LABEL.sub("", _LIST_MARKER.sub("", line, count=1), count=1)
        line = " ".join(line.split()).strip(" \"'`\u201c\u201d\u2018\u2019")
        key = line.casefold()
        if not min_chars <= len(line) <= max_chars or line.endswith(":") or key in seen:
            continue
        seen.add(key)
        out.append(line)
    return out


# -- internals ---------------------------------------------------------------------------------

_ACTION_CHARS = 200
_ELLIPSIS = " ... "
_TAGS = ("think", "state", "reward", "done")
_OPEN = {t: re.compile(rf"<\s*{t}\s*>", re.IGNORECASE) for t in _TAGS}
_CLOSE = {t: re.compile(rf"<\s*/\s*{t}\s*>", re.IGNORECASE) for t in _TAGS}
_ANY_TAG = re.compile(r"<\s*/?\s*(?:think|state|reward|done)\s*>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<\s*think\s*>.*?<\s*/\s*think\s*>", re.IGNORECASE | re.DOTALL)
_TARGET = re.compile(r"(?:<think>(?P<reasoning>.*?)</think>\n)?<state>(?P<state>.*?)</state>\n"
                     r"<reward>(?P<reward>[^<]*)</reward>\n<done>(?P<done>[^<]*)</done>", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):\]])(?=\s|$)\s*")
_LABEL = re.compile(r"^(?:new\s+)?(?:task|instruction)\s*\d*\s*[:.)-]\s*", re.IGNORECASE)


def _compact(text: str | None) -> str:
    """Collapse spaces/tabs per line, drop empty lines, remove our output tags."""
    lines = (" ".join(line.split()) for line in _ANY_TAG.sub(" ", text or "").splitlines())
    return "\n".join(line for line in lines if line)


def _clip(text: str, n: int) -> str:
    """Compact, then keep at most n characters: head (2/3) + " ... " + tail (spaces at the cut dropped)."""
    text = _compact(text)
    if len(text) <= n:
        return text
    if n < 3 * len(_ELLIPSIS):
        return text[:n]
    head = (n - len(_ELLIPSIS)) * 2 // 3
    tail = n - len(_ELLIPSIS) - head
    return text[:head].rstrip() + _ELLIPSIS + text[len(text) - tail:].lstrip()


def _split_think(text: str) -> tuple[str | None, bool, str]:
    """(stripped reasoning or None, think opened but never closed, text without the think block).
    A bare `...</think>` (template-opened think) counts: the reasoning is everything before it."""
    found = _find_block(text, "think")
    if found is not None:
        start, end, inner = found
        return inner.strip() or None, False, text[:start] + "\n" + text[end:]
    close = _CLOSE["think"].search(text)
    if close is not None:
        return text[:close.start()].strip() or None, False, text[close.end():]
    opened = _OPEN["think"].search(text)
    if opened is None:
        return None, False, text
    return None, True, text[:opened.start()] + "\n" + text[opened.end():]


def _block(text: str, tag: str) -> tuple[str | None, bool]:
    """(content of the first complete <tag> block or None, whether a <tag> is open with no close after it)."""
    found = _find_block(text, tag)
    if found is not None:
        return found[2], False
    opens = list(_OPEN[tag].finditer(text))
    return None, bool(opens) and _CLOSE[tag].search(text, opens[-1].end()) is None


def _find_block(text: str, tag: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the first complete <tag>..</tag>: the first closing tag that has an
    opening one before it, paired with the last such opening (so `<a>x<a>y</a>` gives "y")."""
    for close in _CLOSE[tag].finditer(text):
        opens = list(_OPEN[tag].finditer(text, 0, close.start()))
        if opens:
            return opens[-1].start(), close.end(), text[opens[-1].end():close.start()]
    return None


def _as_unit_float(text: str | None) -> float | None:
    """A plain number in [0, 1] (within REWARD_TOLERANCE, then clamped), else None."""
    if text is None or not _NUMBER.fullmatch(text.strip()):
        return None
    value = float(text.strip())
    if not math.isfinite(value) or not -REWARD_TOLERANCE <= value <= 1 + REWARD_TOLERANCE:
        return None
    return min(1.0, max(0.0, value)) + 0.0


def _as_bool(text: str | None) -> bool | None:
    """true/yes/1 -> True, false/no/0 -> False (any case, stripped), else None."""
    value = (text or "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None
