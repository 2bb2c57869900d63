"""The interactive figures: the static figure functions draw what they claim, and the slider
front-ends build without a kernel."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from markovformer import canonical as C  # noqa: E402
from markovformer import widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_init_explorer_counts_starts_by_basin():
    fig = widgets.init_explorer_figure(0.5, 0.8, scale=0.5, seed=3, n=300)
    title = fig.axes[0].get_title()
    starts = np.random.default_rng(3).normal(0.0, 0.5, size=(300, 2))
    frac = C.basin_label(starts[:, 0], starts[:, 1], switching=True).mean()
    assert f"{frac:.2f} of 300 starts" in title


def test_basin_curve_matches_the_regimes():
    sw, st = widgets._basin_curve(True), widgets._basin_curve(False)
    small = sw["scale"] < 0.05
    assert np.all(sw["global"][small] == 0.0) and np.all(st["global"][small] == 1.0)
    assert 0.3 < sw["global"][-1] < 0.5 < st["global"][-1]


def test_init_explorer_draws_measured_points():
    measured = {"switching": {"scale": [0.02, 0.1], "success": [0.3, 1.0]}}
    fig = widgets.init_explorer_figure(0.5, 0.8, measured=measured)
    lines = [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "o"]
    assert len(lines) == 1 and list(lines[0].get_ydata()) == [0.3, 1.0]
    fig = widgets.init_explorer_figure(0.2, 0.3, measured=measured)  # no sticky entry: no points
    assert not [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "o"]


@pytest.mark.parametrize(
    "build", [widgets.chain_explorer, widgets.canonical_explorer, widgets.init_explorer]
)
def test_slider_front_ends_build(build):
    pytest.importorskip("ipywidgets")
    box = build()
    assert len(box.children) == 2


def _synthetic_run(n_diag: int = 11, steps: int = 100) -> dict:
    rng = np.random.default_rng(0)
    return {
        "chain": (0.5, 0.8),
        "init": "test",
        "seed": 0,
        "outcome": "global",
        "e": np.linspace(1.0, 0.8, n_diag),
        "w": np.linspace(-1.0, -1.2, n_diag),
        "steps": np.linspace(0, steps, n_diag).astype(int),
        "loss": 0.62 + 0.01 * rng.random(steps),
        "rank1": {"w1": np.ones(n_diag)},
    }


def test_run_explorer_marks_the_chosen_step():
    run = _synthetic_run()
    fig = widgets.run_explorer_figure([run], index=0, step=55)  # diagnostic steps every 10
    assert "step 50, (e, w) = (0.90, -1.10)" in fig.axes[0].get_title()
    dots = [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "."][0]
    land = C.CanonicalLandscape(0.5, 0.8)
    np.testing.assert_allclose(dots.get_ydata(), land.loss_at_optimal_bias(run["e"], run["w"]))


def test_run_explorer_rejects_a_bad_index():
    with pytest.raises(ValueError, match="index must be in"):
        widgets.run_explorer_figure([_synthetic_run()], index=3)


def test_run_explorer_front_end_builds():
    pytest.importorskip("ipywidgets")
    box = widgets.run_explorer([_synthetic_run(), _synthetic_run()])
    assert len(box.children) == 2


def test_grid_explorer_draws_the_chosen_cell():
    grid = np.round(np.arange(0.1, 0.95, 0.1), 2)
    curves = {(0.7, 0.6): {"tied": np.full(50, 0.69), "untied": np.full(50, 0.645)}}
    fig = widgets.grid_explorer_figure(curves, np.zeros((9, 9)), grid, 0.7, 0.6)
    tied = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "tied"][0]
    np.testing.assert_allclose(tied.get_ydata(), 0.69)
    with pytest.raises(ValueError, match="not a cell"):
        widgets.grid_explorer_figure(curves, np.zeros((9, 9)), grid, 0.3, 0.3)


def test_kernel_example_bandwidth():
    from markovformer.experiments import gdd

    narrow, wide = gdd.kernel_example(c=0.5), gdd.kernel_example(c=8.0)
    np.testing.assert_allclose(narrow["softmax"], wide["softmax"])  # c does not touch softmax
    np.testing.assert_allclose(narrow["gaussian-rownorm"].sum(1), 1.0, atol=1e-6)
    assert np.all(wide["gaussian"] >= narrow["gaussian"] - 1e-12)  # exp(-r/tau) grows with tau
    fig = widgets.kernel_explorer_figure(c=0.5)
    assert len(fig.axes) == 6  # three maps and their colour bars


@pytest.mark.parametrize("build", ["grid", "kernel"])
def test_more_front_ends_build(build):
    pytest.importorskip("ipywidgets")
    grid = np.round(np.arange(0.1, 0.95, 0.1), 2)
    curves = {(0.5, 0.8): {"tied": np.full(5, 0.66)}}
    box = (
        widgets.grid_explorer(curves, np.zeros((9, 9)), grid)
        if build == "grid"
        else widgets.kernel_explorer()
    )
    assert len(box.children) == 2


def test_dataset_explorer_shows_the_generated_sentences():
    from markovformer import ntp

    fig = widgets.dataset_explorer_figure(n_tokens=8, n_sentences=4, max_len=5, seed=3)
    assert fig.axes
    data = ntp.make_dataset(8, 4, 2, 5, 3)
    assert len(data) == 4 and data.lengths.max() <= 5
    with pytest.raises(ValueError, match="max_len"):
        widgets.dataset_explorer_figure(n_tokens=3, max_len=6)
    pytest.importorskip("ipywidgets")
    assert len(widgets.dataset_explorer().children) == 2


@pytest.mark.parametrize("point", [(1.0, -1.0, 0.0), (0.9, -1.2, 0.8)])
def test_reduction_explorer_is_exact(point):
    fig = widgets.reduction_explorer_figure(*point, length=64)
    diff = float(fig.axes[1].get_title().split("=")[1])
    assert diff < 1e-10
    pytest.importorskip("ipywidgets")
    assert len(widgets.reduction_explorer().children) == 2


def test_a_log_slider_reads_out_the_value_it_was_given():
    """The exponent grid holds log10(value): the readout shows 0.5, not the 0.501 of a grid
    that starts at the lower end."""
    import math

    from markovformer.widgets import _log_slider

    for value, lo, hi in ((0.5, -2, 0.6), (2.0, -1, 1.5), (1.0, -1, 1)):
        s = _log_slider("x", value, lo, hi)
        k = (math.log10(value) - s.min) / s.step
        assert abs(k - round(k)) < 1e-9  # on the grid
        assert f"{10 ** (s.min + round(k) * s.step):{s.readout_format}}" == f"{value:g}"
        assert lo <= s.min < lo + s.step and hi - s.step < s.max <= hi
