"""Pick a Vulkan driver SAPIEN can render with, before a ManiSkill env is built.

Without an NVIDIA driver, ManiSkill renders through Mesa's lavapipe (CPU). It must be Mesa >= 24.3
(``scripts/setup_system.sh`` installs it); :class:`~torchrl_reward.envs.ManiSkillEnv` selects its
ICD when it builds an env (in each ``ParallelEnv`` worker too), so users never set
``VK_ICD_FILENAMES`` themselves and importing the package changes nothing. A user's own setting
always wins; call :func:`select_vulkan_driver` before ``gym.make`` for an env built by hand
and wrapped with :class:`~torchrl_reward.envs.ManiSkillWrapper`.
"""

from __future__ import annotations

import os
from pathlib import Path

_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")
LAVAPIPE_ICD = "/usr/share/vulkan/icd.d/lvp_icd.json"


def _has_nvidia_icd() -> bool:
    return any(Path(d, "nvidia_icd.json").exists() for d in _ICD_DIRS)


def select_vulkan_driver() -> str | None:
    """Set ``VK_ICD_FILENAMES`` to lavapipe when no NVIDIA ICD is present; return the choice."""
    if "VK_ICD_FILENAMES" in os.environ:
        return os.environ["VK_ICD_FILENAMES"]
    if not _has_nvidia_icd() and Path(LAVAPIPE_ICD).exists():
        os.environ["VK_ICD_FILENAMES"] = LAVAPIPE_ICD
        return LAVAPIPE_ICD
    return None
