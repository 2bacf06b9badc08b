"""Multi-task DPO (Fun-Audio-Chat): align replies with preferences, after SFT.

Loss (Rafailov et al.): ``-log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))``, beta 0.1 by
default (the report gives none). ``logp`` is a reply's log-probability from the Eq. 3 terms
(``model/reply_logprob.py``: text tokens, and the mean of the 8 codebooks at audio frames), summed
over its supervised positions; ``length_normalise`` uses their mean instead. ``sft_weight`` adds the
Eq. 3 loss of the chosen reply (0: off).

Reference model: with ``lora_r`` > 0 the policy is a peft LoRA on the backbone and the reference is
the same model with the adapter disabled (``disable_adapter()``: no second copy); otherwise a frozen
copy of the starting weights. Data: ``PairsDataModule`` (chosen and rejected rows of one batch).
TensorBoard: ``{split}/dpo_loss``, ``reward_margin``, ``reward_chosen``, ``reward_rejected``,
``preference_acc`` overall and per task (``{split}_task/<task>/...``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Literal

import torch
from torch.nn import functional as F

from ..model.config import QinYuConfig
from ..model.reply_logprob import position_logprobs, reply_logprobs, sum_by_row
from .base import QinYuStage
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
        reference: ``model`` (the adapter disabled, or a frozen copy) or ``precomputed``: the pairs'
            ``ref_logp`` written by ``qinyu-lit dpo-ref`` (no reference model in memory at all).
    """

    def __init__(self, net: QinYuConfig, beta: float = 0.1, length_normalise: bool = False, sft_weight: float = 0.0,
                 lora_r: int = 0, lora_alpha: int = 32, target_modules: list[str] = LLAMA_STYLE_PROJECTIONS,  # noqa: B006
                 trainable: list[str] | None = None, reference: Literal["model", "precomputed"] = "model",
                 **kwargs):  # fmt: skip
        if trainable is None:
            trainable = ["backbone.*lora_A.*", "backbone.*lora_B.*"] if lora_r else list(SFTStage.TRAINABLE)
        super().__init__(net, trainable=trainable, **kwargs)
        self.beta, self.length_normalise, self.sft_weight = beta, length_normalise, sft_weight
        self.lora = dict(r=lora_r, lora_alpha=lora_alpha, target_modules=list(target_modules)) if lora_r else None
        self.reference_source = reference
        self.reference = None  # the frozen copy (no LoRA); kept out of the state dict and the optimizer

    def adapt_model(self) -> None:
        if self.lora:
            from peft import LoraConfig, get_peft_model

            self.model.backbone = get_peft_model(self.model.backbone, LoraConfig(**self.lora))
        elif self.reference_source == "model":  # a plain attribute holder, so Lightning neither saves nor optimizes the copy
            self.__dict__["reference"] = copy.deepcopy(self.model).requires_grad_(False).eval()

    def reference_context(self):
        """Where the model computes the reference: the adapter disabled (LoRA), else nothing to change."""
        return self.model.backbone.disable_adapter() if self.lora else contextlib.nullcontext()

    def reference_logprobs(self, batch: dict) -> torch.Tensor:
        if self.reference_source == "precomputed":
            if "ref_logps" not in batch:
                raise ValueError("model.init_args.reference: precomputed, but the pairs hold no ref_logp; "
                                 "run qinyu-lit dpo-ref on them first")
            return batch["ref_logps"].to(self.device)
        with torch.no_grad(), self.reference_context():
            if self.reference is not None and self.reference.codebook_embed.weight.device != self.device:
                self.reference.to(self.device)
            model = self.model if self.reference is None else self.reference
            return reply_logprobs(model, batch, self.length_normalise)

    def dpo_step(self, batch: dict) -> dict[str, torch.Tensor]:
        n = len(batch["pair_tasks"])
        logp, rows = position_logprobs(self.model, batch)
        policy = sum_by_row(logp, rows, 2 * n, self.length_normalise)
        ref = self.reference_logprobs(batch)
        terms = dpo_terms(policy[:n], policy[n:], ref[:n], ref[n:], self.beta)
        # the chosen rows' Eq. 3 loss: the mean CE over their supervised positions
        terms["sft"] = -logp[rows < n].mean()
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.dpo_step(batch)
        self._log_dpo("train", terms, batch["pair_tasks"])
        loss = terms["loss"].mean()
        return loss + self.sft_weight * terms["sft"] if self.sft_weight else loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._log_dpo("val", self.dpo_step(batch), batch["pair_tasks"])

    def on_validation_epoch_start(self) -> None:
        pass  # no generation / ASR metrics: pairs are scored, not sampled

    def on_validation_epoch_end(self) -> None:
        pass

    def _log_dpo(self, split: str, terms: dict, tasks: list[str]) -> None:
        train = split == "train"
        names = ("loss", "reward_margin", "reward_chosen", "reward_rejected", "preference_acc")
        values = {f"{split}/dpo_{k}" if k == "loss" else f"{split}/{k}": terms[k].detach().mean() for k in names}
        for task in sorted(set(tasks)):
            pick = torch.tensor([t == task for t in tasks], device=terms["loss"].device)
            values.update({f"{split}_task/{task}/{k}": terms[k].detach()[pick].mean() for k in names})
        self.log_dict(values, on_step=train, on_epoch=not train, batch_size=len(tasks), prog_bar=False)
        self.log(f"{split}/loss", values[f"{split}/dpo_loss"], prog_bar=train, on_step=train, on_epoch=not train,
                 batch_size=len(tasks))
