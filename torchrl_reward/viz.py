"""Read TorchRL logger scalars back (CSV or TensorBoard), plot curves, save PNGs atomically."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from torchrl_reward.utils import atomic_write

Series = tuple[list[float], list[float]]
_EVENTS = "events.out.tfevents.*"


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically (a bare ``Figure`` renders with Agg, no pyplot state)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    return path


def read_scalar(log_dir: str | os.PathLike, name: str) -> Series:
    """Steps and values of scalar ``name`` (e.g. ``"env/success_once"``) a TorchRL logger wrote.

    ``log_dir`` is the logger's experiment folder: the CSV logger's (holding ``scalars/``) or
    the TensorBoard logger's (holding ``events.out.tfevents.*``), so reports work with either
    ``logger.backend``. A resumed run logs again from its checkpoint's step what it logged after
    it before the interruption: only the latest run's points are kept past that step, so steps
    increase. Raises ``FileNotFoundError`` when ``name`` was not logged there.
    """
    log_dir = Path(log_dir)
    path = log_dir / "scalars" / f"{name}.csv"
    if path.is_file():
        return _latest_run(*_read_csv(path))
    if any(log_dir.glob(_EVENTS)):
        return _latest_run(*_read_tensorboard(log_dir, name))
    raise FileNotFoundError(
        f"No scalar {name!r} logged under {log_dir}: neither {path} nor TensorBoard event "
        "files are there (logger.backend csv or tensorboard writes them)."
    )


def _latest_run(steps: list[float], values: list[float]) -> Series:
    """Drop the points a later (resumed) run logged again: a step at or below one already read
    replaces every point from that step on."""
    kept_steps: list[float] = []
    kept_values: list[float] = []
    for step, value in zip(steps, values, strict=True):
        while kept_steps and kept_steps[-1] >= step:
            kept_steps.pop()
            kept_values.pop()
        kept_steps.append(step)
        kept_values.append(value)
    return kept_steps, kept_values


def _read_csv(path: Path) -> Series:
    steps, values = [], []
    with path.open() as f:
        for row in csv.reader(f):
            if len(row) == 2:
                steps.append(float(row[0]))
                values.append(float(row[1]))
    return steps, values


def _read_tensorboard(log_dir: Path, name: str) -> Series:
    # Imported here: tensorboard is optional, and needed only where it wrote the logs.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    if name not in events.Tags()["scalars"]:
        raise FileNotFoundError(f"No scalar {name!r} in the TensorBoard events under {log_dir}.")
    scalars = events.Scalars(name)
    return [float(e.step) for e in scalars], [e.value for e in scalars]


def plot_curves(
    series: Mapping[str, Series],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str = "env steps",
    ylabel: str = "",
    smooth: int = 1,
) -> Path:
    """One line per labelled series, optionally smoothed by a trailing moving average.

    NaN points (undefined ratios) are gaps, and left out of the smoothing windows.
    """
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        ax.plot(x, moving_average(y, smooth), label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return save_figure(fig, path)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean of up to ``window`` points; NaNs (undefined ratios) are skipped, not summed
    (a running sum would turn every later point NaN), and a window of only NaN stays NaN."""
    out = []
    for i in range(len(values)):
        kept = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        out.append(sum(kept) / len(kept) if kept else math.nan)
    return out
