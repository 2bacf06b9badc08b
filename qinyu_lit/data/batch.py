"""The batch contract: what ``collate`` hands the model, and the rule that keeps packed samples apart.

Keys of a batch (B rows of width W):

    input_ids     [B, W] long   text ids; placeholders where speech, speakers or audio frames go
    codes         [B, W, C]     the C codebook values at assistant audio positions, -1 elsewhere
    target_mask   [B, W] bool   position t is supervised: position t-1 predicts it (the shifted loss)
    position_ids  [B, W]        restart at 0 for every packed sample and for the padding tail
    speakers      [S, D]        one vector per <|speaker|> / <|user_speaker|> placeholder, in order
    audio_features, audio_feature_lens   user speech for the frozen encoder (when any)
    num_tokens, lengths, keys, sources, tasks   what the rows hold, per sequence (counts and logs; host-side lists)
    pairs         preference pairs only (DPO): {chosen [P], rejected [P]: sequence indices (as in
                  cu_seqlens), kinds, keys: P names}; a pair's two conversations sit side by side in one row
    pack          what the step needs to know about the pack, computed here on the host (``pack_metadata``)
                  so the model's forward and loss never read a device value back (no sync):
                  cu_seqlens [S+1] int32 + max_seqlen (int): the samples (and padding tails) end to end,
                  for varlen / flash attention; sup_index [N]: flat index (row x W + t) of each position
                  that predicts a target, with next_ids [N], next_codes [N, C], is_audio [N];
                  num_text / num_audio (ints); frame_index [F]: flat positions of assistant audio frames;
                  clip_frames: each user clip's feature frames (ints), for the encoder glue;
                  sup_segment [N]: the sequence (index into cu_seqlens) each of those positions is in

The packing rule: every sequence starts with an unsupervised token (``<|im_start|>``), so the shifted
loss never crosses a sample boundary - the last position of one sample would otherwise be trained to
predict the first token of the next. ``collate`` asserts it. transformers derives the block-diagonal
attention from the restarting ``position_ids`` (no hand-made masks; ``use_cache=False`` in training).
"""

from __future__ import annotations

import numpy as np
import torch

from .layout import TokenSequence


def collate(
    rows: list[list[TokenSequence]], pad_id: int, num_codebooks: int, pad_to: int | None = None
) -> dict:
    """Rows of sequences -> the model's batch.

    Each row is one or more sequences laid end to end (a pack). ``position_ids`` restart
    at 0 for every sequence and for the padding tail, which is how transformers tells
    packed samples apart and keeps their attention separate (no hand-made masks). A preference
    pair (a sequence with a ``rejected`` twin) is laid out as its two conversations, side by side.
    """
    rows, pairs = unfold_pairs(rows)
    lengths = [sum(len(s) for s in row) for row in rows]
    width = max(max(lengths), pad_to or 0)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    codes = torch.full((batch, width, num_codebooks), -1, dtype=torch.long)
    target_mask = torch.zeros((batch, width), dtype=torch.bool)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    speakers, features = [], []
    for b, row in enumerate(rows):
        t = 0
        for seq in row:
            n = len(seq)
            # the packing rule (module docstring): a sample's first token is never a target
            assert not seq.target_mask[0], f"{seq.key}: the first token of a sequence must not be supervised"
            input_ids[b, t : t + n] = torch.from_numpy(seq.input_ids)
            codes[b, t : t + n] = torch.from_numpy(seq.codes)
            target_mask[b, t : t + n] = torch.from_numpy(seq.target_mask)
            position_ids[b, t : t + n] = torch.arange(n)
            speakers += seq.speakers
            features += seq.audio_features
            t += n
        position_ids[b, t:] = torch.arange(width - t)
    out = {
        "input_ids": input_ids,
        "codes": codes,
        "target_mask": target_mask,
        "position_ids": position_ids,
        "speakers": torch.from_numpy(np.stack(speakers)) if speakers else torch.zeros(0, 0),
        "num_tokens": torch.tensor(sum(lengths)),
        "lengths": [[len(s) for s in row] for row in rows],
        "keys": [[s.key for s in row] for row in rows],
        "sources": [[s.source for s in row] for row in rows],
        "tasks": [[s.task for s in row] for row in rows],
    }
    if features:
        lens = torch.tensor([len(f) for f in features])
        feats = torch.zeros(len(features), int(lens.max()), features[0].shape[1])
        for i, f in enumerate(features):
            feats[i, : len(f)] = torch.from_numpy(f)
        out["audio_features"], out["audio_feature_lens"] = feats, lens
    segments = [[len(s) for s in row] + ([width - n] if width > n else []) for row, n in zip(rows, lengths, strict=True)]
    out["pack"] = pack_metadata(input_ids, codes, target_mask, segments, [len(f) for f in features])
    if pairs:
        first = np.cumsum([0] + [len(row) for row in segments])  # each row's first sequence index
        index = torch.tensor([[first[b] + j for b, j in side] for side in (pairs["chosen"], pairs["rejected"])])
        out["pairs"] = {"chosen": index[0], "rejected": index[1], "kinds": pairs["kinds"], "keys": pairs["keys"]}
    return out


def unfold_pairs(rows: list[list[TokenSequence]]) -> tuple[list[list[TokenSequence]], dict]:
    """Each pair -> its chosen and rejected sequences, side by side in the row; where they are ((row,
    position in row) of each side) and their kinds. No pairs: the rows as they are and ``{}``."""
    if not any(s.rejected is not None for row in rows for s in row):
        return rows, {}
    out, pairs = [], {"chosen": [], "rejected": [], "kinds": [], "keys": []}
    for b, row in enumerate(rows):
        flat = []
        for s in row:
            if s.rejected is not None:
                pairs["chosen"].append((b, len(flat)))
                pairs["rejected"].append((b, len(flat) + 1))
                pairs["kinds"].append(s.preference)
                pairs["keys"].append(s.key)
                flat += [s, s.rejected]
            else:
                flat.append(s)
        out.append(flat)
    return out, pairs


def pack_metadata(
    input_ids: torch.Tensor, codes: torch.Tensor, target_mask: torch.Tensor, segments: list[list[int]], clip_frames: list[int]
) -> dict:
    """The host-side facts of a batch (host tensors in, see the module docstring); ``segments`` are each
    row's sample lengths and padding tail. Everything a count or a boolean selection would otherwise read
    back from the device in every step."""
    flat = [n for row in segments for n in row]
    cu = torch.zeros(len(flat) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(flat), 0)
    rows, width = input_ids.shape
    b, t = target_mask[:, 1:].nonzero(as_tuple=True)  # position t predicts position t + 1
    next_codes = codes[b, t + 1]
    is_audio = next_codes[:, 0] >= 0
    num_audio = int(is_audio.sum())
    return {
        "shape": (rows, width),
        "cu_seqlens": cu,
        "max_seqlen": max(flat),
        "sup_index": b * width + t,
        "next_ids": input_ids[b, t + 1],
        "next_codes": next_codes,
        "is_audio": is_audio,
        "num_text": len(b) - num_audio,
        "num_audio": num_audio,
        "frame_index": (codes[..., 0] >= 0).reshape(-1).nonzero().flatten(),
        "clip_frames": list(clip_frames),
        "sup_segment": torch.searchsorted(cu[1:].long(), b * width + t, right=True),
    }
