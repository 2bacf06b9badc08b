"""The evaluation a stage runs in ``validation_step`` / ``test_step`` (``qinyu-lit validate|test``).

Per batch: per-task loss and accuracy (one extra forward pass, regrouped by task), and greedy
generation from the prompts of a few sequences (``num_generate`` per kind per run): speech ->
text ones feed ASR WER/CER, speech replies the frames-per-text-token pace. Generated text goes
to TensorBoard as text, generated speech as audio when a codec is configured.

Every metric is a torchmetrics object with a fixed name (one set per task of the schema), and
all are computed on every rank at epoch end, so ranks that saw different tasks still sync
the same tensors (logging keys that differ between ranks would hang DDP).
"""

from __future__ import annotations

import math
import warnings

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torchmetrics import MeanMetric

from ..codec import valid_codes
from ..data.batch import collate
from ..data.schema import TASKS
from ..model.generate import generate
from .metrics import GenerationMetrics, Reference, per_task_losses, split_batch

TASK_METRICS = ("loss", "text_acc", "audio_acc")


def _shards_parameters(stage) -> bool:
    trainer = getattr(stage, "_trainer", None)
    if trainer is None:
        return False
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

    return isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy))


class StageEvaluator(nn.Module):
    """Metrics for one split (``val`` or ``test``).

    Args:
        num_generate: sequences greedy-generated per run for each kind (speech -> text, speech
            reply); 0 turns generation off.
        max_new_positions: generation length limit (text ids + frames); a reply also stops at twice
            its reference's length + 16.
        per_task: compute per-task loss and accuracy (one extra forward pass per batch).
        codec: a codec with ``decode`` and ``sample_rate`` (``qinyu_lit.codec.MimiCodec``) to log
            generated speech as audio; ``None`` logs text only.
    """

    def __init__(self, num_generate: int = 4, max_new_positions: int = 256, per_task: bool = True, codec=None):
        super().__init__()
        self.num_generate, self.max_new_positions, self.per_task = num_generate, max_new_positions, per_task
        self.codec = codec
        self.generation = GenerationMetrics()
        self.tasks = nn.ModuleDict({f"{t}_{m}": MeanMetric() for t in TASKS for m in TASK_METRICS})
        self._budget = {"asr": 0, "speech": 0}
        self._max_new = max_new_positions
        self._warned = False

    def start(self, sanity_check: bool = False) -> None:
        """A new validation run: the generation budget is per run. Lightning's sanity check before
        training generates one short reply of each kind: enough to catch a broken path, cheap."""
        n = min(self.num_generate, 1) if sanity_check else self.num_generate
        self._budget = {"asr": n, "speech": n}
        self._max_new = min(self.max_new_positions, 16) if sanity_check else self.max_new_positions

    def step(self, stage, batch: dict, split: str) -> None:
        if _shards_parameters(stage):
            # every forward of a sharded model is a collective; ranks would run different numbers
            # of them here (tasks per batch, reply lengths) and hang, so these metrics are skipped
            if not self._warned:
                print("[qinyu-lit] per-task metrics and generation are skipped under FSDP / DeepSpeed; "
                      "run `qinyu-lit test` on one device or with DDP for them")
                self._warned = True
            return
        model = stage.model
        sequences = split_batch(batch, model.ids)
        if self.per_task:
            for task, out in per_task_losses(model, sequences, model.ids.pad).items():
                self._update_task(task, out)
        if self.num_generate:
            self._generate(stage, sequences, split)

    def _update_task(self, task: str, out) -> None:
        if task not in TASKS:
            return
        n = out.num_text + out.num_audio
        if n:
            self.tasks[f"{task}_loss"].update(out.loss.detach().float(), weight=n)
        if out.num_text:
            self.tasks[f"{task}_text_acc"].update(out.text_correct / out.num_text, weight=out.num_text)
        if out.num_audio:
            self.tasks[f"{task}_audio_acc"].update(out.codebook_correct.mean() / out.num_audio, weight=out.num_audio)

    def _generate(self, stage, sequences, split: str) -> None:

        model = stage.model
        for seq in sequences:
            ref = Reference.from_sequence(seq, model.ids, model.config.num_codebooks)
            if ref is None:
                continue
            kind = "asr" if ref.is_speech_to_text else "speech" if ref.num_frames else None
            if kind is None or self._budget[kind] <= 0:
                continue
            self._budget[kind] -= 1
            prompt = collate([[ref.prompt]], model.ids.pad, model.config.num_codebooks)
            prompt = move_data_to_device(prompt, next(model.parameters()).device)
            # a reply twice as long as the reference is already wrong; stopping there keeps an
            # untrained model (which rarely says <|im_end|>) from costing the full limit every time
            ref_positions = len(ref.text_ids) + ref.num_frames + model.config.num_codebooks - 1
            gen = generate(model, prompt, max_new_positions=min(self._max_new, 2 * ref_positions + 16))
            ref_text = model.tokenizer.decode(ref.text_ids)
            if kind == "asr":
                self.generation.update_asr(gen.text, ref_text)
            else:
                self.generation.update_speech(gen.num_frames, len(gen.text_ids), ref.num_frames, len(ref.text_ids))
            self._log_sample(stage, split, ref, ref_text, gen)

    def _log_sample(self, stage, split: str, ref: Reference, ref_text: str, gen) -> None:
        experiment = getattr(stage.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_text"):
            return
        step, tag = stage.global_step, f"{split}_samples/{ref.task}/{ref.key}"
        experiment.add_text(
            tag,
            f"reference: {ref_text}  \ngenerated: {gen.text}  \n"
            f"frames: {gen.num_frames} generated / {ref.num_frames} reference; finished: {gen.finished}",
            step,
        )
        if self.codec is not None and gen.num_frames and hasattr(experiment, "add_audio"):
            codes, _ = valid_codes(gen.codes, int(self.codec.codebook_size))
            wav = torch.as_tensor(self.codec.decode(codes.numpy())).float().clamp(-1, 1)
            experiment.add_audio(tag, wav[None], step, sample_rate=int(self.codec.sample_rate))

    def log_epoch(self, stage, split: str) -> None:
        """Compute every metric on every rank (keeps DDP in step), log those with data, reset."""
        values = {f"{split}_task/{name}": m for name, m in self.tasks.items()}
        values.update({f"{split}/{name}": m for name, m in self.generation.items().items()})
        for name, metric in values.items():
            with warnings.catch_warnings():  # "compute before update": expected for tasks this split lacks
                warnings.simplefilter("ignore", UserWarning)
                value = metric.compute()  # syncs across ranks; a metric without data gives nan everywhere
            if not math.isnan(float(value)):
                stage.log(name, value.float())  # already synced: the same value on every rank
            metric.reset()
