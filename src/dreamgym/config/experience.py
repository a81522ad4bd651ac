"""Experience-model configs: prompt format, annotation, SFT (`fit-world-model`), the synthetic env, the fidelity audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from dreamgym.config.loading import ConfigError
from dreamgym.config.models import ModelConfig

__all__ = ["ExperiencePromptConfig", "AnnotateConfig", "SyntheticEnvConfig", "SFTSettings", "FitWorldModelConfig", "EvalWorldModelConfig"]


@dataclass
class ExperiencePromptConfig:
    """How the experience model's prompt (paper Eq. 4) is built: `experience/prompts.py`."""

    history_turns: int = 3
    """most recent (state, action) turns shown as interaction history (0 = none)"""
    history_state_chars: int = 300
    """each history state is whitespace-compacted and clipped to this many characters"""
    state_chars: int = 1500
    """the current state s_t is whitespace-compacted and clipped to this many characters"""
    demo_state_chars: int = 400
    """state and next state of each retrieved demonstration are clipped to this many characters"""
    demos_k: int = 3
    """retrieved demonstrations shown per prompt (the paper's top-k; 0 = no retrieval)"""
    next_state_chars: int = 0
    """the next state the model learns to write (and is audited against) is compacted and clipped to this many
    characters (0 = the whole state): a compact abstract state keeps each synthetic step short; keep it at
    least the policy's rollout.observation_chars, which is all the policy sees of a page anyway"""
    reasoning: bool = True
    """ask for a <think> reasoning trace before the next state (False = the paper's no-reasoning ablation)"""
    system_prompt: Optional[str] = None
    """replaces the built-in system prompt when set; it must still ask for the tagged output format"""

    def __post_init__(self) -> None:
        for key in ("history_turns", "demos_k"):
            if getattr(self, key) < 0:
                raise ConfigError(f"key 'ExperiencePromptConfig.{key}': got {getattr(self, key)}, "
                                  "expected an int >= 0")
        for key in ("history_state_chars", "state_chars", "demo_state_chars"):
            if getattr(self, key) < 16:
                raise ConfigError(f"key 'ExperiencePromptConfig.{key}': got {getattr(self, key)}, "
                                  "expected an int >= 16")


@dataclass
class AnnotateConfig:
    """`dreamgym annotate`: teacher rationales R* for offline real transitions (paper Eq. 5)."""

    teacher: str = "rule"
    """'rule' (deterministic rationale from the transition; the CPU default), 'model' (an LLM teacher:
    `model.*`, shown the true next state) or 'none' (the paper's no-reasoning ablation)"""
    model: ModelConfig = field(default_factory=ModelConfig)
    """the teacher LLM when teacher=model (no LoRA training happens here)"""
    max_new_tokens: int = 80
    """longest rationale the LLM teacher may write"""
    batch_size: int = 8
    """prompts per teacher generate() call"""
    demos_k: int = 3
    """demonstrations retrieved per transition from `--buffer` (own trajectory excluded); 0 = none"""
    seed: int = 0
    """seed of the LLM teacher's generation (greedy by default, so it only matters for sampling)"""

    def __post_init__(self) -> None:
        if self.teacher not in ("rule", "model", "none"):
            raise ConfigError(f"key 'teacher': got {self.teacher!r}, expected 'rule', 'model' or 'none'")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.demos_k < 0:
            raise ConfigError("keys 'max_new_tokens'/'batch_size'/'demos_k': expected positive integers "
                              "(demos_k may be 0)")


