"""The figures a person would rather look at than a CSV: accuracy per epoch, and run comparisons."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_plot(rows: list[dict], title: str, phase_starts: list[int]):
    """A writer for `accuracy.png`: train and validation accuracy per epoch, phases marked."""

    def write(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        epochs = [int(r["epoch"]) + 1 for r in rows]
        for key, label, style in (("accuracy", "training", "-o"), ("val_accuracy", "validation", "-s")):
            if rows and key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], style, label=label, markersize=4)
        for start in phase_starts[1:]:
            ax.axvline(start + 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(start + 0.6, 0.02, "next phase", color="grey", fontsize=8, transform=ax.get_xaxis_transform())
        ax.set(title=title, xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def compare_plot(runs: list[tuple[str, dict, list[dict]]]):
    """A writer for the seed article's figures: validation accuracy per epoch and training time."""

    def write(path: Path) -> None:
        plt = _pyplot()
        fig, (acc, secs) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110,
                                        gridspec_kw={"width_ratios": [2, 1]})
        for name, _metrics, rows in runs:
            key = "val_accuracy" if rows and "val_accuracy" in rows[0] else "accuracy"
            acc.plot([int(r["epoch"]) + 1 for r in rows], [r[key] for r in rows], "-o", markersize=4,
                     label=f"{name} ({key.replace('_', ' ')})")
        acc.set(title="accuracy per epoch", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
        acc.grid(alpha=0.3)
        acc.legend(loc="lower right")
        names = [name for name, _, _ in runs]
        seconds = [metrics.get("train_seconds", 0.0) for _, metrics, _ in runs]
        bars = secs.bar(names, seconds, color=[f"C{i}" for i in range(len(runs))])
        secs.bar_label(bars, fmt="%.1f s")
        secs.set(title="training time", ylabel="seconds")
        secs.tick_params(axis="x", labelrotation=20)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write
