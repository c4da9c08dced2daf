"""Episode files in the seed system's (RLinf) layout: one pickle per episode, by outcome.

``save_dir/success/episode_000000.pkl``, ``save_dir/failure/episode_000001.pkl``, ... each a dict
``{"frames": [{"obs": {"main_images": uint8 HxWx3, "states": float32 [D]}, "action", "reward",
"done", "grasp", "success", ...}, ...], "success": bool, "label": 1 | 0, ...}``. Our files add
per-frame ``terminated``, ``truncated`` and ``step`` and episode-level metadata; RLinf's reader
ignores extra keys and ours reads RLinf's files.

With ``compress=True`` each image is stored zlib-compressed inside a small pickle recipe that
plain ``pickle.load`` turns back into the same writable ``np.ndarray`` (only numpy and zlib
needed, not this package), so compressed files stay readable by RLinf's loader.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_reward.utils import atomic_write

CLASS_DIRS = ("success", "failure")
EPISODE_NAME = re.compile(r"^episode_(\d+)\.pkl$")
# Keys of the tensordicts given to write_episode and returned by load_episode.
EPISODE_KEYS = ("pixels", "observation", "action", "reward", "done", "success", "is_grasped")
# Written when the episode has them; RLinf's files have none (asking for one is an error there).
OPTIONAL_FLAGS = ("terminated", "truncated", "is_obj_placed", "is_robot_static")
PROPRIO_KEYS = ("qpos", "qvel")  # per-frame robot state, stored as obs/<name> beside obs/states
OPTIONAL_KEYS = (*OPTIONAL_FLAGS, "step", *PROPRIO_KEYS)
_RESERVED = ("frames", "success", "label", "compression")
# RLinf's per-frame scalar names for our tensordict keys.
_FRAME_SCALARS = {"reward": "reward", "done": "done", "is_grasped": "grasp", "success": "success"}
_ZLIB_LEVEL = 1  # rendered frames compress ~1.6x at any level; level 1 is the fastest


class _Call:
    """Pickles as ``fn(*args)``, so ``pickle.load`` rebuilds a value from stdlib/numpy calls."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return self.fn, self.args


def _compressed_array(array: np.ndarray) -> _Call:
    """An array that pickles zlib-compressed and unpickles as ``np.ndarray`` (writable)."""
    data = zlib.compress(np.ascontiguousarray(array).tobytes(), _ZLIB_LEVEL)
    return _Call(
        np.ndarray, array.shape, array.dtype, _Call(bytearray, _Call(zlib.decompress, data))
    )


