"""dreamgym: train LLM agents with RL in synthesized experience (DreamGym, arXiv 2511.03773).

Data flow: real env -> collect -> trajectories -> annotate -> fit-world-model -> experience model;
trajectories -> replay buffer; curriculum + synthetic env (experience model + buffer) -> rollouts ->
PolicyRL (PPO/GRPO) -> s2r in the real env -> evaluate. See README.md and docs/.
"""

__version__ = "0.1.0"
