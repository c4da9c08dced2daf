"""read_scalar reads what TorchRL's CSV and TensorBoard loggers wrote; figures save as PNG."""

import math

import pytest
from matplotlib.figure import Figure
from torchrl.record.loggers import get_logger

from torchrl_reward.viz import moving_average, plot_curves, read_scalar, save_figure

VALUES = (0.5, math.nan, 0.25)  # NaN: an undefined ratio, logged as is


def _log(backend: str, root) -> None:
    logger = get_logger(backend, logger_name=str(root), experiment_name="logs")
    for i, value in enumerate(VALUES):
        logger.log_scalar("reward_model/fpr", value, step=10 * (i + 1))
    logger.log_scalar("env/success_once", 1.0, step=10)
    if backend == "tensorboard":
        logger.experiment.close()  # flush the event file


@pytest.mark.parametrize("backend", ["csv", "tensorboard"])
def test_read_scalar_reads_either_logger_backend(backend, tmp_path):
    pytest.importorskip(backend)  # csv is the standard library; tensorboard is a dev extra
    _log(backend, tmp_path)
    steps, values = read_scalar(tmp_path / "logs", "reward_model/fpr")
    assert steps == [10.0, 20.0, 30.0]
    assert values[0] == 0.5 and math.isnan(values[1]) and values[2] == 0.25
    assert read_scalar(tmp_path / "logs", "env/success_once") == ([10.0], [1.0])
    with pytest.raises(FileNotFoundError, match="'reward_model/recall'"):
        read_scalar(tmp_path / "logs", "reward_model/recall")


@pytest.mark.parametrize("backend", ["csv", "tensorboard"])
def test_read_scalar_keeps_a_resumed_runs_points(backend, tmp_path):
    pytest.importorskip(backend)
    _log(backend, tmp_path)  # steps 10, 20, 30; interrupted, then resumed from step 20's checkpoint
    resumed = get_logger(backend, logger_name=str(tmp_path), experiment_name="logs")
    for step, value in ((20, 0.75), (30, 0.125), (40, 0.0)):
        resumed.log_scalar("reward_model/fpr", value, step=step)
    if backend == "tensorboard":
        resumed.experiment.close()
    steps, values = read_scalar(tmp_path / "logs", "reward_model/fpr")
    assert steps == [10.0, 20.0, 30.0, 40.0]
    assert values == [0.5, 0.75, 0.125, 0.0]


def test_read_scalar_names_an_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="csv or tensorboard"):
        read_scalar(tmp_path, "env/success_once")


def test_figures_are_png(tmp_path):
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    curves = plot_curves({"x": ([0.0, 1.0, 2.0], [0.0, 1.0, 0.5])}, tmp_path / "b.png", title="t")
    assert curves.read_bytes()[:4] == b"\x89PNG"


def test_smoothing_skips_undefined_points():
    values = [1.0, math.nan, 3.0, 5.0]
    assert moving_average(values, 1)[2:] == [3.0, 5.0] and math.isnan(moving_average(values, 1)[1])
    assert moving_average(values, 2) == [1.0, 1.0, 3.0, 4.0]
    assert math.isnan(moving_average([math.nan, math.nan], 3)[1])
