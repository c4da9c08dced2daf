"""PPO on a ManiSkill task with TorchRL parts: Collector, GAE, ClipPPOLoss, replay buffer.

The reward is the env's own (dense or sparse), or a learned success classifier applied to every
collected batch (``reward=resnet``); episodes can be recorded for the classifier while training
(``collect.enabled=true``). ``train_ppo`` is what ``scripts/ppo.py`` runs; tests call it too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import tqdm
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl import timeit
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import EnvBase, ExplorationType, TransformedEnv, set_exploration_type
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE
from torchrl.record.loggers import Logger, get_logger

from torchrl_reward.data import EpisodeRecorder, make_recorder
from torchrl_reward.ppo.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from torchrl_reward.ppo.envs import make_env
from torchrl_reward.ppo.metrics import EpisodeStats
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.ppo.warmstart import warm_start
from torchrl_reward.transforms import RewardTransform, agreement
from torchrl_reward.transforms.agreement import truth
from torchrl_reward.utils import resolve_device

log = logging.getLogger(__name__)
_NO_BOOTSTRAP = "terminated_not_success"
_LOGGED_LOSS_KEYS = ("loss_objective", "loss_critic", "loss_entropy", "clip_fraction", "kl_approx")
_PHASES = ("collecting", "compute_model_rewards", "training", "eval")


def _pop_times() -> dict[str, float]:
    """Seconds per phase timed with ``timeit`` since the last call, as ``time/<phase>``.

    ``timeit``'s totals are process-wide and ``erase`` zeroes them but keeps their names, so
    only this loop's phases are read, and a phase that did not run (zero) is left out.
    """
    totals = timeit.todict(percall=False)
    timeit.erase()
    return {f"time/{k}": totals[k] for k in _PHASES if totals.get(k, 0.0) > 0.0}


def evaluate(actor: torch.nn.Module, env: EnvBase, num_episodes: int) -> dict[str, float]:
    """Deterministic-policy episodes on a separate env: success rates and return."""
    once, at_end, returns = [], [], []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(num_episodes):
            rollout = env.rollout(10_000, actor, break_when_any_done=True)
            success = rollout["next", "success"].reshape(rollout.shape[0], -1)
            once.append(success.any(-1).float())
            at_end.append(success[:, -1].float())
            returns.append(rollout["next", "reward"].reshape(rollout.shape[0], -1).sum(-1))
    return {
        "eval/success_once": torch.cat(once).mean().item(),
        "eval/success_at_end": torch.cat(at_end).mean().item(),
        "eval/episode_return": torch.cat(returns).mean().item(),
    }


def _make_logger(cfg: DictConfig, run_dir: Path) -> Logger | None:
    if not cfg.logger.backend:
        return None
    return get_logger(cfg.logger.backend, logger_name=str(run_dir), experiment_name="logs")


def make_reward_transform(reward_cfg: DictConfig) -> RewardTransform:
    """The ``reward=resnet`` config group as a :class:`RewardTransform` for collected batches."""
    if reward_cfg.reward_model_type != "resnet":
        raise ValueError(
            f"reward.reward_model_type={reward_cfg.reward_model_type!r} is not supported; "
            "use 'resnet'."
        )
    if not reward_cfg.resnet.checkpoint_path:
        raise ValueError(
            "reward=resnet needs a trained model: reward.resnet.checkpoint_path=<save_dir>/"
            "reward_model_best.pt (scripts/train_reward.py writes it)."
        )
    final_steps = int(reward_cfg.get("final_steps", 1))
    if final_steps < 1 or (final_steps > 1 and not reward_cfg.terminal_only):
        raise ValueError(
            f"reward.final_steps={final_steps}: it counts the final frames scored per episode "
            "with reward.terminal_only=true (1: the last frame only)."
        )
    return RewardTransform(
        reward_cfg.resnet.checkpoint_path,
        mode=reward_cfg.mode,
        output=reward_cfg.output,
        threshold=reward_cfg.threshold,
        terminal_only=reward_cfg.terminal_only,
        # Only the final steps are rendered: the env marks them (ManiSkillEnv render_window).
        score_key="rendered" if final_steps > 1 else None,
        env_weight=reward_cfg.env_weight,
        model_weight=reward_cfg.model_weight,
        chunk_size=reward_cfg.chunk_size,
        device=reward_cfg.device,
        strict=reward_cfg.strict,
        backend=reward_cfg.backend,
        export_dir=reward_cfg.export_dir,
        backend_kwargs=OmegaConf.to_container(reward_cfg.backend_kwargs),
    )


def reward_agreement(batch: TensorDictBase, transform: RewardTransform) -> dict[str, float]:
    """Online agreement of the model's success (P >= threshold) with the simulator's truth.

    Reward hacking shows up here as it happens: the policy finds frames the model calls success
    while the simulator does not (false positives). With ``terminal_only`` only the scored
    (final) frames count. The truth is what the model was trained on: ``is_obj_placed`` for a
    ``frame_label=placed`` checkpoint, else ``success``.
    """
    pred = batch["next", "model_success_prob"] >= transform.threshold
    true = truth(batch["next"], transform.model)
    scored = transform.scored_frames(batch["next"])
    if scored is not None:
        pred, true = pred[scored], true[scored]
    stats = agreement(pred, true)
    return {
        f"reward_model/{k}": float(stats[k]) for k in ("precision", "recall", "fpr", "accuracy")
    }


def _render_frames(cfg: DictConfig, reward_transform: RewardTransform | None) -> dict[str, Any]:
    """``render_frames="done"`` when only an episode's final frames are ever looked at (a
    terminal-only learned reward, ``reward.final_steps`` of them, and no recording). Rendering is
    most of a CPU step's cost, so the arm then costs about what a state-only arm does."""
    if reward_transform is not None and reward_transform.terminal_only and not cfg.collect.enabled:
        return {"render_frames": "done", "render_window": int(cfg.reward.get("final_steps", 1))}
    return {"render_frames": "all"}


