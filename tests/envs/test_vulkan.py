"""select_vulkan_driver: lavapipe without an NVIDIA driver, chosen when an env is built."""

import os
import subprocess
import sys

import pytest

from torchrl_reward.envs import _vulkan, select_vulkan_driver


def _driver_after(code: str) -> str:
    """``VK_ICD_FILENAMES`` after running ``code`` in a fresh interpreter that has none set."""
    env = {k: v for k, v in os.environ.items() if k != "VK_ICD_FILENAMES"}
    code += "\nimport os; print(os.environ.get('VK_ICD_FILENAMES'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()[-1]


def test_importing_the_package_leaves_the_environment_alone():
    assert _driver_after("import torchrl_reward.envs") == "None"


def test_a_users_setting_wins(monkeypatch):
    monkeypatch.setenv("VK_ICD_FILENAMES", "/my/icd.json")
    assert select_vulkan_driver() == "/my/icd.json"
    assert os.environ["VK_ICD_FILENAMES"] == "/my/icd.json"


@pytest.mark.slow
def test_building_an_env_selects_lavapipe_without_an_nvidia_driver():
    lavapipe = not _vulkan._has_nvidia_icd() and os.path.exists(_vulkan.LAVAPIPE_ICD)
    built = _driver_after(
        "from torchrl_reward.envs import ManiSkillEnv\nManiSkillEnv('PickCube-v1').close()"
    )
    assert built == (_vulkan.LAVAPIPE_ICD if lavapipe else "None")
