"""RL math for policy training (PPO with a critic, GRPO without one), as pure functions over tensors.

`advantages` turns per-turn rewards into per-token advantages (GAE, group-normalised GRPO scores);
`losses` turns log-probs, values and logits into scalar losses plus float stats. Every tensor is
(B, T) over one multi-turn episode's token sequence (prompt, sampled actions, observations appended in
order) with an explicit `mask` (B, T) that is 1 on policy-sampled tokens and 0 elsewhere. No config,
no `self`, no logging: the trainer (`PolicyRL`) calls these and logs the stats it gets back.
"""
