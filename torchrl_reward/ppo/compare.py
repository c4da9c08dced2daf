"""Reward arms side by side: PPO runs grouped by arm, their evaluation success over frames.

Each arm is one reward (dense, sparse, learned...) run from the same start with several seeds;
the table and the plot read the runs' own CSV logs (``<run>/logs/scalars``). For learned arms
the plot adds the reward model's online recall, precision and FPR against the simulator's
truth, so reward hacking (FPR rising and precision falling while success falls) shows beside
the success it would cost.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from torchrl_reward.viz import moving_average, read_scalar, save_figure

SUCCESS = "eval/success_once"
SMOOTH = 10  # iterations in the trailing mean of the noisy per-batch agreement
_AGREEMENT = ("recall", "precision", "fpr")


@dataclass
class Agreement:
    """A learned arm's per-iteration recall, precision and FPR against the simulator's truth."""

    frames: list[float]
    recall: list[float]
    precision: list[float]
    fpr: list[float]

    @classmethod
    def read(cls, log_dir: Path) -> Agreement | None:
        """The run's ``reward_model/*`` logs, or ``None`` for an arm without a model."""
        try:
            series = {k: read_scalar(log_dir, f"reward_model/{k}") for k in _AGREEMENT}
        except FileNotFoundError:
            return None
        frames = series["recall"][0]
        if any(steps != frames for steps, _ in series.values()):
            raise ValueError(
                f"{log_dir}: reward_model/{{{','.join(_AGREEMENT)}}} were logged at other steps."
            )
        return cls(frames, **{k: values for k, (_, values) in series.items()})


@dataclass
class RunSummary:
    """One seed of one arm: success at each evaluation, the model's online agreement, wall time.

    ``model_fpr`` is the mean FPR of the last iterations (the table's figure); ``agreement``
    holds every iteration's (the plot's)."""

    arm: str
    run_dir: Path
    frames: list[float]
    success: list[float]
    model_fpr: float | None
    minutes: float
    agreement: Agreement | None = None

    @property
    def final(self) -> float:
        return self.success[-1]


def _last_value(log_dir: Path, name: str) -> float | None:
    try:
        _, values = read_scalar(log_dir, name)
    except FileNotFoundError:
        return None
    return values[-1] if values else None


def summarise_run(arm: str, run_dir: str | os.PathLike, *, last: int = 10) -> RunSummary:
    """Read one run; ``model_fpr`` is the mean of the last ``last`` iterations (learned arms)."""
    run_dir = Path(run_dir)
    log_dir = run_dir / "logs"
    frames, success = read_scalar(log_dir, SUCCESS)
    if not success:
        raise ValueError(f"{run_dir} logged no {SUCCESS}; run it with eval.interval > 0.")
    elapsed = _last_value(log_dir, "time/elapsed")
    agreement = Agreement.read(log_dir)
    return RunSummary(
        arm=arm,
        run_dir=run_dir,
        frames=frames,
        success=success,
        model_fpr=None if agreement is None else statistics.fmean(agreement.fpr[-last:]),
        minutes=(elapsed or float("nan")) / 60.0,
        agreement=agreement,
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
    """Mean success per arm over frames, with the band between its worst and best seed; below
    it, when any run is a learned arm, each such run's online recall (solid), precision (dashed)
    and FPR (trailing means of ``SMOOTH`` iterations) on the same frame axis, in its arm's
    colour."""
    learned = [r for r in runs if r.agreement is not None]
    rows = 3 if learned else 1
    fig = Figure(figsize=(6.5, 3.8 + 3.6 * bool(learned)))
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, height_ratios=[1.6, 1, 1][:rows])
    axes = axes[:, 0]
    colours = {}
    for arm, group in _by_arm(runs).items():
        n = min(len(r.success) for r in group)
        frames = group[0].frames[:n]
        columns = list(zip(*(r.success[:n] for r in group), strict=True))
        (line,) = axes[0].plot(
            frames, [statistics.fmean(c) for c in columns], label=f"{arm} (n={len(group)})"
        )
        colours[arm] = line.get_color()
        axes[0].fill_between(
            frames,
            [min(c) for c in columns],
            [max(c) for c in columns],
            color=colours[arm],
            alpha=0.2,
        )
    axes[0].set(title=title, ylabel="deterministic success", ylim=(0, 1.02))
    axes[0].legend(fontsize=8)
    for r in learned:
        a = r.agreement
        axes[1].plot(a.frames, moving_average(a.recall, SMOOTH), color=colours[r.arm], lw=1)
        axes[1].plot(
            a.frames, moving_average(a.precision, SMOOTH), color=colours[r.arm], lw=1, ls="--"
        )
        axes[2].plot(
            a.frames, [100 * v for v in moving_average(a.fpr, SMOOTH)], color=colours[r.arm], lw=1
        )
    if learned:
        axes[1].set(ylabel="recall, - - precision", ylim=(0, 1.02))
        axes[2].set(ylabel="online FPR (%)", ylim=(0, None))
    axes[-1].set(xlabel="PPO env frames")
    axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _by_arm(runs: Sequence[RunSummary]) -> Mapping[str, list[RunSummary]]:
    groups: dict[str, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault(r.arm, []).append(r)
    return groups
