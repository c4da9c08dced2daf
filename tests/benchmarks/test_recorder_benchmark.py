"""EpisodeRecorder costs: env-step overhead against the bare env, and bytes on disk per frame.

pytest --benchmark-only tests/benchmarks/test_recorder_benchmark.py
"""

import resource
import time

import pytest
from torchrl.envs import TransformedEnv

from torchrl_reward.data import EpisodeRecorder, load_episode, write_episode
from torchrl_reward.envs import ManiSkillEnv

EPISODE_STEPS = 50  # PickCube's episode length in training
IMAGE_SIZE = 128
ROUND_STEPS = 2 * EPISODE_STEPS  # replayed steps per round of the hook-cost benchmark


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def env():
    env = ManiSkillEnv(
        "PickCube-v1", pixels=True, image_size=IMAGE_SIZE, max_episode_steps=EPISODE_STEPS
    )
    env.set_seed(0)
    env.rollout(5)  # warm up the renderer
    yield env
    env.close()


@pytest.fixture(scope="module")
def episode(env):
    """One real episode (rendered frames compress very differently from noise)."""
    rollout = env.rollout(EPISODE_STEPS, break_when_any_done=False)[0]
    return rollout["next"].set("action", rollout["action"])


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
def test_recording_overhead(benchmark, env, tmp_path, compress):
    """Env rollout with the recorder vs the same env without it, in alternating rounds.

    Each timed round plays one episode and waits for its file (flush), so the write is counted
    in full instead of overlapping the next episode's steps: an upper bound on the steady-state
    overhead. The overhead is the median of the per-pair ratios (recorded round / the bare
    round just before it), which cancels most of the drift of a shared machine.
    """
    recorder = EpisodeRecorder(
        tmp_path, target_success=10**6, target_failure=10**6, compress=compress
    )
    recorded = TransformedEnv(env, recorder)
    bare_times, recorded_times = [], []

    def time_bare_round():  # benchmark setup: untimed by pytest-benchmark, timed here
        start = time.perf_counter()
        env.rollout(EPISODE_STEPS, break_when_any_done=False)
        bare_times.append(time.perf_counter() - start)

    def recorded_round():
        start = time.perf_counter()
        recorded.rollout(EPISODE_STEPS, break_when_any_done=False)
        recorder.flush()
        recorded_times.append(time.perf_counter() - start)

    benchmark.pedantic(recorded_round, setup=time_bare_round, rounds=6, iterations=1)
    ratios = sorted(r / b for r, b in zip(recorded_times, bare_times, strict=True))
    median_ratio = (ratios[2] + ratios[3]) / 2
    benchmark.extra_info["bare_s_per_step"] = sorted(bare_times)[3] / EPISODE_STEPS
    benchmark.extra_info["recorded_s_per_step"] = sorted(recorded_times)[3] / EPISODE_STEPS
    benchmark.extra_info["overhead_pct"] = 100 * (median_ratio - 1)
    benchmark.extra_info["episodes_written"] = sum(recorder.counts.values())
    benchmark.extra_info["peak_rss_mib"] = _peak_rss_mib()
    recorder.close()


def test_recorder_step_cost(benchmark, env, tmp_path):
    """The recorder's own time on the env thread per step, replaying real steps through it.

    Isolates the hook cost (copy, bookkeeping, queue hand-off) from simulator noise; the ratio
    is taken against the bare env step measured in the same test.
    """
    start = time.perf_counter()
    steps = env.rollout(ROUND_STEPS, break_when_any_done=False)
    bare_step = (time.perf_counter() - start) / ROUND_STEPS
    recorder = EpisodeRecorder(tmp_path, target_success=10**6, target_failure=10**6)
    per_step = [(steps[:, t], steps[:, t]["next"]) for t in range(ROUND_STEPS)]

    def replay():
        for tensordict, next_tensordict in per_step:
            recorder._step(tensordict, next_tensordict)

    benchmark.pedantic(replay, teardown=recorder.flush, rounds=5, iterations=1)
    hook = benchmark.stats.stats.median / ROUND_STEPS
    benchmark.extra_info["hook_us_per_step"] = 1e6 * hook
    benchmark.extra_info["bare_ms_per_step"] = 1e3 * bare_step
    benchmark.extra_info["overhead_pct"] = 100 * hook / bare_step
    recorder.close()


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
def test_episode_write(benchmark, episode, tmp_path, compress):
    """Write a 50-frame 128 px episode; report bytes on disk per frame."""
    path = tmp_path / "episode_000000.pkl"
    benchmark.pedantic(write_episode, args=(path, episode), kwargs={"compress": compress}, rounds=5)
    frames = episode.batch_size[0]
    bytes_per_frame = path.stat().st_size / frames
    benchmark.extra_info["bytes_per_frame"] = bytes_per_frame
    benchmark.extra_info["raw_image_bytes_per_frame"] = IMAGE_SIZE * IMAGE_SIZE * 3
    benchmark.extra_info["frames_per_s"] = frames / benchmark.stats.stats.mean
    benchmark.extra_info["gib_per_10k_episodes"] = bytes_per_frame * frames * 10_000 / 2**30
    benchmark.extra_info["peak_rss_mib"] = _peak_rss_mib()


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
def test_episode_load(benchmark, episode, tmp_path, compress):
    """Load a 50-frame 128 px episode back into a tensordict."""
    path = write_episode(tmp_path / "episode_000000.pkl", episode, compress=compress)
    loaded = benchmark(load_episode, path)
    assert loaded.batch_size == episode.batch_size
    benchmark.extra_info["frames_per_s"] = episode.batch_size[0] / benchmark.stats.stats.mean
