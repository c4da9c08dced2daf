"""Find and compose the Hydra configs from Python (tests, the pipeline, notebooks).

The configs live in the repository's ``configs/``, where ``scripts/`` find them. From Python
they are looked up, in order, in ``$TORCHRL_REWARD_CONFIGS``, in the copy a built package ships
as ``torchrl_reward/configs/`` (setup.py copies it), and in the checkout an editable install
runs from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONFIGS_ENV_VAR = "TORCHRL_REWARD_CONFIGS"
PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent  # the checkout, in an editable install
_MARKER = "ppo.yaml"  # a folder holding it is a configs folder


def config_dir() -> Path:
    """The folder of the Hydra configs: ``$TORCHRL_REWARD_CONFIGS``, the package's or the repo's.

    A set ``$TORCHRL_REWARD_CONFIGS`` is the only place looked at, so a wrong path fails
    instead of silently reading other configs.
    """
    override = os.environ.get(CONFIGS_ENV_VAR)
    shipped = [PACKAGE_ROOT / "configs", REPO_ROOT / "configs"]
    candidates = [Path(override)] if override else shipped
    for candidate in candidates:
        if (candidate / _MARKER).is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"No Hydra configs ({_MARKER}) in {looked}. Install the package from a checkout "
        f"(pip install . ships configs/ inside it; pip install -e . reads the checkout's), or "
        f"set {CONFIGS_ENV_VAR} to a folder holding the repository's configs/."
    )


def load_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Return config ``name`` (e.g. ``"ppo"``) with Hydra command-line style ``overrides``.

    Inside a ``@hydra.main`` app (whose search path is ``configs/`` too) Hydra is already
    initialised and composes directly.
    """
    configs = config_dir()
    if not (configs / f"{name}.yaml").is_file():
        raise FileNotFoundError(f"No config {name!r} in {configs}.")
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))
