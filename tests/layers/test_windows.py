"""layers/windows.py: window partition and its inverse, cyclic shifts, the per-axis window rule, the shifted-window
mask, relative-position indices and biases (own offsets, or torchvision's leading rows), table resampling; in 2D
and 3D. (The blocks that use them: tests/models/test_swin.py, tests/models/test_video_swin.py.)
"""
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers import windows

WINDOW = (2, 3, 3)  # a 3D window (T, H, W)


@pytest.mark.parametrize("spatial, window", [((6, 9), (3, 3)), ((4, 6, 9), (2, 3, 3))])
def test_window_partition_then_reverse_is_the_identity_and_windows_are_blocks(spatial, window):
  x = np.random.default_rng(0).normal(size=(2, *spatial, 5))  # numpy: the helpers serve numpy masks too
  parts = windows.window_partition(x, window)
  grid = [s // w for s, w in zip(spatial, window)]
  assert parts.shape == (2 * np.prod(grid), np.prod(window), 5)
  np.testing.assert_array_equal(windows.window_reverse(parts, window, spatial), x)
  # Window 1 of batch element 1 is the block one window along the last axis, its tokens row-major.
  last = tuple(slice(0, w) for w in window[:-1]) + (slice(window[-1], 2 * window[-1]),)
  np.testing.assert_array_equal(parts[np.prod(grid) + 1], x[(1, *last)].reshape(-1, 5))


def test_cyclic_shift_moves_tokens_back_and_its_reverse_is_the_identity():
  x = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype(np.float32)
  shifted = np.asarray(windows.cyclic_shift(x, (1, 2)))
  np.testing.assert_array_equal(shifted[:, 0, 0], x[:, 1, 2])  # token at (1, 2) moves to (0, 0)
  np.testing.assert_array_equal(shifted[:, -1, -2], x[:, 0, 0])  # the first row/columns wrap to the end
  np.testing.assert_array_equal(windows.reverse_cyclic_shift(shifted, (1, 2)), x)


def test_window_and_shift_clip_per_axis_and_disable_the_shift_where_the_map_fits_a_window():
  assert windows.window_and_shift((3, 8), (4, 4), shifted=True) == ((3, 4), (0, 2))
  assert windows.window_and_shift((4, 5), (4, 4), shifted=True) == ((4, 4), (0, 2))
  assert windows.window_and_shift((7, 7), (7, 7), shifted=True) == ((7, 7), (0, 0))
  assert windows.window_and_shift((9, 8), (7, 7), shifted=False) == ((7, 7), (0, 0))
  assert windows.window_and_shift((2, 9, 9), (2, 4, 4), shifted=True) == ((2, 4, 4), (0, 2, 2))


@pytest.mark.parametrize("window, table", [((3, 4), (3, 4)), ((2, 3), (3, 5)), ((2, 3, 2), (2, 3, 3))])
def test_relative_position_index_equals_a_brute_force_computation(window, table):
  index = windows.relative_position_index(window, table)
  coords = list(np.ndindex(*window))
  sides = [2 * t - 1 for t in table]
  for q, cq in enumerate(coords):
    for k, ck in enumerate(coords):
      row = 0
      for a in range(len(window)):
        row = row * sides[a] + (cq[a] - ck[a] + table[a] - 1)
      assert index[q, k] == row
  # Offsets negate under swapping query and key: the two rows lie symmetrically about the centre (zero offset).
  centre = np.prod(sides) // 2
  np.testing.assert_array_equal(np.diag(index), centre)
  np.testing.assert_array_equal(index + index.T, 2 * centre)
  if window == table:  # every offset occurs: all rows of the table are used
    assert len(np.unique(index)) == np.prod(sides)


def test_relative_position_bias_gathers_the_table_rows_of_each_offset():
  module = windows.RelativePositionBias(num_heads=2, window_size=(3, 3))
  table = np.random.default_rng(0).normal(size=(25, 2)).astype(np.float32)
  bias = np.asarray(module.apply({"params": {"relative_position_bias_table": table}}, (2, 3)))  # clipped window
  assert bias.shape == (2, 6, 6)
  coords = list(np.ndindex(2, 3))
  for q, (yq, xq) in enumerate(coords):
    for k, (yk, xk) in enumerate(coords):
      np.testing.assert_array_equal(bias[:, q, k], table[(yq - yk + 2) * 5 + (xq - xk + 2)])


def test_resize_relative_position_bias_table_identity_constants_and_errors():
  table = np.random.default_rng(1).normal(size=(25, 3)).astype(np.float32)
  np.testing.assert_array_equal(windows.resize_relative_position_bias_table(table, 3), table)
  constant = np.broadcast_to(np.arange(3, dtype=np.float32), (25, 3))
  resized = windows.resize_relative_position_bias_table(constant, (4, 5))
  assert resized.shape == (7 * 9, 3)
  np.testing.assert_allclose(resized, np.broadcast_to(np.arange(3), (63, 3)), atol=1e-6)  # weights sum to 1
  with pytest.raises(ValueError, match="24 rows are not a"):
    windows.resize_relative_position_bias_table(table[:24], 5)
  with pytest.raises(ValueError, match=r"window \(2, 2\) has 9 rows"):
    windows.resize_relative_position_bias_table(table, 5, old_window=2)


def test_attention_mask_is_none_exactly_when_nothing_is_masked():
  assert windows.attention_mask((6, 9), (3, 3), (0, 0), "timm") is None
  assert windows.attention_mask((5, 7), (3, 3), (0, 0), "timm") is None  # timm attends to the padding
  assert windows.attention_mask((6, 9), (3, 3), (0, 0), "masked") is None
  assert windows.attention_mask((5, 7), (3, 3), (0, 0), "masked").shape == (6, 9, 9)
  assert windows.attention_mask((3, 4), (3, 3), (0, 1), "timm").shape == (2, 9, 9)
  with pytest.raises(ValueError, match="window_padding must be"):
    windows.attention_mask((6, 9), (3, 3), (1, 1), "zeros")


def test_3d_window_partition_and_cyclic_shift_round_trip_and_windows_are_displaced_blocks():
  x = np.random.default_rng(0).normal(size=(2, 4, 6, 9, 5)).astype(np.float32)  # [B,T,H,W,C]
  shift = (1, 1, 1)
  parts = np.asarray(windows.window_partition(windows.cyclic_shift(x, shift), WINDOW))  # [B*nW,N,C]
  assert parts.shape == (2 * 2 * 2 * 3, 18, 5)
  back = windows.reverse_cyclic_shift(windows.window_reverse(jnp.asarray(parts), WINDOW, (4, 6, 9)), shift)
  np.testing.assert_array_equal(back, x)
  # Window 1 of example 1 (the second along W): tokens at (t+1, h+1, w+4) mod the map, row-major over (t, h, w).
  expected = [x[1, (t + 1) % 4, (h + 1) % 6, (w + 4) % 9] for t in range(2) for h in range(3) for w in range(3)]
  np.testing.assert_array_equal(parts[12 + 1], np.stack(expected))


def test_window_and_shift_reduce_per_axis_as_torchvision():
  assert windows.window_and_shift((16, 56, 56), (8, 7, 7), True) == ((8, 7, 7), (4, 3, 3))
  assert windows.window_and_shift((16, 7, 7), (8, 7, 7), True) == ((8, 7, 7), (4, 0, 0))
  assert windows.window_and_shift((4, 14, 5), (8, 7, 7), True) == ((4, 7, 5), (0, 3, 0))
  assert windows.window_and_shift((4, 14, 5), (8, 7, 7), False) == ((4, 7, 5), (0, 0, 0))


def test_reduced_window_reads_its_offsets_or_torchvisions_leading_rows():
  """A window (2, 2, 3) under a (2, 3, 3) table: "masked" reads the rows of its true offsets; torchvision's reading
  (the full window's index cut to N x N) differs; reduced along T alone, the two agree."""
  table = np.random.default_rng(7).normal(size=(3 * 5 * 5, 2)).astype(np.float32)
  variables = {"params": {"relative_position_bias_table": table}}
  bias = lambda leading, window: np.asarray(windows.RelativePositionBias(  # noqa: E731
      2, WINDOW, leading_rows=leading).apply(variables, window))
  own, leading = bias(False, (2, 2, 3)), bias(True, (2, 2, 3))
  coords = list(np.ndindex(2, 2, 3))
  for q, cq in enumerate(coords):
    for k, ck in enumerate(coords):
      (dt, dh, dw) = (cq[0] - ck[0] + 1, cq[1] - ck[1] + 2, cq[2] - ck[2] + 2)
      np.testing.assert_array_equal(own[:, q, k], table[(dt * 5 + dh) * 5 + dw])
  full = windows.relative_position_index(WINDOW)
  np.testing.assert_array_equal(leading, table[full[:12, :12]].transpose(2, 0, 1))
  assert not np.array_equal(own, leading)
  np.testing.assert_array_equal(bias(False, (1, 3, 3)), bias(True, (1, 3, 3)))
