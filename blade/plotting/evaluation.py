"""Figures of `blade evaluate` results: speed against quality, and frames of every variant side by side."""

from __future__ import annotations

import numpy as np


def plot_speed_quality(metrics: dict, quality: str | None = None):
    """Scatter of speedup over the reference (x, log scale) against a quality score (y), one point per variant.

    Args:
        metrics: the content of metrics.json (`blade.evaluation.compute_metrics`).
        quality: key of the y value in each variant entry: "attribute_accuracy" (ToyBench), "psnr" or
            "ssim". None takes ToyBench attribute accuracy when the run has it, else SSIM.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    variants = metrics["variants"]
    if quality is None:
        quality = "attribute_accuracy" if metrics.get("toybench") else "ssim"
    if quality not in ("attribute_accuracy", "psnr", "ssim"):
        raise ValueError(f"quality must be 'attribute_accuracy', 'psnr' or 'ssim', got {quality!r}")
    fig, ax = plt.subplots(figsize=(6, 4))
    points = []
    for entry in variants:
        y = entry["toybench"]["attribute_accuracy"] if quality == "attribute_accuracy" and entry.get("toybench") \
            else entry.get(quality)
        if y is None:  # the reference has no PSNR / SSIM against itself
            y = 1.0 if quality == "ssim" else None
        if y is None:
            continue
        ax.scatter(entry["speedup"], y, s=40, zorder=3)
        points.append((f"{entry['name']}\n(sparsity {entry['attention_sparsity']:.2f})", entry["speedup"], y))
    ax.set_xscale("log")
    ax.autoscale_view()
    for (label, x, y), offset in zip(points, _label_offsets(ax, points)):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, offset), fontsize=7, va="bottom")
    ax.set_xlabel(f"speedup over {metrics['reference']} (end to end, measured in this run)")
    ax.set_ylabel({"attribute_accuracy": "ToyBench attribute accuracy", "psnr": f"PSNR vs {metrics['reference']} (dB)",
                   "ssim": f"SSIM vs {metrics['reference']}"}[quality])
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Speed and quality per variant")
    fig.tight_layout()
    return fig


# Label box estimate in points at fontsize 7: about 4.2 points per character, 20 points for two lines.
_CHARACTER_WIDTH, _LABEL_HEIGHT = 4.2, 20.0


def _label_offsets(ax, points: list[tuple[str, float, float]]) -> list[float]:
    """Return vertical offsets in points that keep the two-line labels of nearby points apart.

    ToyBench accuracies are multiples of 1 / (3 * prompts), so variants often share a y value. Each
    label goes just above its point, or below the labels already placed where it would overlap them.
    """
    to_points = 72.0 / ax.figure.dpi
    placed: list[tuple[float, float, float]] = []  # left, bottom and right of placed labels, in points
    offsets = []
    for label, x, y in points:
        px, py = (value * to_points for value in ax.transData.transform((x, y)))
        width = _CHARACTER_WIDTH * max(len(line) for line in label.splitlines())
        offset = 4.0
        while any(
            left < px + width and px < right and abs(py + offset - bottom) < _LABEL_HEIGHT
            for left, bottom, right in placed
        ):
            offset -= _LABEL_HEIGHT + 2.0
        placed.append((px, py + offset, px + width))
        offsets.append(offset)
    return offsets


def frame_grid(videos: dict[str, np.ndarray], frame_index: int | None = None, max_columns: int = 6) -> np.ndarray:
    """Tile one frame of each video: one row per variant, one column per prompt.

    Args:
        videos: variant name -> uint8 `[N, T, H, W, 3]`, all of one shape.
        frame_index: the frame shown; None takes the middle frame.
        max_columns: prompts shown at most.

    Returns:
        uint8 `[rows * H, columns * W, 3]`.
    """
    rows = []
    for array in videos.values():
        frame = array.shape[1] // 2 if frame_index is None else frame_index
        columns = array[:max_columns, frame]  # [n, H, W, 3]
        rows.append(np.concatenate(list(columns), axis=1))  # [H, n * W, 3]
    return np.concatenate(rows, axis=0)


def plot_frame_grid(videos: dict[str, np.ndarray], prompts: list[str], max_columns: int = 6):
    """Draw the middle frame of each variant's videos as a labelled figure (rows variants, columns prompts).

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    names = list(videos)
    columns = min(max_columns, len(prompts))
    height, width = videos[names[0]].shape[2:4]
    tile = 1.6 / max(height, width)  # inches per pixel, so the longer side of a tile is 1.6 inches
    fig, axes = plt.subplots(len(names), columns, squeeze=False,
                             figsize=(tile * width * columns + 1.0, tile * height * len(names) + 0.6))
    for row, name in enumerate(names):
        array = videos[name]
        for column in range(columns):
            ax = axes[row][column]
            ax.imshow(array[column, array.shape[1] // 2])
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name, fontsize=7)
            if row == 0:
                ax.set_title(prompts[column][:28], fontsize=6)
    fig.tight_layout()
    return fig
