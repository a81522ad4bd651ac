"""Curriculum task generator (paper component 4). `sampler.py` scores tasks by the reward variance V_tau
of their rollouts (GRPO groups, or embedding clusters of tasks for PPO), keeps the training task pool
(original train tasks + generated variations, at most a share lambda of each iteration's batch),
and logs how the pool evolves; `generator.py` asks the experience model's own weights for harder or
easier variations of the high-variance seed tasks. Dev and test tasks never enter the pool.
"""
