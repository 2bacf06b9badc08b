"""Multi-task DPO: the loss starts at log 2, the LoRA reference (adapter disabled) equals a frozen copy
without holding one, reply log-probabilities are the Eq. 3 terms, a tiny run learns the demo pairs."""

from __future__ import annotations

import copy
import json
import math

import lightning as L
import pytest
import torch

from qinyu_lit.data.errors import QinYuError
from qinyu_lit.data.pairs import PairsDataModule
from qinyu_lit.inference import reply_to
from qinyu_lit.model.reply_logprob import position_logprobs, reply_logprobs
from qinyu_lit.prep.demo_pairs import demo_pairs_cmd
from qinyu_lit.stages.dpo import DPOStage, dpo_terms


@pytest.fixture(scope="module")
def pairs_dir(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    demo_pairs_cmd(str(out), count=128, val_count=16)
    return out


def pairs_data(demo_dir, pairs_dir, batch_size: int = 8, train: str = "train.jsonl") -> PairsDataModule:
    dm = PairsDataModule(str(pairs_dir / train), str(pairs_dir / "val.jsonl"), tokenizer=str(demo_dir / "tokenizer"),
                         codebook_size=64, batch_size=batch_size)  # fmt: skip
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch(demo_dir, pairs_dir):
    return next(iter(pairs_data(demo_dir, pairs_dir).val_dataloader()))


def test_reply_logprobs_are_the_eq3_terms(tiny_model, batch):
    """-mean of the per-position log-probabilities is the model's own Eq. 3 loss on the same batch."""
    logp, rows = position_logprobs(tiny_model, batch)
    assert batch["codes"][..., 0].ge(0).any()  # the batch holds speech targets (voice pairs)
    with torch.no_grad():
        assert -logp.mean().item() == pytest.approx(tiny_model.loss(batch).loss.item(), abs=1e-5)
    sums = reply_logprobs(tiny_model, batch)
    assert sums[3].item() == pytest.approx(logp[rows == 3].sum().item(), abs=1e-4)


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
    n = len(batch["pair_tasks"])
    want = dpo_terms(pol[:n], pol[n:], ref[:n], ref[n:], 0.1)
    assert torch.allclose(lora["loss"], want["loss"], atol=1e-5) and lora["reward_margin"].abs().max() > 1e-3
    # one backbone in the stage: its parameters are the plain model's plus the LoRA matrices
    plain = sum(p.numel() for p in base.parameters())
    assert sum(p.numel() for p in stage.parameters()) == plain + lora_params


def test_bad_pairs_identical_warned_and_counted_differing_prompts_refused(demo_dir, pairs_dir, tmp_path):
    rows = [json.loads(line) for line in (pairs_dir / "val.jsonl").read_text().splitlines()[:3]]
    rows[0]["rejected"] = rows[0]["chosen"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val.jsonl").write_text((pairs_dir / "val.jsonl").read_text())
    with pytest.warns(UserWarning, match=r"pair 'word\d+': chosen and rejected replies are identical"):
        dm = pairs_data(demo_dir, tmp_path)
    assert dm.identical == 1 and len(dm.data["train"]) == 2
    rows[1]["rejected"][0]["text"] = "another question"
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(QinYuError, match=r"train.jsonl: pair '\w+', field 'rejected\[0\]': the prompts differ"):
        pairs_data(demo_dir, tmp_path)


@pytest.mark.usefixtures("one_thread")
def test_a_tiny_dpo_run_learns_the_held_out_preferences(tiny_net, demo_dir, pairs_dir):
    """From a random tiny model (the pairs follow the demo's rules, so they are learnable), DPO + the
    chosen reply's SFT term; held-out pairs (another seed). The voice preference is not learnt from
    scratch in this budget (about 0.56): the bar is on the word task and on the overall gain."""
    L.seed_everything(0)
    stage = DPOStage(tiny_net, warmup_ratio=0.0, sft_weight=1.0, val_generate=0)
    stage.optimizer_factory = lambda groups: torch.optim.AdamW(groups, lr=3e-3)
    trainer = L.Trainer(accelerator="cpu", max_steps=300, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)  # fmt: skip
    dm = pairs_data(demo_dir, pairs_dir)

    def held_out():
        checker = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        return checker.validate(stage, dm.val_dataloader(), verbose=False)[0]

    before, replies_before = held_out(), right_replies(stage.model, pairs_dir)
    trainer.fit(stage, dm)
    after, replies_after = held_out(), right_replies(stage.model, pairs_dir)
    print({k: round(v, 3) for k, v in after.items() if "acc" in k})
    assert after["val_task/word/preference_acc"] >= 0.9
    assert after["val/preference_acc"] > before["val/preference_acc"]
    assert after["val/dpo_loss"] < math.log(2)
    # through generate: the greedy reply to a held-out word prompt is the chosen word more often
    print("right replies before / after:", replies_before, replies_after)
    assert replies_after > replies_before and replies_after >= 12  # of 16


@torch.no_grad()
def right_replies(model, pairs_dir) -> int:
    """Held-out word pairs whose greedy generated reply is the chosen word."""
    rows = [json.loads(line) for line in (pairs_dir / "val.jsonl").read_text().splitlines()]
    words = [r for r in rows if r["task"] == "word"]
    model.eval()
    replies = [reply_to(model, text=r["chosen"][0]["text"], max_new_positions=4).text.strip() for r in words]
    return sum(reply == r["chosen"][-1]["text"] for reply, r in zip(replies, words, strict=True))


def test_precomputed_reference_needs_no_reference_model(tiny_net, demo_dir, pairs_dir, tmp_path):
    """``qinyu-lit dpo-ref`` with the starting model: the stage then holds no reference and starts at log 2."""
    from qinyu_lit.cli import main

    torch.manual_seed(0)
    stage = DPOStage(tiny_net, reference="precomputed")
    stage.configure_model()
    assert stage.reference is None
    stage.model.save_pretrained(tmp_path / "start")
    main(["dpo-ref", "--model", str(tmp_path / "start"), "--pairs", str(pairs_dir / "val.jsonl"),
          "--out", str(tmp_path / "val.jsonl")])  # fmt: skip
    assert all("ref_logp" in json.loads(line) for line in (tmp_path / "val.jsonl").read_text().splitlines())
    (tmp_path / "train.jsonl").write_text((tmp_path / "val.jsonl").read_text())
    batch = next(iter(pairs_data(demo_dir, tmp_path).val_dataloader()))
    with torch.no_grad():
        terms = stage.dpo_step(batch)
    assert terms["loss"].mean().item() == pytest.approx(math.log(2), abs=1e-4)
