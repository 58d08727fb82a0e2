"""Generalized 3D Hilbert ("Gilbert") order of a T x H x W token grid.

ASA attends block by block, so a block of consecutive tokens should be a compact 3D patch. Raster
order (t, h, w with w fastest) makes a block of 128 tokens a thin strip of rows; a space-filling curve
over the grid makes it a small box, which keeps attention mass concentrated in fewer block pairs.

The curve follows the generalized Hilbert construction of J. Cerveny
(https://github.com/jakubcerveny/gilbert), written here from its description: a box given by an origin and three axis vectors (major ``a``, minors ``b`` and ``c``) is
traversed from its origin corner to the corner ``origin + a - unit(a)``. It is split into two boxes
along ``a`` when the box is long, into three boxes when one minor axis is thin, and otherwise into
five boxes whose traversals chain end to start. Halves are rounded to even lengths where possible,
because odd sub-boxes force a diagonal step. The permutation is built once per grid (pure Python,
about 0.1 s for 32,760 tokens) and cached.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import torch

Vector = tuple[int, int, int]

# (grid, device) -> (order, inverse); device copies of the cached CPU permutation
_DEVICE_CACHE: dict[tuple[tuple[int, int, int], torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _unit(vector: Vector) -> Vector:
    return (_sign(vector[0]), _sign(vector[1]), _sign(vector[2]))


def _add(*vectors: Vector) -> Vector:
    return (sum(v[0] for v in vectors), sum(v[1] for v in vectors), sum(v[2] for v in vectors))


def _sub(left: Vector, right: Vector) -> Vector:
    return (left[0] - right[0], left[1] - right[1], left[2] - right[2])


def _neg(vector: Vector) -> Vector:
    return (-vector[0], -vector[1], -vector[2])


def _length(vector: Vector) -> int:
    return abs(vector[0] + vector[1] + vector[2])


def _half(vector: Vector) -> Vector:
    """Halve an axis vector, rounding the length up to even when the axis is longer than 2."""
    unit = _unit(vector)
    length = _length(vector)
    half = length // 2
    if half % 2 and length > 2:
        half += 1
    return (unit[0] * half, unit[1] * half, unit[2] * half)


def _traverse(origin: Vector, a: Vector, b: Vector, c: Vector) -> Iterator[Vector]:
    """Yield the cells of the box (origin, a, b, c) from origin to origin + a - unit(a)."""
    width, height, depth = _length(a), _length(b), _length(c)
    if width == 0 or height == 0 or depth == 0:
        return

    # a line of cells: walk it along whichever axis is longer than 1
    for line_axis, others in ((a, height * depth), (b, width * depth), (c, width * height)):
        if others == 1:
            step = _unit(line_axis)
            for i in range(_length(line_axis)):
                yield (origin[0] + i * step[0], origin[1] + i * step[1], origin[2] + i * step[2])
            return

    ua, ub, uc = _unit(a), _unit(b), _unit(c)
    a2, b2, c2 = _half(a), _half(b), _half(c)
    a_rest, b_rest, c_rest = _sub(a, a2), _sub(b, b2), _sub(c, c2)

    if 2 * width > 3 * height and 2 * width > 3 * depth:
        # long box: two halves along the major axis
        yield from _traverse(origin, a2, b, c)
        yield from _traverse(_add(origin, a2), a_rest, b, c)
    elif 3 * height > 4 * depth:
        # thin in c: a U shape in the a-b plane, c kept whole
        yield from _traverse(origin, b2, c, a2)
        yield from _traverse(_add(origin, b2), a, b_rest, c)
        yield from _traverse(_add(origin, _sub(a, ua), _sub(b2, ub)), _neg(b2), c, _neg(a_rest))
    elif 3 * depth > 4 * height:
        # thin in b: a U shape in the a-c plane, b kept whole
        yield from _traverse(origin, c2, a2, b)
        yield from _traverse(_add(origin, c2), a, b, c_rest)
        yield from _traverse(_add(origin, _sub(a, ua), _sub(c2, uc)), _neg(c2), _neg(a_rest), b)
    else:
        # five boxes chained end to start; the comments give each box as (a range, b range, c range)
        # [0, a2) x [0, b2) x [0, c2)
        yield from _traverse(origin, b2, c2, a2)
        # [0, a2) x [b2, h) x [0, d)
        yield from _traverse(_add(origin, b2), c, a2, b_rest)
        # [0, w) x [0, b2) x [c2, d), walked from its far b and c side
        yield from _traverse(_add(origin, _sub(b2, ub), _sub(c, uc)), a, _neg(b2), _neg(c_rest))
        # [a2, w) x [b2, h) x [0, d), walked from its far a and c side
        yield from _traverse(_add(origin, _sub(a, ua), b2, _sub(c, uc)), _neg(c), _neg(a_rest), b_rest)
        # [a2, w) x [0, b2) x [0, c2), walked back to the end corner
        yield from _traverse(_add(origin, _sub(a, ua), _sub(b2, ub)), _neg(b2), c2, _neg(a_rest))


def _gilbert_cells(width: int, height: int, depth: int) -> Iterator[Vector]:
    """Yield (x, y, z) cells of a width x height x depth box, starting along its longest axis."""
    x_axis, y_axis, z_axis = (width, 0, 0), (0, height, 0), (0, 0, depth)
    if width >= height and width >= depth:
        yield from _traverse((0, 0, 0), x_axis, y_axis, z_axis)
    elif height >= width and height >= depth:
        yield from _traverse((0, 0, 0), y_axis, x_axis, z_axis)
    else:
        yield from _traverse((0, 0, 0), z_axis, x_axis, y_axis)


def check_grid_thw(grid_thw: Sequence[int]) -> tuple[int, int, int]:
    if isinstance(grid_thw, torch.Tensor):
        grid_thw = grid_thw.tolist()
    if len(grid_thw) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in grid_thw):
        raise TypeError(f"grid_thw must be three ints (T, H, W), got {grid_thw!r}")
    if min(grid_thw) < 1:
        raise ValueError(f"grid_thw must have every size >= 1, got {tuple(grid_thw)}")
    return tuple(grid_thw)


@functools.lru_cache(maxsize=64)
def _cpu_order(grid_thw: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    frames, height, width = grid_thw
    raster = [
        (z * height + y) * width + x for x, y, z in _gilbert_cells(width, height, frames)
    ]
    order = torch.tensor(raster, dtype=torch.long)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return order, inverse


def gilbert_order(
    grid_thw: Sequence[int], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the Gilbert-curve permutation of a T x H x W token grid and its inverse.

    Args:
        grid_thw: (T, H, W), each >= 1; any size, odd and non powers of two included.
        device: device of the returned tensors (CPU by default).

    Returns:
        order: int64 [T*H*W]; ``order[i]`` is the raster index (t, h, w with w fastest) of the i-th
            token along the curve, so ``x[..., order, :]`` puts raster tokens in curve order.
        inverse: int64 [T*H*W] with ``inverse[order[i]] == i``; ``y[..., inverse, :]`` undoes it.

    Consecutive tokens along the curve differ by at most 1 on each axis (a step is usually to a face
    neighbour; grids with odd sides can need a few diagonal steps). Both tensors are cached per
    (grid, device); treat them as read-only.
    """
    grid = check_grid_thw(grid_thw)
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (grid, device)
    cached = _DEVICE_CACHE.get(key)
    if cached is None:
        order, inverse = _cpu_order(grid)
        cached = (order.to(device), inverse.to(device))
        _DEVICE_CACHE[key] = cached
    return cached
