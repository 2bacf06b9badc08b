"""Multi-task DPO (Fun-Audio-Chat): align replies with preferences, after SFT.

Loss (Rafailov et al.): ``-log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))``, beta 0.1 by
default (the report gives none). ``logp`` is a reply's log-probability from the Eq. 3 terms
(``model/reply_logprob.py``: text tokens, and the mean of the 8 codebooks at audio frames), summed
over its supervised positions; ``length_normalise`` uses their mean instead. ``sft_weight`` adds the
Eq. 3 loss of the chosen reply (0: off).

Reference model: with ``lora_r`` > 0 the policy is a peft LoRA on the backbone and the reference is
the same model with the adapter disabled (``disable_adapter()``: no second copy); otherwise a frozen
copy of the starting weights; or read from a ``qinyu-lit dpo-ref`` file (no reference in memory).
Data: preference shards (schema v2) through the usual ``QinYuDataModule``: each pair's chosen and
rejected conversations sit side by side in one row (one pack), attention kept within each.
TensorBoard: ``{split}/dpo_loss``, ``reward_margin``, ``reward_chosen``, ``reward_rejected``,
``preference_acc`` overall and per task (``{split}_task/<task>/...``).
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from ..data.errors import QinYuError
from ..model.config import QinYuConfig
from ..model.flops import forward_flops
from ..model.qinyu import with_pack
from ..model.reply_logprob import position_logprobs, reply_logprobs, sum_by_sequence
from .base import QinYuStage
from .logged_steps import is_logged_step
from .persona import LLAMA_STYLE_PROJECTIONS
from .sft import SFTStage


def dpo_terms(policy_c, policy_r, ref_c, ref_r, beta: float) -> dict[str, torch.Tensor]:
    """Per pair: the DPO loss, the implicit rewards (beta x log-ratio) and whether chosen wins."""
    chosen, rejected = beta * (policy_c - ref_c), beta * (policy_r - ref_r)
    margin = chosen - rejected
    return {"loss": -F.logsigmoid(margin), "reward_chosen": chosen, "reward_rejected": rejected,
            "reward_margin": margin, "preference_acc": (margin > 0).float()}


class DPOStage(QinYuStage):
    """Preference optimisation from an SFT model (``init_from``).

    Args:
        net: what to build; must match ``init_from``.
        beta: the DPO temperature (strength of the pull towards the reference).
        length_normalise: mean log-probability per supervised position instead of the sum.
        sft_weight: weight of the chosen reply's Eq. 3 loss added to the DPO loss.
        lora_r: LoRA rank on the backbone (0: full fine-tuning with a frozen reference copy).
        lora_alpha: LoRA scale numerator.
        target_modules: module names that get LoRA.
        trainable: parameter-name patterns that train; ``None``: the LoRA matrices (LoRA) or what SFT trains.
        reference: ``model`` (the adapter disabled, or a frozen copy of the start), or the JSON file
            ``qinyu-lit dpo-ref`` wrote for the training and validation pairs: no reference model in memory.
    """

    def __init__(self, net: QinYuConfig, beta: float = 0.1, length_normalise: bool = False, sft_weight: float = 0.0,
                 lora_r: int = 0, lora_alpha: int = 32, target_modules: list[str] = LLAMA_STYLE_PROJECTIONS,  # noqa: B006
                 trainable: list[str] | None = None, reference: str = "model",
                 **kwargs):  # fmt: skip
        if trainable is None:
            trainable = ["backbone.*lora_A.*", "backbone.*lora_B.*"] if lora_r else list(SFTStage.TRAINABLE)
        super().__init__(net, trainable=trainable, **kwargs)
        self.beta, self.length_normalise, self.sft_weight = beta, length_normalise, sft_weight
        self.lora = dict(r=lora_r, lora_alpha=lora_alpha, target_modules=list(target_modules)) if lora_r else None
        self.reference_source = reference
        self.reference = None  # the frozen copy (no LoRA); kept out of the state dict and the optimizer
        self._precomputed: dict | None = None

    @property
    def precomputed(self) -> dict[str, list[float]]:
        """key -> [chosen, rejected] reference log-probabilities, from the ``dpo-ref`` file (read once)."""
        if self._precomputed is None:
            self._precomputed = read_reference_file(self.reference_source, self.length_normalise)
        return self._precomputed

    def adapt_model(self) -> None:
        if self.lora:
            from peft import LoraConfig, get_peft_model

            self.model.backbone = get_peft_model(self.model.backbone, LoraConfig(**self.lora))
        elif self.reference_source == "model":  # a plain attribute holder, so Lightning neither saves nor optimizes the copy
            self.__dict__["reference"] = copy.deepcopy(self.model).requires_grad_(False).eval()

    def reference_context(self):
        """Where the model computes the reference: the adapter disabled (LoRA), else nothing to change."""
        return self.model.backbone.disable_adapter() if self.lora else contextlib.nullcontext()

    def reference_pairs(self, batch: dict, pairs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference log-probabilities of each pair's chosen and rejected reply ([P], [P])."""
        if self.reference_source != "model":
            return precomputed_pairs(self.precomputed, pairs["keys"], self.reference_source, self.device)
        with torch.no_grad(), self.reference_context():
            if self.reference is not None and self.reference.codebook_embed.weight.device != self.device:
                self.reference.to(self.device)
            model = self.model if self.reference is None else self.reference
            ref = reply_logprobs(model, batch, self.length_normalise)
        return ref[pairs["chosen"]], ref[pairs["rejected"]]

    def _batch_flops(self, batch: dict) -> int:
        """The policy's forward and backward, plus the reference model's forward (none when precomputed)."""
        policy = super()._batch_flops(batch)
        return policy if self.reference_source != "model" else policy + forward_flops(self._flop_shape, with_pack(batch))

    def dpo_step(self, batch: dict) -> dict[str, torch.Tensor]:
        pairs = batch.get("pairs")
        if pairs is None:
            raise QinYuError("DPO trains on preference pairs (schema v2 samples with a 'rejected' reply: "
                             "qinyu-lit demo-pairs, or qinyu-lit data build on a pairs manifest); this batch holds none")
        logp, sequence = position_logprobs(self.model, batch)
        sums, counts = sum_by_sequence(logp, sequence, batch["pack"]["cu_seqlens"].shape[0] - 1)
        policy = sums / counts.clamp(min=1) if self.length_normalise else sums
        ref_c, ref_r = self.reference_pairs(batch, pairs)
        chosen, rejected = pairs["chosen"], pairs["rejected"]
        terms = dpo_terms(policy[chosen], policy[rejected], ref_c, ref_r, self.beta)
        # the chosen replies' Eq. 3 loss: the mean CE over their supervised positions
        terms["sft"] = -sums[chosen].sum() / counts[chosen].sum().clamp(min=1)
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.dpo_step(batch)
        if is_logged_step(self.trainer):  # the terms are device tensors: read them only on logged steps
            self._log_dpo("train", terms, batch["pairs"]["kinds"])
        self.flops_per_batch = self._batch_flops(batch)
        loss = terms["loss"].mean()
        return self.guard_nonfinite(loss + self.sft_weight * terms["sft"] if self.sft_weight else loss)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._log_dpo("val", self.dpo_step(batch), batch["pairs"]["kinds"])

    def on_validation_epoch_start(self) -> None:
        pass  # no generation / ASR metrics: pairs are scored, not sampled

    def on_validation_epoch_end(self) -> None:
        pass

    def _log_dpo(self, split: str, terms: dict, tasks: list[str]) -> None:
        train = split == "train"
        names = ("loss", "reward_margin", "reward_chosen", "reward_rejected", "preference_acc")
        values = {f"{split}/dpo_{k}" if k == "loss" else f"{split}/{k}": terms[k].detach().mean() for k in names}
        for task in sorted(set(tasks)):  # host-side indices: a boolean mask would read the device
            pick = torch.tensor([i for i, t in enumerate(tasks) if t == task], device=terms["loss"].device)
            values.update({f"{split}_task/{task}/{k}": terms[k].detach().index_select(0, pick).mean() for k in names})
        self.log_dict(values, on_step=train, on_epoch=not train, batch_size=len(tasks), prog_bar=False)
        self.log(f"{split}/loss", values[f"{split}/dpo_loss"], prog_bar=train, on_step=train, on_epoch=not train,
                 batch_size=len(tasks))


def read_reference_file(path: str, length_normalise: bool) -> dict[str, list[float]]:
    """The ``qinyu-lit dpo-ref`` output: ``{"length_normalise": bool, "logps": {key: [chosen, rejected]}}``."""
    if not Path(path).is_file():
        raise QinYuError(f"model.init_args.reference: {path}: no such file (give 'model', or a file from qinyu-lit dpo-ref)")
    doc = json.loads(Path(path).read_text())
    if doc.get("length_normalise") != length_normalise:
        raise QinYuError(f"{path}: computed with length_normalise={doc.get('length_normalise')}, "
                         f"the stage has {length_normalise}; rerun qinyu-lit dpo-ref with the stage's setting")
    return doc["logps"]


def precomputed_pairs(table: dict, keys: list[str], path: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored reference log-probabilities of the batch's pairs (host lookup, one copy to the device)."""
    missing = [k for k in keys if k not in table]
    if missing:
        raise QinYuError(f"{path}: no reference log-probabilities for pair {missing[0]!r} "
                         "(run qinyu-lit dpo-ref on every shard set the run reads)")
    ref = torch.tensor([table[k] for k in keys], dtype=torch.float32).to(device, non_blocking=True)
    return ref[:, 0], ref[:, 1]