def train_ppo(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train PPO as configured; logs, checkpoints and returns the last metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, strict=True, owner="ppo")
    p = cfg.ppo
    use_model = bool(cfg.reward.get("use_reward_model", False))
    pixels = bool(cfg.collect.enabled) or use_model

    reward_transform = make_reward_transform(cfg.reward) if use_model else None
    if reward_transform is not None and reward_transform.score_key and cfg.collect.enabled:
        raise ValueError(
            "reward.final_steps > 1 scores the frames rendered for it alone, but recording "
            "(collect.enabled=true) renders every frame: record in a run of its own."
        )
    env = make_env(cfg.env, pixels=pixels, **_render_frames(cfg, reward_transform))
    recorder = None
    if cfg.collect.enabled:
        recorder = make_recorder({**cfg.collect, "seed": cfg.seed})
        env = TransformedEnv(env, recorder)
    env.set_seed(cfg.seed)

    obs_dim = env.observation_spec["observation"].shape[-1]
    actor, critic = make_ppo_models(
        obs_dim, env.action_spec_unbatched, hidden_sizes=p.hidden_sizes, device=device
    )
    identity = {
        "env_id": cfg.env.env_id,
        "control_mode": cfg.env.control_mode,
        "obs_dim": obs_dim,
        "action_dim": env.action_spec_unbatched.shape[-1],
        "hidden_sizes": list(p.hidden_sizes),
    }
    optim = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=p.lr, eps=1e-5)
    reward_name = "resnet" if use_model else cfg.env.reward_mode
    try:
        start = _initialise(cfg, actor, critic, optim, identity, reward_name)
    except Exception:
        env.close()  # no worker processes left behind by a bad checkpoint or warm start
        raise

    batch_envs = env.batch_size.numel()
    frames_per_batch = batch_envs * p.num_steps
    collector = Collector(
        env,
        actor,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        device=device,
        auto_register_policy_transforms=False,
    )
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(frames_per_batch, device=device),
        sampler=SamplerWithoutReplacement(),
        batch_size=max(1, frames_per_batch // p.num_minibatches),
    )
    advantage = GAE(gamma=p.gamma, lmbda=p.gae_lambda, value_network=critic, average_gae=False)
    if p.bootstrap_success:
        advantage.set_keys(terminated=_NO_BOOTSTRAP)
    loss_module = ClipPPOLoss(
        actor_network=actor,
        critic_network=critic,
        clip_epsilon=p.clip_epsilon,
        entropy_coeff=p.entropy_coef,
        critic_coeff=p.critic_coef,
        normalize_advantage=True,
    )
    logger = _make_logger(cfg, run_dir)
    if logger is not None:
        for key, value in start.warm_metrics.items():
            logger.log_scalar(key, value, step=0)
    eval_env = make_env(cfg.env, num_envs=1) if cfg.eval.interval else None
    stats = EpisodeStats(batch_envs)
    metrics: dict[str, float] = {}
    collected, iteration, target_frames = start.collected, start.iteration, start.target_frames
    # Recording that ends the run counts episodes toward its targets; otherwise frames.
    by_episodes = recorder is not None and cfg.collect.stop_when_done
    bar_recorder = recorder if by_episodes else None
    pbar = tqdm.tqdm(
        total=sum(recorder.targets.values()) if by_episodes else target_frames,
        initial=_bar_position(bar_recorder, collected),
        unit="episodes" if by_episodes else "frames",
        disable=not cfg.runner.progress,
    )
    collector_iter = iter(collector)
    timeit.erase()  # nothing timed before the loop counts toward its first iteration
    run_timer = timeit("ppo/run").start()
    try:
        while collected < target_frames:
            with timeit("collecting"):
                data = next(collector_iter)
            data = data.reshape(batch_envs, -1)
            iteration += 1
            collected += data.numel()
            metrics = {}
            if reward_transform is not None:
                with timeit("compute_model_rewards"):
                    data = reward_transform(data)
                metrics.update(reward_agreement(data, reward_transform))
            metrics["rollout/rewards"] = data["next", "reward"].mean().item()
            if p.bootstrap_success:
                _mark_no_bootstrap(data)
            metrics.update(stats.update(data))
            with timeit("training"):
                train_actor = collected - start.collected > p.critic_warmup_frames
                metrics.update(_update(data, advantage, loss_module, optim, buffer, p, train_actor))
            if eval_env is not None and iteration % cfg.eval.interval == 0:
                with timeit("eval"):
                    metrics.update(evaluate(actor, eval_env, cfg.eval.num_episodes))
            times = _pop_times()  # seconds per phase of this iteration
            metrics.update(times)
            metrics["time/sps"] = data.numel() / max(times.get("time/collecting", 0.0), 1e-9)
            if "time/compute_model_rewards" in times:
                iteration_s = sum(v for k, v in times.items() if k != "time/eval")
                metrics["time/reward_share"] = times["time/compute_model_rewards"] / iteration_s
            metrics["time/elapsed"] = start.elapsed + run_timer.elapsed()
            if recorder is not None:
                metrics.update({f"collect/{k}": float(v) for k, v in recorder.counts.items()})
            if logger is not None:
                for key, value in metrics.items():
                    logger.log_scalar(key, value, step=collected)
            pbar.update(_bar_position(bar_recorder, collected) - pbar.n)
            pbar.set_postfix(_postfix(metrics, recorder))
            done_recording = recorder is not None and recorder.done
            if (
                iteration % cfg.runner.save_interval == 0
                or collected >= target_frames
                or (done_recording and cfg.collect.stop_when_done)
            ):
                save_checkpoint(
                    checkpoint_path(run_dir),
                    {
                        **identity,
                        "actor": actor.state_dict(),
                        "critic": critic.state_dict(),
                        "optim": optim.state_dict(),
                        "collected_frames": collected,
                        "iteration": iteration,
                        "target_frames": target_frames,
                        "reward": reward_name,
                        # The backend that scored the learned reward (what the report names).
                        "reward_backend": (
                            reward_transform.backend.name if reward_transform is not None else None
                        ),
                        "config": OmegaConf.to_container(cfg, resolve=True),
                        "metrics": metrics,
                        "elapsed": metrics["time/elapsed"],
                    },
                )
            if done_recording and cfg.collect.stop_when_done:
                log.info("Collection targets met: %s", recorder.progress())
                break
    finally:
        pbar.close()
        collector.shutdown()
        if recorder is not None:
            recorder.close()
        if eval_env is not None and not eval_env.is_closed:
            eval_env.close()
    return metrics


