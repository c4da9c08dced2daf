"""The pipeline's report: ``report.md`` with the figures a person wants, and its PNGs."""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from matplotlib.figure import Figure

from torchrl_reward.data import list_episode_files
from torchrl_reward.data.episode_io import CLASS_DIRS, iter_episodes
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.utils import atomic_write
from torchrl_reward.viz import plot_curves, read_scalar, save_figure

AGREEMENT = ("precision", "recall", "fpr", "accuracy")


def _scalar_mean(log_dir: Path, name: str) -> float:
    try:
        values = [v for v in read_scalar(log_dir, name)[1] if not math.isnan(v)]
    except FileNotFoundError:
        return math.nan
    return mean(values) if values else math.nan


def plot_example_frames(
    data_dir: Path, model: ResNetRewardModel, path: Path, per_class: int = 4
) -> Path:
    """Recorded frames with the model's P(success): the first success frame (else the last
    frame) of the first ``per_class`` readable episodes per class (unreadable files skipped)."""
    rows, proprio = [], []
    files = list_episode_files(data_dir)
    for name in CLASS_DIRS:
        chosen = [f for f in files if f.parent.name == name]
        if not chosen:
            continue
        for _, episode in islice(iter_episodes(data_dir, chosen), per_class):
            index = int(episode["success"].nonzero()[0]) if episode["success"].any() else -1
            rows.append((name, episode["pixels"][index], bool(episode["success"][index])))
            if model.proprio:
                proprio.append(torch.cat([episode[k][index] for k in model.proprio]))
    frames = torch.stack([frame for _, frame, _ in rows])
    probs = model.predict_proba(frames, torch.stack(proprio) if proprio else None)
    fig = Figure(figsize=(2 * per_class * model.num_views, 4.4))
    for i, ((name, frame, true), p) in enumerate(zip(rows, probs.tolist(), strict=True)):
        ax = fig.add_subplot(2, per_class, i + 1)
        ax.imshow(frame.numpy())
        ax.set_title(f"{name}: sim {int(true)}\nP(success)={p:.2f}", fontsize=8)
        ax.axis("off")
    return save_figure(fig, path)


# What the demo asks of a classifier that can serve as a reward: recall at a low FPR.
USABLE_RECALL, USABLE_FPR = 0.8, 0.02


def classifier_verdict(metrics: dict[str, float], frame_label: str, proprio: bool) -> str:
    """One sentence on whether the trained classifier can serve as a reward, and why not."""
    recall, fpr = metrics["recall"], metrics["fpr"]
    positives = int(metrics["tp"] + metrics["fn"])
    figures = (
        f"recall {recall:.2f} at FPR {fpr:.3f} on held-out episodes, {positives} positive frames"
    )
    if recall >= USABLE_RECALL and fpr <= USABLE_FPR:
        return f"**The classifier works** ({figures}, labels `{frame_label}`)."
    if frame_label != "placed" and not proprio:
        cause = (
            "`success` labels also ask for a static arm, which no still frame shows: train "
            "with `model.proprio=[qvel]` (or `frame_label=placed`)"
        )
    else:
        cause = "too few success frames or epochs: record more episodes or train longer"
    return (
        f"**The classifier is not usable as a reward** ({figures}, below recall "
        f"{USABLE_RECALL} at FPR <= {USABLE_FPR}); likely cause: {cause}."
    )


def _starting_model(model: ResNetRewardModel) -> list[str]:
    """A line on where training started when it fine-tuned a kept model (``init_from``)."""
    init_from = model.checkpoint_metadata["training_config"].get("init_from")
    if init_from is None:
        return []
    epoch = model.checkpoint_metadata.get("epoch")
    kept = (
        "no fine-tuning epoch beat it on this run's held-out episodes, so it is the model kept"
        if epoch == 0
        else f"fine-tuned on this run's episodes; epoch {epoch} kept"
    )
    return [f"Training started from `{init_from}`; {kept}.", ""]


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) > 1:
        return str(int(value))
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _exports(stages: dict[str, Any]) -> str:
    """Each export's parity verdict, e.g. ``onnxruntime-int8 1.000 passed``."""
    if "export" not in stages:
        return "none (export.enabled=false)"
    checked = {n: e for n, e in stages["export"]["backends"].items() if "agreement" in e}
    return ", ".join(
        f"{name} {_fmt(e['agreement'])} {'passed' if e['passed'] else 'rejected'}"
        for name, e in checked.items()
    )


