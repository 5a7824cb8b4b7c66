"""The recovery figures of ``twin demo`` at smoke size: readable (no text of one panel over another
panel or its text, fonts of 9 pt and up) and saying in the figure itself whether the rule was
recovered."""

from __future__ import annotations

import itertools

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.transforms import Bbox

from twin.fit.recovery import RecoveryConfig, RecoveryResult, run_recovery
from twin.fit.train import FitConfig
from twin.sim.agents import Family
from twin_cli.figures import MIN_FONT_PT, RECOVERED_R, delta_w_map_figure, learning_curves_figure, recovery_verdict, visible_texts, weight_trajectories_figure, write_figures


@pytest.fixture(scope="module")
def recovery() -> RecoveryResult:
    """The demo's step 1 at smoke size: 4 REINFORCE learners, two Markovian rules, 2 epochs."""
    torch.manual_seed(0)
    cfg = RecoveryConfig(n_animals=4, n_test=2, val_fraction=0.25, n_trials=900, rules=("reinforce", "dnn"), fit=FitConfig(epochs=2, patience=2), dw_states=20, dw_trials=500)
    return run_recovery(Family.REINFORCE, cfg, progress=False)


def _shrink(b: Bbox, px: float = 1.0) -> Bbox:
    return Bbox.from_extents(b.x0 + px, b.y0 + px, b.x1 - px, b.y1 - px)


def overlaps(fig: MplFigure) -> list[str]:
    """Pairs of texts of different panels (or of the figure and a panel) whose boxes overlap,
    and texts lying over another panel's plotting area."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    # a text's group: its legend, else its panel, else itself (a figure-level title or label)
    legend_of = {id(t): leg for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg is not None for t in leg.get_texts()}
    texts = [(t, legend_of.get(id(t), t.axes if t.axes is not None else t), t.axes, _shrink(t.get_window_extent(renderer))) for t in visible_texts(fig)]
    bad = []
    for (a, group_a, _, box_a), (b, group_b, _, box_b) in itertools.combinations(texts, 2):
        if group_a is not group_b and box_a.overlaps(box_b):
            bad.append(f"{a.get_text()!r} over {b.get_text()!r}")
    for t, _, ax_t, box in texts:
        for ax in fig.axes:
            if ax is not ax_t and ax.get_visible() and _shrink(ax.get_window_extent(renderer)).overlaps(box):
                bad.append(f"{t.get_text()!r} over another panel")
    return bad


def test_recovery_verdict_is_stated_and_can_fail() -> None:
    assert recovery_verdict(0.94)[0] and "recovered: r = 0.94" in recovery_verdict(0.94)[1]
    ok, line = recovery_verdict(-0.06)
    assert not ok and line.startswith("NOT RECOVERED: r = -0.06")
    assert not recovery_verdict(float("nan"))[0]
    assert recovery_verdict(RECOVERED_R)[0] and not recovery_verdict(RECOVERED_R - 0.01)[0]


def test_recovery_figures_have_no_overlapping_text(recovery: RecoveryResult) -> None:
    models = {r: recovery.fits[r].model for r in ("reinforce", "dnn")}
    figs = [weight_trajectories_figure(recovery.test, models), learning_curves_figure(recovery.test, {"truth": recovery.truth, **models})]
    figs += [delta_w_map_figure(dw.table, f"inferred {rule}", r=dw.min_correlation) for rule, dw in recovery.dw.items()]
    assert len(figs) == 4
    for fig in figs:
        assert overlaps(fig) == [], fig.get_suptitle()
        assert min(t.get_fontsize() for t in visible_texts(fig)) >= MIN_FONT_PT
        for ax in fig.axes:
            assert ax.get_ylabel(), "every panel's y axis is labelled"
            # an x axis is labelled on the panel or on the panel it shares it with (below)
            assert ax.get_xlabel() or any(o.get_xlabel() for o in ax.get_shared_x_axes().get_siblings(ax))


def test_delta_w_figure_marks_the_verdict_in_the_figure(recovery: RecoveryResult) -> None:
    dw = recovery.dw["dnn"]
    failed = delta_w_map_figure(dw.table, "t", r=-0.06)
    assert "NOT RECOVERED: r = -0.06" in failed.get_suptitle() and failed.patch.get_linewidth() > 0
    ok = delta_w_map_figure(dw.table, "t", r=0.95)
    assert "recovered: r = 0.95" in ok.get_suptitle() and "NOT" not in ok.get_suptitle()
    # the figure the demo writes carries the run's own correlation
    paths = write_figures(recovery, recovery_dir := (__import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "figs"), models=("reinforce", "dnn"))
    assert {p.name for p in paths} == {"reinforce_weights.png", "reinforce_learning_curves.png", "reinforce_dw_reinforce.png", "reinforce_dw_dnn.png"}
    assert all(p.stat().st_size > 5000 for p in paths) and recovery_dir.is_dir()


def test_the_overlap_check_catches_crowded_panels() -> None:
    """Without a layout engine, wide y tick labels of the right panel run into the left panel."""
    fig = MplFigure(figsize=(3.0, 2.0))
    left, right = fig.subplots(1, 2)
    for ax in (left, right):
        ax.plot([0, 1], [0, 1e6])
        ax.set_yticks([0, 5e5, 1e6], ["0 µL of water", "half a million", "one million trials"])
    assert overlaps(fig)
