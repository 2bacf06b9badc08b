"""Multi-task DPO: the loss starts at log 2, the LoRA reference (adapter disabled) equals a frozen copy
without holding one, reply log-probabilities are the Eq. 3 terms and the same packed or not, a precomputed
reference needs no model, the tiny recipe learns the demo pairs."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.cli import main
from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.errors import QinYuError
from qinyu_lit.data.schema import decode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.inference import load_model, reply_to
from qinyu_lit.model.reply_logprob import position_logprobs, reply_logprobs
from qinyu_lit.prep.demo_pairs import demo_pairs_cmd
from qinyu_lit.stages.dpo import DPOStage, dpo_terms


@pytest.fixture(scope="module")
def pairs_dir(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    demo_pairs_cmd(str(out), count=128, val_count=16)
    return out


def pairs_data(demo_dir, pairs_dir, batch_size: int = 8, pack_length: int | None = None) -> QinYuDataModule:
    dm = QinYuDataModule(str(pairs_dir / "train"), str(pairs_dir / "val"), tokenizer=str(demo_dir / "tokenizer"),
                         codebook_size=64, batch_size=batch_size, pack_length=pack_length)  # fmt: skip
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch(demo_dir, pairs_dir):
    return next(iter(pairs_data(demo_dir, pairs_dir).val_dataloader()))


def test_reply_logprobs_are_the_eq3_terms_packed_or_not(tiny_model, batch, demo_dir, pairs_dir):
    """-mean of the per-position log-probabilities is the model's own Eq. 3 loss on the same batch, and a
    pair's log-probabilities do not change when its replies share a pack with other pairs."""
    logp, sequence = position_logprobs(tiny_model, batch)
    assert batch["codes"][..., 0].ge(0).any()  # the batch holds speech targets (voice pairs)
    with torch.no_grad():
        assert -logp.mean().item() == pytest.approx(tiny_model.loss(batch).loss.item(), abs=1e-5)
        sums = reply_logprobs(tiny_model, batch)
        assert sums[3].item() == pytest.approx(logp[sequence == 3].sum().item(), abs=1e-4)
        packed = next(iter(pairs_data(demo_dir, pairs_dir, batch_size=1, pack_length=512).val_dataloader()))
        assert packed["input_ids"].shape[0] == 1 and len(packed["pairs"]["keys"]) > 4  # several pairs, one row
        again = reply_logprobs(tiny_model, packed)
    pairs = batch["pairs"]
    alone = {k: (sums[c].item(), sums[r].item()) for k, c, r in zip(pairs["keys"], pairs["chosen"], pairs["rejected"], strict=True)}
    shared = 0
    for key, c, r in zip(packed["pairs"]["keys"], packed["pairs"]["chosen"], packed["pairs"]["rejected"], strict=True):
        if key in alone:
            shared += 1
            assert (again[c].item(), again[r].item()) == pytest.approx(alone[key], abs=1e-4)
    assert shared >= 2


def test_loss_at_step_zero_is_log_2(tiny_net, batch):
    torch.manual_seed(0)
    stage = DPOStage(tiny_net)
    stage.configure_model()
    with torch.no_grad():
        terms = stage.dpo_step(batch)
    assert terms["loss"].mean().item() == pytest.approx(math.log(2), abs=1e-4)
    assert terms["reward_margin"].abs().max().item() < 1e-5


def test_lora_reference_equals_a_frozen_copy_without_holding_one(tiny_net, batch):
    torch.manual_seed(0)
    stage = DPOStage(tiny_net, lora_r=4)
    stage.configure_model()
    assert stage.reference is None
    lora_params = 0
    for name, p in stage.model.named_parameters():
        if "lora_B" in name:  # zero at start: move the policy away from the reference
            torch.nn.init.normal_(p, std=0.05)
        lora_params += p.numel() if "lora_" in name else 0
    with torch.no_grad():
        lora = stage.dpo_step(batch)
        explicit = copy.deepcopy(stage.model)
        explicit.backbone = explicit.backbone.merge_and_unload()  # policy weights, adapter merged
        base = copy.deepcopy(stage.model)
        base.backbone = base.backbone.unload()  # the starting weights: an explicit reference copy
        ref, pol = reply_logprobs(base, batch), reply_logprobs(explicit, batch)
    c, r = batch["pairs"]["chosen"], batch["pairs"]["rejected"]
    want = dpo_terms(pol[c], pol[r], ref[c], ref[r], 0.1)
    assert torch.allclose(lora["loss"], want["loss"], atol=1e-5) and lora["reward_margin"].abs().max() > 1e-3
    # one backbone in the stage: its parameters are the plain model's plus the LoRA matrices
    plain = sum(p.numel() for p in base.parameters())
    assert sum(p.numel() for p in stage.parameters()) == plain + lora_params


