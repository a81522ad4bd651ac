"""The policy's chat context: how a task and the env's observations become token ids, and how sampled
action text becomes an env action. Owns the chat template glue, never the env state (style §5).

Turn layout (any chat template whose assistant content is followed by its end token, e.g. ChatML):
`prompt_ids(task, obs0)` = system + first user turn + assistant header; the policy samples an action
ending with the end token; `observation_ids(obs)` = the template's glue after that end token + the next
user turn + assistant header. The glue is derived once from the tokenizer's own template, so no model
family's special-token ids are hard-coded.

Choice mode (`rollout.action_space=choice`): `choice_ids` tokenizes each available action exactly as the
free mode would see it in the assistant turn (its text, then the end token); `choice_action_text` first
fills a free-text slot such as WebShop's `search[...]` with the task instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dreamgym.models.generation import stop_token_ids

__all__ = ["ChatContext", "ContextSettings", "parse_action_text", "choice_action_text", "DEFAULT_SYSTEM_PROMPT"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a web shopping agent. Each turn you see the page and the available actions. Reply with exactly "
    "one action and nothing else: search[keywords] on a page with a search bar, or click[element] with an "
    "element from the available actions. Buy the product that best matches the instruction with click[buy now].")

_ACTION = re.compile(r"\b(search|click)\[[^\[\]\n]+\]", re.IGNORECASE)
_MARK = "\u2063DGMARK\u2063"


@dataclass
class ContextSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    observation_chars: int = 1200
    """observation text kept per turn (head and tail around ' ... ')"""
    max_listed_actions: int = 30
    """available actions listed per turn (the rest summarised as a count)"""


def parse_action_text(text: str) -> tuple[str, bool]:
    """Sampled text -> (env action, parsed ok). The first `search[...]`/`click[...]` anywhere wins (name
    lower-cased); otherwise the first line, stripped, is passed on (the env answers it as invalid)."""
    m = _ACTION.search(text)
    if m:
        name, _, rest = m.group(0).partition("[")
        return f"{name.lower()}[{rest}", True
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first, False


def choice_action_text(action: str, instruction: str) -> str:
    """An available action as choice mode offers it: a free-text slot `name[...]` (WebShop's search bar)
    becomes `name[<task instruction>]`, so every candidate is one concrete action."""
    return action[: -len("...]")] + instruction + "]" if action.endswith("[...]") else action


class ChatContext:
    """Token ids for the policy's multi-turn chat, built by appending (never re-tokenizing history)."""

    def __init__(self, tokenizer, settings: ContextSettings | None = None):
        self.tokenizer = tokenizer
        self.settings = settings or ContextSettings()
        self.stop_ids = stop_token_ids(tokenizer)
        self.end_id = self._assistant_end_id()

    def user_content(self, observation: str, available_actions: list[str], instruction: str | None = None) -> str:
        obs = _clip(observation, self.settings.observation_chars)
        acts = available_actions[: self.settings.max_listed_actions]
        more = len(available_actions) - len(acts)
        listed = ", ".join(acts) + (f" (+{more} more)" if more > 0 else "")
        head = f"Instruction: {instruction}\n" if instruction else ""
        return f"{head}Observation: {obs}\nAvailable actions: {listed or '(free text)'}"

    def prompt_ids(self, instruction: str, observation: str, available_actions: list[str]) -> list[int]:
        msgs = [{"role": "system", "content": self.settings.system_prompt},
                {"role": "user", "content": self.user_content(observation, available_actions, instruction)}]
        return self._encode(self._render(msgs, add_generation_prompt=True))

    def observation_ids(self, observation: str, available_actions: list[str]) -> list[int]:
        """Ids appended after a sampled action (which ended with the end token): template glue, the next
        user turn and the assistant header."""
        return self._encode(self._glue + self.user_content(observation, available_actions) + self._user_tail)

    def choice_ids(self, actions: list[str]) -> list[list[int]]:
        """Candidate continuations of an assistant turn: each action's ids followed by the end token."""
        return [self._encode(a) + [self.end_id] for a in actions]

    def end_ids_if_missing(self, sample_ids: list[int]) -> list[int]:
        """The end token to append as context when a sample hit max_new_tokens without writing it."""
        return [] if sample_ids and sample_ids[-1] in self.stop_ids else [self.end_id]

    # -- internals --------------------------------------------------------------------------------
    def _render(self, msgs: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _assistant_end_id(self) -> int:
        """Derive the end-of-turn token and the glue around a user turn from the template itself."""
        sys = {"role": "system", "content": "s"}
        base = self._render([sys, {"role": "user", "content": "u"}, {"role": "assistant", "content": _MARK}], False)
        full = self._render([sys, {"role": "user", "content": "u"}, {"role": "assistant", "content": _MARK},
                             {"role": "user", "content": _MARK}], True)
        after_action = base[base.index(_MARK) + len(_MARK):]
        end_text = next((self.tokenizer.convert_ids_to_tokens(i) for i in self.stop_ids
                         if after_action.startswith(self.tokenizer.convert_ids_to_tokens(i))), None)
        if end_text is None:
            raise ValueError("chat template: the assistant turn is not closed by an end token the tokenizer "
                             f"knows ({self.stop_ids}); cannot build multi-turn contexts by appending")
        i = full.index(_MARK) + len(_MARK) + len(end_text)
        j = full.index(_MARK, i)
        self._glue, self._user_tail = full[i:j], full[j + len(_MARK):]
        return self.tokenizer.convert_tokens_to_ids(end_text)


def _clip(text: str, n: int) -> str:
    if len(text) <= n:
        return text
    head = (2 * n) // 3
    return text[:head] + " ... " + text[-(n - head - 5):]
