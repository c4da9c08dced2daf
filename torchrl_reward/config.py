"""Compose the Hydra configs in ``configs/`` from Python (tests, the pipeline, notebooks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[1]  # an editable install's checkout
CONFIG_DIR = REPO_ROOT / "configs"


def load_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Return config ``name`` (e.g. ``"ppo"``) with Hydra command-line style ``overrides``.

    Inside a ``@hydra.main`` app (whose search path is ``configs/`` too) Hydra is already
    initialised and composes directly.
    """
    if not (CONFIG_DIR / f"{name}.yaml").is_file():
        raise FileNotFoundError(f"No config {name!r} in {CONFIG_DIR}.")
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))
