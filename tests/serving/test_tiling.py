"""Tiling at native resolution and combining tile results into one image result."""

from __future__ import annotations

import numpy as np
import pytest

from serving.tiling import combine, cut_tiles, tile_origins

CELL = 16
OK = 0  # classes: ok, scratch, spot, crack


def coverage(shape: tuple[int, int], origins: list[tuple[int, int]], tile: tuple[int, int]) -> np.ndarray:
    counts = np.zeros(shape, dtype=int)
    for top, left in origins:
        counts[top:top + tile[0], left:left + tile[1]] += 1
    return counts


def engine_outputs(count: int, *, cells: int = 512 // CELL) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.tile(np.array([[0.97, 0.01, 0.01, 0.01]], dtype=np.float32), (count, 1))
    return probabilities, np.zeros((count, cells, cells), dtype=np.float32)


def test_2048_on_512_is_16_tiles_without_overlap() -> None:
    origins = tile_origins(2048, 2048, 512, 512)
    assert origins == [(top, left) for top in (0, 512, 1024, 1536) for left in (0, 512, 1024, 1536)]
    assert (coverage((2048, 2048), origins, (512, 512)) == 1).all()


def test_1000_on_512_overlaps_with_the_last_tiles_flush_with_the_edges() -> None:
    origins = tile_origins(1000, 1000, 512, 512)
    assert origins == [(0, 0), (0, 488), (488, 0), (488, 488)]
    counts = coverage((1000, 1000), origins, (512, 512))
    assert counts.min() == 1
    assert (counts[488:512, 488:512] == 4).all()


def test_non_square_images_and_tiles() -> None:
    origins = tile_origins(600, 1300, 512, 256)
    assert origins == [(top, left) for top in (0, 88) for left in (0, 256, 512, 768, 1024, 1044)]
    assert coverage((600, 1300), origins, (512, 256)).min() == 1

    image = np.random.default_rng(0).integers(0, 256, (600, 1300), dtype=np.uint8)
    tiles = cut_tiles(image, (512, 256))
    assert tiles.tiles.shape == (12, 512, 256) and tiles.tiles.dtype == np.uint8
    assert tiles.tiles.flags.c_contiguous
    assert tiles.image_shape == tiles.padded_shape == (600, 1300)
    for tile, (top, left) in zip(tiles.tiles, tiles.origins, strict=True):
        np.testing.assert_array_equal(tile, image[top:top + 512, left:left + 256])


def test_an_image_smaller_than_the_tile_is_reflect_padded_not_rescaled() -> None:
    assert tile_origins(300, 300, 512, 512) == [(0, 0)]
    assert tile_origins(300, 1000, 512, 512) == [(0, 0), (0, 488)]

    image = np.random.default_rng(1).integers(0, 256, (300, 300), dtype=np.uint8)
    tiles = cut_tiles(image, (512, 512))
    assert tiles.tiles.shape == (1, 512, 512)
    assert tiles.padded_shape == (512, 512) and tiles.image_shape == (300, 300)
    tile = tiles.tiles[0]
    np.testing.assert_array_equal(tile[:300, :300], image)
    np.testing.assert_array_equal(tile[300, :300], image[298])  # reflected about the last row
    np.testing.assert_array_equal(tile[:300, 301], image[:, 297])


def test_cut_tiles_refuses_colour_or_non_uint8_images() -> None:
    with pytest.raises(ValueError, match="gray H x W uint8"):
        cut_tiles(np.zeros((600, 600, 3), dtype=np.uint8), (512, 512))
    with pytest.raises(ValueError, match="gray H x W uint8"):
        cut_tiles(np.zeros((600, 600), dtype=np.float32), (512, 512))


def test_combine_takes_the_probabilities_of_the_worst_tile() -> None:
    tiles = cut_tiles(np.zeros((2048, 2048), dtype=np.uint8), (512, 512))
    probabilities, cells = engine_outputs(16)
    probabilities[3] = [0.40, 0.50, 0.05, 0.05]
    probabilities[9] = [0.10, 0.05, 0.05, 0.80]
    probabilities[12] = [0.10, 0.05, 0.80, 0.05]  # as defective as tile 9: the first one wins

    result = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=OK)

    assert result.worst_tile == 9
    np.testing.assert_array_equal(result.probabilities, probabilities[9])
    assert result.defect_score == pytest.approx(0.9)


