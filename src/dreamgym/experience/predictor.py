"""M_exp inference (paper Eq. 4): for a batch of (task, history, state, action) queries, retrieve the
top-k buffer transitions, build the prompt, run one batched generation and parse each answer into
(reasoning, next state, reward, done). Malformed answers become the contracts' no-op fallback, counted
by reason in `stats` — never an exception. Used by the synthetic env and the fidelity audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        self.last_texts = [self.tokenizer.decode(o, skip_special_tokens=True) for o in outs]
        return [parse_transition(text, q.state, self.stats, require_reasoning=self.reasoning)
                for text, q in zip(self.last_texts, queries)]

    def _demos(self, queries: list[Query]) -> list[list]:
        k = self.prompt_cfg.demos_k
        if self.buffer is None or not self.retrieval or k <= 0:
            return [[] for _ in queries]
        envs = {q.env for q in queries}
        env = envs.pop() if len(envs) == 1 else None
        hits = self.buffer.search([q.state for q in queries], [q.action for q in queries], k, env=env,
                                  exclude_trajectories=[q.exclude_trajectory for q in queries])
        return [[h.transition for h in hs] for hs in hits]
