"""Cutting a line image into engine-sized tiles at native resolution, and combining the tiles' results into
one image-level result: the worst tile's class probabilities and a defect map of the whole image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True, eq=False)
class Tiles:
    """An image cut into tiles; ``origins`` row k is the (top, left) of tile k in image pixels."""

    tiles: np.ndarray  # N x tile_h x tile_w, uint8, C-contiguous
    origins: np.ndarray  # N x 2, int64
    image_shape: tuple[int, int]
    padded_shape: tuple[int, int]  # the image after reflect-padding up to the tile size, where it was smaller


@dataclass(frozen=True, eq=False)
class ImageResult:
    """What the engine said about one image."""

    probabilities: np.ndarray  # len(classes), float32: the worst tile's class probabilities
    defect_score: float  # 1 - p(ok) of the worst tile
    defect_map: np.ndarray  # ceil(H / cell) x ceil(W / cell), float32: each image cell's defect probability
    worst_tile: int


def _axis_origins(size: int, tile: int) -> list[int]:
    # Tiles step by their own size; the last one is pulled back flush with the edge, overlapping its
    # neighbour, so that every tile holds only real pixels and nothing is rescaled.
    return [min(i * tile, max(size - tile, 0)) for i in range(max(math.ceil(size / tile), 1))]


def tile_origins(height: int, width: int, tile_h: int, tile_w: int) -> list[tuple[int, int]]:
    """(top, left) of the tiles covering an image, row by row, at native resolution.

    The last row and column of tiles sit flush with the image's bottom and right edges, so tiles overlap a
    little when the image size is not a multiple of the tile size. Where the image is smaller than a tile in a
    dimension, there is a single tile at 0 in that dimension, and `cut_tiles` reflect-pads the image (bottom
    and right) up to the tile size.
    """
    if min(height, width, tile_h, tile_w) < 1:
        raise ValueError(f"image {height} x {width} and tile {tile_h} x {tile_w} must be at least 1 pixel")
    return [(top, left) for top in _axis_origins(height, tile_h) for left in _axis_origins(width, tile_w)]


def cut_tiles(image: np.ndarray, tile_size: tuple[int, int]) -> Tiles:
    """Cut a gray H x W uint8 image into tiles of ``tile_size`` (the engine's input size) placed by
    `tile_origins`."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a gray H x W uint8 image, got shape {image.shape} of {image.dtype}")
    tile_h, tile_w = tile_size
    height, width = image.shape
    origins = np.array(tile_origins(height, width, tile_h, tile_w), dtype=np.int64)
    padding = ((0, max(tile_h - height, 0)), (0, max(tile_w - width, 0)))
    padded = np.pad(image, padding, mode="reflect") if padding[0][1] or padding[1][1] else image
    # Fancy indexing into the window view copies all tiles in one go, into one contiguous batch.
    tiles = sliding_window_view(padded, (tile_h, tile_w))[origins[:, 0], origins[:, 1]]
    return Tiles(tiles=np.ascontiguousarray(tiles), origins=origins, image_shape=(height, width),
                 padded_shape=(padded.shape[0], padded.shape[1]))


def _image_cells(tile_starts: np.ndarray, cells_per_tile: int, cell_size: int, extent: int) -> np.ndarray:
    """Along one axis, N x cells_per_tile: the image cell holding each tile cell's centre, or the spare slot
    ceil(extent / cell_size), dropped later, for tile cells wholly in the padding."""
    starts = tile_starts[:, None] + np.arange(cells_per_tile) * cell_size
    centres = (2 * starts + cell_size) // (2 * cell_size)
    return np.where(starts < extent, centres, math.ceil(extent / cell_size))


def combine(tiles: Tiles, probabilities: np.ndarray, defect_cells: np.ndarray, *, cell_size: int,
            ok_index: int) -> ImageResult:
    """Combine the engine's per-tile outputs (rows in the order of ``tiles``) into one image result.

    The image's probabilities are those of the tile with the highest defect score 1 - p(ok) (the first such
    tile on ties). The defect map gives each image cell the maximum over the tile cells mapped to it: a tile
    cell goes to the image cell holding its centre, so a tile whose origin is off the cell grid shifts by at
    most half a cell and no tile cell is lost. Hence where the image's last partial cell is narrower than half
    a cell, what the tiles saw there is reported in its neighbour and the partial cell stays 0.
    """
    count, tile_h, tile_w = tiles.tiles.shape
    cells_h, cells_w = tile_h // cell_size, tile_w // cell_size
    if probabilities.ndim != 2 or probabilities.shape[0] != count:
        raise ValueError(f"probabilities must be {count} x classes (row per tile), not {probabilities.shape}")
    if defect_cells.shape != (count, cells_h, cells_w):
        raise ValueError(f"defect_cells must be {(count, cells_h, cells_w)} for {count} tiles of {tile_h} x "
                         f"{tile_w} with {cell_size} px cells, got {defect_cells.shape}")

    defect_scores = 1.0 - probabilities[:, ok_index]
    worst = int(np.argmax(defect_scores))  # argmax returns the first maximum: ties go to the first tile

    height, width = tiles.image_shape
    rows = _image_cells(tiles.origins[:, 0], cells_h, cell_size, height)
    cols = _image_cells(tiles.origins[:, 1], cells_w, cell_size, width)
    map_h, map_w = math.ceil(height / cell_size), math.ceil(width / cell_size)
    # One flat scatter-max into a map with a spare row and column for the padding's cells: overlapping
    # tiles keep the larger probability, and one ufunc call beats a Python loop over the tiles.
    flat = np.zeros((map_h + 1) * (map_w + 1), dtype=np.float32)
    np.maximum.at(flat, (rows[:, :, None] * (map_w + 1) + cols[:, None, :]).ravel(),
                  defect_cells.astype(np.float32, copy=False).ravel())
    defect_map = np.ascontiguousarray(flat.reshape(map_h + 1, map_w + 1)[:map_h, :map_w])

    return ImageResult(probabilities=probabilities[worst].astype(np.float32),
                       defect_score=float(defect_scores[worst]), defect_map=defect_map, worst_tile=worst)
