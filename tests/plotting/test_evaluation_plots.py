"""The speed / quality scatter keeps the labels of variants with equal scores readable."""

import itertools

import matplotlib

matplotlib.use("Agg")

from blade.plotting.evaluation import plot_speed_quality  # noqa: E402


def _metrics(points):
    variants = [
        {"name": name, "speedup": speedup, "attention_sparsity": 0.8, "toybench": {"attribute_accuracy": accuracy}}
        for name, speedup, accuracy in points
    ]
    return {"variants": variants, "reference": "teacher", "toybench": True}


def _label_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return {text.get_text(): text.get_window_extent(renderer) for text in ax.texts}


def test_labels_of_equal_scores_do_not_overlap():
    # Discrete ToyBench scores: six variants on two y values, several within 20% of each other on x.
    points = [
        ("teacher", 1.0, 0.222),
        ("teacher_8step", 10.6, 0.333),
        ("student_asa", 18.0, 0.333),
        ("free_asa", 19.5, 0.222),
        ("free_radial", 14.6, 0.222),
        ("free_sliding_tile", 16.6, 0.333),
    ]
    fig = plot_speed_quality(_metrics(points))
    boxes = _label_boxes(fig)
    assert len(boxes) == len(points)
    for (name_a, a), (name_b, b) in itertools.combinations(boxes.items(), 2):
        assert not a.overlaps(b), f"labels overlap: {name_a!r} and {name_b!r}"


def test_isolated_label_sits_above_its_point():
    fig = plot_speed_quality(_metrics([("teacher", 1.0, 0.2), ("student", 20.0, 0.9)]))
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for text, (x, y) in zip(ax.texts, [(1.0, 0.2), (20.0, 0.9)]):
        point_y = ax.transData.transform((x, y))[1]
        assert text.get_window_extent(renderer).y0 >= point_y
