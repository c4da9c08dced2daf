"""Subprocess of the multi-process / kill -9 test: records PickCube failure episodes.

    python record_worker.py SAVE_DIR TARGET_FAILURE SYNC_DIR [EXIT_DIR]

Builds the env, touches ``SYNC_DIR/ready.<pid>``, waits for ``SYNC_DIR/go`` (so several workers
record at the same time), then records until the failure target is met. With ``EXIT_DIR`` it
then records two more episodes there and exits at once, without flush or close: the
recorder's exit hook must still write them.
"""

import os
import sys
import time
from pathlib import Path

from torchrl.envs import TransformedEnv

from torchrl_reward.data import EpisodeRecorder
from torchrl_reward.envs import ManiSkillEnv


def main(save_dir: str, target_failure: int, sync_dir: Path, exit_dir: str | None) -> None:
    recorder = EpisodeRecorder(save_dir, target_success=0, target_failure=target_failure)
    env = TransformedEnv(
        ManiSkillEnv("PickCube-v1", pixels=True, image_size=64, max_episode_steps=3), recorder
    )
    env.set_seed(os.getpid())
    (sync_dir / f"ready.{os.getpid()}").touch()
    while not (sync_dir / "go").exists():
        time.sleep(0.05)
    while not recorder.done:
        env.rollout(6, break_when_any_done=False)
    if exit_dir is not None:
        last = TransformedEnv(env.base_env, EpisodeRecorder(exit_dir))
        last.rollout(6, break_when_any_done=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), (sys.argv[4:] or [None])[0])
