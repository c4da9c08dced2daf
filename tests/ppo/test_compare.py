"""Reward arms side by side, from run folders written by TorchRL's CSV logger."""

import pytest
from torchrl.record.loggers import get_logger

from torchrl_reward.ppo.compare import markdown_table, plot_arms, summarise_run


def _run(tmp_path, name, success, fpr=None, recall=0.9):
    run_dir = tmp_path / name
    logger = get_logger("csv", logger_name=str(run_dir), experiment_name="logs")
    for i, value in enumerate(success):
        step = (i + 1) * 1000
        logger.log_scalar("eval/success_once", value, step=step)
        logger.log_scalar("time/elapsed", 60.0 * (i + 1), step=step)
        if fpr is not None:  # a learned arm logs its agreement every iteration
            logger.log_scalar("reward_model/fpr", fpr, step=step)
            logger.log_scalar("reward_model/recall", recall, step=step)
            logger.log_scalar("reward_model/precision", 0.25, step=step)
    return run_dir


def test_table_and_plot_show_every_seed_and_the_arm_mean(tmp_path):
    runs = [
        summarise_run("dense", _run(tmp_path, "dense_s1", [0.3, 0.6, 0.9])),
        summarise_run("dense", _run(tmp_path, "dense_s2", [0.3, 0.5, 0.7])),
        summarise_run("learned", _run(tmp_path, "learned_s1", [0.3, 0.4, 0.5], fpr=0.02)),
    ]
    assert runs[0].final == 0.9 and runs[0].minutes == pytest.approx(3.0)
    assert runs[0].model_fpr is None and runs[2].model_fpr == pytest.approx(0.02)
    assert runs[0].agreement is None
    assert runs[2].agreement.frames == [1000.0, 2000.0, 3000.0]
    assert runs[2].agreement.recall == pytest.approx([0.9] * 3)
    assert runs[2].agreement.precision == pytest.approx([0.25] * 3)
    table = markdown_table(runs)
    assert "| dense | dense_s1 | 0.30 | 0.60 | 0.90 | 0.90 | - | 3.0 |" in table
    assert "| **dense** | mean of 2 |" in table and "**0.80** (0.70-0.90)" in table
    assert "| learned | learned_s1 | 0.30 | 0.40 | 0.50 | 0.50 | 0.020 | 3.0 |" in table
    with_agreement = plot_arms(runs, tmp_path / "arms.png", title="arms")
    success_only = plot_arms(runs[:2], tmp_path / "dense.png", title="dense")
    for path in (with_agreement, success_only):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the learned arm adds its recall and FPR panels under the success panel
    assert _png_height(with_agreement) > 1.5 * _png_height(success_only)


def _png_height(path):
    return int.from_bytes(path.read_bytes()[20:24], "big")  # IHDR: width, then height


def test_run_without_evaluations_says_how(tmp_path):
    run_dir = tmp_path / "run"
    get_logger("csv", logger_name=str(run_dir), experiment_name="logs").log_scalar(
        "eval/success_once", 0.0, step=0
    )
    (run_dir / "logs/scalars/eval/success_once.csv").write_text("")
    with pytest.raises(ValueError, match=r"eval\.interval"):
        summarise_run("dense", run_dir)


def test_agreement_logged_at_other_steps_is_named(tmp_path):
    run_dir = _run(tmp_path, "learned", [0.3, 0.4], fpr=0.01)
    get_logger("csv", logger_name=str(run_dir), experiment_name="logs").log_scalar(
        "reward_model/recall", 0.5, step=9000
    )
    with pytest.raises(ValueError, match="logged at other steps"):
        summarise_run("learned", run_dir)