def episode_to_dict(
    episode: TensorDictBase, *, compress: bool = False, **metadata: Any
) -> dict[str, Any]:
    """Convert an episode tensordict (batch ``[T]``) to the RLinf dict layout.

    The tensordict holds ``EPISODE_KEYS`` (``pixels`` uint8 ``[T, H, W, 3]``, ``observation``
    ``[T, D]``, ``action`` ``[T, A]``, flags and rewards ``[T]`` or ``[T, 1]``) and optionally
    ``terminated``, ``truncated`` and ``step``. ``metadata`` becomes extra episode-level keys.
    """
    if episode.batch_dims != 1 or episode.batch_size[0] == 0:
        raise ValueError(
            f"An episode is a tensordict with batch size [T], T >= 1, got {episode.batch_size}."
        )
    present = set(episode.keys())
    missing = [key for key in EPISODE_KEYS if key not in present]
    if missing:
        raise KeyError(f"Episode tensordict lacks {missing}; it has {sorted(present)}.")
    clash = [key for key in metadata if key in _RESERVED]
    if clash:
        raise ValueError(f"Metadata keys {clash} are reserved by the episode layout.")
    length = episode.batch_size[0]
    columns = {
        key: episode.get(key).detach().cpu().numpy()
        for key in (*EPISODE_KEYS, *OPTIONAL_KEYS)
        if key in present
    }
    pixels = columns["pixels"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(
            f"Episode 'pixels' must be uint8 [T, H, W, 3], got {pixels.dtype} {pixels.shape}."
        )
    scalars = {
        key: columns[key].reshape(length)
        for key in (*_FRAME_SCALARS, *OPTIONAL_FLAGS, "step")
        if key in columns
    }
    frames = []
    for t in range(length):
        frame: dict[str, Any] = {
            "obs": {
                "main_images": _compressed_array(pixels[t]) if compress else pixels[t],
                "states": columns["observation"][t].astype(np.float32),
            },
            "action": columns["action"][t].astype(np.float32),
        }
        for key in PROPRIO_KEYS:
            if key in columns:
                frame["obs"][key] = columns[key][t].astype(np.float32)
        for key, name in _FRAME_SCALARS.items():
            frame[name] = float(scalars[key][t]) if key == "reward" else bool(scalars[key][t])
        for key in OPTIONAL_FLAGS:
            if key in scalars:
                frame[key] = bool(scalars[key][t])
        if "step" in scalars:
            frame["step"] = int(scalars["step"][t])
        frames.append(frame)
    success = bool(scalars["success"].any())
    return {
        "frames": frames,
        "success": success,
        "label": int(success),
        "compression": "zlib" if compress else None,
        **metadata,
    }


def write_episode(
    path: str | os.PathLike, episode: TensorDictBase, *, compress: bool = False, **metadata: Any
) -> Path:
    """Write one episode atomically (temporary file, fsync, rename) in the RLinf layout.

    Args:
        path (path-like): destination, e.g. ``save_dir/success/episode_000000.pkl``.
        episode (TensorDictBase): batch ``[T]`` with ``EPISODE_KEYS`` (see
            :func:`episode_to_dict`).
        compress (bool, optional): store images zlib-compressed (~1.6x smaller for rendered
            frames), still loadable with plain ``pickle``. Defaults to ``False``.
        **metadata: extra episode-level keys (``episode_id``, ``seed``, ...).

    Returns:
        the path written. On any error (disk full included) no file is left behind.
    """
    path = Path(path)
    record = episode_to_dict(episode, compress=compress, **metadata)
    with atomic_write(path, "wb") as f:
        pickle.dump(record, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"Episode file {path}: {problem}.")


def _column(path: Path, frames: list, name: str, getter: Any, dtype: np.dtype) -> np.ndarray:
    """Stack one per-frame field into an array, naming the file and frame that breaks it."""
    values = []
    for t, frame in enumerate(frames):
        try:
            values.append(np.asarray(getter(frame), dtype=dtype))
        except (KeyError, TypeError, ValueError) as err:
            raise _fail(path, f"frame {t} has no valid {name!r} ({err!r})") from None
    try:
        return np.stack(values)
    except ValueError:
        shapes = sorted({v.shape for v in values})
        raise _fail(path, f"{name!r} changes shape across frames: {shapes}") from None


def episode_from_dict(record: Any, path: str | os.PathLike = "<memory>") -> TensorDict:
    """Validate an RLinf-layout episode dict and convert it to a tensordict of batch ``[T]``."""
    path = Path(path)
    if not isinstance(record, Mapping) or "frames" not in record:
        raise _fail(path, f"expected a dict with a 'frames' list, got {type(record).__name__}")
    frames = record["frames"]
    if not isinstance(frames, list) or not frames:
        raise _fail(path, "'frames' must be a non-empty list")
    bad = next((t for t, f in enumerate(frames) if not isinstance(f, Mapping)), None)
    if bad is not None:
        raise _fail(path, f"frame {bad} is a {type(frames[bad]).__name__}, not a dict")
    pixels = _column(path, frames, "obs/main_images", lambda f: f["obs"]["main_images"], None)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise _fail(
            path, f"'main_images' must be uint8 HxWx3, got {pixels.dtype} {pixels.shape[1:]}"
        )
    length = len(frames)
    data = {
        "pixels": torch.from_numpy(pixels),
        "observation": torch.from_numpy(
            _column(path, frames, "obs/states", lambda f: f["obs"]["states"], np.float32)
        ).reshape(length, -1),
        "action": torch.from_numpy(
            _column(path, frames, "action", lambda f: f["action"], np.float32)
        ).reshape(length, -1),
    }
    for key, name in _FRAME_SCALARS.items():
        dtype = np.float32 if key == "reward" else np.bool_
        data[key] = torch.from_numpy(_scalar_column(path, frames, name, dtype))
    for key, dtype in (*((k, np.bool_) for k in OPTIONAL_FLAGS), ("step", np.int64)):
        if all(key in frame for frame in frames):
            data[key] = torch.from_numpy(_scalar_column(path, frames, key, dtype))
    for key in PROPRIO_KEYS:
        if all(isinstance(f["obs"], Mapping) and key in f["obs"] for f in frames):
            column = _column(path, frames, f"obs/{key}", lambda f, k=key: f["obs"][k], np.float32)
            data[key] = torch.from_numpy(column).reshape(length, -1)
    return TensorDict(data, batch_size=[length])


def _scalar_column(path: Path, frames: list, name: str, dtype: Any) -> np.ndarray:
    """One scalar per frame (RLinf stores them as Python, numpy or torch scalars)."""
    column = _column(path, frames, name, lambda f: f[name], dtype)
    if column.size != len(frames):
        raise _fail(path, f"{name!r} must hold one value per frame, got shape {column.shape}")
    return column.reshape(len(frames))


def load_episode(path: str | os.PathLike) -> TensorDict:
    """Load one episode file (ours or RLinf's) as a tensordict of batch ``[T]``.

    Keys: ``pixels`` uint8 ``[T, H, W, 3]``, ``observation`` float32 ``[T, D]``, ``action``
    float32 ``[T, A]``, ``reward`` float32 ``[T]``, ``done`` / ``success`` / ``is_grasped`` bool
    ``[T]``, and, when the file has them, ``terminated`` / ``truncated`` / ``is_obj_placed`` /
    ``is_robot_static`` (bool ``[T]``), ``step`` (int64) and ``qpos`` / ``qvel`` (float32
    ``[T, dof]``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is truncated, corrupt or not in the episode layout (the message
            names the file and the problem).
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            record = pickle.load(f)
        except Exception as err:  # any unpickling failure means a corrupt or truncated file
            raise _fail(
                path,
                f"cannot be unpickled ({type(err).__name__}: {err}); it is truncated or "
                "corrupt, delete it or record it again",
            ) from None
    return episode_from_dict(record, path)


def list_episode_files(root: str | os.PathLike) -> list[Path]:
    """Episode files under ``root/success`` then ``root/failure``, each in id order.

    Temporary files of writes in progress (hidden, ``.tmp``) are never listed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Episode folder {root} does not exist.")
    class_dirs = [root / name for name in CLASS_DIRS if (root / name).is_dir()]
    if not class_dirs:
        raise FileNotFoundError(
            f"{root} has no success/ or failure/ folder; give the save_dir an EpisodeRecorder "
            "(or RLinf's data collection) wrote to."
        )
    files = []
    for folder in class_dirs:
        ids = {}
        for path in folder.iterdir():
            match = EPISODE_NAME.match(path.name)
            if match:
                ids[path] = int(match[1])
        files += sorted(ids, key=ids.__getitem__)
    return files


def iter_episodes(
    root: str | os.PathLike, files: Sequence[Path] | None = None
) -> Iterator[tuple[Path, TensorDict]]:
    """Yield ``(path, episode)`` for each readable episode file of the recording root ``root``.

    The one reader of recorded episodes, with one policy for bad files: a corrupt, truncated,
    malformed or vanished file is skipped, and a single ``RuntimeWarning`` names every skipped
    file (relative to ``root``), counts them and gives the first problem, when the iteration
    ends (or is stopped early). A long run should not die on one bad file, but nothing is
    skipped silently. Episodes are read one at a time, so memory stays at one episode.

    Args:
        root (path-like): the recording root (``success/`` and ``failure/`` folders).
        files (sequence of Path, optional): the files of ``root`` to read, in that order.
            Defaults to ``None``: every episode file, as :func:`list_episode_files` orders them.

    Raises:
        FileNotFoundError: ``root`` is not a recording root.
        ValueError: no episode was yielded: there are no files, or none is readable.
    """
    root = Path(root)
    files = list_episode_files(root) if files is None else list(files)
    skipped, problems, read = [], [], 0
    try:
        for path in files:
            try:
                episode = load_episode(path)
            except (ValueError, OSError) as err:
                skipped.append(str(path.relative_to(root)))
                problems.append(str(err))
                continue
            read += 1
            yield path, episode
    finally:
        if skipped:
            warnings.warn(
                f"Skipped {len(skipped)} unreadable episode file(s) under {root}: "
                f"{', '.join(skipped)}; first problem: {problems[0]}",
                RuntimeWarning,
                stacklevel=2,
            )
    if not files:
        raise ValueError(
            f"No episode files under {str(root)!r} (expected success/*.pkl and failure/*.pkl); "
            "record episodes first."
        )
    if not read:
        raise ValueError(
            f"No readable episode under {str(root)!r}: all {len(files)} file(s) are corrupt or "
            "unreadable; delete them and record again."
        )


def load_episodes(root: str | os.PathLike) -> tuple[list[TensorDict], list[Path], int]:
    """Load every episode under ``root`` into memory (:func:`iter_episodes`'s policy).

    Returns:
        ``(episodes, paths, skipped)``: the loaded tensordicts, their files, and how many files
        were skipped as unreadable.
    """
    files = list_episode_files(root)
    pairs = list(iter_episodes(root, files))
    return [episode for _, episode in pairs], [path for path, _ in pairs], len(files) - len(pairs)
