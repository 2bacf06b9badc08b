"""Dense bf16 peaks by device name (the MFU denominator) and the packed FLOPs formula."""

from __future__ import annotations

import pytest

from qinyu_lit.model.flops import dense_bf16_peak, packed_training_flops


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12),  # SXM
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989.4e12),  # Lightning's table lists the sparse 2 PFLOP/s for H200: not used
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("Tesla T4", None),
    ],
)
def test_dense_peaks_by_device_name(name, peak):
    assert dense_bf16_peak(name) == peak


def test_attention_counts_within_samples_only():
    # one 100-token sample vs ten of 10: same 6N part, a tenth of the attention part
    one, ten = packed_training_flops(1000, [100], 2, 64), packed_training_flops(1000, [10] * 10, 2, 64)
    assert one - 6 * 1000 * 100 == 6 * 2 * 64 * 100**2
    assert ten - 6 * 1000 * 100 == (one - 6 * 1000 * 100) // 10
