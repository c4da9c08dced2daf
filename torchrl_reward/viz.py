"""Read TorchRL CSV-logger scalars back, plot curves, save figures atomically as PNG."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from torchrl_reward.utils import atomic_write

Series = tuple[list[float], list[float]]


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically (a bare ``Figure`` renders with Agg, no pyplot state)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    return path


def read_scalar(log_dir: str | os.PathLike, name: str) -> Series:
    """Steps and values of scalar ``name`` (e.g. ``"env/success_once"``) from a CSV logger dir.

    ``log_dir`` is the logger's experiment folder, the one holding ``scalars/``.
    """
    path = Path(log_dir) / "scalars" / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"No scalar {name!r} logged under {log_dir} ({path} is missing).")
    steps, values = [], []
    with path.open() as f:
        for row in csv.reader(f):
            if len(row) == 2:
                steps.append(float(row[0]))
                values.append(float(row[1]))
    return steps, values


def plot_curves(
    series: Mapping[str, Series],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str = "env steps",
    ylabel: str = "",
    smooth: int = 1,
) -> Path:
    """One line per labelled series, optionally smoothed by a trailing moving average."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        ax.plot(x, _moving_average(y, smooth), label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return save_figure(fig, path)


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
