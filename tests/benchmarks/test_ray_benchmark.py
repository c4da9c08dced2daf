"""The Ray runner: env frames/s and reward frames/s for 1, 2 and 4 remote collectors, in one run.

Each collector is a Ray actor stepping one CPU env; the learner (this process) takes a batch of
``STEPS`` steps from every collector. The reward benchmark renders every frame and scores it in
the one shared reward model actor (the float32 torch backend, chunks of 256), as
``scripts/ppo.py runner=ray reward=resnet`` does. Ratios are to 1 collector; memory is what the
machine's used memory rose to over the run (Ray's processes are not this process's children).

pytest --benchmark-only tests/benchmarks/test_ray_benchmark.py -s
"""

import time

import pytest
import torch

from torchrl_reward.distributed import RemoteRewardTransform, ray_session, start_reward_actor
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.ppo.config import make_ppo_config
from torchrl_reward.ppo.models import make_ppo_models
from torchrl_reward.ppo.ray_runner import RayRollouts

pytestmark = [pytest.mark.slow, pytest.mark.ray]

STEPS = 50  # per env and batch: one episode
COLLECTORS = (1, 2, 4)
IMAGE_SIZE = 128


def _used_mib() -> float:
    """The machine's used memory (MemTotal - MemAvailable), MiB."""
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    kib = int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])
    return kib / 1024


def _config(num_collectors: int):
    composed = load_config(
        "ppo",
        [
            "runner=ray",
            f"runner.num_collectors={num_collectors}",
            f"runner.num_cpus={max(COLLECTORS) + 2}",  # logical CPUs: 2 cores oversubscribed
            "runner.object_store_mb=300",
            "env.num_envs=1",
            f"env.image_size={IMAGE_SIZE}",
        ],
    )
    return make_ppo_config(composed)


def _rollouts(cfg, pixels: bool) -> RayRollouts:
    """Started remote collectors of a small policy."""
    rollouts = RayRollouts(cfg, pixels=pixels)
    spec = rollouts.env
    actor, _ = make_ppo_models(
        spec.observation_spec["observation"].shape[-1],
        spec.action_spec_unbatched,
        hidden_sizes=[64, 64],
        device=torch.device("cpu"),
    )
    rollouts.make_collector(actor, rollouts.num_collectors * STEPS, torch.device("cpu"))
    return rollouts


def _measure(best_seconds, *, pixels: bool, reward_path=None) -> dict[int, dict[str, float]]:
    """Best seconds per batch (and of its scoring) for each collector count, and memory."""
    results = {}
    for n in COLLECTORS:
        cfg = _config(n)
        base = _used_mib()
        peak = [base]
        with ray_session(cfg.runner):
            transform = None
            if reward_path is not None:
                actor = start_reward_actor(cfg.runner.reward_actor, reward_path, backend="torch")
                transform = RemoteRewardTransform(actor, reward_path, device="cpu")
            rollouts = _rollouts(cfg, pixels)
            batches = rollouts.batches()
            score_s = []

            def step(batches=batches, transform=transform, score_s=score_s, peak=peak):
                data = next(batches)
                if transform is not None:
                    start = time.perf_counter()
                    transform(data)
                    score_s.append(time.perf_counter() - start)
                peak.append(_used_mib())

            try:
                batch_s = best_seconds(step, rounds=2)
            finally:
                rollouts.close()
        frames = n * STEPS
        results[n] = {"frames_per_s": frames / batch_s, "added_mib": max(peak) - base}
        if score_s:
            results[n]["reward_frames_per_s"] = frames / min(score_s)
    return results


def _report(benchmark, results: dict[int, dict[str, float]]) -> None:
    one = results[1]
    for n, row in results.items():
        for key, value in row.items():
            benchmark.extra_info[f"{key}_{n}_collectors"] = round(value, 1)
        benchmark.extra_info[f"speedup_{n}_vs_1"] = round(
            row["frames_per_s"] / one["frames_per_s"], 2
        )
    print({k: v for k, v in benchmark.extra_info.items()})


def test_ray_collectors_env_frames_per_second(benchmark, best_seconds):
    """State-only envs: what the collectors themselves add."""
    results = benchmark.pedantic(
        lambda: _measure(best_seconds, pixels=False), rounds=1, iterations=1
    )
    _report(benchmark, results)


def test_ray_collectors_with_the_reward_actor(benchmark, best_seconds, tmp_path):
    """Every frame rendered and scored by the one shared reward actor (float32 torch)."""
    path = ResNetRewardModel(image_size=IMAGE_SIZE).save(tmp_path / "reward.pt")
    results = benchmark.pedantic(
        lambda: _measure(best_seconds, pixels=True, reward_path=path), rounds=1, iterations=1
    )
    _report(benchmark, results)