@dataclass
class SyntheticEnvConfig:
    """The synthetic environment: the experience model (+ replay-buffer retrieval) answering actions."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """base model of the experience model; its LoRA adapter comes from `--world-model`"""
    prompt: ExperiencePromptConfig = field(default_factory=ExperiencePromptConfig)
    max_new_tokens: int = 192
    """longest experience-model answer (reasoning + next state + reward + done) in one free generation;
    with bounded_decoding an answer that uses it all is completed in short extra rounds"""
    bounded_decoding: bool = True
    """close a runaway block at its budget (a next state past prompt.next_state_chars, or any block open
    when max_new_tokens runs out) and generate what the format still needs, instead of a `truncated` no-op
    step (`experience/bounded_decoding.py`); False = the raw single generation (e.g. to audit it)"""
    batch_size: int = 16
    """episodes per generate() call"""
    do_sample: bool = False
    """sample the experience model (True) or decode greedily (False, the default: a deterministic world)"""
    temperature: float = 1.0
    """sampling temperature when do_sample"""
    retrieval: bool = True
    """ground each step on the top-k buffer transitions (False = the paper's "no replay" ablation)"""
    max_steps: int = 15
    """episode step limit of the synthetic env (as the real env's)"""
    initial_state: str = "real_reset"
    """first state of an episode: 'real_reset' (the real env renders its start page; no real step is
    taken) or 'template' (`initial_template` filled with the instruction)"""
    initial_template: str = "Instruction: [SEP] {instruction}"
    """first state when initial_state=template"""
    write_back: bool = True
    """add finished synthetic episodes' transitions to the replay buffer (source 'synthetic')"""
    seed: int = 0
    """seed of sampling"""

    def __post_init__(self) -> None:
        if self.initial_state not in ("real_reset", "template"):
            raise ConfigError(f"key 'initial_state': got {self.initial_state!r}, expected 'real_reset' or 'template'")
        if self.max_new_tokens < 8 or self.batch_size < 1 or self.max_steps < 1:
            raise ConfigError("keys 'max_new_tokens'/'batch_size'/'max_steps': expected max_new_tokens >= 8 "
                              "and positive batch_size and max_steps")


@dataclass
class SFTSettings:
    """Supervised fine-tuning of the experience model (paper Eq. 5): optimizer, schedule, batching, loss mask."""

    lr: float = 2e-4
    """peak AdamW learning rate (LoRA-sized; use ~1e-5 for full fine-tuning)"""
    weight_decay: float = 0.0
    """AdamW weight decay, applied to trainable matrices only (never to biases, norms or frozen weights)"""
    warmup_steps: int = 10
    """optimizer steps of linear warmup from 0 to lr"""
    lr_schedule: str = "cosine"
    """decay after warmup: 'cosine' or 'linear' down to min_lr_ratio * lr at the last step, or 'constant'"""
    min_lr_ratio: float = 0.1
    """final learning rate as a share of lr (cosine/linear)"""
    batch_size: int = 4
    """examples per micro-batch"""
    accumulate_grad_batches: int = 1
    """micro-batches per optimizer step (effective batch = batch_size * accumulate_grad_batches)"""
    max_steps: int = 200
    """optimizer steps to train (-1 = no step limit, max_epochs decides)"""
    max_epochs: int = 3
    """passes over the training examples (whichever of max_steps/max_epochs comes first ends training)"""
    max_time_s: float = 0.0
    """wall-clock budget of the fit in seconds, validation included (0 = none); training stops cleanly
    when it is spent and the adapter is saved as usual (the lr schedule still spans max_steps)"""
    max_seq_len: int = 2048
    """longest tokenized example (prompt + target + end-of-turn); longer ones are dropped and counted
    (`dropped_too_long`), never truncated: shrink the prompt's char limits instead"""
    val_fraction: float = 0.1
    """share of trajectories held out for validation (split by trajectory id, seeded, never by transition)"""
    val_check_interval: Union[int, float] = 1.0
    """validate every N training micro-batches (int) or every fraction of an epoch (float <= 1.0)"""
    limit_val_batches: Union[int, float] = 1.0
    """validation micro-batches per check (int) or share of the validation set (float <= 1.0)"""
    validate_before_fit: bool = True
    """validate once before training starts (the 'before' val loss; not on resume)"""
    sample_every_n_val: int = 1
    """every N validation runs log `samples/wm` (greedy predictions vs true targets) to TensorBoard; 0 = never"""
    num_samples: int = 2
    """validation examples shown in `samples/wm`"""
    sample_max_new_tokens: int = 256
    """longest greedy generation for `samples/wm`"""
    loss_on_reasoning: bool = True
    """train on the reasoning block (-log P(R* | ...), the first term of Eq. 5)"""
    loss_on_reward: bool = True
    """train on the reward/done block and the end-of-turn token"""
    reasoning_weight: float = 1.0
    """loss weight of reasoning tokens relative to next-state tokens (weight 1)"""
    outcome_weight: float = 1.0
    """loss weight of reward/done (+ end-of-turn) tokens relative to next-state tokens"""
    bucket_megabatch: int = 32
    """length bucketing: shuffle, cut into megabatches of this many batches, sort each by length; 1 = plain
    random batching"""
    gradient_clip_val: float = 1.0
    """clip the global gradient norm to this value (0 = no clipping)"""
    precision: str = "auto"
    """Lightning precision: 'auto' (bf16-mixed where the device runs bf16 natively, else 16-mixed on CUDA
    and 32-true on CPU), or '32-true', 'bf16-mixed', '16-mixed', 'bf16-true'"""
    log_every_n_steps: int = 5
    """Lightning's logging interval for step scalars"""
    progress: bool = True
    """show the rich progress bar"""
    terminal_repeats: int = 1
    """each terminal (done) training transition appears this many times per epoch: the reward is decided at
    those rare steps (WebShop's purchases are ~12% of transitions), and a model that rarely sees them learns
    to predict 'not done, reward 0' everywhere. Validation is never repeated."""
    failed_terminal_repeats: int | None = None
    """repeats of a terminal transition whose reward is below 1 (a failed or partly matching outcome; None =
    terminal_repeats): demonstrations end mostly in success (WebShop CPU study: 252 of 318 purchases), and a
    model that rarely sees a failed outcome rewards every synthetic purchase 1.0, so GRPO groups have no
    reward variance. Raise it to balance the outcomes the reward is learnt from, but mind the step budget:
    in docs/cpu_study.md's run B (15, ~150 steps) purchases took half the steps, the model's navigation pages
    got worse and no synthetic episode reached a purchase."""
    strategy: str = "auto"
    """'auto' (one device), 'ddp' (data parallel) or 'fsdp' (Lightning FSDP: decoder layers sharded over
    the processes; see models/distributed.py). batch_size is per process."""
    devices: int = 1
    """processes/devices to train on (GPUs on CUDA, gloo processes on CPU)"""

    def __post_init__(self) -> None:
        from dreamgym.models.distributed import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ConfigError(f"key 'sft.strategy': got {self.strategy!r}, expected one of {', '.join(STRATEGIES)}")
        for key in ("batch_size", "accumulate_grad_batches", "max_seq_len", "num_samples", "sample_max_new_tokens",
                    "log_every_n_steps", "bucket_megabatch", "devices", "terminal_repeats"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'sft.{key}': got {getattr(self, key)}, expected a positive int")
        if self.failed_terminal_repeats is not None and self.failed_terminal_repeats < 1:
            raise ConfigError(f"key 'sft.failed_terminal_repeats': got {self.failed_terminal_repeats}, expected a "
                              "positive int or null (= terminal_repeats)")
        for key in ("warmup_steps", "sample_every_n_val"):
            if getattr(self, key) < 0:
                raise ConfigError(f"key 'sft.{key}': got {getattr(self, key)}, expected an int >= 0")
        if self.max_steps < 1 and self.max_steps != -1:
            raise ConfigError(f"key 'sft.max_steps': got {self.max_steps}, expected a positive int or -1")
        if self.max_epochs < 1:
            raise ConfigError(f"key 'sft.max_epochs': got {self.max_epochs}, expected a positive int")
        if self.max_time_s < 0:
            raise ConfigError(f"key 'sft.max_time_s': got {self.max_time_s}, expected seconds >= 0 (0 = no limit)")
        if not self.lr > 0 or self.weight_decay < 0 or self.gradient_clip_val < 0:
            raise ConfigError("keys 'sft.lr'/'sft.weight_decay'/'sft.gradient_clip_val': expected lr > 0 and "
                              f"the others >= 0, got {self.lr}, {self.weight_decay}, {self.gradient_clip_val}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"key 'sft.val_fraction': got {self.val_fraction}, expected a float in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"key 'sft.min_lr_ratio': got {self.min_lr_ratio}, expected a float in [0, 1]")
        if self.reasoning_weight < 0 or self.outcome_weight < 0:
            raise ConfigError("keys 'sft.reasoning_weight'/'sft.outcome_weight': expected floats >= 0")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"key 'sft.lr_schedule': got {self.lr_schedule!r}, expected 'cosine', 'linear' "
                              "or 'constant'")
        if self.precision not in ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ConfigError(f"key 'sft.precision': got {self.precision!r}, expected one of auto, 32-true, "
                              "bf16-mixed, 16-mixed, bf16-true")
        for key in ("val_check_interval", "limit_val_batches"):
            value = getattr(self, key)
            if isinstance(value, float) and not 0.0 <= value <= 1.0 or isinstance(value, int) and value < 0:
                raise ConfigError(f"key 'sft.{key}': got {value}, expected an int >= 0 (batches) or a float "
                                  "in [0, 1] (share of an epoch / of the validation set)")
        if self.val_check_interval in (0, 0.0):
            raise ConfigError("key 'sft.val_check_interval': got 0, expected a positive int or a float in (0, 1]")


@dataclass
class FitWorldModelConfig:
    """`dreamgym fit-world-model`: SFT of the experience model M_exp on real transitions (paper Eq. 5)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """base model and adapter settings (LoRA by default, QLoRA with quantization=nf4, full FT with
    lora.enabled=false)"""
    prompt: ExperiencePromptConfig = field(default_factory=ExperiencePromptConfig)
    """how prompts are built (must match the synthetic env's `prompt` when the model is used)"""
    sft: SFTSettings = field(default_factory=SFTSettings)
    seed: int = 0
    """seed of the train/val split, batch order, adapter init and Lightning"""


@dataclass
class EvalWorldModelConfig:
    """`dreamgym eval-world-model`: fidelity audit of the experience model on held-out real transitions
    (reward accuracy ~ eps_R, next-state agreement ~ eps_P, parse failures; `experience/fidelity.py`)."""

    synthetic: SyntheticEnvConfig = field(default_factory=SyntheticEnvConfig)
    """the experience model as the synthetic env runs it: base model, prompt, generation settings and
    batch size (its `retrieval` and `prompt.reasoning` switches are set by each mode, not read)"""
    max_transitions: int = 2000
    """audit at most this many transitions (0 = all): a seeded sample that keeps terminal ones, see terminal_share"""
    terminal_share: float = 0.5
    """at most this share of max_transitions goes to terminal (done) transitions (all of them when fewer);
    the rest is a sample of non-terminal ones"""
    modes: list[str] = field(default_factory=lambda: ["full", "no_retrieval", "no_reasoning"])
    """audit modes, in order: full (retrieval + reasoning), no_retrieval (no buffer demos), no_reasoning
    (no think block: the `--no-reasoning-model` adapter when given, else the same model, no-reasoning prompt)"""
    reward_tolerance: float = 0.1
    """a predicted reward counts as correct when |predicted - true| <= this"""
    reward_threshold: float = 1.0 - 1e-6
    """a reward at or above this is a success (WebShop: reward 1.0)"""
    similarity_encoder: str = "minilm"
    """sentence encoder for next-state similarity: 'minilm', 'hashing' (tests) or a local model folder"""
    num_samples: int = 4
    """predicted-vs-true examples per mode written to TensorBoard text `samples/wm`"""
    progress: bool = True
    """show a rich progress bar"""
    seed: int = 0
    """seed of the transition sample (and of torch/random)"""

    def __post_init__(self) -> None:
        allowed = ("full", "no_retrieval", "no_reasoning")
        if not self.modes or any(m not in allowed for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"key 'modes': got {list(self.modes)}, expected distinct names from {', '.join(allowed)}")
        if self.max_transitions < 0 or self.num_samples < 0:
            raise ConfigError("keys 'max_transitions'/'num_samples': expected ints >= 0")
        if not 0.0 <= self.terminal_share <= 1.0 or self.reward_tolerance < 0 or not 0 < self.reward_threshold <= 1:
            raise ConfigError("keys 'terminal_share'/'reward_tolerance'/'reward_threshold': expected terminal_share "
                              "in [0, 1], reward_tolerance >= 0 and reward_threshold in (0, 1]")
