"""Figures, written without a display: PNGs with matplotlib's Agg backend (learning curves, phase-1
capacity, the validation metric over the drop rates) and Optuna's own plotly figures as HTML files."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(histories: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Train (dashed) and validation (solid) loss and accuracy per epoch for each labelled history.

    The gap between a label's dashed and solid lines is its overfitting gap.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, (label, rows) in enumerate(histories.items()):
        color = f"C{i}"
        epochs = [r["epoch"] for r in rows]
        for ax, metric in zip(axes, ("loss", "acc")):
            if any(f"train_{metric}" in r for r in rows):
                ax.plot(epochs, [r.get(f"train_{metric}") for r in rows], "--", color=color, label=f"{label} train")
            if any(f"val_{metric}" in r for r in rows):
                ax.plot(epochs, [r.get(f"val_{metric}") for r in rows], "-", color=color, label=f"{label} validation")
    axes[0].set_ylabel("cross-entropy loss (nats)")
    axes[1].set_ylabel("accuracy (fraction correct)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def capacity(rows: list[dict], chosen: int | None, path: Path, title: str) -> Path:
    """Phase 1: train and validation accuracy against hidden width, the chosen width (if known) marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    widths = [r["width"] for r in rows]
    ax.plot(widths, [r["train_acc"] for r in rows], "o--", label="train (dropout off)")
    ax.plot(widths, [r["val_acc"] for r in rows], "o-", label="validation")
    if chosen is not None:
        ax.axvline(chosen, color="k", alpha=0.4, label=f"chosen width {chosen}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("hidden width (units per layer)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


_AXIS_LABELS = {
    "drop_input": "input drop rate (fraction of inputs zeroed)",
    "drop_hidden": "hidden drop rate (fraction of hidden units zeroed)",
}
_STATES = {"PRUNED": ("x", "0.45", "pruned"), "FAIL": ("X", "tab:red", "failed")}


def drop_rates(trials, path: Path, title: str, value_label: str, maximize: bool = True) -> Path | None:
    """The search's validation metric over the drop rates: one point per trial.

    ``trials`` is ``study.trials_dataframe()``. The axes are ``drop_input`` and ``drop_hidden`` when
    searched (otherwise the first two numeric parameters; with one parameter the metric is the y axis).
    Completed trials are coloured by their value, the best one starred; pruned and failed trials are
    marked at their rates. Returns None when the study has no numeric parameter.
    """
    import pandas as pd

    params = [c for c in trials.columns if c.startswith("params_") and pd.api.types.is_numeric_dtype(trials[c])]
    preferred = [c for c in ("params_drop_input", "params_drop_hidden") if c in params]
    axes_cols = (preferred + [c for c in params if c not in preferred])[:2]
    if not axes_cols:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    complete = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    x = axes_cols[0]
    y = axes_cols[1] if len(axes_cols) > 1 else "value"
    if y == "value":
        ax.plot(complete[x], complete["value"], "o", color="C0", label="complete")
    else:
        points = ax.scatter(complete[x], complete[y], c=complete["value"], cmap="viridis", s=60,
                            edgecolors="k", linewidths=0.5, label="complete (colour: value)")
        if len(complete):
            fig.colorbar(points, ax=ax, label=value_label)
    for state, (marker, color, label) in _STATES.items():
        rows = trials[trials["state"] == state]
        if len(rows):
            ys = rows[y] if y != "value" else [ax.get_ylim()[0]] * len(rows)
            ax.scatter(rows[x], ys, marker=marker, color=color, s=50, label=f"{label} ({len(rows)})")
    if len(complete):
        best = complete.loc[complete["value"].idxmax() if maximize else complete["value"].idxmin()]
        ax.scatter([best[x]], [best[y]], marker="*", s=300, facecolors="none", edgecolors="tab:red",
                   linewidths=1.5, label=f"best: trial {int(best['number'])}, {best['value']:.4f}")
    ax.set_xlabel(_AXIS_LABELS.get(x[len("params_"):], x[len("params_"):]))
    ax.set_ylabel(value_label if y == "value" else _AXIS_LABELS.get(y[len("params_"):], y[len("params_"):]))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # Below the axes, so it never hides a trial.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def optuna_figures(study, out_dir: Path) -> list[Path]:
    """Optuna's plotly figures as HTML files (plotly.js from its CDN, so each file stays small):
    optimisation history, parameter importances (needs 2 completed trials whose values differ) and
    contour (needs 2 parameters). Figures that cannot be drawn for this study are skipped."""
    import warnings

    import optuna.visualization as vis
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = sorted({p for t in complete for p in t.params})
    figures = {"optuna_history": vis.plot_optimization_history}
    if len(complete) >= 2 and len({t.value for t in complete}) > 1:
        figures["optuna_importances"] = vis.plot_param_importances
    if len(complete) >= 2 and len(params) >= 2:
        figures["optuna_contour"] = vis.plot_contour
    written = []
    for name, make in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of a parameter that never varied
        fig.update_layout(title=f"{fig.layout.title.text or name}: study {study.study_name}")
        path = Path(out_dir) / f"{name}.html"
        fig.write_html(path, include_plotlyjs="cdn", full_html=True)
        written.append(path)
    return written


def search_figures(study, out_dir: Path, objective: str) -> list[Path]:
    """The figures of a finished search: drop rates scatter (PNG) and Optuna's HTML figures."""
    from optuna.study import StudyDirection

    out_dir = Path(out_dir)
    maximize = study.direction == StudyDirection.MAXIMIZE
    paths = []
    from dropout_lab.report import trials_frame

    scatter = drop_rates(trials_frame(study), out_dir / "drop_rates.png",
                         f"Study {study.study_name}: {objective} by drop rates", _value_label(objective), maximize)
    if scatter is not None:
        paths.append(scatter)
    return paths + optuna_figures(study, out_dir)


def _value_label(objective: str) -> str:
    if objective.endswith("acc"):
        return f"{objective} (fraction correct)"
    if objective.endswith("loss"):
        return f"{objective} (cross-entropy, nats)"
    return objective


_RATE_KEYS = ("drop_hidden", "drop_input", "model.drop_hidden", "model.drop_input")


def group_lines(groups, x: str, line_keys: list[str], metrics: list[str], path: Path, title: str) -> Path:
    """One panel per metric: its mean per group against ``x``, with 95% t-interval bars, one line per
    combination of ``line_keys``. Accuracies are drawn as error rates (100 * (1 - accuracy), in %);
    a drop-rate x axis also shows the retain probability p = 1 - rate on top."""
    import pandas as pd

    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    numeric_x = pd.api.types.is_numeric_dtype(groups[x])
    if not numeric_x:
        positions = {v: i for i, v in enumerate(dict.fromkeys(groups[x]))}
    lines = [((), groups)] if not line_keys else list(groups.groupby(line_keys, sort=False, dropna=False))
    for ax, metric in zip(axes[0], metrics):
        error = metric.endswith("acc")
        for i, (values, rows) in enumerate(lines):
            values = values if isinstance(values, tuple) else (values,)
            rows = rows.sort_values(x) if numeric_x else rows
            xs = rows[x] if numeric_x else rows[x].map(positions)
            mean = pd.to_numeric(rows[f"{metric}_mean"])
            half = pd.to_numeric(rows[f"{metric}_ci95"]).fillna(0.0)
            ys, yerr = ((1.0 - mean) * 100.0, half * 100.0) if error else (mean, half)
            label = ", ".join(str(v) if k == "experiment" else f"{k}={v}" for k, v in zip(line_keys, values)) or None
            ax.errorbar(xs, ys, yerr=yerr, fmt="o-", color=f"C{i}", capsize=3, label=label)
        ax.set_xlabel(x)
        ax.set_ylabel(f"{metric[:-len('acc')].replace('_', ' ')}error (%, 1 - accuracy)" if error else metric)
        if not numeric_x:
            ax.set_xticks(list(positions.values()), [str(v) for v in positions])
        elif x in _RATE_KEYS:
            top = ax.secondary_xaxis("top", functions=(lambda r: 1.0 - r, lambda p: 1.0 - p))
            top.set_xlabel("retain probability p = 1 - rate")
        ax.grid(alpha=0.3)
        if line_keys:
            ax.legend(fontsize=8)
    fig.suptitle(f"{title}: mean over runs, bars: 95% t-interval")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def study_figures(path: Path, storage: str, study_name: str, objective: str) -> list[Path]:
    """:func:`search_figures` of the study ``study_name`` in ``storage``, written into the folder ``path``."""
    import optuna

    from dropout_lab.search import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return search_figures(study, path, objective)
