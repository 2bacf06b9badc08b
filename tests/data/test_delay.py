import numpy as np
import pytest
import torch

from qinyu_lit.data.delay import delay, num_pad_ids, undelay


def test_delay_shifts_codebook_j_by_j_frames():
    codes = np.array([[1, 2], [3, 4], [5, 6]])
    P = 9  # pad id
    assert delay(codes, P).tolist() == [
        [1, 2, P, P],
        [P, 3, 4, P],
        [P, P, 5, 6],
    ]


@pytest.mark.parametrize("frames", [1, 2, 7, 31])
def test_undelay_is_the_exact_inverse(frames):
    rng = np.random.default_rng(frames)
    codes = rng.integers(0, 1024, size=(8, frames))
    delayed = delay(codes, 1024)
    assert delayed.shape == (8, frames + 7)
    np.testing.assert_array_equal(undelay(delayed), codes)
    as_torch = torch.from_numpy(codes)
    assert torch.equal(undelay(delay(as_torch, 1024)), as_torch)


def test_undelay_rejects_too_few_positions():
    with pytest.raises(ValueError, match="fewer than"):
        undelay(np.zeros((8, 3), dtype=np.int64))


def test_positional_pads_name_their_delayed_position():
    # the released VITA-QinYu's scheme, written out for C = 3, T = 2, K = 10:
    # codebook i, position k: k < i -> K + k; i <= k < i + T -> code; k >= i + T -> K + (k - T)
    codes = np.array([[1, 2], [3, 4], [5, 6]])
    K = 10
    assert delay(codes, K, pads="positional").tolist() == [
        [1, 2, 10, 11],
        [10, 3, 4, 11],
        [10, 11, 5, 6],
    ]


def test_positional_pads_for_8_codebooks_match_the_official_table():
    K, T = 1024, 10
    codes = np.arange(8 * T).reshape(8, T) % 7
    d = delay(codes, K, pads="positional")
    assert d.shape == (8, T + 7)
    assert d[0, T:].tolist() == [K + p for p in range(7)]  # codebook 0 ends with pads 0..6
    assert d[7, :7].tolist() == [K + p for p in range(7)]  # codebook 7 starts with pads 0..6
    assert d[3].tolist() == [K, K + 1, K + 2, *codes[3], K + 3, K + 4, K + 5, K + 6]
    assert d.max() < K + 7 and num_pad_ids("positional", 8) == 8 and num_pad_ids("single", 8) == 1


@pytest.mark.parametrize("pads", ["single", "positional"])
@pytest.mark.parametrize("frames", [0, 1, 9])
def test_both_schemes_are_exact_inverse_pairs(pads, frames):
    rng = np.random.default_rng(frames)
    codes = rng.integers(0, 64, size=(8, frames))
    delayed = delay(codes, 64, pads=pads)
    np.testing.assert_array_equal(undelay(delayed), codes)
    np.testing.assert_array_equal(delay(undelay(delayed), 64, pads=pads), delayed)
    t = torch.from_numpy(codes)
    assert torch.equal(delay(t, 64, pads=pads), torch.from_numpy(delayed))
    assert torch.equal(undelay(delay(t, 64, pads=pads)), t)


def test_unknown_pad_scheme_names_the_option():
    with pytest.raises(ValueError, match="delay_pads"):
        delay(np.zeros((8, 2), dtype=np.int64), 64, pads="zeros")
