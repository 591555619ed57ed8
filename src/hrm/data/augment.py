"""The eight dihedral transforms and colour permutations used by the maze and ARC builders.

Transforms act on the last two axes, so a stack of grids `[..., H, W]` is transformed in one call.
Ids, in order: identity, rot90, rot180, rot270, flip left-right, flip up-down, transpose,
anti-transpose (rot90 then flip left-right). `np.rot90` turns counter-clockwise, as in the original.
"""

from __future__ import annotations

import numpy as np

NUM_DIHEDRAL = 8
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "anti_transpose")


def dihedral_transform(grid: np.ndarray, transform_id: int) -> np.ndarray:
    """Apply dihedral transform `transform_id` (0..7) to the last two axes of `grid`."""
    grid = np.asarray(grid)
    axes = (grid.ndim - 2, grid.ndim - 1)
    if transform_id == 0:
        return grid
    if transform_id in (1, 2, 3):
        return np.rot90(grid, k=transform_id, axes=axes)
    if transform_id == 4:
        return np.flip(grid, axis=-1)
    if transform_id == 5:
        return np.flip(grid, axis=-2)
    if transform_id == 6:
        return np.swapaxes(grid, -1, -2)
    if transform_id == 7:
        return np.flip(np.rot90(grid, k=1, axes=axes), axis=-1)
    raise ValueError(f"dihedral transform id must be 0..7, got {transform_id}")


def inverse_dihedral(grid: np.ndarray, transform_id: int) -> np.ndarray:
    """Undo `dihedral_transform(., transform_id)`."""
    return dihedral_transform(grid, DIHEDRAL_INVERSE[transform_id])


def random_colour_maps(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` colour maps `[count, 10]` (uint8): 0 stays 0, colours 1..9 permuted."""
    maps = np.zeros((count, 10), np.uint8)
    maps[:, 1:] = np.argsort(rng.random((count, 9)), axis=1) + 1
    return maps


def inverse_colour_map(colour_map) -> np.ndarray:
    """The map that undoes `colour_map` (so `inverse[colour_map[c]] == c`)."""
    return np.argsort(np.asarray(colour_map)).astype(np.uint8)
