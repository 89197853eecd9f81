"""PNG figures (matplotlib, no display needed): learning curves and phase-1 capacity."""

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


def capacity(rows: list[dict], chosen: int, path: Path, title: str) -> Path:
    """Phase 1: train and validation accuracy against hidden width, the chosen width marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    widths = [r["width"] for r in rows]
    ax.plot(widths, [r["train_acc"] for r in rows], "o--", label="train (dropout off)")
    ax.plot(widths, [r["val_acc"] for r in rows], "o-", label="validation")
    ax.axvline(chosen, color="k", alpha=0.4, label=f"chosen width {chosen}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hidden width (units per layer)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
