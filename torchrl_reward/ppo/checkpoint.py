"""PPO checkpoints: written atomically, validated against the run that loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchrl.data import TensorSpec
from torchrl.modules import ProbabilisticActor

from torchrl_reward.hydra_configs import REPO_ROOT
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.utils import atomic_write

CHECKPOINT_NAME = "ppo_last.pt"


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save ``state`` atomically (temp file + rename): a kill never leaves half a checkpoint."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(state, f)
    return path


def resolve_resume_path(resume: str | Path) -> Path:
    """Accept a run directory, its ``checkpoints/`` folder or the checkpoint file itself.

    A relative path not found from the working directory is looked up in the repository, where
    the ``init`` groups' checkpoints (``checkpoints/*.pt``) live.
    """
    resume = Path(resume)
    roots = [resume] if resume.is_absolute() else [resume, REPO_ROOT / resume]
    for root in roots:
        for candidate in (root, root / CHECKPOINT_NAME, checkpoint_path(root)):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"No PPO checkpoint at {resume} (looked for {CHECKPOINT_NAME} there and in "
        "checkpoints/); set runner.resume_dir to a run directory written by scripts/ppo.py."
    )


def load_checkpoint(resume: str | Path, *, expect: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint and check it fits this run (``expect``: observation/action sizes...)."""
    path = resolve_resume_path(resume)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling failure means a bad file
        raise ValueError(f"PPO checkpoint {path} is unreadable ({err}).") from None
    if not isinstance(state, dict) or "actor" not in state:
        raise ValueError(f"{path} is not a PPO checkpoint written by scripts/ppo.py.")
    for key, value in expect.items():
        if state.get(key) != value:
            raise ValueError(
                f"PPO checkpoint {path} has {key}={state.get(key)!r} but this run has "
                f"{key}={value!r}; resume with the env/model settings it was trained with."
            )
    return state


def load_actor(
    path: str | Path, action_spec: TensorSpec, *, expect: dict[str, Any] | None = None
) -> ProbabilisticActor:
    """The policy of a ``scripts/ppo.py`` checkpoint (or run folder) (``expect`` as for
    :func:`load_checkpoint`)."""
    return actor_from_state(load_checkpoint(path, expect=expect or {}), action_spec)


def actor_from_state(state: dict[str, Any], action_spec: TensorSpec) -> ProbabilisticActor:
    """The policy of a loaded PPO checkpoint, rebuilt with the observation size and hidden
    sizes it records (for callers that read the checkpoint's env settings first)."""
    actor, _ = make_ppo_models(state["obs_dim"], action_spec, state["hidden_sizes"])
    actor.load_state_dict(state["actor"])
    return actor
