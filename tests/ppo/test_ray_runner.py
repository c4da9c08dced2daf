"""``runner=ray``: PPO with remote collectors on a local Ray cluster and the real CPU env."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import torch

from torchrl_reward.distributed import ray_session
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.ppo import RenderOptions, make_ppo_config, train_ppo
from torchrl_reward.ppo.checkpoint import checkpoint_path
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.ppo.ray_runner import SEED_STRIDE, RayRollouts, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.ray]

LOGIT = 2.0
P_SUCCESS = torch.sigmoid(torch.tensor(LOGIT)).item()

# 2 collectors x 1 env, 10-step episodes: one episode per collector and iteration.
SMALL = [
    "runner=ray",
    "runner.num_collectors=2",
    "runner.num_cpus=3",
    "runner.object_store_mb=200",
    "runner.progress=false",
    "runner.save_interval=1",
    "env.num_envs=1",
    "env.max_episode_steps=10",
    "ppo.num_steps=10",
    "ppo.num_epochs=1",
    "ppo.num_minibatches=2",
    "ppo.hidden_sizes=[32,32]",
    "eval.interval=0",
]


@pytest.mark.parametrize(("speed", "rendered"), [(1e3, True), (1e-4, False)])
def test_worker_env_renders_the_frames_the_run_asks_for(speed, rendered):
    """A collector's envs take the run's render options (here the still-arm gate)."""
    cfg = make_ppo_config(load_config("ppo", [*SMALL, "env.image_size=64"]))
    env = worker_env(cfg.env, None, 0, pixels=True, render=RenderOptions(max_joint_speed=speed))
    try:
        data = env.rollout(3)
    finally:
        env.close()
    flagged = data["next", "rendered"].flatten()
    drawn = data["next", "pixels"].flatten(0, -4).flatten(1).amax(1) > 0  # not left black
    assert flagged.tolist() == drawn.tolist() == [rendered] * 3


def test_weights_reach_every_collector_and_a_dead_one_stops_the_run():
    cfg = make_ppo_config(load_config("ppo", SMALL))
    with ray_session(cfg.runner):
        rollouts = RayRollouts(cfg, pixels=False)
        spec = rollouts.env
        actor, _ = make_ppo_models(
            spec.observation_spec["observation"].shape[-1],
            spec.action_spec_unbatched,
            hidden_sizes=[32, 32],
            device=torch.device("cpu"),
        )
        try:
            rollouts.make_collector(actor, 20, torch.device("cpu"))
            batches = rollouts.batches()
            for version in (1, 2, 3):
                data = next(batches)
                assert data.batch_size == (2, 1, 10)  # collectors, envs, steps
                rollouts.check_batch(data)
                assert rollouts.worker_versions() == [version, version]
                rollouts.publish_weights()
            assert rollouts.worker_versions() == [4, 4]
            with pytest.raises(RuntimeError, match="weight hand-over failed"):
                rollouts.check_batch(data)  # stamped with version 3: stale now
            ray.kill(rollouts._collector.remote_collectors[0])
            with pytest.raises(RuntimeError, match=r"(?s)collector died.*runner.resume_dir"):
                next(batches)
        finally:
            rollouts.close()
    assert not ray.is_initialized()


def test_shared_reward_actor_and_one_episode_folder(tmp_path, constant_reward_model):
    """The reward actor's rewards replace the env's; both collectors record into one folder
    with distinct ids, and the run stops at the global target."""
    model_path = constant_reward_model(LOGIT).save(tmp_path / "reward.pt")
    save_dir = tmp_path / "episodes"
    cfg = load_config(
        "ppo",
        [
            *SMALL,
            "ppo.total_frames=200",
            "env.image_size=64",
            "reward=resnet",
            f"reward.resnet.checkpoint_path={model_path}",
            "reward.chunk_size=8",
            "collect.enabled=true",
            f"collect.save_dir={save_dir}",
            "collect.target_success=0",
            "collect.target_failure=3",
        ],
    )
    metrics = train_ppo(cfg, tmp_path / "run")
    assert metrics["rollout/rewards"] == pytest.approx(P_SUCCESS, abs=1e-6)  # the model's
    assert metrics["env/episode_return"] == pytest.approx(10 * P_SUCCESS, abs=1e-5)
    assert "reward_model/fpr" in metrics
    assert metrics["collect/failure"] == 3  # 2 episodes per iteration, yet exactly the target
    files = sorted((save_dir / "failure").glob("episode_*.pkl"))
    assert len(files) == 3 and not list((save_dir / "success").glob("*.pkl"))
    records = [pickle.loads(f.read_bytes()) for f in files]
    assert len({r["episode_id"] for r in records}) == 3
    assert {r["seed"] for r in records} == {cfg.seed, cfg.seed + SEED_STRIDE}  # both collectors
    state = torch.load(tmp_path / "run/checkpoints/ppo_last.pt", weights_only=False)
    assert state["reward_backend"] == "ray-torch" and state["iteration"] == 2
    assert not ray.is_initialized()


def _kill_collector_processes() -> int:
    """SIGKILL every process Ray titled ``ray::Collector...`` (the collector actors)."""
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::Collector"):
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    return killed


def test_a_run_whose_collector_is_killed_stops_clearly_and_resumes(tmp_path):
    """A collector process killed mid-run (the run in a process of its own) stops the run with
    an error naming runner.resume_dir; resuming from its checkpoint finishes the budget."""
    run_dir = tmp_path / "run"
    overrides = [*SMALL, "ppo.total_frames=200"]
    script = Path(__file__).parents[2] / "scripts" / "ppo.py"
    run = subprocess.Popen(
        [sys.executable, str(script), *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not checkpoint_path(run_dir).is_file():
            assert run.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.5)
        assert _kill_collector_processes() >= 1
        _, stderr = run.communicate(timeout=180)
    finally:
        run.kill()
    assert run.returncode != 0
    assert "collector died" in stderr and "runner.resume_dir" in stderr
    stopped = torch.load(checkpoint_path(run_dir), weights_only=False)
    assert 0 < stopped["collected_frames"] < 200
    cfg = load_config("ppo", [*overrides, f"runner.resume_dir={run_dir}"])
    train_ppo(cfg, run_dir)
    finished = torch.load(checkpoint_path(run_dir), weights_only=False)
    assert finished["collected_frames"] == 200 and finished["iteration"] == 10
    assert not ray.is_initialized()