@pytest.mark.parametrize("lora_r", [0, 4])
def test_a_dpo_step_makes_no_device_to_host_read(tiny_net, batch, lora_r):
    """Policy and reference log-probabilities, DPO terms, SFT term and backward: nothing a GPU would wait for
    (tests/_host_reads.py; the GPU twin is tests/gpu/test_dpo_gpu.py)."""
    from tests._host_reads import HostReads

    torch.manual_seed(0)
    stage = DPOStage(tiny_net, lora_r=lora_r, sft_weight=1.0)
    stage.configure_model()
    with HostReads() as reads:
        terms = stage.dpo_step(batch)
        (terms["loss"].mean() + terms["sft"]).backward()
    assert reads.ops == []
    assert terms["loss"].shape == (len(batch["pairs"]["keys"]),) and torch.isfinite(terms["sft"])


def test_a_batch_without_pairs_is_refused_and_sft_refuses_pairs(tiny_net, demo_dir, batch):
    stage = DPOStage(tiny_net)
    stage.configure_model()
    plain = QinYuDataModule(str(demo_dir / "train"), tokenizer=str(demo_dir / "tokenizer"), codebook_size=64, batch_size=2)
    with pytest.raises(QinYuError, match="DPO trains on preference pairs"):
        stage.dpo_step(next(iter(plain.train_dataloader())))
    # and the other way round: SFT on preference shards would also learn the rejected replies
    from qinyu_lit.stages.sft import SFTStage

    sft = SFTStage(tiny_net)
    sft.configure_model()
    with pytest.raises(QinYuError, match=r"SFTStage got preference pairs \(sample '\w+' has a rejected reply\)"):
        sft.training_step(batch, 0)


def held_out_pairs(pairs_dir, kind: str) -> list:
    raws = iter_raw_samples(sorted(map(str, (pairs_dir / "val").glob("*.tar"))))
    return [s for s in map(decode_sample, raws) if s.preference == kind]


@torch.no_grad()
def right_replies(model, pairs_dir) -> int:
    """Held-out word pairs whose greedy generated reply is the chosen word."""
    words = held_out_pairs(pairs_dir, "word")
    model.eval()
    replies = [reply_to(model, text=s.turns[0].text, max_new_positions=4).text.strip() for s in words]
    return sum(reply == s.turns[-1].text for reply, s in zip(replies, words, strict=True))


@torch.no_grad()
def voices(model, pairs_dir) -> tuple[float, float, int]:
    """The greedy speech replies to the held-out voice prompts (in the prompt's agent voice), compared code
    by code (all 8 codebooks, frame by frame, the delay undone) with the chosen and with the rejected reply:
    the share of codes equal to the chosen's, to the rejected's, and the replies with more equal to the chosen's."""
    model.eval()
    to_chosen = to_rejected = closer = total = 0
    for s in held_out_pairs(pairs_dir, "voice"):
        said = reply_to(model, text=s.turns[0].text, speaker=s.agent_speaker, max_new_positions=16).codes
        chosen, rejected = (torch.as_tensor(reply.codes.astype("int64")) for reply in (s.turns[-1], s.rejected))
        frames = min(said.shape[1], chosen.shape[1])  # both replies say the same word: the same length
        a = (said[:, :frames] == chosen[:, :frames]).sum().item()
        b = (said[:, :frames] == rejected[:, :frames]).sum().item()
        to_chosen, to_rejected, closer, total = to_chosen + a, to_rejected + b, closer + (a > b), total + chosen.numel()
    return round(to_chosen / total, 3), round(to_rejected / total, 3), closer


RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "dpo.yaml"


def dpo_recipe(run_dir: Path, demo_dir, pairs_dir, init_from: str, *more: str) -> Path:
    """``qinyu-lit fit --config recipes/tiny/dpo.yaml`` in ``run_dir`` (its checkpoints/ and runs/ land there)
    on the demo pairs, quiet; returns ``run_dir``."""
    run_dir.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):  # quiet: the progress bar
        patch.chdir(run_dir)  # the recipe's checkpoint dirpath is relative (checkpoints/tiny_dpo)
        main(["fit", "--config", str(RECIPE), "--model.init_args.init_from", init_from,
              "--data.init_args.train", str(pairs_dir / "train"), "--data.init_args.val", str(pairs_dir / "val"),
              "--data.init_args.tokenizer", str(demo_dir / "tokenizer"), "--trainer.enable_model_summary", "false",
              *more])  # fmt: skip
    return run_dir


