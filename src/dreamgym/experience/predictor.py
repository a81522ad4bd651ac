"""M_exp inference (paper Eq. 4): for a batch of (task, history, state, action) queries, retrieve the
top-k buffer transitions, build the prompt, run one batched generation and parse each answer into
(reasoning, next state, reward, done). With `bounded` (the default) an answer cut off by the token budget
or running past its next-state budget is first completed by `experience.bounded_decoding` (its runaway block
closed, reward and done generated). Malformed answers become the contracts' no-op fallback, counted by reason
in `stats` — never an exception. Used by the synthetic env and the fidelity audit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dreamgym.experience.bounded_decoding import complete_answers
from dreamgym.experience.prompts import ParseStats, Prediction, build_messages, parse_transition
from dreamgym.models.generation import GenerationSettings, generate_ids
from dreamgym.models.loading import chat_prompt_ids

__all__ = ["Query", "ExperiencePredictor"]


@dataclass
class Query:
    instruction: str
    history: list[tuple[str, str]]
    state: str
    action: str
    env: str | None = None
    exclude_trajectory: str | None = None
    """the asking transition's own trajectory (never retrieved: contracts' split hygiene)"""


@dataclass
class ExperiencePredictor:
    """Model + tokenizer + optional replay buffer -> batched transition predictions."""

    model: object
    tokenizer: object
    prompt_cfg: object
    settings: GenerationSettings
    buffer: object | None = None
    retrieval: bool = True
    reasoning: bool = True
    seed: int | None = None
    bounded: bool = True
    """complete answers that hit the token budget or their next-state budget (`experience.bounded_decoding`)"""
    outcome_tokens: int = 24
    """tokens a bounded-decoding round may use for the reward and done blocks after a forced state close"""
    stats: ParseStats = field(default_factory=ParseStats)
    tokens_generated: int = 0
    prompt_tokens: int = 0
    last_texts: list[str] = field(default_factory=list)

    def predict(self, queries: list[Query]) -> list[Prediction]:
        if not queries:
            return []
        demos = self._demos(queries)
        prompts = [chat_prompt_ids(self.tokenizer, build_messages(q.instruction, q.history, q.state, q.action, d,
                                                                  self.prompt_cfg))
                   for q, d in zip(queries, demos)]
        outs = generate_ids(self.model, self.tokenizer, prompts, self.settings, generator_seed=self.seed)
        self.prompt_tokens += sum(len(p) for p in prompts)
        self.tokens_generated += sum(len(o) for o in outs)
        kinds: list[tuple[str, ...]] = [()] * len(outs)
        if self.bounded:
            outs, kinds, extra = complete_answers(self._continue, self.tokenizer, prompts, outs,
                                                  self.settings.max_new_tokens, self.prompt_cfg.next_state_chars,
                                                  self.outcome_tokens)
            self.tokens_generated += extra
        self.last_texts = [self.tokenizer.decode(o, skip_special_tokens=True) for o in outs]
        preds = []
        for text, q, k in zip(self.last_texts, queries, kinds):
            self.stats.count_forced(k)
            preds.append(dataclasses.replace(parse_transition(text, q.state, self.stats,
                                                              require_reasoning=self.reasoning), forced=k))
        return preds

    def _continue(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """A bounded-decoding round: the same settings with its own token budget; sampling continues the
        random stream of the first call (no re-seeding: that would repeat its draws)."""
        settings = dataclasses.replace(self.settings, max_new_tokens=max_new_tokens)
        return generate_ids(self.model, self.tokenizer, prompts, settings)

    def _demos(self, queries: list[Query]) -> list[list]:
        k = self.prompt_cfg.demos_k
        if self.buffer is None or not self.retrieval or k <= 0:
            return [[] for _ in queries]
        envs = {q.env for q in queries}
        env = envs.pop() if len(envs) == 1 else None
        hits = self.buffer.search([q.state for q in queries], [q.action for q in queries], k, env=env,
                                  exclude_trajectories=[q.exclude_trajectory for q in queries])
        return [[h.transition for h in hs] for hs in hits]
