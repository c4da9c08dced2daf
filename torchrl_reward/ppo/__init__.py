"""PPO on ManiSkill tasks with TorchRL parts; what ``scripts/ppo.py`` runs."""

from torchrl_reward.ppo.checkpoint import load_checkpoint, save_checkpoint
from torchrl_reward.ppo.config import PPORunConfig, make_ppo_config
from torchrl_reward.ppo.envs import RenderOptions, make_env
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.ppo.trainer import evaluate, train_ppo

__all__ = [
    "PPORunConfig",
    "RenderOptions",
    "evaluate",
    "load_checkpoint",
    "make_env",
    "make_ppo_config",
    "make_ppo_models",
    "save_checkpoint",
    "train_ppo",
]
