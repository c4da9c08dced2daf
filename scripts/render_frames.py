"""Render the goal camera's 128 px frames for the README: initial states and a scripted success.

python scripts/render_frames.py      # writes docs/example_frames.png
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.envs.scripted import ScriptedPickPolicy

OUT = Path(__file__).resolve().parents[1] / "docs" / "example_frames.png"


def main() -> None:
    env = ManiSkillEnv("PickCube-v1", pixels=True, control_mode="pd_ee_delta_pos")
    frames = []
    for seed in range(3):
        env.set_seed(seed)
        frames.append(env.reset()["pixels"][0])
    env.set_seed(3)
    torch.manual_seed(0)
    rollout = env.rollout(50, ScriptedPickPolicy())
    success = rollout["next", "success"][0, :, 0]
    first = int(success.nonzero()[0]) if success.any() else -1
    frames.append(rollout["next", "pixels"][0, first])
    env.close()
    grid = np.concatenate([f.numpy() for f in frames], axis=1)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(OUT)
    print(f"wrote {OUT} (last frame: {'success' if first >= 0 else 'no success'} at step {first})")


if __name__ == "__main__":
    main()
