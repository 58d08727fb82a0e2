"""Figures of recorded ASA block masks: heatmap grids, an ipywidgets browser, per-layer sparsity, quality curves.

Masks come from `blade.record_masks` (a `MaskRecording`). Their blocks index ASA's curve-ordered
sequence, so neighbouring rows and columns are neighbouring 3D patches of the video, not raster rows.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def masks_by_layer_step(recording) -> dict[tuple[int, int], object]:
    """Index the recorded calls that kept a mask by (layer, step), the first call of each pair.

    A Wan step with classifier-free guidance runs two forwards (conditional first); the first one is
    kept. Without a schedule the step is None and the forward index takes its place.

    Returns:
        {(layer, step): RecordedCall}, sorted by layer, then step.
    """
    calls = {}
    for call in recording.calls:
        if call.block_mask is None:
            continue
        step = call.forward_index if call.step is None else call.step
        calls.setdefault((call.layer, step), call)
    return dict(sorted(calls.items()))


def recorded_heads(recording) -> list[int]:
    """Return the model head indices stored in the recording's masks, in storage order."""
    if recording.heads is not None:
        return list(recording.heads)
    for call in recording.calls:
        if call.block_mask is not None:
            return list(range(call.block_mask.shape[1]))
    return []


def draw_block_mask(ax, call, head: int, *, heads: list[int], batch: int = 0, title: str | None = None):
    """Draw one call's block mask as a heatmap on `ax`: kept blocks dark, dropped blocks white.

    Args:
        ax: a matplotlib Axes.
        call: a `RecordedCall` with a block mask [B, H_selected, nq, nk].
        head: model head index; must be in `heads`.
        heads: the recording's stored head indices (`recorded_heads`).
        batch: batch element to show.
        title: axes title; None writes layer, step, head and the kept fraction.
    """
    if head not in heads:
        raise ValueError(f"head {head} was not recorded; recorded heads are {heads}")
    mask = call.block_mask[batch, heads.index(head)].float()  # [nq, nk]
    ax.imshow(mask.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest")
    if title is None:
        title = f"layer {call.layer} step {call.step} head {head}\nkept {float(mask.mean()):.2f}"
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _spread(values: list, limit: int) -> list:
    """Pick at most `limit` evenly spaced entries of `values`, first and last included."""
    if len(values) <= limit:
        return list(values)
    if limit == 1:
        return [values[0]]
    return [values[round(i * (len(values) - 1) / (limit - 1))] for i in range(limit)]


def plot_mask_grid(recording, *, batch: int = 0, max_rows: int = 8, max_columns: int = 12):
    """Draw recorded block masks as a grid: one row per layer, one column per (step, head).

    Larger recordings are thinned to at most `max_rows` layers and `max_columns` (step, head)
    columns, evenly spaced, and the figure title states how many are shown.

    Args:
        recording: a `MaskRecording` with at least one stored mask.
        batch: batch element to show.
        max_rows, max_columns: the most layers and (step, head) pairs drawn.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: the recording contains no mask (only dense calls, or the byte budget was exhausted).
    """
    import matplotlib.pyplot as plt

    calls = masks_by_layer_step(recording)
    if not calls:
        raise ValueError(
            "the recording contains no block mask: every recorded call was dense or past max_bytes; record "
            "sparse layers and steps (check dense_layers / dense_steps of the BladeConfig)"
        )
    heads = recorded_heads(recording)
    all_layers = sorted({layer for layer, _ in calls})
    all_columns = [(step, head) for step in sorted({step for _, step in calls}) for head in heads]
    layers = _spread(all_layers, max_rows)
    columns = _spread(all_columns, max_columns)
    figure, axes = plt.subplots(
        len(layers), len(columns), figsize=(1.6 * len(columns) + 0.4, 1.7 * len(layers) + 0.6), squeeze=False
    )
    for row, layer in enumerate(layers):
        for column, (step, head) in enumerate(columns):
            ax = axes[row][column]
            call = calls.get((layer, step))
            if call is None:
                ax.set_axis_off()
                continue
            kept = float(call.block_mask[batch, heads.index(head)].float().mean())
            draw_block_mask(ax, call, head, heads=heads, batch=batch, title=f"L{layer} s{step} h{head} ({kept:.2f})")
    thinned = len(layers) < len(all_layers) or len(columns) < len(all_columns)
    title = "block masks (curve-ordered blocks; dark = kept, kept fraction in brackets)"
    if thinned:
        title += f"\nshowing {len(layers)} of {len(all_layers)} layers and {len(columns)} of {len(all_columns)} (step, head) pairs"
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def widgets_frontend_available() -> bool:
    """Return whether interactive widgets can show: ipywidgets imports and a Jupyter server started this kernel.

    jupyter_server (2.x) sets JPY_SESSION_NAME in the environment of the kernels it starts;
    papermill and nbconvert start kernels without it, so batch runs get static figures.
    """
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return "JPY_SESSION_NAME" in os.environ


def mask_browser(recording, *, batch: int = 0):
    """Build an ipywidgets control with layer, head and step sliders that redraws one block mask.

    Args:
        recording: a `MaskRecording` with at least one stored mask.
        batch: batch element to show.

    Returns:
        An `ipywidgets.VBox` (sliders and the output area); display it in a notebook.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    calls = masks_by_layer_step(recording)
    if not calls:
        raise ValueError("the recording contains no block mask to browse: every recorded call was dense or past max_bytes")
    heads = recorded_heads(recording)
    layers = sorted({layer for layer, _ in calls})
    steps = sorted({step for _, step in calls})
    layer_slider = widgets.SelectionSlider(options=layers, description="layer")
    head_slider = widgets.SelectionSlider(options=heads, description="head")
    step_slider = widgets.SelectionSlider(options=steps, description="step")
    output = widgets.Output()

    def redraw(_change=None):
        with output:
            output.clear_output(wait=True)
            call = calls.get((layer_slider.value, step_slider.value))
            if call is None:
                print(f"no mask recorded for layer {layer_slider.value} at step {step_slider.value} (dense call?)")
                return
            figure, ax = plt.subplots(figsize=(4.5, 4.5))
            draw_block_mask(ax, call, head_slider.value, heads=heads, batch=batch)
            ax.set_xlabel("key block (curve order)")
            ax.set_ylabel("query block (curve order)")
            # display, then close, so the inline backend does not draw the figure a second time
            display(figure)
            plt.close(figure)

    for slider in (layer_slider, head_slider, step_slider):
        slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([layer_slider, head_slider, step_slider]), output])


def plot_sparsity_by_layer(recording, *, config=None):
    """Draw the mean recorded sparsity of each layer as bars.

    Dense calls count as sparsity 0. With `config`, a dashed line marks the sparsity ASA reports
    when the max_ratio clamp decides every row, 1 - max_ratio - 1 / pool_group (approximate,
    because the kept count per row is floored).

    Args:
        recording: a `MaskRecording`.
        config: the `BladeConfig` the run used, or None.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    by_layer = recording.sparsity_by_layer()
    figure, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(by_layer) + 2.0), 3.2))
    layers = list(by_layer)
    ax.bar(range(len(layers)), list(by_layer.values()), color="tab:blue")
    ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    if config is not None:
        floor = 1.0 - config.max_ratio - (1.0 / config.pool_group if config.pool_group else 0.0)
        ax.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"1 - max_ratio - 1/n = {floor:.3f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean reported sparsity")
    ax.set_title("ASA sparsity per layer\n(mean over recorded calls, heads and batch)", fontsize=9)
    figure.tight_layout()
    return figure


def plot_mask_quality(rows: list[dict], *, title: str):
    """Draw output error and attention recall against target sparsity, one line per strategy.

    Args:
        rows: quality rows of `blade.bench.masks.measure_quality` ("strategy", "target_sparsity",
            "relative_l2_error" and "recall" with a "mean").
        title: figure title (say where q, k, v came from).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in sorted({row["strategy"] for row in rows}):
        picked = sorted((row for row in rows if row["strategy"] == name), key=lambda row: row["target_sparsity"])
        sparsities = [row["target_sparsity"] for row in picked]
        axes[0].plot(sparsities, [row["relative_l2_error"]["mean"] for row in picked], marker="o", label=name)
        axes[1].plot(sparsities, [row["recall"]["mean"] for row in picked], marker="o", label=name)
    axes[0].set(title="output error vs dense (lower is better)", xlabel="target sparsity", ylabel="relative L2 error")
    axes[1].set(title="attention recall (higher is better)", xlabel="target sparsity", ylabel="recall")
    axes[1].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
