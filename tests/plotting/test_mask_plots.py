import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from blade.patching import MaskRecording, RecordedCall  # noqa: E402
from blade.plotting import (  # noqa: E402
    block_extents,
    mask_browser,
    masks_by_layer_step,
    plot_gilbert_order,
    plot_mask_grid,
    plot_sparsity_by_layer,
    recorded_heads,
    widgets_frontend_available,
)
from blade.sparsity import gilbert_order  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _call(layer, step, forward_index, *, heads=2, blocks=5, seed=0, dense=False):
    generator = torch.Generator().manual_seed(seed)
    mask = None if dense else torch.rand(1, heads, blocks, blocks, generator=generator) < 0.4
    kept = torch.ones(1, heads) if dense else mask.float().mean(dim=(-2, -1))
    return RecordedCall(layer=layer, step=step, forward_index=forward_index, dense=dense,
                        sparsity=1.0 - kept, kept_fraction=kept, block_mask=mask)


def _recording(layers=3, steps=2, heads=None):
    calls = []
    forward = 0
    for step in range(steps):
        for cfg_pass in range(2):  # two forwards per step, as Wan with guidance runs
            for layer in range(layers):
                calls.append(_call(layer, step, forward, seed=100 * forward + layer))
            forward += 1
    return MaskRecording(calls=calls, heads=heads)


def test_masks_by_layer_step_keeps_first_forward():
    recording = _recording()
    calls = masks_by_layer_step(recording)
    assert list(calls) == [(layer, step) for layer in range(3) for step in range(2)]
    assert calls[(1, 1)].forward_index == 2  # forwards 2 and 3 ran step 1; the first wins


def test_masks_index_forward_without_schedule():
    recording = MaskRecording(calls=[_call(0, None, 0, dense=True), _call(0, None, 1), _call(1, None, 1)])
    assert list(masks_by_layer_step(recording)) == [(0, 1), (1, 1)]


def test_recorded_heads_follow_selection():
    assert recorded_heads(_recording()) == [0, 1]
    assert recorded_heads(MaskRecording(calls=[_call(0, 0, 0)], heads=[3, 5])) == [3, 5]


def test_mask_grid_thins_large_recordings():
    recording = _recording(layers=5, steps=4)
    figure = plot_mask_grid(recording, max_rows=3, max_columns=4)
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == 3 * 4
    assert "showing 3 of 5 layers and 4 of 8 (step, head) pairs" in figure._suptitle.get_text()
    # the first panel is layer 0, step 0, head 0, drawn from the mask itself
    expected = masks_by_layer_step(recording)[(0, 0)].block_mask[0, 0].float().numpy()
    assert (drawn[0].images[0].get_array() == expected).all()


def test_mask_grid_without_masks_raises():
    recording = MaskRecording(calls=[_call(0, 0, 0, dense=True)])
    with pytest.raises(ValueError, match="the recording contains no block mask"):
        plot_mask_grid(recording)


def test_mask_browser_redraws_on_slider_change():
    pytest.importorskip("ipywidgets")
    browser = mask_browser(_recording(heads=[4, 7]))
    layer_slider, head_slider, step_slider = browser.children[0].children
    assert list(layer_slider.options) == [0, 1, 2]
    assert list(head_slider.options) == [4, 7]
    assert list(step_slider.options) == [0, 1]
    head_slider.value = 7  # must redraw without error
    step_slider.value = 1


def test_widgets_need_a_jupyter_server(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert widgets_frontend_available() is False
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/user/notebooks/02_sparsity_masks.ipynb")
    assert widgets_frontend_available() is True


def test_sparsity_bars_show_layer_means():
    recording = _recording(layers=2, steps=1)
    figure = plot_sparsity_by_layer(recording)
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    for layer, height in enumerate(heights):
        expected = torch.stack([call.sparsity for call in recording.calls if call.layer == layer]).mean()
        assert height == pytest.approx(float(expected), abs=1e-6)


def test_block_extents_by_hand():
    # raster order on a 2 x 3 x 4 grid, blocks of 6: [0, 6) covers frame 0 rows 0-1 (2 x 4 box, 1 frame)
    extents = block_extents(torch.arange(24), (2, 3, 4), 6)
    assert extents.tolist() == [[1, 2, 4], [1, 2, 4], [1, 2, 4], [1, 2, 4]]
    # a ragged last block: 24 tokens in blocks of 10 -> [0, 10), [10, 20), [20, 24)
    assert block_extents(torch.arange(24), (2, 3, 4), 10)[-1].tolist() == [1, 1, 4]


def test_curve_blocks_are_more_compact_than_raster_blocks():
    grid = (5, 12, 16)
    order, _ = gilbert_order(grid)
    curve_longest_side = block_extents(order, grid, 32).amax(dim=1).float().mean()
    raster_longest_side = block_extents(torch.arange(960), grid, 32).amax(dim=1).float().mean()
    assert curve_longest_side < 0.5 * raster_longest_side


def test_gilbert_figure_rejects_frame_outside_grid():
    with pytest.raises(ValueError, match=r"frame must be in \[0, 3\)"):
        plot_gilbert_order((3, 4, 5), block_size=8, frame=3)
    figure = plot_gilbert_order((3, 5, 7), block_size=8, frame=2)
    assert len(figure.axes) == 3
