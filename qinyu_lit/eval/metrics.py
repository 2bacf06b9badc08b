"""The paper's evaluation, computed from the same batches the model trains on.

* **ASR WER / CER** (torchmetrics ``WordErrorRate`` / ``CharErrorRate``) on speech -> text
  samples: the prompt holds user speech and the reference reply has no audio frames. The
  reply is greedy-generated from the prompt part of the packed sequence.
* **Per-task loss and accuracy**: the batch's sequences regrouped by ``task`` and run through
  the same ``QinYuModel.loss`` (Eq. 3) as training.
* **Frames per text token** of speech replies, generated against reference. The reference
  ratio is what the codec and the speaker produced; a generated ratio well below it is the
  paper's "intelligible but overly fast" speech (what the codebook delay prevents).

Everything here works on collated batches (``data.batch.collate``): a row may pack several
sequences, told apart by ``position_ids`` restarting at 0, so no sample has to be re-read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

from ..data.batch import collate
from ..data.layout import TokenSequence, user_speech_starts
from ..data.tokenizer import SpecialIds


def normalize_text(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: what WER/CER compare (ASR convention)."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


def frames_per_text_token(num_frames: int, num_text_tokens: int) -> float:
    """Speech frames per text token of one reply (12.5 Hz frames; ~2-4 per word in natural speech)."""
    return num_frames / max(num_text_tokens, 1)


# ---------------------------------------------------------------------------- batches -> sequences


def split_batch(batch: dict, ids: SpecialIds) -> list[TokenSequence]:
    """The sequences of a collated batch, in order, with their own speakers and audio features.

    A row's sequences are laid end to end (``batch["lengths"]``; without it, where ``position_ids``
    return to 0 - the padding tail restarts them too, so only as many spans as the row has keys count). Speaker vectors and audio features are
    handed out in placeholder order, as ``collate`` stacked them.
    """
    codes = batch["codes"].cpu().numpy()
    mask = batch["target_mask"].cpu().numpy()
    pos = batch["position_ids"].cpu().numpy()
    speakers = batch["speakers"].cpu().numpy() if batch["speakers"].numel() else np.zeros((0, 0), np.float32)
    feats, lens = batch.get("audio_features"), batch.get("audio_feature_lens")
    feats = feats.cpu().numpy() if feats is not None else None
    special, speaker_ids = ids, [ids.speaker, ids.user_speaker]
    ids = batch["input_ids"].cpu().numpy()
    out, next_spk, next_feat = [], 0, 0
    for b in range(ids.shape[0]):
        if "lengths" in batch:
            starts = [0] + list(np.cumsum(batch["lengths"][b]))
        else:
            starts = list(np.flatnonzero(pos[b] == 0)) + [ids.shape[1]]
        for i, key in enumerate(batch["keys"][b]):
            s, e = starts[i], starts[i + 1]
            seq_ids = ids[b, s:e]
            n_spk = int(np.isin(seq_ids, speaker_ids).sum())
            n_feat = len(user_speech_starts(seq_ids, special))  # not a speech reply's audio start
            seq_feats = [feats[next_feat + j, : int(lens[next_feat + j])] for j in range(n_feat)]
            out.append(
                TokenSequence(
                    seq_ids.copy(),
                    codes[b, s:e].copy(),
                    mask[b, s:e].copy(),
                    speakers=[speakers[next_spk + j] for j in range(n_spk)],
                    audio_features=seq_feats,
                    key=key,
                    source=batch["sources"][b][i],
                    task=batch["tasks"][b][i],
                )
            )
            next_spk, next_feat = next_spk + n_spk, next_feat + n_feat
    return out


@dataclass
class Reference:
    """What the supervised (first) assistant turn of a sequence should be, and its prompt."""

    prompt: TokenSequence  # everything before the first supervised position
    text_ids: list[int]  # reference text ids (the closing <|im_end|> left out)
    num_frames: int  # reference speech frames (delay undone)
    has_user_speech: bool
    task: str = ""
    key: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_speech_to_text(self) -> bool:
        """ASR-like: speech in, text only out (WER/CER apply)."""
        return self.has_user_speech and self.num_frames == 0

    @property
    def frames_per_text_token(self) -> float:
        return frames_per_text_token(self.num_frames, len(self.text_ids))

    @classmethod
    def from_sequence(cls, seq: TokenSequence, ids: SpecialIds, num_codebooks: int) -> Reference | None:
        """``None`` when the sequence has nothing supervised (fully truncated)."""
        targets = np.flatnonzero(seq.target_mask)
        if not len(targets):
            return None
        first = int(targets[0])
        # the first supervised turn runs to its <|im_end|> (inclusive) or to the end of the sequence
        turn = []
        for t in targets:
            if seq.codes[t, 0] < 0 and seq.input_ids[t] == ids.im_end:
                break
            turn.append(int(t))
        turn = np.asarray(turn, dtype=np.int64)
        is_audio = seq.codes[turn, 0] >= 0 if len(turn) else np.zeros(0, bool)
        positions = int(is_audio.sum())
        prompt = TokenSequence(
            seq.input_ids[:first],
            seq.codes[:first],
            np.zeros(first, dtype=bool),
            speakers=seq.speakers[: int(np.isin(seq.input_ids[:first], [ids.speaker, ids.user_speaker]).sum())],
            audio_features=seq.audio_features[: len(user_speech_starts(seq.input_ids[:first], ids))],
            key=seq.key,
            source=seq.source,
            task=seq.task,
        )
        return cls(
            prompt=prompt,
            text_ids=[int(i) for i in seq.input_ids[turn[~is_audio]]] if len(turn) else [],
            num_frames=max(positions - (num_codebooks - 1), 0),
            has_user_speech=bool((prompt.input_ids == ids.audio).any()),
            task=seq.task,
            key=seq.key,
        )


# ---------------------------------------------------------------------------- per-task loss


def per_task_losses(model, sequences: list[TokenSequence], pad_id: int) -> dict:
    """``{task: LossOutput}``: each task's sequences collated on their own and run through ``model.loss``.

    Costs one more forward pass over the batch; the numbers are exactly the training loss
    restricted to that task.
    """
    by_task: dict[str, list[TokenSequence]] = {}
    for seq in sequences:
        if seq.num_targets:
            by_task.setdefault(seq.task or "unknown", []).append(seq)
    device = next(model.parameters()).device
    out = {}
    for task, seqs in sorted(by_task.items()):
        batch = collate([[s] for s in seqs], pad_id, model.config.num_codebooks)
        out[task] = model.loss(move_data_to_device(batch, device))
    return out


# ---------------------------------------------------------------------------- generation metrics


class GenerationMetrics(nn.Module):
    """Accumulates over an epoch: ASR WER/CER, and generated vs reference frames per text token.

    ``update_asr(generated_text, reference_text)`` for speech -> text samples;
    ``update_speech(generated_frames, generated_tokens, reference_frames, reference_tokens)`` for
    speech replies. ``frame_ratio`` = generated frames-per-token / reference frames-per-token
    (1.0 = same pace; < 1 = the "overly fast" symptom).
    """

    def __init__(self):
        super().__init__()
        self.wer = WordErrorRate()
        self.cer = CharErrorRate()
        self.gen_frames_per_token = MeanMetric()
        self.ref_frames_per_token = MeanMetric()
        self.frame_ratio = MeanMetric()

    def update_asr(self, generated: str, reference: str) -> None:
        hyp, ref = normalize_text(generated), normalize_text(reference)
        if not ref:
            return  # WER is undefined against an empty reference
        self.wer.update([hyp], [ref])
        self.cer.update([hyp], [ref])

    def update_speech(self, gen_frames: int, gen_tokens: int, ref_frames: int, ref_tokens: int) -> None:
        if ref_frames == 0:
            return
        gen = frames_per_text_token(gen_frames, gen_tokens)
        ref = frames_per_text_token(ref_frames, ref_tokens)
        self.gen_frames_per_token.update(gen)
        self.ref_frames_per_token.update(ref)
        self.frame_ratio.update(gen / ref)

    def items(self) -> dict[str, object]:
        """Metric objects by log name (Lightning computes and resets them at epoch end)."""
        return {
            "asr_wer": self.wer,
            "asr_cer": self.cer,
            "frames_per_token_generated": self.gen_frames_per_token,
            "frames_per_token_reference": self.ref_frames_per_token,
            "frames_per_token_ratio": self.frame_ratio,
        }
