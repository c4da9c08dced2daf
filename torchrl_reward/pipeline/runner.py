"""The main job: collect -> train the reward model -> export it -> PPO with the learned reward
-> report.

Each stage writes complete files into the run folder and marks itself done in
``pipeline.json``; rerunning continues the latest unfinished run of the same preset, reusing
finished stages and resuming the unfinished one (the recorder, the trainer and PPO all resume
from what is on disk; an export whose manifest matches the checkpoint is kept). A failing stage
stops the job with its name and its log file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_reward.data import EpisodeRecorder
from torchrl_reward.envs.scripted import CONTROL_MODE as SCRIPTED_CONTROL_MODE
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.inference.export import export_checkpoint
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.pipeline.collect import collect_scripted
from torchrl_reward.pipeline.report import write_report
from torchrl_reward.ppo import evaluate, make_env, make_ppo_config, make_ppo_models, train_ppo
from torchrl_reward.ppo.checkpoint import checkpoint_path, load_actor, load_checkpoint
from torchrl_reward.ppo.config import EnvConfig, PPORunConfig
from torchrl_reward.training import train_reward_model
from torchrl_reward.utils import atomic_write

log = logging.getLogger(__name__)
STATE_NAME = "pipeline.json"
STAGES = ("collect", "train", "export", "ppo", "ppo_dense", "report")


class StageError(RuntimeError):
    """A stage failed; the message names it and its log file."""


def find_run_dir(cfg: DictConfig, outputs: Path = Path("outputs")) -> Path:
    """The configured run dir, else the latest unfinished run of this preset, else a new one."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    runs = sorted(outputs.glob(f"*/{STATE_NAME}"), key=lambda p: p.stat().st_mtime)
    for state_file in reversed(runs):
        state = json.loads(state_file.read_text())
        if state.get("preset") == cfg.preset_name and not state.get("complete"):
            return state_file.parent
    return outputs / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _load_state(run_dir: Path, preset: str) -> dict[str, Any]:
    path = run_dir / STATE_NAME
    if path.is_file():
        return json.loads(path.read_text())
    return {"preset": preset, "stages": {}, "complete": False}


def _save_state(run_dir: Path, state: dict[str, Any]) -> None:
    with atomic_write(run_dir / STATE_NAME, "w") as f:
        json.dump(state, f, indent=2)


def _env_cfg(cfg: DictConfig, control_mode: str) -> EnvConfig:
    """The ``ppo`` config's env with the collection's episode length, frames and actions."""
    env_cfg = make_ppo_config(load_config("ppo")).env
    env_cfg.max_episode_steps = cfg.collect.max_episode_steps
    env_cfg.image_size = cfg.collect.image_size
    env_cfg.ignore_terminations = cfg.collect.ignore_terminations
    env_cfg.control_mode = control_mode
    return env_cfg


# The runner keys a stage decides (where its run starts and resumes), not the job's runner group.
_STAGE_RUNNER_KEYS = ("resume_dir", "init_from", "save_interval", "progress")


def _ppo_config(
    cfg: DictConfig, ppo_dir: Path, groups: Sequence[str], overrides: Sequence[str]
) -> PPORunConfig:
    """A stage's PPO config, run in ``ppo_dir``.

    Composed from ``configs/ppo.yaml`` with the ``init`` group of ``cfg.ppo_init``, the
    stage's other group choices (``groups``) and the user's ``overrides``; then the job's
    runner (``cfg.runner``: where the envs step, not where the run starts), seed, frame size
    and progress bar (values the job or a stage sets win over the same keys in ``overrides``).
    The stage's own interrupted run is finished; otherwise the ``init`` group says where to
    start.
    """
    choices = [f"init={cfg.ppo_init}", f"runner={cfg.runner.name}", *groups]
    cluster = {k: v for k, v in cfg.runner.items() if k not in _STAGE_RUNNER_KEYS}
    composed = load_config("ppo", [*choices, *overrides])
    ppo_cfg = make_ppo_config(OmegaConf.merge(composed, {"runner": cluster}))
    ppo_cfg.seed = cfg.seed
    ppo_cfg.env.image_size = cfg.collect.image_size
    ppo_cfg.runner.progress = True
    if checkpoint_path(ppo_dir).is_file():
        ppo_cfg.runner.resume_dir = str(ppo_dir)
    return ppo_cfg


