"""EpisodeRecorder on the real PickCube env: labels, alignment, batching, targets, crashes."""

import os
import pickle
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torchrl.collectors import Collector
from torchrl.envs import Compose, ExcludeTransform, SerialEnv, TransformedEnv

from torchrl_reward.data import (
    EpisodeRecorder,
    list_episode_files,
    load_episode,
    load_episodes,
    make_recorder,
    record_until_done,
)
from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.envs.scripted import ScriptedPickPolicy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("record_worker.py")
make_env = partial(ManiSkillEnv, "PickCube-v1", pixels=True, image_size=64)


@pytest.fixture(scope="module")
def env():
    env = make_env(max_episode_steps=4)
    env.set_seed(0)
    yield env
    env.close()


def _still(td):
    """Hold the arm where it is (zero joint deltas)."""
    return td.set("action", torch.zeros(*td.batch_size, 8))


def _play_success(tenv, env):
    """One success episode by construction: goal moved onto the resting cube, arm held still."""
    from mani_skill.utils.structs.pose import Pose

    td = tenv.reset()
    scene = env.base_env
    scene.goal_site.set_pose(Pose.create_from_pq(scene.cube.pose.p))
    return tenv.rollout(4, _still, auto_reset=False, tensordict=td)


def _names(root):
    return [f"{p.parent.name}/{p.name}" for p in list_episode_files(root)]


def test_episodes_labels_and_frame_alignment(env, tmp_path):
    recorder = EpisodeRecorder(tmp_path, seed=7)
    tenv = TransformedEnv(env, recorder)
    success = _play_success(tenv, env)[0]
    failures = tenv.rollout(9, break_when_any_done=False)[0]  # two truncated episodes, 1 step
    tenv.reset()  # cuts the third episode after one step
    recorder.flush()

    assert _names(tmp_path) == [
        "success/episode_000000.pkl",
        "failure/episode_000001.pkl",
        "failure/episode_000002.pkl",
        "failure/episode_000003.pkl",
    ]
    episodes = [load_episode(p) for p in list_episode_files(tmp_path)]
    assert [e.batch_size[0] for e in episodes] == [1, 4, 4, 1]
    # Each frame holds the image seen after its action, with that step's flags.
    for episode, steps in zip(
        episodes, (success, failures[:4], failures[4:8], failures[8:]), strict=True
    ):
        torch.testing.assert_close(episode["pixels"], steps["next", "pixels"])
        torch.testing.assert_close(episode["observation"], steps["next", "observation"])
        torch.testing.assert_close(episode["action"], steps["action"])
        flags = ("success", "is_grasped", "is_obj_placed", "is_robot_static")
        for key in ("reward", "done", "terminated", "truncated", *flags):
            torch.testing.assert_close(episode[key], steps["next", key].reshape(-1))
        for key in ("qpos", "qvel"):  # the robot's state, beside obs/states
            torch.testing.assert_close(episode[key], steps["next", key])
        assert episode["step"].tolist() == list(range(episode.batch_size[0]))
    assert episodes[0]["success"].tolist() == [True] and episodes[0]["terminated"].all()
    assert not episodes[1]["success"].any() and episodes[1]["truncated"][-1]

    records = []
    for path in list_episode_files(tmp_path):
        with open(path, "rb") as f:
            records.append(pickle.load(f))
    assert [(r["success"], r["label"]) for r in records] == [(True, 1)] + [(False, 0)] * 3
    assert [r["interrupted"] for r in records] == [False, False, False, True]
    assert records[2]["episode_id"] == "episode_000002" and records[2]["seed"] == 7
    assert records[1]["frames"][0]["obs"]["main_images"].shape == (64, 64, 3)
    recorder.close()


def test_scripted_success_and_frames_after_success(tmp_path):
    env = make_env(control_mode="pd_ee_delta_pos", max_episode_steps=50)
    env.set_seed(0)
    recorder = EpisodeRecorder(tmp_path, frames_after_success=3, compress=True)
    tenv = TransformedEnv(env, recorder)
    first = tenv.rollout(50, ScriptedPickPolicy())[0]  # PickCube terminates at first success
    env.ignore_terminations = True
    second = tenv.rollout(50, ScriptedPickPolicy(), break_when_any_done=False)[0]
    recorder.flush()
    env.close()

    assert _names(tmp_path) == ["success/episode_000000.pkl", "success/episode_000001.pkl"]
    whole, cut = (load_episode(p) for p in list_episode_files(tmp_path))
    assert whole.batch_size[0] == first.batch_size[0] < 50
    assert whole["success"][-1] and not whole["success"][:-1].any() and whole["terminated"][-1]
    assert whole["is_grasped"].any()
    # Success is placed and static: the recorded halves say which one a frame misses.
    assert torch.equal(whole["success"], whole["is_obj_placed"] & whole["is_robot_static"])
    assert whole["is_obj_placed"].any()
    torch.testing.assert_close(whole["pixels"], first["next", "pixels"])

    hit = int(second["next", "success"].reshape(-1).nonzero()[0])
    assert cut.batch_size[0] == hit + 4  # first success and 3 more frames
    torch.testing.assert_close(cut["success"], second["next", "success"][: hit + 4].reshape(-1))
    torch.testing.assert_close(cut["pixels"], second["next", "pixels"][: hit + 4])
    assert not cut["terminated"].any()


