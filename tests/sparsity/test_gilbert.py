import itertools

import pytest
import torch

from blade.sparsity import gilbert_order

ODD_GRIDS = [(21, 30, 52), (13, 30, 45), (21, 24, 40), (1, 30, 52), (21, 1, 1), (1, 1, 1), (3, 5, 7), (7, 1, 13)]


def _coordinates(raster: torch.Tensor, grid) -> torch.Tensor:
    _, height, width = grid
    return torch.stack([raster // (height * width), (raster // width) % height, raster % width], dim=1)


@pytest.mark.parametrize("grid", ODD_GRIDS)
def test_order_is_bijection_with_inverse(grid):
    order, inverse = gilbert_order(grid)
    tokens = grid[0] * grid[1] * grid[2]
    assert order.dtype == torch.long
    assert order.shape == (tokens,)
    assert torch.equal(torch.sort(order).values, torch.arange(tokens))
    assert torch.equal(order[inverse], torch.arange(tokens))
    assert torch.equal(inverse[order], torch.arange(tokens))


@pytest.mark.parametrize("grid", ODD_GRIDS)
def test_steps_are_neighbours(grid):
    order, _ = gilbert_order(grid)
    if order.numel() == 1:
        return
    steps = (_coordinates(order, grid).diff(dim=0)).abs()
    assert int(steps.max()) == 1
    # almost every step is to a face neighbour; diagonal steps only fix odd-size parity
    assert float((steps.sum(dim=1) == 1).float().mean()) > 0.95


def test_every_small_grid_is_a_neighbour_walk():
    for grid in itertools.product(range(1, 8), repeat=3):
        order, _ = gilbert_order(grid)
        assert torch.equal(torch.sort(order).values, torch.arange(order.numel())), grid
        if order.numel() > 1:
            assert int(_coordinates(order, grid).diff(dim=0).abs().max()) == 1, grid


def _mean_block_volume(order: torch.Tensor, grid, block_size: int = 128) -> float:
    coordinates = _coordinates(order, grid)
    volumes = []
    for start in range(0, order.numel() - block_size + 1, block_size):
        block = coordinates[start : start + block_size]
        volumes.append(float((block.amax(dim=0) - block.amin(dim=0) + 1).prod()))
    return sum(volumes) / len(volumes)


@pytest.mark.parametrize("grid", [(21, 30, 52), (13, 30, 45), (21, 24, 40)])
def test_blocks_are_compact(grid):
    """Blocks of 128 curve tokens span a far smaller 3D box than 128 raster tokens."""
    order, _ = gilbert_order(grid)
    curve = _mean_block_volume(order, grid)
    raster = _mean_block_volume(torch.arange(order.numel()), grid)
    # measured: curve 216 / 217 / 217 against raster 395 / 393 / 272; a perfect 4x4x8 box would be 128
    print(f"{grid}: mean 3D bounding-box volume of a 128-token block, curve {curve:.0f}, raster {raster:.0f}")
    assert curve < 0.85 * raster
    assert curve < 2 * 128


def test_cache_returns_same_tensors():
    first = gilbert_order((5, 6, 7))
    second = gilbert_order([5, 6, 7], device="cpu")
    assert first[0] is second[0]
    assert first[1] is second[1]


def test_rejects_bad_grid():
    with pytest.raises(ValueError, match=r"grid_thw must have every size >= 1, got \(0, 4, 4\)"):
        gilbert_order((0, 4, 4))
    with pytest.raises(TypeError, match="grid_thw must be three ints"):
        gilbert_order((4, 4))
    with pytest.raises(TypeError, match="grid_thw must be three ints"):
        gilbert_order((4.0, 4, 4))
