"""VoiceDesign's model side: the flow-matching loss, the guided Euler sampler, bad descriptions, weights."""

from __future__ import annotations

import pytest
import torch

from qinyu_lit.data.errors import QinYuError
from qinyu_lit.model.flow_estimator import FlowEstimator
from qinyu_lit.model.flow_matching import cosine_time, euler_sample, guided_velocity
from qinyu_lit.model.voice_design import VoiceDesignConfig, VoiceDesignModel
from qinyu_lit.tiny_configs import TINY_TEXT_ENCODER

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(demo_dir):
    torch.manual_seed(0)
    config = VoiceDesignConfig(text_encoder=TINY_TEXT_ENCODER, tokenizer=str(demo_dir / "tokenizer"), embedding_dim=16,
                               filter_size=32, num_layers=2, num_heads=2, max_length=16)  # fmt: skip
    return VoiceDesignModel(config)


def test_loss_is_finite_at_init_and_falls(model):
    texts = ["a calm senior man", "a cheerful young woman"] * 4
    x1 = torch.randn(2, 16).repeat(4, 1)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("text_encoder.")], lr=3e-3)
    torch.manual_seed(1)
    losses = []
    for _ in range(150):
        loss = model.loss(x1, texts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert torch.isfinite(torch.tensor(losses[0])) and losses[0] > 0.5
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20, losses[::15]


def test_fixed_seed_sampling_is_deterministic_and_seeds_differ(model):
    texts = ["a calm senior man", "a cheerful young woman"]
    a, b = model.sample(texts, seed=3), model.sample(texts, seed=3)
    assert torch.equal(a, b) and a.shape == (2, 16)
    assert not torch.allclose(a, model.sample(texts, seed=4))


def test_guidance_one_is_the_conditional_velocity_and_zero_the_unconditional():
    torch.manual_seed(0)
    est = FlowEstimator(4, 4, filter_size=16, num_layers=1, num_heads=1).eval()
    for p in est.layers[0].dit.modulation.parameters():  # adaLN-zero starts at 0: make the condition matter
        torch.nn.init.normal_(p, std=0.5)
    x, t, c = torch.randn(5, 4), torch.rand(5), torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(guided_velocity(est, x, t, c, 1.0), est(x, t, c))
        torch.testing.assert_close(guided_velocity(est, x, t, c, 0.0), est(x, t, torch.zeros_like(c)), atol=1e-6, rtol=0)
        v_c, v_u = est(x, t, c), est(x, t, torch.zeros_like(c))
        torch.testing.assert_close(guided_velocity(est, x, t, c, 1.7), 1.7 * v_c - 0.7 * v_u, atol=1e-5, rtol=0)
        assert not torch.allclose(v_c, v_u)


def test_euler_follows_the_cosine_grid_from_scaled_noise():
    """A constant velocity field: after any number of steps x = temperature * z + v (the grid sums to 1)."""
    v = torch.tensor([[1.0, -2.0]])
    noise = torch.tensor([[0.5, 0.5]])
    path = []
    out = euler_sample(lambda x, t, c: v.expand_as(x), torch.zeros(1, 3), 2, steps=7, guidance=1.0, temperature=0.5,
                       noise=noise, trajectory=path)  # fmt: skip
    torch.testing.assert_close(out, 0.5 * noise + v)
    assert len(path) == 8 and torch.equal(path[0], 0.5 * noise)
    torch.testing.assert_close(path[1], 0.5 * noise + cosine_time(torch.tensor(1 / 7)) * v)


def test_empty_description_is_one_clear_error(model):
    with pytest.raises(QinYuError, match="description 1: empty"):
        model.sample(["a calm senior man", "  "])


def test_too_long_description_is_cut_with_a_warning_naming_the_limit(model):
    long = "a calm senior man " * 20
    with pytest.warns(UserWarning, match="cut to the text encoder's limit of 16"):
        out = model.sample([long], seed=0)
    assert out.shape == (1, 16) and torch.isfinite(out).all()


def test_save_and_load_round_trip_gives_the_same_voice(model, tmp_path):
    model.save_pretrained(tmp_path / "vd")
    again = VoiceDesignModel.from_pretrained(tmp_path / "vd")
    assert torch.equal(model.sample(["a calm senior man"], seed=1), again.sample(["a calm senior man"], seed=1))


def test_release_size_estimator_has_the_release_parameter_count():
    est = FlowEstimator(192, 192)  # hidden 384 = 192 + 192, filter 512, 4 layers, 4 heads
    assert est.channels == 384
    assert sum(p.numel() for p in est.parameters()) == 17_947_712  # + Linear(1024 -> 192) = 18.1M trained
