"""Episode files: RLinf layout, plain-pickle loading, validation, skipping, atomic writes."""

import pickle

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.data import list_episode_files, load_episode, load_episodes, write_episode
from torchrl_reward.data.episode_io import iter_episodes


def _episode(length: int = 4, size: int = 16, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    success = torch.zeros(length, 1, dtype=torch.bool)
    success[-1] = True
    return TensorDict(
        {
            "pixels": torch.randint(
                0, 256, (length, size, size, 3), dtype=torch.uint8, generator=g
            ),
            "observation": torch.randn(length, 42, generator=g),
            "action": torch.rand(length, 8, generator=g) * 2 - 1,
            "reward": torch.rand(length, 1, generator=g),
            "done": success.clone(),
            "terminated": success.clone(),
            "truncated": torch.zeros(length, 1, dtype=torch.bool),
            "success": success,
            "is_grasped": torch.ones(length, 1, dtype=torch.bool),
            "is_obj_placed": success.clone(),
            "is_robot_static": torch.ones(length, 1, dtype=torch.bool),
            "qpos": torch.randn(length, 9, generator=g),
            "qvel": torch.randn(length, 9, generator=g),
            "step": torch.arange(length),
        },
        batch_size=[length],
    )


def _rlinf_record(length: int = 3) -> dict:
    """An episode as RLinf's collector pickles it: numpy arrays and numpy/Python scalars."""
    rng = np.random.default_rng(0)
    frames = [
        {
            "obs": {
                "main_images": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                "states": rng.standard_normal(42).astype(np.float32),
            },
            "action": rng.standard_normal(8).astype(np.float32),
            "reward": np.float32(0.5),
            "done": np.bool_(t == length - 1),
            "grasp": t > 0,
            "success": np.bool_(False),
        }
        for t in range(length)
    ]
    return {"frames": frames, "success": False, "label": 0}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
def test_round_trip_and_plain_pickle_layout(tmp_path, compress):
    episode = _episode()
    path = write_episode(
        tmp_path / "success" / "episode_000000.pkl",
        episode,
        compress=compress,
        episode_id="episode_000000",
        seed=3,
    )
    loaded = load_episode(path)
    for key in ("pixels", "observation", "action", "step", "qpos", "qvel"):
        torch.testing.assert_close(loaded[key], episode[key])
    flags = ("success", "is_grasped", "is_obj_placed", "is_robot_static")
    for key in ("reward", "done", "terminated", "truncated", *flags):
        torch.testing.assert_close(loaded[key], episode[key].reshape(-1))

    with open(path, "rb") as f:
        record = pickle.load(f)
    assert (record["success"], record["label"], record["seed"]) == (True, 1, 3)
    assert record["episode_id"] == "episode_000000"
    frame = record["frames"][0]
    image = frame["obs"]["main_images"]
    assert type(image) is np.ndarray and image.dtype == np.uint8 and image.shape == (16, 16, 3)
    assert image.flags.writeable
    assert frame["obs"]["states"].dtype == np.float32 and frame["obs"]["states"].shape == (42,)
    assert frame["action"].shape == (8,)
    assert isinstance(frame["reward"], float)
    assert {frame[k] for k in ("done", "grasp", "success")} <= {True, False}
    assert {frame[k] for k in ("is_obj_placed", "is_robot_static")} <= {True, False}
    assert frame["obs"]["qvel"].dtype == np.float32 and frame["obs"]["qvel"].shape == (9,)


def test_loads_rlinf_files(tmp_path):
    path = tmp_path / "failure" / "episode_000001.pkl"
    path.parent.mkdir()
    record = _rlinf_record()
    path.write_bytes(pickle.dumps(record))
    loaded = load_episode(path)
    assert loaded.batch_size == torch.Size([3])
    assert loaded["pixels"].dtype == torch.uint8 and loaded["pixels"].shape == (3, 8, 8, 3)
    assert loaded["is_grasped"].tolist() == [False, True, True]
    assert loaded["done"].tolist() == [False, False, True]
    for key in ("terminated", "step", "is_obj_placed", "is_robot_static", "qpos", "qvel"):
        assert key not in loaded


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda r: r["frames"][1].pop("grasp"), "frame 1 has no valid 'grasp'"),
        (lambda r: r["frames"][0]["obs"].pop("main_images"), "frame 0 has no valid"),
        (lambda r: r.update(frames=[]), "non-empty list"),
        (
            lambda r: r["frames"][2]["obs"].update(main_images=np.zeros((4, 4, 3), np.uint8)),
            "changes shape across frames",
        ),
        (
            lambda r: [f["obs"].update(main_images=np.zeros((8, 8, 3))) for f in r["frames"]],
            "must be uint8 HxWx3",
        ),
    ],
    ids=["no-grasp", "no-image", "no-frames", "image-shape", "float-image"],
)
def test_malformed_file_error_names_file_and_problem(tmp_path, corrupt, problem):
    record = _rlinf_record()
    corrupt(record)
    path = tmp_path / "episode_000000.pkl"
    path.write_bytes(pickle.dumps(record))
    with pytest.raises(ValueError, match=problem) as err:
        load_episode(path)
    assert str(path) in str(err.value)


