"""PPO on a ManiSkill task with TorchRL parts: Collector, GAE, ClipPPOLoss, replay buffer.

The reward is the env's own (dense or sparse), or a learned success classifier applied to every
collected batch (``reward=resnet``); episodes can be recorded for the classifier while training
(``collect.enabled=true``). ``train_ppo`` is what ``scripts/ppo.py`` runs; tests call it too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import tqdm
from omegaconf import DictConfig
from tensordict import TensorDictBase
from torchrl import timeit
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import EnvBase, ExplorationType, TransformedEnv, set_exploration_type
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE
from torchrl.record.loggers import Logger, get_logger

from torchrl_reward.data import EpisodeRecorder, make_recorder
from torchrl_reward.distributed import RemoteRewardTransform, ray_session, start_reward_actor
from torchrl_reward.ppo.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from torchrl_reward.ppo.config import PPOHyperparams, PPORunConfig, RewardConfig, make_ppo_config
from torchrl_reward.ppo.envs import RenderOptions, make_env
from torchrl_reward.ppo.metrics import EpisodeStats
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.ppo.ray_runner import RayRollouts
from torchrl_reward.ppo.refresh import RewardRefresh
from torchrl_reward.ppo.rollouts import LocalRollouts, Rollouts
from torchrl_reward.ppo.warmstart import warm_start
from torchrl_reward.transforms import RewardTransform, agreement
from torchrl_reward.transforms.agreement import frame_label, truth
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


def deterministic_episodes(
    actor: torch.nn.Module, env: EnvBase, num_episodes: int, seed: int | None = None
) -> Iterator[TensorDictBase]:
    """Yield ``num_episodes`` rollouts of the deterministic policy, each to its first done.

    With ``seed`` the env is seeded first, so every call plays the same episodes (evaluation
    points and runs then differ by their policies only); without it the env's episodes go on.
    """
    if seed is not None:
        env.set_seed(seed)
    for _ in range(num_episodes):
        # Per episode: a context held across a yield would leak into the caller's code.
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            rollout = env.rollout(10_000, actor, break_when_any_done=True)
        yield rollout


def evaluate(
    actor: torch.nn.Module, env: EnvBase, num_episodes: int, seed: int | None = None
) -> dict[str, float]:
    """Deterministic-policy episodes on a separate env (:func:`deterministic_episodes`):
    success rates and return."""
    once, at_end, returns = [], [], []
    for rollout in deterministic_episodes(actor, env, num_episodes, seed):
        success = rollout["next", "success"].reshape(rollout.shape[0], -1)
        once.append(success.any(-1).float())
        at_end.append(success[:, -1].float())
        returns.append(rollout["next", "reward"].reshape(rollout.shape[0], -1).sum(-1))
    return {
        "eval/success_once": torch.cat(once).mean().item(),
        "eval/success_at_end": torch.cat(at_end).mean().item(),
        "eval/episode_return": torch.cat(returns).mean().item(),
    }


def _make_logger(cfg: PPORunConfig, run_dir: Path) -> Logger | None:
    if not cfg.logger.backend:
        return None
    return get_logger(cfg.logger.backend, logger_name=str(run_dir), experiment_name="logs")


def make_reward_transform(reward_cfg: RewardConfig) -> RewardTransform:
    """The ``reward=resnet`` config group as a :class:`RewardTransform` for collected batches."""
    return RewardTransform(**reward_transform_kwargs(reward_cfg))


def reward_transform_kwargs(reward_cfg: RewardConfig) -> dict[str, Any]:
    """:class:`RewardTransform`'s arguments from the ``reward=resnet`` group, checked."""
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
    final_steps = reward_cfg.final_steps
    if final_steps < 1 or (final_steps > 1 and not reward_cfg.terminal_only):
        raise ValueError(
            f"reward.final_steps={final_steps}: it counts the final frames scored per episode "
            "with reward.terminal_only=true (1: the last frame only)."
        )
    speed = reward_cfg.render_max_joint_speed
    if speed is not None and (reward_cfg.terminal_only or not speed > 0):
        raise ValueError(
            f"reward.render_max_joint_speed={speed}: it gates a per-step reward's renders by the "
            "arm's joint speed (> 0 rad/s); with reward.terminal_only the env already renders "
            "only final frames."
        )
    return dict(
        checkpoint_path=reward_cfg.resnet.checkpoint_path,
        mode=reward_cfg.mode,
        output=reward_cfg.output,
        threshold=reward_cfg.threshold,
        terminal_only=reward_cfg.terminal_only,
        # Only some frames are rendered (the final steps, or the static ones): the env marks them.
        score_key="rendered" if final_steps > 1 or speed is not None else None,
        env_weight=reward_cfg.env_weight,
        model_weight=reward_cfg.model_weight,
        chunk_size=reward_cfg.chunk_size,
        device=reward_cfg.device,
        strict=reward_cfg.strict,
        backend=reward_cfg.backend,
        export_dir=reward_cfg.export_dir,
        backend_kwargs=dict(reward_cfg.backend_kwargs),
        reload_on_change=reward_cfg.reload_on_change,
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
    # A terminal reward is judged on the frames it scores; a per-step one on every frame (the
    # frames it skips, arm moving, are its calls of failure).
    if scored is not None and transform.terminal_only:
        pred, true = pred[scored], true[scored]
    stats = agreement(pred, true)
    metrics = {
        f"reward_model/{k}": float(stats[k]) for k in ("precision", "recall", "fpr", "accuracy")
    }
    if scored is not None:  # the share of frames rendered and scored: what rendering costs
        metrics["reward_model/scored_share"] = float(scored.float().mean())
    # The decision threshold these figures (and a binary reward) used: a refresh changes it.
    metrics["reward_model/threshold"] = float(transform.threshold)
    return metrics


def _rendering(
    cfg: PPORunConfig, reward_transform: RewardTransform | None
) -> tuple[bool, RenderOptions]:
    """Whether the run's envs render frames, and which. Frames are rendered only when something
    looks at them: the recorder or the learned reward. Of those, only an episode's final frames
    when only those are ever scored (a terminal-only learned reward, ``reward.final_steps`` of
    them, and no recording), and only a still arm's with ``reward.render_max_joint_speed``.
    Rendering is most of a CPU step's cost: BENCHMARKS.md has what each choice saves."""
    if reward_transform is None or cfg.collect.enabled:
        return cfg.collect.enabled, RenderOptions()
    if reward_transform.terminal_only:
        return True, RenderOptions(frames="done", window=cfg.reward.final_steps)
    return True, RenderOptions(max_joint_speed=cfg.reward.render_max_joint_speed)


def train_ppo(cfg: PPORunConfig | DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train PPO as configured; logs, checkpoints and returns the last metrics.

    ``cfg`` is a :class:`PPORunConfig` or a composed ``configs/ppo.yaml``, checked and
    converted by :func:`make_ppo_config`.

    Learned reward -> env (and recorder) -> actor, critic, optimiser -> start (resume, init or
    warm start) -> collector, buffer, GAE, loss -> loop: collect, score, update, evaluate,
    log, checkpoint, and at ``reward.refresh.at_frames`` refresh the learned reward on the
    policy's own episodes (:class:`~torchrl_reward.ppo.refresh.RewardRefresh`). ``runner=ray``
    runs all of it inside a Ray cluster (joined or started here), with the collectors and the
    reward model as Ray actors.
    """
    cfg = make_ppo_config(cfg)
    with ray_session(cfg.runner):
        return _train_ppo(cfg, Path(run_dir))


def _train_ppo(cfg: PPORunConfig, run_dir: Path) -> dict[str, float]:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, strict=True, owner="ppo")
    p = cfg.ppo

    refresh = RewardRefresh(cfg, run_dir) if cfg.reward.refresh.at_frames else None
    reward_transform = _make_learned_reward(cfg)
    rollouts = _make_rollouts(cfg, reward_transform)
    recorder = rollouts.recorder
    learner = _make_learner(cfg, rollouts.env, device)
    try:
        start = _initialise(cfg, learner, _reward_name(cfg))
        if refresh is not None:  # a resumed run scores with its latest refresh, or makes it
            refresh.restore(start.progress.collected, reward_transform)
            refresh.run_due(start.progress.collected, learner.actor, reward_transform)
        batch_envs = rollouts.num_envs
        frames_per_batch = batch_envs * p.num_steps
        rollouts.make_collector(learner.actor, frames_per_batch, device)
    except Exception:
        rollouts.close()  # no worker processes left behind by a bad checkpoint or warm start
        raise
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(frames_per_batch, device=device),
        sampler=SamplerWithoutReplacement(),
        batch_size=max(1, frames_per_batch // p.num_minibatches),
    )
    advantage = GAE(
        gamma=p.gamma, lmbda=p.gae_lambda, value_network=learner.critic, average_gae=False
    )
    if p.bootstrap_success:
        advantage.set_keys(terminated=_NO_BOOTSTRAP)
    loss_module = ClipPPOLoss(
        actor_network=learner.actor,
        critic_network=learner.critic,
        clip_epsilon=p.clip_epsilon,
        entropy_coeff=p.entropy_coef,
        critic_coeff=p.critic_coef,
        normalize_advantage=True,
    )
    logger = _make_logger(cfg, run_dir)
    _log_scalars(logger, start.warm_metrics, step=0)
    eval_env = make_env(cfg.env, num_envs=1) if cfg.eval.interval else None
    stats = EpisodeStats(batch_envs)
    metrics: dict[str, float] = {}
    progress = replace(start.progress)
    pbar = _ProgressBar(cfg, recorder, progress)
    collector_iter = rollouts.batches()
    timeit.erase()  # nothing timed before the loop counts toward its first iteration
    run_timer = timeit("ppo/run").start()
    try:
        while progress.collected < progress.target_frames:
            with timeit("collecting"):
                data = next(collector_iter)
            rollouts.check_batch(data)
            data = data.reshape(batch_envs, -1)
            progress.iteration += 1
            progress.collected += data.numel()
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
                train_actor = progress.collected - start.progress.collected > p.critic_warmup_frames
                metrics.update(
                    _update(data, advantage, loss_module, learner.optim, buffer, p, train_actor)
                )
                rollouts.publish_weights()
            if eval_env is not None and progress.iteration % cfg.eval.interval == 0:
                with timeit("eval"):
                    metrics.update(
                        evaluate(learner.actor, eval_env, cfg.eval.num_episodes, cfg.eval.seed)
                    )
            metrics.update(_time_metrics(data.numel(), start.elapsed + run_timer.elapsed()))
            if recorder is not None:
                metrics.update({f"collect/{k}": float(v) for k, v in recorder.counts.items()})
            _log_scalars(logger, metrics, step=progress.collected)
            pbar.update(progress.collected, metrics)
            stop = recorder is not None and recorder.done and cfg.collect.stop_when_done
            refreshing = refresh is not None and refresh.due(progress.collected)
            if (
                progress.iteration % cfg.runner.save_interval == 0
                or progress.collected >= progress.target_frames
                or stop
                or refreshing  # the policy the refresh records, which a crash resumes from
            ):
                state = _checkpoint_state(cfg, learner, progress, reward_transform, metrics)
                save_checkpoint(checkpoint_path(run_dir), state)
            if refreshing:
                refreshed = refresh.run_due(progress.collected, learner.actor, reward_transform)
                _log_scalars(logger, refreshed, step=progress.collected)
            if stop:
                log.info("Collection targets met: %s", recorder.progress())
                break
    finally:
        pbar.close()
        rollouts.close()
        if eval_env is not None and not eval_env.is_closed:
            eval_env.close()
    return metrics


def _reward_name(cfg: PPORunConfig) -> str:
    """The reward PPO optimises, as checkpoints record it: ``resnet`` or the env's mode."""
    return "resnet" if cfg.reward.use_reward_model else cfg.env.reward_mode


def _make_learned_reward(cfg: PPORunConfig) -> RewardTransform | None:
    """The learned reward of ``reward.use_reward_model``, else ``None`` (the env's reward)."""
    if not cfg.reward.use_reward_model:
        return None
    if cfg.runner.name == "ray":
        kwargs = reward_transform_kwargs(cfg.reward)
        actor_cfg = cfg.runner.reward_actor
        actor = start_reward_actor(
            actor_cfg,
            kwargs["checkpoint_path"],
            chunk_size=kwargs["chunk_size"],
            backend=kwargs["backend"],
            export_dir=kwargs["export_dir"],
            **kwargs["backend_kwargs"],
        )
        reward_transform = RemoteRewardTransform(
            actor, name=actor_cfg.name, timeout_s=actor_cfg.timeout_s, **kwargs
        )
    else:
        reward_transform = make_reward_transform(cfg.reward)
    if reward_transform.score_key and cfg.collect.enabled:
        raise ValueError(
            "reward.final_steps > 1 and reward.render_max_joint_speed score the frames rendered "
            "for them alone, but recording (collect.enabled=true) renders every frame: record "
            "in a run of its own."
        )
    label = frame_label(reward_transform.model)
    if cfg.reward.render_max_joint_speed is not None and label != "success":
        raise ValueError(
            f"reward.render_max_joint_speed pays 0 wherever the arm moves, which only a "
            f"'success' model (success needs a static arm) agrees with; this checkpoint's "
            f"frame_label is {label!r}."
        )
    return reward_transform


def _make_train_env(
    cfg: PPORunConfig, reward_transform: RewardTransform | None
) -> tuple[EnvBase, EpisodeRecorder | None]:
    """The seeded env PPO collects from and, with ``collect.enabled``, the recorder on it."""
    pixels, render = _rendering(cfg, reward_transform)
    env = make_env(cfg.env, pixels=pixels, render=render)
    recorder = None
    if cfg.collect.enabled:
        recorder = make_recorder({**asdict(cfg.collect), "seed": cfg.seed})
        env = TransformedEnv(env, recorder)
    env.set_seed(cfg.seed)
    return env, recorder


def _make_rollouts(cfg: PPORunConfig, reward_transform: RewardTransform | None) -> Rollouts:
    """The runner's envs and collector: this process's (``runner=local``) or Ray actors'."""
    if cfg.runner.name == "ray":
        pixels, render = _rendering(cfg, reward_transform)
        return RayRollouts(cfg, pixels=pixels, render=render)
    return LocalRollouts(*_make_train_env(cfg, reward_transform))


@dataclass
class _Learner:
    """The actor, the critic, their optimiser, and the identity a checkpoint must match."""

    actor: torch.nn.Module
    critic: torch.nn.Module
    optim: torch.optim.Optimizer
    identity: dict[str, Any]  # env, control mode, network sizes: checked on resume


def _make_learner(cfg: PPORunConfig, env: EnvBase, device: torch.device) -> _Learner:
    """Fresh actor and critic sized for ``env``, with one Adam over both."""
    p = cfg.ppo
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
    return _Learner(actor, critic, optim, identity)


@dataclass
class _Progress:
    """How far a run is: frames and iterations done, and the frames it runs to."""

    collected: int
    iteration: int
    target_frames: int


@dataclass
class _Start:
    """Where a run starts: its progress, its wall time so far, any warm-start metrics."""

    progress: _Progress
    elapsed: float = 0.0
    warm_metrics: dict[str, float] = field(default_factory=dict)


def _initialise(cfg: PPORunConfig, learner: _Learner, reward_name: str) -> _Start:
    """Where training starts.

    ``runner.resume_dir`` continues a run (an interrupted one on the same reward is finished;
    on another reward it is a warm start with a fresh budget and optimiser);
    ``runner.init_from`` starts a new run from a checkpoint's weights; ``warmstart.enabled``
    clones the scripted controller; otherwise the networks start from scratch.
    """
    total = cfg.ppo.total_frames
    source = cfg.runner.resume_dir or cfg.runner.init_from
    if source:
        state = load_checkpoint(source, expect=learner.identity)
        learner.actor.load_state_dict(state["actor"])
        learner.critic.load_state_dict(state["critic"])
    if cfg.runner.resume_dir:
        collected, iteration = state["collected_frames"], state["iteration"]
        if state.get("reward") == reward_name:  # an interrupted run: finish it
            learner.optim.load_state_dict(state["optim"])
            progress = _Progress(collected, iteration, state["target_frames"])
            return _Start(progress, state.get("elapsed", 0.0))
        log.info(
            "Warm start from %s (%s reward) on the %s reward",
            cfg.runner.resume_dir,
            state.get("reward"),
            reward_name,
        )
        return _Start(_Progress(collected, iteration, collected + total))
    if cfg.runner.init_from:
        log.info(
            "New run on the %s reward from %s (trained on the %s reward)",
            reward_name,
            cfg.runner.init_from,
            state.get("reward"),
        )
        return _Start(_Progress(0, 0, total))
    if cfg.warmstart.enabled:
        demo_env = make_env(cfg.env, num_envs=1)
        try:
            demo_env.set_seed(cfg.seed + 20_000)
            metrics = warm_start(
                learner.actor,
                learner.critic,
                demo_env,
                cfg.warmstart,
                control_mode=cfg.env.control_mode,
                max_steps=cfg.env.max_episode_steps,
                gamma=cfg.ppo.gamma,
                seed=cfg.seed,
            )
        finally:
            demo_env.close()
        return _Start(_Progress(0, 0, total), warm_metrics=metrics)
    return _Start(_Progress(0, 0, total))


def _time_metrics(frames: int, elapsed: float) -> dict[str, float]:
    """This iteration's seconds per phase, its collection speed (``time/sps``), the learned
    reward's share of its time, and the run's wall time so far (``time/elapsed``)."""
    times = _pop_times()
    metrics = {**times, "time/sps": frames / max(times.get("time/collecting", 0.0), 1e-9)}
    if "time/compute_model_rewards" in times:
        iteration_s = sum(v for k, v in times.items() if k != "time/eval")
        metrics["time/reward_share"] = times["time/compute_model_rewards"] / iteration_s
    metrics["time/elapsed"] = elapsed
    return metrics


def _log_scalars(logger: Logger | None, metrics: dict[str, float], step: int) -> None:
    """Log every metric at ``step`` (frames collected); no logger (``logger.backend=""``): none."""
    if logger is not None:
        for key, value in metrics.items():
            logger.log_scalar(key, value, step=step)


def _checkpoint_state(
    cfg: PPORunConfig,
    learner: _Learner,
    progress: _Progress,
    reward_transform: RewardTransform | None,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """What ``ppo_last.pt`` holds: the identity a resume checks, weights and optimiser, the
    progress, the reward trained on, the resolved config and the last metrics."""
    return {
        **learner.identity,
        "actor": learner.actor.state_dict(),
        "critic": learner.critic.state_dict(),
        "optim": learner.optim.state_dict(),
        "collected_frames": progress.collected,
        "iteration": progress.iteration,
        "target_frames": progress.target_frames,
        "reward": _reward_name(cfg),
        # The backend that scored the learned reward (what the report names).
        "reward_backend": reward_transform.backend.name if reward_transform is not None else None,
        "config": asdict(cfg),
        "metrics": metrics,
        "elapsed": metrics["time/elapsed"],
    }


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
    p: PPOHyperparams,
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
        if train_actor and p.target_kl is not None and epoch_kl > p.target_kl:
            break
    out = {k: v / max(steps, 1) for k, v in sums.items()}
    out["train/epochs"] = float(epochs)
    return out


class _ProgressBar:
    """tqdm over the frames collected, or over the episodes recorded when recording ends the
    run (the recorder writes none past a target)."""

    def __init__(self, cfg: PPORunConfig, recorder: EpisodeRecorder | None, progress: _Progress):
        by_episodes = recorder is not None and cfg.collect.stop_when_done
        self._recorder = recorder
        self._counter = recorder if by_episodes else None
        self._bar = tqdm.tqdm(
            total=sum(recorder.targets.values()) if by_episodes else progress.target_frames,
            initial=self._position(progress.collected),
            unit="episodes" if by_episodes else "frames",
            disable=not cfg.runner.progress,
        )

    def _position(self, collected: int) -> int:
        return collected if self._counter is None else sum(self._counter.counts.values())

    def update(self, collected: int, metrics: dict[str, float]) -> None:
        self._bar.update(self._position(collected) - self._bar.n)
        self._bar.set_postfix(_postfix(metrics, self._recorder))

    def close(self) -> None:
        self._bar.close()


def _postfix(metrics: dict[str, float], recorder: Any) -> dict[str, str]:
    out = {}
    if "env/success_once" in metrics:
        out["success_once"] = f"{metrics['env/success_once']:.2f}"
    if "eval/success_once" in metrics:
        out["eval"] = f"{metrics['eval/success_once']:.2f}"
    if recorder is not None:
        out["recorded"] = recorder.progress()
    return out
