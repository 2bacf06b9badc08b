"""Must-show of the foundation and generation issues: a tiny model overfits one sample of every
task type, then regenerates each one exactly (text and all 8 codebooks) through ``reply_to``, and
the CLI turns a reply into a WAV with the codec's sample rate and one frame's worth of samples
per generated frame."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import MimiConfig, MimiModel

from qinyu_lit.cli import main
from qinyu_lit.data.batch import collate
from qinyu_lit.inference import layout_for, reply_to
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.weights import save_exported
from qinyu_lit.prep.demo import DEMO_TASKS, demo_samples
from qinyu_lit.prep.writer import write_shard
from qinyu_lit.tiny_configs import TINY_MIMI
from tests.conftest import make_tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def overfit(tiny_net_module):
    """One training sample per task type (4 of them with speech replies), trained to near-zero loss."""
    torch.manual_seed(0)
    model = QinYuModel(tiny_net_module)
    samples = [next(demo_samples(task, 1, 0, 16, 8, 64)) for task in DEMO_TASKS]
    layout = layout_for(model)
    batch = collate([[layout.build(s)] for s in samples], layout.ids.pad, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)  # high LR: memorise fast
    losses = []
    for _ in range(150):
        loss = model.loss(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if loss.item() < 0.01:
            break
    return model.eval(), samples, losses


@pytest.fixture(scope="module")
def tiny_net_module(demo_dir):
    """``tiny_net`` of conftest, at module scope so the trained model is shared by the tests."""
    return make_tiny_net(demo_dir)


def test_loss_reaches_near_zero(overfit):
    _, _, losses = overfit
    assert losses[0] > 3.0  # starts near ln(vocab) ...
    assert losses[-1] < 0.02  # ... and memorises the samples


def test_greedy_generation_reproduces_every_training_sample(overfit):
    model, samples, _ = overfit
    assert sum(s.turns[-1].codes is not None for s in samples) == 4  # tts, conversation, roleplay, singing  # speech replies are part of the check
    for sample in samples:
        reply = reply_to(model, sample=sample, max_new_positions=200)
        target = sample.turns[-1]
        assert reply.finished, sample.task
        assert reply.text == target.text, sample.task
        if target.codes is None:
            assert reply.num_frames == 0, sample.task
        else:
            np.testing.assert_array_equal(reply.codes.numpy(), target.codes, err_msg=sample.task)


def test_cli_writes_codes_and_a_wav_of_the_codec_rate_and_length(overfit, tmp_path):
    model, samples, _ = overfit
    tts = next(s for s in samples if s.task == "tts")
    export_dir = save_exported(model, tmp_path / "export")
    torch.manual_seed(0)
    codec = MimiModel(MimiConfig(**TINY_MIMI))
    codec.save_pretrained(tmp_path / "mimi")
    shard = str(tmp_path / "one.tar")
    write_shard([tts], shard)
    out = tmp_path / "reply"
    main(["generate", str(export_dir), "--shard", shard, "--key", tts.key,
          "--codec", str(tmp_path / "mimi"), "--out", str(out)])
    codes = np.load(f"{out}.npy")
    np.testing.assert_array_equal(codes, tts.turns[-1].codes)  # through export -> load -> generate
    assert (tmp_path / "reply.txt").read_text().strip() == tts.turns[-1].text
    info = sf.info(f"{out}.wav")
    assert info.samplerate == codec.config.sampling_rate == 24000
    samples_per_frame = codec.config.sampling_rate / codec.config.frame_rate  # 1920 at 12.5 Hz
    assert info.frames == codes.shape[1] * samples_per_frame

    # speech in from a WAV file: the memorised ASR sample transcribes to its text
    asr = next(s for s in samples if s.task == "asr")
    user = asr.turns[0]
    sf.write(tmp_path / "question.wav", user.audio, user.sample_rate, subtype="FLOAT")
    main(["generate", str(export_dir), "--audio", str(tmp_path / "question.wav"), "--text", user.text,
          "--out", str(tmp_path / "asr")])  # fmt: skip
    assert (tmp_path / "asr.txt").read_text().strip() == asr.turns[-1].text
    assert not (tmp_path / "asr.npy").exists()  # a text-only reply writes no (empty) codes


def test_validation_metrics_of_the_memorised_samples(overfit, tiny_net_module, tmp_path):
    """``trainer.validate`` on the training samples: WER/CER 0, the reference speech pace, per-task
    losses near zero, and the generated replies in TensorBoard (text, and audio through a tiny Mimi)."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from qinyu_lit.stages.base import QinYuStage

    model, samples, _ = overfit
    stage = QinYuStage(tiny_net_module, val_generate=2, val_max_new_positions=200, val_codec=dict(TINY_MIMI))
    stage.model = model  # configure_model keeps a model that is already there
    layout = layout_for(model)
    batches = [collate([[layout.build(s) for s in samples[:4]]], layout.ids.pad, 8),  # one packed row
               collate([[layout.build(s)] for s in samples[4:]], layout.ids.pad, 8)]
    logger = TensorBoardLogger(tmp_path, name="val")
    trainer = L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(stage, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))[0]
    assert metrics["val/asr_wer"] == 0.0 and metrics["val/asr_cer"] == 0.0  # asr and sqa are speech -> text
    assert metrics["val/frames_per_token_ratio"] == pytest.approx(1.0)
    for task in DEMO_TASKS:
        assert metrics[f"val_task/{task}_loss"] < 0.05, task
    assert metrics["val_task/tts_audio_acc"] == 1.0
    assert "val_task/persona_loss" not in metrics  # no persona sample: nothing logged for it
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "audio": 0}).Reload()
    texts = [t for t in events.Tags()["tensors"] if t.startswith("val_samples/")]
    assert len(texts) == 4  # 2 speech -> text + 2 speech replies (val_generate=2 each)
    audio = events.Tags()["audio"]
    assert len(audio) == 2 and all(events.Audio(t)[0].sample_rate == 24000 for t in audio)
