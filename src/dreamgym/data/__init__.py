"""Data streams feeding the Lightning modules (rollout experience for PolicyRL)."""