def last_validation(run_dir: Path) -> dict[str, float]:
    """The run's last logged held-out values, read back from its TensorBoard event file."""
    events = EventAccumulator(str(next((run_dir / "runs" / "tiny_dpo").glob("version_*"))), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("val")}


@pytest.mark.usefixtures("one_thread")
def test_the_tiny_dpo_recipe_learns_the_held_out_preferences(demo_dir, pairs_dir, tmp_path):
    """``recipes/tiny/dpo.yaml`` as shipped (1000 steps, LR 3e-3, beta 0.1, SFT term 1, a frozen reference),
    from a random start rather than the tiny SFT checkpoint (which already answers the demo's prompts: nothing
    to learn). The start is the recipe's own model saved after one step at LR 0. Held-out pairs are other
    samples (another seed) of the demo's space, every (word, voice) of which the training pairs cover."""
    start = dpo_recipe(tmp_path / "start", demo_dir, pairs_dir, "null", "--trainer.max_steps", "1",
                       "--model.init_args.optimizer.init_args.lr", "0", "--trainer.limit_val_batches", "0")  # fmt: skip
    start = start / "checkpoints" / "tiny_dpo" / "last.ckpt"
    run = dpo_recipe(tmp_path / "run", demo_dir, pairs_dir, str(start))
    held_out = last_validation(run)
    before, after = load_model(str(start)), load_model(str(run / "checkpoints" / "tiny_dpo" / "last.ckpt"))
    words_before, words_after = right_replies(before, pairs_dir), right_replies(after, pairs_dir)
    voices_before, voices_after = voices(before, pairs_dir), voices(after, pairs_dir)
    print({k: round(v, 3) for k, v in held_out.items() if "acc" in k or "dpo_loss" in k})
    print("word replies right, before / after:", words_before, words_after)
    print("voice replies (chosen share, rejected share, closer to chosen), before / after:", voices_before, voices_after)
    assert held_out["val_task/word/preference_acc"] >= 0.9 and held_out["val_task/voice/preference_acc"] >= 0.9
    assert held_out["val/dpo_loss"] < math.log(2)
    # through generate: the greedy reply to a held-out word prompt is the chosen word more often ...
    assert words_after > words_before and words_after >= 12  # of 16
    # ... and the greedy speech reply to a held-out voice prompt has the chosen voice's codes, not the rejected's
    chosen, rejected, closer = voices_after
    assert chosen > 0.5 and chosen > 5 * rejected and closer > voices_before[2] and closer >= 12  # of 16


def test_precomputed_reference_needs_no_reference_model(tiny_net, demo_dir, pairs_dir, tmp_path, batch):
    """``qinyu-lit dpo-ref`` with the starting model: the stage then holds no reference and starts at log 2."""

    torch.manual_seed(0)
    ref_file = str(tmp_path / "ref.json")
    stage = DPOStage(tiny_net, reference=ref_file)
    stage.configure_model()
    assert stage.reference is None
    stage.model.save_pretrained(tmp_path / "start")
    main(["dpo-ref", "--model", str(tmp_path / "start"), "--data", str(pairs_dir / "val"), "--out", ref_file])
    stored = json.loads((tmp_path / "ref.json").read_text())["logps"]
    assert sorted(stored) == sorted(s.key for kind in ("word", "voice") for s in held_out_pairs(pairs_dir, kind))
    with torch.no_grad():
        terms = stage.dpo_step(batch)
    assert terms["loss"].mean().item() == pytest.approx(math.log(2), abs=1e-4)
    with pytest.raises(QinYuError, match="computed with length_normalise=False, the stage has True"):
        DPOStage(tiny_net, reference=ref_file, length_normalise=True).precomputed  # noqa: B018
    stage._precomputed = {}
    with pytest.raises(QinYuError, match=r"ref.json: no reference log-probabilities for pair 'word"):
        stage.dpo_step(batch)
    # MFU: a stored reference costs no forward; a reference model one forward of the batch per step
    from qinyu_lit.model.flops import flop_shape, forward_flops, training_flops

    shape = flop_shape(stage.model)
    assert stage._batch_flops(batch) == sum(training_flops(shape, batch).values())
    with_model = DPOStage(tiny_net)
    with_model.configure_model()
    assert with_model._batch_flops(batch) == stage._batch_flops(batch) + forward_flops(shape, batch)
