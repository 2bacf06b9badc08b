"""Paper Eq. 3 against a hand computation, on a tiny random Qwen3 of the real class."""

import math

import numpy as np
import torch

from qinyu_lit.data.batch import collate
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.schema import CodecInfo, Sample, Turn
from qinyu_lit.model.qinyu import QinYuModel


def test_eq3_matches_a_hand_computed_example(tiny_net):
    torch.manual_seed(0)
    model = QinYuModel(tiny_net).eval()
    layout = TokenLayout(model.tokenizer, (1, 8, 4, 8), 8, 64)
    codes = np.arange(16).reshape(8, 2) % 64
    sample = Sample("k", "tts", [Turn("user", "sun"), Turn("assistant", "moon", codes=codes)], CodecInfo("t", 8, 64, 12.5, 16000))
    batch = collate([[layout.build(sample)]], layout.ids.pad, 8)
    out = model.loss(batch)

    hidden = model.hidden_states(batch)[0]
    V = model.text_vocab
    per_position = []
    ids, cds, mask = batch["input_ids"][0], batch["codes"][0], batch["target_mask"][0]
    for t in range(1, len(ids)):
        if not mask[t]:
            continue
        h = hidden[t - 1]
        logp0 = torch.log_softmax(model.head0_logits(h).float(), -1)
        if cds[t, 0] < 0:  # text target: plain CE over the text head
            per_position.append(-logp0[ids[t]].item())
        else:  # audio target: mean over the 8 codebooks, codebook 0 read in the extended head
            ces = [-logp0[V + cds[t, 0]].item()]
            for j in range(1, 8):
                logpj = torch.log_softmax(model.code_heads[j - 1](h).float(), -1)
                ces.append(-logpj[cds[t, j]].item())
            per_position.append(sum(ces) / 8)
    # 1 text + 8 audio + 1 audio (2 frames + 7 pads = 9 positions) + <|im_end|>: 11 targets
    assert len(per_position) == 11 == out.num_text + out.num_audio and out.num_audio == 9
    assert math.isclose(out.loss.item(), sum(per_position) / len(per_position), rel_tol=1e-5)


def test_loss_has_gradients_only_where_expected(tiny_net):
    model = QinYuModel(tiny_net)
    layout = TokenLayout(model.tokenizer, (1, 8, 4, 8), 8, 64)
    sample = Sample("k", "text", [Turn("user", "sun"), Turn("assistant", "moon")], CodecInfo("t", 8, 64, 12.5, 16000))
    out = model.loss(collate([[layout.build(sample)]], layout.ids.pad, 8))
    out.loss.backward()
    assert model.backbone.get_output_embeddings().weight.grad.abs().sum() > 0
    # no audio targets: the codebook heads learn nothing, yet get a (zero) gradient: plain DDP needs every
    # trainable parameter in every step
    for part in (model.code_heads[0], model.codebook_embed, model.speaker_proj, model.adapter[1]):
        assert part.weight.grad is not None and not part.weight.grad.any()
    assert out.num_audio == 0 and out.audio_loss.item() == 0.0
