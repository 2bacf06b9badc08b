"""``model.val_codec``: which codec turns validation replies into TensorBoard audio."""

from __future__ import annotations

import numpy as np

from qinyu_lit.codec import DEMO_SAMPLE_RATE, DemoRuleCodec
from qinyu_lit.stages.base import QinYuStage


def test_val_codec_demo_is_the_demo_tone_decoder_at_the_models_sizes(tiny_net):
    codec = QinYuStage(tiny_net, val_codec="demo").load_val_codec()
    assert isinstance(codec, DemoRuleCodec)
    assert (codec.num_codebooks, codec.codebook_size) == (tiny_net.num_codebooks, tiny_net.codebook_size)
    codes = np.zeros((tiny_net.num_codebooks, 5), dtype=np.int64)
    codes[0] = [0, 1, 2, 3, 4]
    wav = codec.decode(codes)
    assert len(wav) == 5 * int(DEMO_SAMPLE_RATE / 12.5)  # one 80 ms tone per frame
    assert codec.sample_rate == DEMO_SAMPLE_RATE
