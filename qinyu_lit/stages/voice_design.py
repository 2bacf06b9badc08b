"""VoiceDesign stage: train text-to-timbre (a speaker embedding from a description) by flow matching.

Builds: ``VoiceDesignModel`` (frozen text encoder, trainable projection + DiT flow estimator).
Trains: ``text_proj.*`` and ``estimator.*`` (release size ~18M parameters); the text encoder is frozen.
Data: (description, speaker embedding) pairs (``data/voice_design.py``). The release ships no training
recipe; AdamW at 1e-4 with 3% warmup and a cosine decay is our choice (``recipes/voice_design.yaml``).

Not a ``QinYuStage`` (that one builds the speech LM), but the same conventions: a declared trainable
set applied by ``apply_trainable``, warmup + cosine from ``transformers``, gradient clipping by the
trainer, TensorBoard scalars. Validation samples embeddings for the held-out descriptions and logs
their cosine to the true ones (guided, conditional only, unconditional) and a 2-D picture of both.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from transformers import get_cosine_schedule_with_warmup

from ..model.voice_design import VoiceDesignConfig, VoiceDesignModel
from .base import apply_trainable, format_trainable


class VoiceDesignStage(L.LightningModule):
    """Text-to-timbre by conditional flow matching (VITA-QinYu ``VoiceDesign/``).

    Args:
        net: what to build (text encoder, embedding size, estimator size); see ``VoiceDesignConfig``.
        optimizer: optimizer factory (ours: AdamW lr 1e-4; the release publishes none).
        warmup_ratio: share of the run in linear warmup before the cosine decay.
        trainable: parameter-name patterns that train; ``None``: projection + estimator.
        val_steps: Euler steps when validation samples embeddings (release: 20).
        val_guidance: guidance weight of the validation samples (release: 1.7).
        val_seed: noise seed of the validation samples (the same seed, the same pictures).
    """

    TRAINABLE = VoiceDesignModel.TRAINABLE

    def __init__(self, net: VoiceDesignConfig, optimizer: OptimizerCallable = torch.optim.AdamW, warmup_ratio: float = 0.03,
                 trainable: list[str] | None = None, val_steps: int = 20, val_guidance: float = 1.7, val_seed: int = 0):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net_config = net
        self.optimizer_factory = optimizer
        self.warmup_ratio = warmup_ratio
        self.trainable_patterns = list(trainable) if trainable is not None else list(self.TRAINABLE)
        self.val_steps, self.val_guidance, self.val_seed = val_steps, val_guidance, val_seed
        self.model: VoiceDesignModel | None = None
        self._val: dict[str, list[torch.Tensor]] = {}
        # a named frozen encoder is left out of checkpoints (on_save_checkpoint): resuming loads the rest
        self.strict_loading = not isinstance(net.text_encoder, str)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = VoiceDesignModel(self.net_config)
        summary = apply_trainable(self.model, self.trainable_patterns)
        if self._trainer is not None:
            print(f"[qinyu-lit] {type(self).__name__}: trainable parameters by module\n{format_trainable(summary)}")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model(batch["embedding"], batch["description"])
        self.log("train/flow_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(batch["description"]))
        return loss

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self._val = {"true": [], "guided": [], "conditional": [], "unconditional": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        texts, true = batch["description"], batch["embedding"]
        self.log("val/flow_loss", self.model(true, texts), on_epoch=True, batch_size=len(texts))
        seed = self.val_seed + batch_idx
        kinds = {"guided": dict(guidance=self.val_guidance), "conditional": dict(guidance=1.0),
                 "unconditional": dict(guidance=1.0, unconditional=True)}  # fmt: skip
        self._val["true"].append(true.float().cpu())
        for name, kw in kinds.items():
            sampled = self.model.sample(texts, steps=self.val_steps, seed=seed, **kw)
            self._val[name].append(sampled.float().cpu())
            cos = F.cosine_similarity(sampled.float(), true.float(), dim=-1).mean()
            self.log(f"val/cosine_{name}", cos, on_epoch=True, batch_size=len(texts))

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("true") or self.trainer.sanity_checking:
            return
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_figure"):
            return
        from ..eval.voice_design_plot import projection_figure

        points = {k: torch.cat(v).numpy() for k, v in self._val.items() if k != "conditional"}
        experiment.add_figure("val/embeddings_2d", projection_figure(points), self.global_step)

    # ------------------------------------------------------------------ optimization and checkpoints

    def configure_optimizers(self):
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        if not decay and not no_decay:
            raise ValueError(f"{type(self).__name__}: no parameter matches trainable={self.trainable_patterns}")
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.warmup_ratio * total)
        print(f"[qinyu-lit] {len(decay)} tensors with weight decay, {len(no_decay)} without; "
              f"{warmup} warmup steps then cosine to step {total}")  # fmt: skip
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        hp = checkpoint["hyper_parameters"]
        hp.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
        if dataclasses.is_dataclass(hp.get("net")):
            hp["net"] = dataclasses.asdict(hp["net"])  # plain values: loads with weights_only=True
        if not isinstance(hp.get("optimizer"), (dict, str, type(None))):
            hp["optimizer"] = getattr(hp["optimizer"], "__qualname__", repr(hp["optimizer"]))
        if isinstance(self.net_config.text_encoder, str) and not self.model.encoder_trains:
            state = checkpoint["state_dict"]  # a named frozen encoder is rebuilt from its name
            for key in [k for k in state if k.startswith("model.text_encoder.")]:
                del state[key]
