import numpy as np
import pytest
import torch

from qinyu_lit.data.delay import delay, undelay


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
