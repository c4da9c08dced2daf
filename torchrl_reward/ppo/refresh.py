"""Refresh the learned reward on the policy's own episodes while PPO runs (``reward.refresh``).

A reward model trained on one policy's episodes ages as PPO moves the policy into frames it
never saw: its false positives climb and the policy learns them (BENCHMARKS.md, "Hard
negatives from the policy's own run"). At each of ``reward.refresh.at_frames`` the run records
episodes of its current stochastic policy (labelled by the simulator, as every recording is;
the policy and the critic never see those labels), fine-tunes the model it scores with on all
of its refresh recordings, re-exports it when the run scores through an export, and scores
with it from the next batch.

Everything lands under ``<run>/reward_refresh/``: ``data/`` (the recordings, growing with each
refresh), ``at_<frames>/model/`` (the trainer's ``save_dir``), ``at_<frames>/export/`` and, last
and atomically, ``at_<frames>/refresh.json``. A refresh with that file is done; one without
resumes where it stopped (the recorder and the trainer continue from disk). A resumed run
scores with the latest finished refresh at or before its frames.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type

from torchrl_reward.data import EpisodeRecorder, record_until_done
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.inference.export import export_checkpoint
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.ppo.config import PPORunConfig
from torchrl_reward.ppo.envs import make_env
from torchrl_reward.training import MIN_EPISODES_PER_OUTCOME, train_reward_model
from torchrl_reward.transforms import RewardTransform
from torchrl_reward.utils import atomic_write

log = logging.getLogger(__name__)
REFRESH_DIR = "reward_refresh"
DONE_FILE = "refresh.json"
# The model's architecture keys the fine-tune keeps (train_reward's model.* group).
_MODEL_KEYS = ("arch", "stages", "image_size", "dropout", "hidden_dim", "head")


class RewardRefresh:
    """The ``reward.refresh`` schedule of one PPO run in ``run_dir``.

    Args:
        cfg (PPORunConfig): the run's config (``reward.refresh``, the env, the reward backend).
        run_dir (path): the PPO run's folder.
    """

    def __init__(self, cfg: PPORunConfig, run_dir: Path) -> None:
        r = cfg.reward.refresh
        if not cfg.reward.use_reward_model:
            raise ValueError(
                "reward.refresh.at_frames refreshes a learned reward: use reward=resnet."
            )
        if cfg.runner.name != "local":
            raise ValueError(
                "reward.refresh needs runner=local: the Ray runner's reward actor cannot be "
                "retrained in the training process."
            )
        at = list(r.at_frames)
        if any(f <= 0 for f in at) or at != sorted(set(at)):
            raise ValueError(
                f"reward.refresh.at_frames must be increasing positive frame counts, got {at}."
            )
        if min(r.target_success, r.target_failure) < MIN_EPISODES_PER_OUTCOME:
            raise ValueError(
                "reward.refresh.target_success and target_failure must be >= "
                f"{MIN_EPISODES_PER_OUTCOME} (the fine-tune holds out episodes of each outcome), "
                f"got {r.target_success} and {r.target_failure}."
            )
        self.cfg = cfg
        self.at_frames = at
        self.root = Path(run_dir) / REFRESH_DIR
        self.checkpoint = str(cfg.reward.resnet.checkpoint_path)

    def _folder(self, frames: int) -> Path:
        return self.root / f"at_{frames}"

    def _finished(self, frames: int) -> dict[str, Any] | None:
        path = self._folder(frames) / DONE_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def due(self, collected: int) -> bool:
        """Whether a scheduled refresh at or before ``collected`` frames is not done yet."""
        return any(f <= collected and self._finished(f) is None for f in self.at_frames)

    def restore(self, collected: int, transform: RewardTransform) -> None:
        """Score with the latest refresh finished at or before ``collected`` frames (a resume)."""
        finished = [d for f in self.at_frames if f <= collected and (d := self._finished(f))]
        if finished:
            self._use(finished[-1], transform)

    def run_due(
        self, collected: int, actor: torch.nn.Module, transform: RewardTransform
    ) -> dict[str, float]:
        """Run every due refresh in order; return the last one's metrics to log."""
        metrics: dict[str, float] = {}
        for index, frames in enumerate(self.at_frames):
            if frames <= collected and self._finished(frames) is None:
                metrics = self._refresh(index, frames, collected, actor, transform)
        return metrics

    def _use(self, record: dict[str, Any], transform: RewardTransform) -> None:
        transform.load_checkpoint(record["checkpoint"], export_dir=record["export_dir"])
        self.checkpoint = record["checkpoint"]

    def _refresh(
        self,
        index: int,
        frames: int,
        collected: int,
        actor: torch.nn.Module,
        transform: RewardTransform,
    ) -> dict[str, float]:
        folder = self._folder(frames)
        log.info("Refreshing the reward model at %d frames (scheduled at %d)", collected, frames)
        seconds = {}
        start = time.perf_counter()
        counts = self._record(index, actor)
        seconds["record"] = time.perf_counter() - start
        start = time.perf_counter()
        result = train_reward_model(self._train_config(index, folder, transform))
        seconds["train"] = time.perf_counter() - start
        start = time.perf_counter()
        export_dir = self._export(result.best_path, folder / "export")
        seconds["export"] = time.perf_counter() - start
        record = {
            "frames": frames,
            "collected": collected,
            "checkpoint": str(result.best_path),
            "export_dir": export_dir,
            "threshold": result.threshold,
            "metrics": result.metrics,
            "episodes": counts,
            "seconds": seconds,
        }
        self._use(record, transform)
        with atomic_write(folder / DONE_FILE, "w") as f:
            json.dump(record, f, indent=2)
        log.info("Reward model refreshed: %s", record)
        return {
            "reward_refresh/frames": float(frames),
            "reward_refresh/threshold": result.threshold,
            "reward_refresh/val_roc_auc": result.metrics["roc_auc"],
            "reward_refresh/val_fpr": result.metrics["fpr"],
            "reward_refresh/val_recall": result.metrics["recall"],
            "reward_refresh/episodes": float(sum(counts.values())),
            "reward_refresh/seconds": sum(seconds.values()),
        }

    def _record(self, index: int, actor: torch.nn.Module) -> dict[str, int]:
        """Episodes of the current stochastic policy until this refresh's (cumulative) targets."""
        r, env_cfg = self.cfg.reward.refresh, self.cfg.env
        seed = self.cfg.seed + 30_000 + index
        recorder = EpisodeRecorder(
            self.root / "data",
            (index + 1) * r.target_success,
            (index + 1) * r.target_failure,
            frames_after_success=r.frames_after_success,
            seed=seed,
        )
        env = TransformedEnv(make_env(env_cfg, pixels=True, num_envs=r.num_envs), recorder)
        env.set_seed(seed)
        policy = copy.deepcopy(actor).to(env.device)  # where the env's tensors are
        try:
            with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
                counts = record_until_done(
                    env,
                    recorder,
                    lambda: policy,
                    env_cfg.max_episode_steps,
                    max_rounds=r.max_rounds,
                    progress=self.cfg.runner.progress,
                )
        finally:
            recorder.close()
            env.close()
        # A weak policy may play too few successes in max_rounds: the fine-tune goes on with
        # what it has (the next refresh's cumulative targets ask for the rest), as long as it
        # can hold out episodes of each outcome.
        if min(counts.values()) < MIN_EPISODES_PER_OUTCOME:
            raise RuntimeError(
                f"The reward refresh recorded {recorder.progress()} in {r.max_rounds} rounds "
                f"({self.root / 'data'}); fine-tuning needs >= {MIN_EPISODES_PER_OUTCOME} "
                "episodes of each outcome. Raise reward.refresh.max_rounds or refresh later "
                "(reward.refresh.at_frames)."
            )
        return counts

    def _train_config(self, index: int, folder: Path, transform: RewardTransform) -> Any:
        """``configs/train_reward.yaml`` + ``reward.refresh.train``: the scoring model fine-tuned
        on the run's refresh recordings."""
        have = transform.model.config()
        model = {k: have[k] for k in _MODEL_KEYS}
        model["proprio"] = list(have["proprio"])
        return OmegaConf.merge(
            load_config("train_reward"),
            self.cfg.reward.refresh.train,
            {
                "data_path": str(self.root / "data"),
                "save_dir": str(folder / "model"),
                "init_from": self.checkpoint,
                "seed": self.cfg.seed + index,
                "progress": self.cfg.runner.progress,
                "model": model,
            },
        )

    def _export(self, checkpoint: Path, out_dir: Path) -> str | None:
        """The refreshed model's ONNX exports, when the run scores through an export."""
        reward = self.cfg.reward
        if reward.export_dir is None and reward.backend not in ("onnxruntime", "tensorrt"):
            return None
        # fp16 None: TensorRT's fp16 ONNX only where a GPU is visible, as the pipeline's export.
        defaults = {"chunk_size": reward.chunk_size, "fp16": None}
        options = OmegaConf.merge(load_config("export_reward"), defaults, reward.refresh.export)
        model = ResNetRewardModel.load(checkpoint)
        export_checkpoint(model, out_dir, self.root / "data", options)
        return str(out_dir)
