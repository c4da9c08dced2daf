"""Reward arms side by side: PPO runs grouped by arm, their evaluation success over frames.

Each arm is one reward (dense, sparse, learned...) run from the same start with several seeds;
the table and the plot read the runs' own CSV logs (``<run>/logs/scalars``).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from torchrl_reward.viz import read_scalar, save_figure

SUCCESS = "eval/success_once"


@dataclass
class RunSummary:
    """One seed of one arm: success at each evaluation, the model's online FPR, wall time."""

    arm: str
    run_dir: Path
    frames: list[float]
    success: list[float]
    model_fpr: float | None
    minutes: float

    @property
    def final(self) -> float:
        return self.success[-1]


def _last_mean(log_dir: Path, name: str, last: int) -> float | None:
    try:
        _, values = read_scalar(log_dir, name)
    except FileNotFoundError:
        return None
    return statistics.fmean(values[-last:]) if values else None


def summarise_run(arm: str, run_dir: str | os.PathLike, *, last: int = 10) -> RunSummary:
    """Read one run; ``model_fpr`` is the mean of the last ``last`` iterations (learned arms)."""
    run_dir = Path(run_dir)
    log_dir = run_dir / "logs"
    frames, success = read_scalar(log_dir, SUCCESS)
    if not success:
        raise ValueError(f"{run_dir} logged no {SUCCESS}; run it with eval.interval > 0.")
    elapsed = _last_mean(log_dir, "time/elapsed", 1)
    return RunSummary(
        arm=arm,
        run_dir=run_dir,
        frames=frames,
        success=success,
        model_fpr=_last_mean(log_dir, "reward_model/fpr", last),
        minutes=(elapsed or float("nan")) / 60.0,
    )


def markdown_table(runs: Sequence[RunSummary]) -> str:
    """Arm, seed (run folder), success at each evaluation (a column per frame count), final,
    model FPR, wall time; then each arm's mean final success and its spread over seeds."""
    points = sorted({f for r in runs for f in r.frames})
    header = ["arm", "run", *(f"{f / 1000:.0f}k" for f in points), "final", "model FPR", "min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        at = dict(zip(r.frames, r.success, strict=True))
        cells = [f"{at[f]:.2f}" if f in at else "" for f in points]
        fpr = "-" if r.model_fpr is None else f"{r.model_fpr:.3f}"
        row = [r.arm, r.run_dir.name, *cells, f"{r.final:.2f}", fpr, f"{r.minutes:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for arm, group in _by_arm(runs).items():
        finals = [r.final for r in group]
        spread = f"{min(finals):.2f}-{max(finals):.2f}"
        lines.append(
            f"| **{arm}** | mean of {len(group)} | "
            + " | ".join([""] * len(points))
            + f" | **{statistics.fmean(finals):.2f}** ({spread}) | | |"
        )
    return "\n".join(lines)


def plot_arms(runs: Sequence[RunSummary], path: str | os.PathLike, *, title: str) -> Path:
    """Mean success per arm over frames, with the band between its worst and best seed."""
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    for arm, group in _by_arm(runs).items():
        n = min(len(r.success) for r in group)
        frames = group[0].frames[:n]
        columns = list(zip(*(r.success[:n] for r in group), strict=True))
        ax.plot(frames, [statistics.fmean(c) for c in columns], label=f"{arm} (n={len(group)})")
        ax.fill_between(frames, [min(c) for c in columns], [max(c) for c in columns], alpha=0.2)
    ax.set(title=title, xlabel="PPO env frames", ylabel="deterministic success", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _by_arm(runs: Sequence[RunSummary]) -> Mapping[str, list[RunSummary]]:
    groups: dict[str, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault(r.arm, []).append(r)
    return groups
