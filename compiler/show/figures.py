"""The figures a person would rather look at than a CSV, in one module above training: accuracy
per epoch (train), run comparisons (compare), the confusion matrix and image grids with heat maps
(evaluate, explain), a study's history and parameter importance (tune)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def import_in_background() -> None:
    """Start importing matplotlib (~0.4 s; seconds when it first builds its font cache) while
    training runs, instead of after it when the plot is written."""
    import sys
    import threading

    if "matplotlib.pyplot" not in sys.modules:
        threading.Thread(target=_pyplot, name="tlc-import-matplotlib", daemon=True).start()


def accuracy_plot(rows: list[dict], title: str, phase_starts: list[int], metric: str = "accuracy",
                  higher: bool = True):
    """A writer for `accuracy.png`: the task's metric (accuracy, mAP, MAE) per epoch on training
    and validation, phases marked."""

    def write(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        epochs = [int(r["epoch"]) + 1 for r in rows]
        for key, label, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "-s")):
            if rows and key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], style, label=label, markersize=4)
        for start in phase_starts[1:]:
            ax.axvline(start + 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(start + 0.6, 0.02, "next phase", color="grey", fontsize=8, transform=ax.get_xaxis_transform())
        ax.set(title=title, xlabel="epoch", ylabel=METRIC_LABELS.get(metric, metric))
        if metric in BOUNDED:
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if higher else "upper right")
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


METRIC_LABELS = {"map": "mean average precision", "f1": "F1", "mae": "mean absolute error", "rmse": "RMSE",
                 "r2": "R²"}
BOUNDED = ("accuracy", "map", "f1")


def compare_plot(groups):
    """A writer for the seed article's figures: validation accuracy (the task's metric) per epoch
    (the mean over a group's runs, with their range shaded) and training time."""

    def write(path: Path) -> None:
        plt = _pyplot()
        fig, (acc, secs) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110,
                                        gridspec_kw={"width_ratios": [2, 1]})
        for i, group in enumerate(groups):
            epochs, mean, low, high = group.curve()
            runs = f", mean of {len(group.rows)} runs" if len(group.rows) > 1 else ""
            acc.plot(epochs, mean, "-o", markersize=4, color=f"C{i}",
                     label=f"{group.name} ({group.key.replace('_', ' ')}{runs})")
            if len(group.rows) > 1:
                acc.fill_between(epochs, low, high, color=f"C{i}", alpha=0.15)
        metric = groups[0].metric if groups else "accuracy"
        label = METRIC_LABELS.get(metric, metric)
        acc.set(title=f"{label} per epoch", xlabel="epoch", ylabel=label)
        if metric in BOUNDED:
            acc.set_ylim(0, 1.02)
        acc.grid(alpha=0.3)
        acc.legend(loc="lower right" if metric in BOUNDED or metric == "r2" else "upper right")
        names = [group.name for group in groups]
        bars = secs.bar(names, [group.seconds() for group in groups], color=[f"C{i}" for i in range(len(groups))])
        secs.bar_label(bars, fmt="%.1f s")
        secs.set(title="training time (mean per run)", ylabel="seconds")
        secs.tick_params(axis="x", labelrotation=20)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def confusion_plot(matrix, names: list[str], title: str):
    """A writer for `confusion.png`: counts as a labelled heat map (rows true, columns predicted),
    each cell also shaded by its share of the true class so rare classes stay readable."""

    def write(path: Path) -> None:
        import numpy as np

        plt = _pyplot()
        k = len(names)
        side = min(max(4.5, 0.55 * k + 2.5), 16)
        fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
        ax.set_yticks(range(k), names)
        ax.set(xlabel="predicted class", ylabel="true class", title=title)
        if k <= 30:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=9 if k <= 12 else 6,
                            color="white" if shares[i, j] > 0.5 else "black")
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def pr_curves_plot(targets, probabilities, names: list[str], per_class: list[dict], title: str):
    """A writer for `pr_curves.png`: each tag's precision-recall curve (scikit-learn's) with its AP
    in the legend and its threshold's point marked; past 12 tags, the 12 of most support."""

    def write(path: Path) -> None:
        from sklearn.metrics import precision_recall_curve

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=110)
        shown = sorted(range(len(names)), key=lambda j: -per_class[j]["support"])[:12]
        for n, j in enumerate(sorted(shown)):
            if not targets[:, j].any():
                continue
            precision, recall, _ = precision_recall_curve(targets[:, j], probabilities[:, j])
            line, = ax.plot(recall, precision, color=f"C{n % 10}", linewidth=1.5,
                            label=f"{names[j]} (AP {per_class[j]['ap']:.2f})")
            given = probabilities[:, j] >= per_class[j]["threshold"]
            hit = float((given & targets[:, j].astype(bool)).sum())
            ax.plot(hit / max(targets[:, j].sum(), 1), hit / max(given.sum(), 1) if given.any() else 1.0, "o",
                    color=line.get_color(), markersize=6)
        ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, title="dots: each tag's threshold", title_fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def predicted_vs_true_plot(targets, predicted, names: list[str], per_target: list[dict], title: str):
    """A writer for `predicted_vs_true.png`: per target (up to 4), predicted against true values
    with the diagonal, and its MAE and R² in the panel's title."""

    def write(path: Path) -> None:
        import numpy as np

        plt = _pyplot()
        k = min(len(names), 4)
        fig, axes = plt.subplots(1, k, figsize=(max(4.6 * k, 7.5), 4.6), dpi=110, squeeze=False)
        for j, ax in enumerate(axes[0]):
            truth, guess = targets[:, j], predicted[:, j]
            low, high = float(min(truth.min(), guess.min())), float(max(truth.max(), guess.max()))
            ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
            ax.scatter(truth, guess, s=10, alpha=0.6)
            r2 = per_target[j]["r2"]
            ax.set(xlabel=f"true {names[j]}", ylabel=f"predicted {names[j]}",
                   title=f"{names[j]}: MAE {per_target[j]['mae']:.3g}" + ("" if np.isnan(r2) else f", R² {r2:.3f}"))
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def masks_grid(images, truth, predicted, captions: list[str], names: list[str], title: str, colours,
               ignore: int = 255):
    """A writer for `worst.png` of a segmentation: per image a row of the image, its true mask and
    the predicted mask (coloured by class; ignored pixels grey), with a legend of the classes."""

    def write(path: Path) -> None:
        import numpy as np
        from matplotlib.patches import Patch

        plt = _pyplot()
        n = len(images)
        fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n + 0.8), dpi=110, squeeze=False)
        for row, (image, true, guess, caption) in enumerate(zip(images, truth, predicted, captions)):
            for ax, shown, label in zip(axes[row], (image, paint(true, colours, ignore), paint(guess, colours, ignore)),
                                        (caption, "true", "predicted")):
                ax.imshow(np.clip(shown, 0, 1) if shown.dtype != np.uint8 else shown, cmap="gray" if shown.ndim == 2 else None)
                ax.set_title(label, fontsize=8)
                ax.axis("off")
        handles = [Patch(color=colour, label=label) for label, colour in mask_legend(truth, names, colours, ignore)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0.6 / (2.5 * n + 0.8), 1, 1 - 0.4 / (2.5 * n + 0.8)))
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def mask_colours(k: int):
    """(k, 3) uint8 colours of the classes: black background, then matplotlib's tab10 cycle."""
    import numpy as np
    from matplotlib import colormaps

    cycle = (np.array(colormaps["tab10"].colors) * 255).astype(np.uint8)
    return np.concatenate([np.zeros((1, 3), np.uint8), np.resize(cycle, (max(k - 1, 0), 3))])[:k]