def test_batched_partial_resets_through_a_collector(tmp_path):
    # Two envs whose episodes end at different steps (3 and 4), reset one at a time.
    batched = SerialEnv(2, [partial(make_env, max_episode_steps=n) for n in (3, 4)])
    recorder = EpisodeRecorder(tmp_path)
    collector = Collector(TransformedEnv(batched, recorder), frames_per_batch=20, total_frames=20)
    batch = next(iter(collector)).reshape(2, 10)  # [env, time]
    collector.shutdown()  # closes the env, and with it the recorder

    # Episodes end at t=2 (env 0), 3 (env 1), 5 (env 0), 7 (env 1), 8 (env 0): ids in that order.
    expected = [(0, 0, 3), (1, 0, 4), (0, 3, 6), (1, 4, 8), (0, 6, 9)]
    paths = list_episode_files(tmp_path)
    assert [p.name for p in paths] == [f"episode_{i:06d}.pkl" for i in range(5)]
    for path, (env_index, start, stop) in zip(paths, expected, strict=True):
        episode, steps = load_episode(path), batch[env_index, start:stop]
        torch.testing.assert_close(episode["pixels"], steps["next", "pixels"])
        torch.testing.assert_close(episode["action"], steps["action"])
        assert episode["done"].tolist() == [False] * (stop - start - 1) + [True]


def test_targets_stop_recording_and_restart_resumes(env, tmp_path):
    recorder = EpisodeRecorder(tmp_path, target_success=1, target_failure=1)
    tenv = TransformedEnv(env, recorder)
    tenv.rollout(8, break_when_any_done=False)  # two failures: the second is over target
    recorder.flush()
    assert recorder.counts == {"success": 0, "failure": 1} and not recorder.done
    _play_success(tenv, env)
    recorder.flush()
    assert recorder.done
    assert recorder.progress() == "episodes: success 1/1, failure 1/1"
    tenv.rollout(8, break_when_any_done=False)
    recorder.flush()
    assert _names(tmp_path) == ["success/episode_000001.pkl", "failure/episode_000000.pkl"]
    recorder.close()

    resumed = make_recorder(
        OmegaConf.create({"enabled": True, "save_dir": str(tmp_path), "target_failure": 2})
    )
    assert resumed.counts == {"success": 1, "failure": 1} and not resumed.done
    TransformedEnv(env, resumed).rollout(4, break_when_any_done=False)
    resumed.flush()
    assert "failure/episode_000002.pkl" in _names(tmp_path)
    assert resumed.counts == {"success": 1, "failure": 2}
    resumed.close()


def test_record_until_done_plays_rounds_and_stops_short_after_max_rounds(env, tmp_path, caplog):
    """Rounds until the targets are met; a policy that never plays one outcome stops after
    ``max_rounds``, short of its target (logged), its episodes kept on disk."""
    recorder = EpisodeRecorder(tmp_path, target_success=0, target_failure=2)
    tenv = TransformedEnv(env, recorder)
    counts = record_until_done(tenv, recorder, lambda: _still, 4, progress=False)
    assert counts == {"success": 0, "failure": 2}
    recorder.close()

    recorder = EpisodeRecorder(tmp_path, target_success=1, target_failure=3)
    tenv = TransformedEnv(env, recorder)
    with caplog.at_level("WARNING", logger="torchrl_reward.data.recorder"):
        counts = record_until_done(tenv, recorder, lambda: _still, 4, max_rounds=2, progress=False)
    assert "2 rounds of 1 episodes did not meet" in caplog.text and "success 0/1" in caplog.text
    assert counts == {"success": 0, "failure": 3} and not recorder.done  # one round's worth
    recorder.close()