def write_report(run_dir: Path, state: dict[str, Any], model: ResNetRewardModel) -> dict:
    """Write ``report.md`` and its PNGs into ``run_dir``; return the report's headline figures."""
    stages = state["stages"]
    collect, train, ppo = stages["collect"], stages["train"], stages["ppo"]
    log_dir = Path(ppo["log_dir"])
    plot_curves(
        {
            "env/success_once (sim)": read_scalar(log_dir, "env/success_once"),
            "reward_model/fpr": read_scalar(log_dir, "reward_model/fpr"),
        },
        run_dir / "ppo_success.png",
        title="PPO with the learned reward",
        ylabel="rate",
    )
    plot_curves(
        {"rollout/rewards (model)": read_scalar(log_dir, "rollout/rewards")},
        run_dir / "ppo_rewards.png",
        title="Model reward per step",
        ylabel="reward",
    )
    plot_example_frames(Path(collect["data_dir"]), model, run_dir / "example_frames.png")
    agreement = {k: _scalar_mean(log_dir, f"reward_model/{k}") for k in AGREEMENT}
    reward_s = _scalar_mean(log_dir, "time/compute_model_rewards")
    reward_share = _scalar_mean(log_dir, "time/reward_share")
    m = train["metrics"]
    model_dir = Path(train["checkpoint"]).parent
    lines = [
        f"# torchrl-reward pipeline report ({state['preset']} preset)",
        "",
        f"Run folder: `{run_dir}`",
        "",
        classifier_verdict(
            m,
            model.checkpoint_metadata["training_config"]["frame_label"],
            proprio=bool(model.proprio),
        ),
        "",
        "## 1. Collected episodes",
        "",
        f"success: {collect['counts']['success']}, failure: {collect['counts']['failure']} "
        f"(policy: {state['config']['collect']['policy']}); "
        f"frames: {train['data'].get('frames', 'n/a')}",
        "",
        "![example frames](example_frames.png)",
        "",
        "## 2. Reward model (validation, held out by episode)",
        "",
        *_starting_model(model),
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in sorted(m.items()) if k != "threshold"),
        f"| threshold (target FPR {state['config']['train'].get('target_fpr', 0.01)}) "
        f"| {_fmt(train['threshold'])} |",
        f"| epochs | {train['epochs']} |",
        "",
        f"![training curves]({_rel(model_dir / 'curves.png', run_dir)}) "
        f"![ROC]({_rel(model_dir / 'roc.png', run_dir)})",
        "",
        "## 3. PPO with the learned reward",
        "",
        "| figure | value |",
        "|---|---|",
        f"| success rate before (sim, deterministic) | {_fmt(ppo['success_before'])} |",
        f"| success rate after | {_fmt(ppo['success_after'])} |",
        *_dense_arm(stages),
        f"| PPO frames | {ppo['frames']} |",
        f"| reward backend | {ppo.get('reward_backend') or 'n/a'} |",
        f"| exports' label agreement with float32 torch | {_exports(stages)} |",
        *(
            f"| online agreement {k} (mean over iterations) | {_fmt(v)} |"
            for k, v in agreement.items()
        ),
        f"| compute_model_rewards per iteration (s) | {_fmt(reward_s)} |",
        f"| share of iteration time | {_fmt(reward_share)} |",
        "",
        _budget_note(state["config"].get("ppo_init", "scratch"), ppo["frames"]),
        "",
        "![PPO success](ppo_success.png) ![model rewards](ppo_rewards.png)",
        "",
        "## Time per stage",
        "",
        "| stage | minutes |",
        "|---|---|",
        *(
            f"| {name} | {stages[name]['seconds'] / 60:.1f} |"
            for name in ("collect", "train", "export", "ppo", "ppo_dense")
            if name in stages
        ),
        "",
    ]
    with atomic_write(run_dir / "report.md", "w") as f:
        f.write("\n".join(lines))
    return {"agreement": agreement, "reward_s": reward_s, "reward_share": reward_share}


def _dense_arm(stages: dict[str, Any]) -> list[str]:
    """The dense-reward arm's row (same start, seed and frames), when the job ran it."""
    dense = stages.get("ppo_dense")
    if dense is None:
        return []
    return [
        f"| success rate after, dense reward instead ({dense['frames']} frames, same start and "
        f"seed) | {_fmt(dense['success_after'])} |"
    ]


def _budget_note(ppo_init: str, frames: int) -> str:
    """Where the PPO stage started, and where to read what a full learned-reward run does."""
    return (
        f"PPO started from `init={ppo_init}` and ran {frames} frames on the learned reward: "
        "enough to show the loop, not to compare rewards. Whether the learned reward lifts a "
        "weak policy, beside dense and sparse arms at the same budget and seeds, is measured "
        'in BENCHMARKS.md, "From a weak start" (`scripts/ppo.py init=weak_bc ...`).'
    )


def _rel(path: Path, start: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(start).resolve()))
    except ValueError:
        return str(path)