IGNORED_GREY = 128  # the grey of ignored pixels in a painted mask (and its legend)


def mask_legend(truth, names: list[str], colours, ignore: int = 255) -> list[tuple[str, tuple]]:
    """(label, RGB in [0, 1]) per class, and the grey of ignored pixels when a true mask has any."""
    import numpy as np

    rows = [(name, tuple(np.asarray(colours[c]) / 255)) for c, name in enumerate(names)]
    if any((np.asarray(true) == ignore).any() for true in truth):
        rows.append((f"ignored ({ignore})", (IGNORED_GREY / 255,) * 3))
    return rows


def paint(mask, colours, ignore: int = 255):
    """A mask of class indices as an RGB picture (ignored pixels grey)."""
    import numpy as np

    out = np.full((*mask.shape, 3), IGNORED_GREY, np.uint8)
    known = mask != ignore
    out[known] = colours[np.minimum(mask[known], len(colours) - 1)]
    return out


def examples_grid(images, captions: list[str], title: str, heats=None):
    """A writer for a grid of images (in [0, 1]) with a caption under each (misclassified.png),
    with `heats` ((h, w) maps in [0, 1], Grad-CAM's) drawn over them when given."""

    def write(path: Path) -> None:
        import math
        import textwrap

        import numpy as np

        plt = _pyplot()
        n = len(images)
        cols = min(n, 4)
        rows = math.ceil(n / cols)
        size = 2.6 if n > 1 else 4.0
        width = max(size * cols, 7.0)  # room for the title, also over one or two images
        fig, axes = plt.subplots(rows, cols, figsize=(width, (size + 0.5) * rows + 0.4), dpi=110, squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for k, (ax, image, caption) in enumerate(zip(axes.ravel(), images, captions)):
            rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
            ax.imshow(rgb, vmin=0, vmax=1)
            if heats is not None:
                ax.imshow(heats[k], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_title(caption, fontsize=8)
        fig.suptitle(textwrap.fill(title, int(width * 9)), fontsize=11)  # ~9 characters an inch at 11 pt
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def tune_history_plot(trials: list[dict], metric: str, maximise: bool, title: str):
    """A writer for a study's `history.png`: each trial's value (pruned trials at their last
    reported epoch) and the best so far."""

    def write(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
        styles = {"complete": ("o", "C0", "complete"), "pruned": ("x", "C3", "pruned (last reported epoch)")}
        for state, (marker, color, label) in styles.items():
            points = [(t["number"], t["shown"]) for t in trials if t["state"] == state and t["shown"] is not None]
            if points:
                ax.scatter(*zip(*points), marker=marker, color=color, label=label, zorder=3)
        best, line = None, []
        for t in sorted(trials, key=lambda t: t["number"]):
            if t["state"] == "complete":
                best = t["value"] if best is None or (t["value"] > best if maximise else t["value"] < best) else best
            if best is not None:
                line.append((t["number"], best))
        if line:
            ax.step(*zip(*line), where="post", color="C2", label="best so far")
        skipped = sum(t["state"] in ("infeasible", "failed") for t in trials)
        note = f" ({skipped} infeasible or failed, not shown)" if skipped else ""
        ax.set(title=title + note, xlabel="trial", ylabel=metric)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # beside the axes, so it covers no point
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=9)
        else:
            ax.text(0.5, 0.5, "no trial completed", transform=ax.transAxes, ha="center", va="center", color="0.4")
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write


def importance_plot(importances: dict[str, float], title: str):
    """A writer for `importance.png`: how much each searched path explains of the value."""

    def write(path: Path) -> None:
        plt = _pyplot()
        names = list(importances)[::-1]
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(names)), dpi=110)
        ax.barh(names, [importances[n] for n in names], color="C0")
        for y, name in enumerate(names):
            ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=9)
        ax.set(title=title, xlabel="importance (Optuna PED-ANOVA, sums to 1)", xlim=(0, 1.1))
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)

    return write
