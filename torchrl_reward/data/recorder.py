"""Record the episodes an env plays as RLinf-layout episode files, off the env's hot path."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import queue
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import tqdm
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, Transform

from torchrl_reward.data.episode_io import CLASS_DIRS, EPISODE_NAME, write_episode

# What a frame holds: the env's output after the step (so the image and that step's success
# describe the same state) and the action that led there.
NEXT_KEYS = (
    "pixels",
    "observation",
    "reward",
    "done",
    "terminated",
    "truncated",
    "success",
    "is_grasped",
)
# Recorded when the env has them (ManiSkillEnv does): the placed / static halves of PickCube's
# success, and the robot's joint positions and velocities.
OPTIONAL_NEXT_KEYS = ("is_obj_placed", "is_robot_static", "qpos", "qvel")
# Next episode id and per-class counts, updated under an exclusive flock with every write.
STATE_FILE = ".recorder_state"
_STATE_FORMAT = "{:012d} {:012d} {:012d}\n"
# atomic_write's temporary files; under the lock any that exist were left by a killed writer.
_ORPHAN = re.compile(r"^\.episode_\d+\.pkl\..*\.tmp$")
_LIVE: weakref.WeakSet = weakref.WeakSet()
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _locked_state(root: Path) -> Iterator[int]:
    """Hold the save_dir's exclusive lock (the kernel releases it if the process dies)."""
    fd = os.open(root / STATE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _scan(root: Path) -> tuple[int, dict[str, int]]:
    """Count the episodes on disk and find the next free id; drop orphaned temporary files."""
    next_id, counts = 0, {}
    for name in CLASS_DIRS:
        counts[name] = 0
        with os.scandir(root / name) as entries:
            for entry in entries:
                match = EPISODE_NAME.match(entry.name)
                if match:
                    counts[name] += 1
                    next_id = max(next_id, int(match[1]) + 1)
                elif _ORPHAN.match(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
    return next_id, counts


def _read_state(fd: int, root: Path) -> tuple[int, dict[str, int]]:
    """The state file's ids and counts, or a fresh scan if it is missing or damaged."""
    try:
        next_id, *counts = (int(v) for v in os.pread(fd, 64, 0).split())
        if len(counts) == len(CLASS_DIRS):
            return next_id, dict(zip(CLASS_DIRS, counts, strict=True))
    except ValueError:
        pass
    return _scan(root)


def _write_state(fd: int, next_id: int, counts: dict[str, int]) -> None:
    # Fixed width: one small pwrite over the same bytes, which a kill cannot leave half-done.
    os.pwrite(fd, _STATE_FORMAT.format(next_id, *counts.values()).encode(), 0)


class EpisodeRecorder(Transform):
    """Writes each episode the env plays to ``save_dir/{success,failure}/episode_XXXXXX.pkl``.

    Append it to a :class:`~torchrl.envs.TransformedEnv` (the collector's env): it changes
    nothing the policy sees. Each step, it keeps one CPU copy of the batch's frame (``pixels``,
    ``observation``, ``reward``, ``done``, ``terminated``, ``truncated``, ``success``,
    ``is_grasped`` after the step, with ``is_obj_placed``, ``is_robot_static``, ``qpos`` and
    ``qvel`` when the env has them, and the step's ``action``); when env ``i``'s episode ends,
    its frames go to a background writer thread through a bounded queue, so the env step only
    copies tensors. Files use the seed system's (RLinf) layout, see
    :mod:`torchrl_reward.data.episode_io`.

    Episodes and labels:

    - An episode starts at the first step after a reset and ends when the env reports ``done``
      (terminated or truncated). If the env is reset before that (e.g. a collector's
      ``max_frames_per_traj``), the frames so far are written as an episode with
      ``interrupted=True``; frames of unfinished episodes are dropped at :meth:`close`.
    - Label: success if ``success`` was true at any step; each frame keeps its own ``success``
      (the reward model trains on per-frame labels).
    - PickCube terminates at its first success, so a success episode has one positive frame.
      With ``ManiSkillEnv(..., ignore_terminations=True)`` the env plays on; the recorder then
      keeps ``frames_after_success`` more frames (more positives, and the negatives where the
      robot still moves or the cube slips) and ends the episode there, skipping the rest of that
      env's episode, whose near-identical frames add little but disk.

    Targets: once a class holds ``target_*`` files its episodes are no longer written; when
    both are met, :attr:`done` is ``True`` and recording stops (the training loop decides
    whether to stop). Ids and counts are shared through ``save_dir``: several processes (one
    CPU env each) can record into the same folder, and a restart continues the ids and counts
    found there. Writes hold an exclusive ``flock`` on ``save_dir/.recorder_state``, so ids
    never clash and targets are exact (a ``kill -9`` between a file's rename and the count
    update after it can add one episode, which the next recorder counts). Each file is written
    atomically (temporary file, fsync, rename): a crash or ``kill -9`` leaves only complete
    episodes, and at most a hidden ``.tmp`` file that the next recorder on the folder removes.

    Args:
        save_dir (path-like): output folder (created if needed).
        target_success (int, optional): success episodes to collect. Defaults to ``5000``.
        target_failure (int, optional): failure episodes to collect. Defaults to ``5000``.
        frames_after_success (int, optional): frames kept after an episode's first success
            when the env keeps stepping; ``None`` keeps everything until ``done``.
            Defaults to ``10``.
        compress (bool, optional): store images zlib-compressed, ~1.6x smaller files that
            plain ``pickle`` still loads as arrays. Defaults to ``False``.
        seed (int, optional): the run's env seed, stored in every episode. Defaults to ``None``.
        queue_size (int, optional): finished episodes waiting for the writer before the env
            step blocks. Defaults to ``64``.

    Examples:
        >>> recorder = EpisodeRecorder("data")  # doctest: +SKIP
        >>> env = TransformedEnv(ManiSkillEnv(pixels=True), recorder)  # doctest: +SKIP
        >>> env.rollout(200, break_when_any_done=False)  # doctest: +SKIP
        >>> recorder.flush(); recorder.progress()  # doctest: +SKIP
        'episodes: success 1/5000, failure 3/5000'
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        target_success: int = 5000,
        target_failure: int = 5000,
        *,
        frames_after_success: int | None = 10,
        compress: bool = False,
        seed: int | None = None,
        queue_size: int = 64,
    ) -> None:
        super().__init__()
        targets = {"success": target_success, "failure": target_failure}
        for name, value in targets.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"target_{name} must be an int >= 0, got {value!r}.")
        if frames_after_success is not None and frames_after_success < 0:
            raise ValueError(f"frames_after_success must be >= 0, got {frames_after_success}.")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}.")
        self.save_dir = Path(save_dir)
        self.targets = targets
        self.frames_after_success = frames_after_success
        self.compress = compress
        self.seed = seed
        self.queue_size = queue_size
        try:
            for name in CLASS_DIRS:
                (self.save_dir / name).mkdir(parents=True, exist_ok=True)
            with _locked_state(self.save_dir) as fd:
                next_id, counts = _scan(self.save_dir)
                _write_state(fd, next_id, counts)
        except OSError as err:
            raise type(err)(
                err.errno,
                f"EpisodeRecorder cannot write to save_dir {str(self.save_dir)!r} "
                f"({err.strerror}); give a writable folder (collect.save_dir=...)",
            ) from None
        self._counts = counts
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._reset_buffers()

    # -- progress ---------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Episodes on disk per class (written by any process), e.g. ``{"success": 3, ...}``."""
        with _locked_state(self.save_dir) as fd:
            self._counts = _read_state(fd, self.save_dir)[1]
        return dict(self._counts)

    @property
    def done(self) -> bool:
        """Both targets are met: recording has stopped."""
        return self._targets_met(self.counts)

    def progress(self) -> str:
        """One line for logs and progress bars: counts against targets."""
        counts = self.counts
        return "episodes: " + ", ".join(f"{k} {counts[k]}/{self.targets[k]}" for k in CLASS_DIRS)

    def _targets_met(self, counts: Mapping[str, int]) -> bool:
        return all(counts[k] >= self.targets[k] for k in CLASS_DIRS)

    # -- env hooks --------------------------------------------------------------------------
    def _reset_buffers(self) -> None:
        self._steps: list[TensorDictBase] = []  # one CPU frame per step, batch [N]
        self._first_step = 0  # step index of self._steps[0]
        self._start: torch.Tensor | None = None  # per env: step its episode began, -1 if none
        self._first_success: torch.Tensor | None = None  # per env: step of first success, -1
        self._skipping: torch.Tensor | None = None  # per env: ended early, waiting for done

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        self._raise_if_failed()
        if self._targets_met(self._counts):
            if self._steps:
                self._reset_buffers()
            return next_tensordict
        missing = [key for key in NEXT_KEYS if key not in next_tensordict]
        if missing:
            hint = (
                " Build the env with ManiSkillEnv(..., pixels=True)." if "pixels" in missing else ""
            )
            raise KeyError(f"EpisodeRecorder needs {missing} in the env's step output.{hint}")
        frame = next_tensordict.select(*NEXT_KEYS, *OPTIONAL_NEXT_KEYS, strict=False)
        frame.set("action", tensordict.get("action"))
        frame = frame.reshape(-1)
        # One copy per step for the whole batch (GPU: a single non-blocking transfer and sync).
        frame = frame.clone() if frame.device == torch.device("cpu") else frame.to("cpu")
        if self._start is None:
            num_envs = frame.batch_size[0]
            self._start = torch.full((num_envs,), -1, dtype=torch.long)
            self._first_success = torch.full((num_envs,), -1, dtype=torch.long)
            self._skipping = torch.zeros(num_envs, dtype=torch.bool)
        t = self._first_step + len(self._steps)
        self._steps.append(frame)
        stepped = tensordict.get("_step", None)  # rollout's partial steps: done envs sit out
        stepped = True if stepped is None else stepped.reshape(-1).cpu()
        done = frame.get("done").reshape(-1)

        self._start[stepped & (self._start < 0) & ~self._skipping] = t
        recording = self._start >= 0
        first = recording & frame.get("success").reshape(-1) & (self._first_success < 0)
        self._first_success[first] = t
        end = recording & done
        if self.frames_after_success is not None:
            seen = self._first_success >= 0
            end |= recording & seen & (t - self._first_success >= self.frames_after_success)
        for env in end.nonzero().flatten().tolist():
            self._submit(env, t, interrupted=False)
        self._start[end] = -1
        self._first_success[end] = -1
        self._skipping = (self._skipping | (end & ~done)) & ~(stepped & done)
        self._trim()
        return next_tensordict

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        if self._start is None:
            return tensordict_reset
        reset = tensordict.get("_reset", None)
        reset = torch.ones_like(self._skipping) if reset is None else reset.reshape(-1).cpu()
        last = self._first_step + len(self._steps) - 1
        for env in (reset & (self._start >= 0)).nonzero().flatten().tolist():
            self._submit(env, last, interrupted=True)
        self._start[reset] = -1
        self._first_success[reset] = -1
        self._skipping[reset] = False
        self._trim()
        return tensordict_reset

    def _submit(self, env: int, last: int, *, interrupted: bool) -> None:
        """Hand env ``env``'s frames (steps start..last) to the writer thread."""
        first = int(self._start[env]) - self._first_step
        frames = self._steps[first : last - self._first_step + 1]
        if self._queue is None:
            self._queue = queue.Queue(maxsize=self.queue_size)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name="EpisodeRecorder-writer", daemon=True
            )
            self._thread.start()
            _LIVE.add(self)  # closed at interpreter exit if still running
        self._queue.put((frames, env, interrupted))

    def _trim(self) -> None:
        """Drop the steps no open episode needs any more."""
        open_starts = self._start[self._start >= 0]
        keep_from = (
            int(open_starts.min()) if open_starts.numel() else self._first_step + len(self._steps)
        )
        drop = keep_from - self._first_step
        if drop > 0:
            del self._steps[:drop]
            self._first_step = keep_from

    # -- writer thread ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._write(*item)
            except BaseException as err:  # surfaced on the env thread by _raise_if_failed
                self._error = err
            finally:
                self._queue.task_done()

    def _write(self, frames: list[TensorDictBase], env: int, interrupted: bool) -> None:
        episode = torch.stack([frame[env] for frame in frames])
        episode.set("step", torch.arange(episode.batch_size[0]))
        label = "success" if bool(episode.get("success").any()) else "failure"
        with _locked_state(self.save_dir) as fd:
            next_id, counts = _read_state(fd, self.save_dir)
            if counts[label] < self.targets[label]:
                episode_id = f"episode_{next_id:06d}"
                write_episode(
                    self.save_dir / label / f"{episode_id}.pkl",
                    episode,
                    compress=self.compress,
                    episode_id=episode_id,
                    seed=self.seed,
                    interrupted=interrupted,
                )
                next_id, counts[label] = next_id + 1, counts[label] + 1
                _write_state(fd, next_id, counts)
        self._counts = counts

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(
                f"EpisodeRecorder could not write an episode to {self.save_dir}: {self._error}. "
                "No partial file was left; free disk space or fix the folder and restart."
            ) from self._error

    def flush(self) -> None:
        """Wait until every finished episode handed to the writer is on disk."""
        if self._queue is not None:
            self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Flush, stop the writer thread and drop unfinished episodes (also run at exit)."""
        _LIVE.discard(self)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        self._reset_buffers()
        self._raise_if_failed()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(save_dir={str(self.save_dir)!r}, "
            f"target_success={self.targets['success']}, "
            f"target_failure={self.targets['failure']})"
        )


def make_recorder(cfg: Mapping[str, Any]) -> EpisodeRecorder:
    """Build an :class:`EpisodeRecorder` from the ``collect`` config group.

    Reads ``save_dir`` and, when present, ``target_success``, ``target_failure``,
    ``frames_after_success``, ``compress``, ``seed`` and ``queue_size``; other keys of the
    group (``enabled``, ...) belong to the training script.
    """
    if not cfg.get("save_dir"):
        raise ValueError(
            "collect.save_dir is required to record episodes, e.g. collect.save_dir=data."
        )
    names = (
        "target_success",
        "target_failure",
        "frames_after_success",
        "compress",
        "seed",
        "queue_size",
    )
    return EpisodeRecorder(cfg["save_dir"], **{k: cfg[k] for k in names if k in cfg})


def record_until_done(
    env: EnvBase,
    recorder: EpisodeRecorder,
    next_policy: Callable[[], Callable[[TensorDictBase], TensorDictBase]],
    max_steps: int,
    *,
    max_rounds: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Play rounds of episodes on ``env`` (which carries ``recorder``) until its targets are met,
    or ``max_rounds`` rounds are played: then the counts fall short (``recorder.done`` is
    false, logged) and the caller decides what the episodes recorded are worth.

    Each round is one ``max_steps`` rollout of every env with the policy ``next_policy()``
    returns (a policy can depend on what is still missing, e.g. near misses for failures).
    """
    counts = recorder.counts
    total = sum(recorder.targets.values())
    rounds = 0
    with tqdm.tqdm(
        total=total, initial=sum(counts.values()), unit="episodes", disable=not progress
    ) as bar:
        while not recorder.done:
            if max_rounds is not None and rounds >= max_rounds:
                logger.warning(
                    "%d rounds of %d episodes did not meet the recording targets (%s in %s): "
                    "the policy rarely plays the missing outcome.",
                    max_rounds,
                    env.batch_size.numel(),
                    recorder.progress(),
                    recorder.save_dir,
                )
                break
            env.rollout(max_steps, next_policy(), break_when_any_done=False)
            recorder.flush()
            rounds += 1
            counts = recorder.counts
            bar.update(sum(counts.values()) - bar.n)
            bar.set_postfix_str(recorder.progress())
    return counts


@atexit.register
def _close_all() -> None:
    """Write what the recorders still hold before the interpreter exits."""
    for recorder in list(_LIVE):
        try:
            recorder.close()
        except RuntimeError as err:
            warnings.warn(str(err), RuntimeWarning, stacklevel=1)
