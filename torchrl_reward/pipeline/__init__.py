"""The main job: collect episodes, train the reward model, PPO with it, and a report."""

from torchrl_reward.pipeline.runner import StageError, run_pipeline

__all__ = ["StageError", "run_pipeline"]