@dataclass
class _Start:
    """Where a run starts: frames and iterations done, its frame budget, wall time so far."""

    collected: int
    iteration: int
    target_frames: int
    elapsed: float = 0.0
    warm_metrics: dict[str, float] = field(default_factory=dict)


def _initialise(
    cfg: DictConfig,
    actor: torch.nn.Module,
    critic: torch.nn.Module,
    optim: torch.optim.Optimizer,
    identity: dict[str, Any],
    reward_name: str,
) -> _Start:
    """Where training starts.

    ``runner.resume_dir`` continues a run (an interrupted one on the same reward is finished;
    on another reward it is a warm start with a fresh budget and optimiser);
    ``runner.init_from`` starts a new run from a checkpoint's weights; ``warmstart.enabled``
    clones the scripted controller; otherwise the networks start from scratch.
    """
    total = int(cfg.ppo.total_frames)
    source = cfg.runner.resume_dir or cfg.runner.init_from
    if source:
        state = load_checkpoint(source, expect=identity)
        actor.load_state_dict(state["actor"])
        critic.load_state_dict(state["critic"])
    if cfg.runner.resume_dir:
        collected, iteration = state["collected_frames"], state["iteration"]
        if state.get("reward") == reward_name:  # an interrupted run: finish it
            optim.load_state_dict(state["optim"])
            return _Start(collected, iteration, state["target_frames"], state.get("elapsed", 0.0))
        log.info(
            "Warm start from %s (%s reward) on the %s reward",
            cfg.runner.resume_dir,
            state.get("reward"),
            reward_name,
        )
        return _Start(collected, iteration, collected + total)
    if cfg.runner.init_from:
        log.info("New run from %s (%s reward)", cfg.runner.init_from, state.get("reward"))
        return _Start(0, 0, total)
    if cfg.warmstart.enabled:
        demo_env = make_env(cfg.env, num_envs=1)
        try:
            demo_env.set_seed(cfg.seed + 20_000)
            metrics = warm_start(
                actor,
                critic,
                demo_env,
                cfg.warmstart,
                control_mode=cfg.env.control_mode,
                max_steps=cfg.env.max_episode_steps,
                gamma=cfg.ppo.gamma,
                seed=cfg.seed,
            )
        finally:
            demo_env.close()
        return _Start(0, 0, total, warm_metrics=metrics)
    return _Start(0, 0, total)