def _stage_collect(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    data_dir = run_dir / "data"
    if cfg.collect.policy == "scripted":
        counts = collect_scripted(
            cfg.collect, _env_cfg(cfg, SCRIPTED_CONTROL_MODE), str(data_dir), cfg.seed
        )
    elif cfg.collect.policy == "ppo":
        c = cfg.collect
        ppo_dir = run_dir / "collect_ppo"
        ppo_cfg = _ppo_config(cfg, ppo_dir, [], c.ppo_overrides)
        ppo_cfg.collect.enabled = True
        ppo_cfg.collect.save_dir = str(data_dir)
        ppo_cfg.collect.target_success = c.target_success
        ppo_cfg.collect.target_failure = c.target_failure
        ppo_cfg.collect.frames_after_success = c.frames_after_success
        ppo_cfg.env.ignore_terminations = c.ignore_terminations
        ppo_cfg.env.max_episode_steps = c.max_episode_steps
        train_ppo(ppo_cfg, ppo_dir)
        recorder = EpisodeRecorder(data_dir, c.target_success, c.target_failure)
        counts = recorder.counts
        recorder.close()
    else:
        raise ValueError(f"collect.policy must be 'scripted' or 'ppo', got {cfg.collect.policy!r}.")
    missing = {k for k, v in counts.items() if v < cfg.collect[f"target_{k}"]}
    if missing:
        raise RuntimeError(f"collection ended before the targets were met: {counts}")
    return {"counts": counts, "data_dir": str(data_dir)}


def _stage_train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    train_cfg = OmegaConf.merge(
        load_config("train_reward"),
        cfg.train,
        {
            "data_path": str(run_dir / "data"),
            "save_dir": str(run_dir / "reward_model"),
            "seed": cfg.seed,
        },
    )
    result = train_reward_model(train_cfg)
    return {
        "checkpoint": str(result.best_path),
        "threshold": result.threshold,
        "metrics": result.metrics,
        "epochs": len(result.history),
        "data": {k: v for k, v in result.data.items() if isinstance(v, (int, float, str))},
    }


def _stage_export(cfg: DictConfig, run_dir: Path, reward_checkpoint: str) -> dict[str, Any]:
    """ONNX exports of the reward model (fp32, int8), parity-checked on the run's episodes.

    PPO's ``backend="auto"`` then scores with the fastest export that passed (int8 on a CPU)
    or with torch when none did. An export of these weights already on disk is kept.
    """
    out_dir = run_dir / "reward_export"
    model = ResNetRewardModel.load(reward_checkpoint)
    options = {k: v for k, v in cfg.export.items() if k != "enabled"}
    e = OmegaConf.merge(load_config("export_reward"), options)
    manifest = export_checkpoint(model, out_dir, run_dir / "data", e)
    keys = ("passed", "agreement", "ms_per_chunk")
    return {
        "export_dir": str(out_dir),
        "backends": {
            name: {k: entry[k] for k in keys if k in entry}
            for name, entry in manifest["backends"].items()
        },
    }


def _success_rate(ppo_cfg: PPORunConfig, checkpoint: str | None, episodes: int) -> float:
    """Deterministic success rate of a PPO checkpoint (or a fresh policy) on the sim."""
    env = make_env(ppo_cfg.env, num_envs=1)
    try:
        torch.manual_seed(ppo_cfg.seed)
        obs_dim = env.observation_spec["observation"].shape[-1]
        if checkpoint:
            actor = load_actor(checkpoint, env.action_spec_unbatched, expect={"obs_dim": obs_dim})
        else:
            actor, _ = make_ppo_models(obs_dim, env.action_spec_unbatched, ppo_cfg.ppo.hidden_sizes)
        return evaluate(actor, env, episodes, seed=ppo_cfg.seed + 10_000)["eval/success_once"]
    finally:
        env.close()


def _stage_ppo(
    cfg: DictConfig, run_dir: Path, reward_checkpoint: str, export_dir: str | None
) -> dict[str, Any]:
    ppo_dir = run_dir / "ppo"
    ppo_cfg = _ppo_config(cfg, ppo_dir, ["reward=resnet"], cfg.ppo_overrides)
    ppo_cfg.reward.resnet.checkpoint_path = reward_checkpoint
    if export_dir is not None:
        ppo_cfg.reward.export_dir = export_dir
    before = _success_rate(ppo_cfg, ppo_cfg.runner.init_from, cfg.eval_episodes)
    metrics = train_ppo(ppo_cfg, ppo_dir)
    after = _success_rate(ppo_cfg, str(checkpoint_path(ppo_dir)), cfg.eval_episodes)
    return {
        "success_before": before,
        "success_after": after,
        "frames": ppo_cfg.ppo.total_frames,
        "last_metrics": metrics,
        "log_dir": str(ppo_dir / "logs"),
        "reward_backend": load_checkpoint(checkpoint_path(ppo_dir), expect={}).get(
            "reward_backend"
        ),
    }


def _stage_ppo_dense(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The comparison arm: the learned-reward run's start, seed and frames on the env's dense
    reward (state only, so it costs a fraction of the learned run); the report sets it beside."""
    ppo_dir = run_dir / "ppo_dense"
    overrides = [o for o in cfg.ppo_overrides if not o.lstrip("+~").startswith("reward.")]
    ppo_cfg = _ppo_config(cfg, ppo_dir, [], overrides)
    metrics = train_ppo(ppo_cfg, ppo_dir)
    return {
        "success_after": _success_rate(ppo_cfg, str(checkpoint_path(ppo_dir)), cfg.eval_episodes),
        "frames": ppo_cfg.ppo.total_frames,
        "last_metrics": metrics,
    }


def _run_stage(
    name: str, run_dir: Path, state: dict[str, Any], fn: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    done = state["stages"].get(name)
    if done and done.get("complete"):
        print(f"[{name}] reused from {run_dir} (finished earlier)")
        return done
    log_file = run_dir / f"{name}.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    index = STAGES.index(name) + 1
    print(f"[{index}/{len(STAGES)}] {name} ... (log: {log_file})")
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:
        log.exception("stage %s failed", name)
        raise StageError(f"stage '{name}' failed: {err} (log: {log_file})") from err
    finally:
        root.removeHandler(handler)
        handler.close()
    seconds = time.perf_counter() - start + (done or {}).get("seconds", 0.0)
    state["stages"][name] = {**result, "complete": True, "seconds": seconds}
    _save_state(run_dir, state)
    print(f"[{index}/{len(STAGES)}] {name} done in {seconds / 60:.1f} min")
    return state["stages"][name]


def run_pipeline(cfg: DictConfig) -> Path:
    """Run (or finish) every stage; return the run folder holding ``report.md``."""
    run_dir = find_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(run_dir, cfg.preset_name)
    state["config"] = OmegaConf.to_container(cfg, resolve=True)
    _save_state(run_dir, state)
    print(f"pipeline ({cfg.preset_name} preset) in {run_dir}")
    _run_stage("collect", run_dir, state, lambda: _stage_collect(cfg, run_dir))
    trained = _run_stage("train", run_dir, state, lambda: _stage_train(cfg, run_dir))
    checkpoint, export_dir = trained["checkpoint"], None
    if cfg.export.enabled:
        exported = _run_stage(
            "export", run_dir, state, lambda: _stage_export(cfg, run_dir, checkpoint)
        )
        export_dir = exported["export_dir"]
    else:
        index = STAGES.index("export") + 1
        print(f"[{index}/{len(STAGES)}] export skipped (export.enabled=false)")
    _run_stage("ppo", run_dir, state, lambda: _stage_ppo(cfg, run_dir, checkpoint, export_dir))
    if cfg.dense_arm:
        _run_stage("ppo_dense", run_dir, state, lambda: _stage_ppo_dense(cfg, run_dir))
    model = ResNetRewardModel.load(checkpoint)
    _run_stage("report", run_dir, state, lambda: write_report(run_dir, state, model))
    state["complete"] = True
    _save_state(run_dir, state)
    print(f"report: {run_dir / 'report.md'}")
    return run_dir