def test_full_disk_raises_and_leaves_no_partial_file(env, tmp_path, file_size_limit):
    # Render once before the limit: lavapipe writes its shader cache on the first frame, and
    # a write past RLIMIT_FSIZE inside the driver is a SIGBUS, not an error.
    env.rollout(1)
    recorder = EpisodeRecorder(tmp_path)
    tenv = TransformedEnv(env, recorder)
    with file_size_limit(4096):
        tenv.rollout(4, break_when_any_done=False)
        with pytest.raises(RuntimeError, match=r"could not write an episode.*too large"):
            recorder.flush()
    assert sorted(os.listdir(tmp_path / "failure")) == []
    with pytest.raises(RuntimeError, match="could not write"):
        tenv.rollout(1)  # the env step reports the failed write too
    with pytest.raises(RuntimeError, match="could not write"):
        recorder.close()


def test_bad_configuration_errors(env, tmp_path):
    env_without_pixels = TransformedEnv(
        env, Compose(ExcludeTransform("pixels"), EpisodeRecorder(tmp_path / "a"))
    )
    with pytest.raises(KeyError, match=r"ManiSkillEnv\(\.\.\., pixels=True\)"):
        env_without_pixels.rollout(1)
    (tmp_path / "file").touch()
    with pytest.raises(OSError, match="cannot write to save_dir"):
        EpisodeRecorder(tmp_path / "file" / "data")
    with pytest.raises(ValueError, match="target_failure must be an int >= 0"):
        EpisodeRecorder(tmp_path / "b", target_failure=-1)
    with pytest.raises(ValueError, match="save_dir is required"):
        make_recorder({"enabled": True})


def _start_workers(sync_dir, *worker_args):
    """Start one recording subprocess per argument list; release them together when ready."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for args in worker_args
    ]
    deadline = time.monotonic() + 300
    while len(list(sync_dir.glob("ready.*"))) < len(procs):
        failed = [p for p in procs if p.poll() is not None]
        if failed or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            output = failed[0].communicate()[0].decode() if failed else "timed out"
            pytest.fail(f"recording worker did not start: {output[-2000:]}")
        time.sleep(0.2)
    (sync_dir / "go").touch()
    return procs


def test_processes_share_ids_and_targets_and_survive_kill_9(tmp_path):
    save_dir, sync_dir, exit_dir = tmp_path / "data", tmp_path / "sync", tmp_path / "exit"
    sync_dir.mkdir()
    victim, survivor = _start_workers(
        sync_dir, (save_dir, 12, sync_dir), (save_dir, 12, sync_dir, exit_dir)
    )
    deadline = time.monotonic() + 300
    while len(list((save_dir / "failure").glob("episode_*.pkl"))) < 4:
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    output = survivor.communicate(timeout=300)[0].decode()
    assert survivor.returncode == 0, output[-2000:]

    # Ids 0..n-1 without a clash (a clash overwrites a file, leaving fewer than the target);
    # n is 13 only if the kill fell between a rename and the count update that follows it.
    names = [n for n in os.listdir(save_dir / "failure") if not n.startswith(".")]
    assert len(names) in (12, 13)
    assert sorted(names) == [f"episode_{i:06d}.pkl" for i in range(len(names))]
    episodes, paths, skipped = load_episodes(save_dir)
    assert skipped == 0
    for episode, path in zip(episodes, paths, strict=True):
        with open(path, "rb") as f:
            assert pickle.load(f)["episode_id"] == path.stem
        assert episode.batch_size[0] == 3
    restarted = EpisodeRecorder(save_dir, target_failure=100)
    assert restarted.counts["failure"] == len(names)
    assert not [n for n in os.listdir(save_dir / "failure") if n.endswith(".tmp")]
    restarted.close()
    # The survivor exited with two episodes still queued: the exit hook wrote them.
    assert _names(exit_dir) == ["failure/episode_000000.pkl", "failure/episode_000001.pkl"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (GPU physx)")
def test_gpu_batched_env_records_every_episode(tmp_path):
    gpu_env = make_env(num_envs=4, max_episode_steps=3, sim_backend="gpu")
    collector = Collector(
        TransformedEnv(gpu_env, EpisodeRecorder(tmp_path)), frames_per_batch=24, total_frames=24
    )
    batch = next(iter(collector)).reshape(4, 6)  # [env, time]: two 3-step episodes per env
    collector.shutdown()

    episodes = [load_episode(p) for p in list_episode_files(tmp_path)]
    assert len(episodes) == 8
    expected = [batch[i, s : s + 3]["next", "pixels"].cpu() for i in range(4) for s in (0, 3)]
    for episode in episodes:
        assert episode["pixels"].shape == (3, 64, 64, 3)
        assert any(torch.equal(episode["pixels"], frames) for frames in expected)