def _mark_no_bootstrap(data: TensorDictBase) -> None:
    """Write ``("next", _NO_BOOTSTRAP)``: terminations other than success.

    ManiSkill's PPO baseline bootstraps the value of the final state of every episode,
    successful ones included: success is an absorbing goal state worth ``r / (1 - gamma)``.
    Cutting the value there (the textbook rule) makes a dense reward that pays ~0.9 per step
    near the goal worth more by hovering than by succeeding (1.0 once): with gamma 0.8, PPO
    learns to avoid success.
    """
    terminated = data["next", "terminated"]
    success = data["next", "success"].reshape(terminated.shape)
    data.set(("next", _NO_BOOTSTRAP), terminated & ~success)


def _update(
    data: TensorDictBase,
    advantage: GAE,
    loss_module: ClipPPOLoss,
    optim: torch.optim.Optimizer,
    buffer: TensorDictReplayBuffer,
    p: DictConfig,
    train_actor: bool = True,
) -> dict[str, float]:
    """``num_epochs`` passes of clipped-PPO minibatch updates; GAE recomputed every epoch.

    With ``target_kl`` set, the passes stop after the first whose mean approximate KL to the
    collecting policy exceeds it.

    With ``train_actor=False`` only the critic learns (a warm-up that keeps a cloned or
    pre-trained policy intact until the value estimates behind its advantages make sense).
    """
    sums: dict[str, float] = defaultdict(float)
    steps = epochs = 0
    target_kl = p.get("target_kl")
    for _ in range(p.num_epochs):
        with torch.no_grad():
            advantage(data)
        buffer.empty()
        buffer.extend(data.reshape(-1))
        epochs += 1
        kl_before, steps_before = sums["train/kl_approx"], steps
        for batch in buffer:
            loss = loss_module(batch)
            total = loss["loss_critic"]
            if train_actor:
                total = total + loss["loss_objective"] + loss["loss_entropy"]
            optim.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), p.max_grad_norm)
            optim.step()
            for key in _LOGGED_LOSS_KEYS:
                value = loss.get(key, None)
                if value is not None:
                    sums[f"train/{key}"] += value.detach().mean().item()
            sums["train/grad_norm"] += grad_norm.item()
            steps += 1
        # CleanRL's early stop: a noisy batch must not drag the policy far from the one that
        # collected it.
        epoch_kl = (sums["train/kl_approx"] - kl_before) / max(steps - steps_before, 1)
        if train_actor and target_kl is not None and epoch_kl > target_kl:
            break
    out = {k: v / max(steps, 1) for k, v in sums.items()}
    out["train/epochs"] = float(epochs)
    return out


def _bar_position(recorder: EpisodeRecorder | None, collected: int) -> int:
    """Episodes recorded with a recorder (it writes none past a target), else frames collected."""
    return collected if recorder is None else sum(recorder.counts.values())


def _postfix(metrics: dict[str, float], recorder: Any) -> dict[str, str]:
    out = {}
    if "env/success_once" in metrics:
        out["success_once"] = f"{metrics['env/success_once']:.2f}"
    if "eval/success_once" in metrics:
        out["eval"] = f"{metrics['eval/success_once']:.2f}"
    if recorder is not None:
        out["recorded"] = recorder.progress()
    return out