def _write_bad_files(root):
    """A truncated pickle and a pickle that is not an episode, beside the good files."""
    data = pickle.dumps(_rlinf_record())
    truncated = root / "failure" / "episode_000002.pkl"
    truncated.parent.mkdir(exist_ok=True)
    truncated.write_bytes(data[: len(data) // 2])
    (root / "failure" / "episode_000003.pkl").write_bytes(pickle.dumps(["not", "a", "dict"]))
    return truncated


def test_iter_episodes_skips_corrupt_files_with_one_warning_naming_each(tmp_path):
    good = [
        write_episode(tmp_path / "success" / f"episode_{i:06d}.pkl", _episode(seed=i))
        for i in range(2)
    ]
    truncated = _write_bad_files(tmp_path)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_episode(truncated)

    with pytest.warns(RuntimeWarning) as caught:
        read = list(iter_episodes(tmp_path))
    assert [path for path, _ in read] == good
    assert [episode.batch_size[0] for _, episode in read] == [4, 4]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "Skipped 2 unreadable episode file(s)" in message
    assert "failure/episode_000002.pkl, failure/episode_000003.pkl" in message

    with pytest.warns(RuntimeWarning, match="Skipped 2 unreadable"):
        episodes, paths, skipped = load_episodes(tmp_path)
    assert (paths, skipped, len(episodes)) == (good, 2, 2)


def test_iter_episodes_warns_when_stopped_early_and_raises_when_nothing_is_readable(tmp_path):
    _write_bad_files(tmp_path)
    write_episode(tmp_path / "failure" / "episode_000004.pkl", _episode())
    with pytest.warns(RuntimeWarning, match=r"Skipped 2 .*episode_000003\.pkl"):
        path, _ = next(iter(iter_episodes(tmp_path)))
    assert path.name == "episode_000004.pkl"

    bad = list_episode_files(tmp_path)[:2]
    with (
        pytest.warns(RuntimeWarning, match="Skipped 2"),
        pytest.raises(ValueError, match=r"No readable episode .* all 2 file"),
    ):
        list(iter_episodes(tmp_path, bad))
    (tmp_path / "empty" / "success").mkdir(parents=True)
    with pytest.raises(ValueError, match="No episode files"):
        list(iter_episodes(tmp_path / "empty"))


def test_list_episode_files_order_and_filtering(tmp_path):
    for name in (
        "episode_1000000.pkl",
        "episode_999999.pkl",
        ".episode_000005.pkl.x1.tmp",
        "notes.txt",
        "episode_7.pkl.bak",
    ):
        (tmp_path / "failure").mkdir(exist_ok=True)
        (tmp_path / "failure" / name).touch()
    (tmp_path / "success").mkdir()
    (tmp_path / "success" / "episode_000004.pkl").touch()
    names = [p.name for p in list_episode_files(tmp_path)]
    assert names == ["episode_000004.pkl", "episode_999999.pkl", "episode_1000000.pkl"]

    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_episode_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no success/ or failure/ folder"):
        list_episode_files(tmp_path / "empty")


def test_write_episode_rejects_bad_input(tmp_path):
    with pytest.raises(KeyError, match="is_grasped"):
        write_episode(tmp_path / "e.pkl", _episode().exclude("is_grasped"))
    with pytest.raises(ValueError, match="reserved"):
        write_episode(tmp_path / "e.pkl", _episode(), label=0)
    episode = _episode()
    episode["pixels"] = episode["pixels"].float()
    with pytest.raises(ValueError, match="uint8"):
        write_episode(tmp_path / "e.pkl", episode)
    assert not list(tmp_path.iterdir())


def test_full_disk_leaves_no_file(tmp_path, file_size_limit):
    path = tmp_path / "success" / "episode_000000.pkl"
    path.parent.mkdir()
    with file_size_limit(16_384), pytest.raises(OSError, match="too large"):
        write_episode(path, _episode(length=8, size=64))
    assert not list(path.parent.iterdir())