def test_a_hot_cell_lands_at_its_image_position() -> None:
    tiles = cut_tiles(np.zeros((2048, 2048), dtype=np.uint8), (512, 512))
    probabilities, cells = engine_outputs(16)
    cells[6, 3, 5] = 0.9  # tile 6 is row 1, column 2 of the grid: origin (512, 1024)

    defect_map = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=OK).defect_map

    assert defect_map.shape == (128, 128) and defect_map.dtype == np.float32
    assert np.argwhere(defect_map).tolist() == [[512 // CELL + 3, 1024 // CELL + 5]]
    assert defect_map[35, 69] == pytest.approx(0.9)


def test_the_map_of_aligned_tiles_is_the_tiles_cells_side_by_side() -> None:
    tiles = cut_tiles(np.zeros((1024, 1536), dtype=np.uint8), (512, 512))
    probabilities, _ = engine_outputs(6)
    cells = np.random.default_rng(2).random((6, 32, 32), dtype=np.float32)

    defect_map = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=OK).defect_map

    side_by_side = np.block([[cells[0], cells[1], cells[2]], [cells[3], cells[4], cells[5]]])
    np.testing.assert_array_equal(defect_map, side_by_side)


def test_tiles_off_the_cell_grid_map_each_cell_to_the_image_cell_holding_its_centre() -> None:
    tiles = cut_tiles(np.zeros((1000, 1000), dtype=np.uint8), (512, 512))
    probabilities, cells = engine_outputs(4)
    cells[3, 0, 0] = 0.6  # tile (488, 488): its first cell spans 488..504, centre 496, image cell 31
    cells[3, 31, 31] = 0.7  # its last cell spans 984..1000, centre 992, image cell 62 (the last one)

    defect_map = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=OK).defect_map

    assert defect_map.shape == (63, 63)  # 1000 / 16 rounded up
    assert defect_map[31, 31] == pytest.approx(0.6)
    assert defect_map[62, 62] == pytest.approx(0.7)
    assert np.count_nonzero(defect_map) == 2


def test_overlapping_tiles_keep_the_larger_probability() -> None:
    tiles = cut_tiles(np.zeros((1000, 1000), dtype=np.uint8), (512, 512))
    probabilities, cells = engine_outputs(4)
    # Image cell (31, 31) holds the centre of tile 0's cell (31, 31) and of tile 3's cell (0, 0).
    for first, last in ((0.8, 0.3), (0.3, 0.8)):
        cells[0, 31, 31], cells[3, 0, 0] = first, last
        defect_map = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=OK).defect_map
        assert defect_map[31, 31] == pytest.approx(0.8)


def test_cells_in_the_padding_are_dropped() -> None:
    tiles = cut_tiles(np.zeros((300, 300), dtype=np.uint8), (512, 512))
    probabilities, cells = engine_outputs(1)
    cells[0, 19:, :] = 1.0  # rows from 304 down: all padding
    cells[0, :, 19:] = 1.0
    cells[0, 18, 18] = 0.5  # spans 288..304: partly image, kept

    defect_map = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=OK).defect_map

    assert defect_map.shape == (19, 19)  # 300 / 16 rounded up
    assert np.argwhere(defect_map).tolist() == [[18, 18]]


def test_combine_refuses_outputs_that_do_not_match_the_tiles() -> None:
    tiles = cut_tiles(np.zeros((1000, 1000), dtype=np.uint8), (512, 512))
    probabilities, cells = engine_outputs(4)
    with pytest.raises(ValueError, match="probabilities must be 4 x classes"):
        combine(tiles, probabilities[:3], cells, cell_size=CELL, ok_index=OK)
    with pytest.raises(ValueError, match=r"defect_cells must be \(4, 32, 32\)"):
        combine(tiles, probabilities, cells[:, :16, :16], cell_size=CELL, ok_index=OK)
