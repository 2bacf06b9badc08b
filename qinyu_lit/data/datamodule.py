"""The LightningDataModule: weighted shard sets in, collated (optionally packed) batches out.

It also owns the data stream's position: every training batch tells where it came from
(``stream_state``), the module records the last one the training loop actually took
(``on_before_batch_transfer``: Lightning fetches one batch ahead, so "yielded" is not
"trained on") and ``state_dict`` puts those positions in the Lightning checkpoint.
``--ckpt_path last`` then resumes the stream mid-epoch without repeating or skipping a sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import lightning as L

from .dist import all_gather_objects, rank_and_world
from .features import FRONT_ENDS
from .index import absolute_if_local
from .layout import TokenLayout
from .loader import StreamLoader
from .mixture import Catalog, Source, parse_sources
from .stream import ShardStream
from .tokenizer import load_tokenizer


def named_sources(spec) -> list[Source]:
    """``parse_sources`` with a short name for every unnamed source: the shortest tail of its path
    (``data/demo/train`` -> ``train``; ``asr/train`` + ``chat/train`` -> ``asr-train``, ``chat-train``)
    that tells the sources apart, so log tags read ``data/samples/train``, not a file path."""
    sources = parse_sources(spec)
    # path components without glob / brace parts: data/asr/shard-{000..009}.tar -> [data, asr]
    tails = [[p for p in Path(s.path).parts if p not in ("/", ".") and not set(p) & set("*?[{")] or [s.path]
             for s in sources]  # fmt: skip
    names = [s.name for s in sources]
    for k in range(1, max((len(t) for t in tails), default=1) + 1):
        guess = [s.name or "-".join(t[-k:]) for s, t in zip(sources, tails, strict=True)]
        if len(set(guess)) == len(guess):
            names = guess
            break
    return [Source(s.path, s.weight, n or s.path) for s, n in zip(sources, names, strict=True)]


class QinYuDataModule(L.LightningDataModule):
    """Streams WebDataset shards (schema ``qinyu/v2``: samples, or preference pairs for DPO) and lays them out for QinYu.

    Args:
        train: training data: a shard directory, glob or brace pattern
            (``data/train/shard-{000000..000099}.tar``), or a weighted mixture, a list of
            ``{path, weight, name}`` (weight = reads of each sample per epoch; 0.5 = a seeded half).
        val: validation shards, same forms; ``None`` for no validation.
        tokenizer: Hugging Face tokenizer name or directory (QinYu special tokens are added;
            with ``token_layout: official`` the release's tokens must be in it).
        pattern: interleave blocks ``[n_text, m_audio, ...]``; paper default ``1 8 4 8``.
        num_codebooks: codebooks per audio frame (must match the shards and the model).
        codebook_size: codes per codebook (must match the shards and the model).
        audio_front_end: ``fbank_lfr`` (FunAsrNano encoder), ``whisper``, or ``sense_voice`` (the
            release's SenseVoiceSmall: CMVN from ``cmvn`` and 4 more placeholders per clip). Under
            ``qinyu-lit fit`` it follows ``model.init_args.net.audio_encoder_type`` (linked).
        num_mel_bins: mel bins of the front end (80; Whisper large-v3: 128). Under ``qinyu-lit fit`` it is
            read from the audio encoder's config (linked).
        cmvn: SenseVoiceSmall's ``am.mvn`` for ``audio_front_end: sense_voice`` (``None``: no CMVN).
        token_layout: ``qinyu`` (this project's layout) or ``official`` (the released VITA-QinYu's,
            for a converted checkpoint; see data_cards/SCHEMA.md). The model follows (linked).
        batch_size: rows per micro-batch: sequences, or packs when ``pack_length`` is set (paper: 1 pack).
        num_workers: DataLoader worker processes; samples are split across ranks x workers.
        shuffle_buffer: samples shuffled together (0 keeps shard order).
        supervise: ``last`` assistant turn only (paper) or ``all`` assistant turns (``token_layout: official``
            has the release's own rule: speech samples the last turn, text-only samples every turn).
        seed: seed for shard and sample order (order = f(seed, epoch), so resume can replay it).
        pack_length: tokens per pack (paper: 10000); ``None`` pads each batch to its longest sequence.
        pack_window: samples the best-fit packer considers at once; more fits tighter, costs memory.
        min_fill: packs below this fill wait for the next window to complete them.
        overlong: a sample longer than ``pack_length`` is ``truncate``d or ``drop``ped (counted either way).
        mix_shards: shards each worker reads interleaved, so a batch mixes sources.
        strict: fail on the first bad sample instead of skipping it with a warning.
        dither: Kaldi dither of the training front end (``fbank_lfr``, ``sense_voice``); 0 keeps features
            deterministic (exact resume). The release's FunASR front end trains with 1.0. Validation,
            test and generation never dither.
        tokens_per_step: target tokens per optimizer step (paper: 1.28M align/SFT, 2.56M pretraining);
            sets ``trainer.accumulate_grad_batches`` = tokens_per_step / (pack_length x batch_size x world size).
    """

    def __init__(
        self,
        train: str | list[str | Source] | None = None,
        val: str | list[str | Source] | None = None,
        tokenizer: str = "Qwen/Qwen3-8B",
        pattern: list[int] = [1, 8, 4, 8],  # noqa: B006 - jsonargparse shows list defaults in --help
        num_codebooks: int = 8,
        codebook_size: int = 1024,
        audio_front_end: Literal["fbank_lfr", "whisper", "sense_voice"] = "fbank_lfr",
        num_mel_bins: int = 80,
        cmvn: str | None = None,
        token_layout: Literal["qinyu", "official"] = "qinyu",
        batch_size: int = 4,
        num_workers: int = 0,
        shuffle_buffer: int = 256,
        supervise: Literal["last", "all"] = "last",
        seed: int = 0,
        pack_length: int | None = None,
        pack_window: int = 512,
        min_fill: float = 0.99,
        overlong: Literal["truncate", "drop"] = "truncate",
        mix_shards: int = 4,
        strict: bool = False,
        tokens_per_step: int | None = None,
        dither: float = 0.0,
    ):
        super().__init__()
        if cmvn and audio_front_end != "sense_voice":
            raise ValueError("data.cmvn is read only by data.audio_front_end: sense_voice")
        if dither and audio_front_end == "whisper":
            raise ValueError("data.dither applies to the fbank front ends (fbank_lfr, sense_voice), not whisper")
        if tokens_per_step and not pack_length:
            raise ValueError("data.tokens_per_step needs data.pack_length (tokens per micro-batch row)")
        tokenizer = absolute_if_local(tokenizer)  # saved in the checkpoint: must resolve from any directory
        self.save_hyperparameters()
        self._layout: TokenLayout | None = None
        self._train_layout: TokenLayout | None = None
        self._catalogs: dict[str, Catalog] = {}
        self.epoch = 0
        self._consumed: dict[int, dict] = {}  # slot -> position after the last batch trained on
        self._next_worker = 0
        self._resume_state: dict | None = None
        self._speaker_dim: int | None = None  # the model's, once known: a sample with another size is skipped

    def _make_layout(self, tokenizer, dither: float) -> TokenLayout:
        hp = self.hparams
        front_end, kw = FRONT_ENDS[hp.audio_front_end], {"num_mel_bins": hp.num_mel_bins}
        if dither:
            kw["dither"] = dither
        return TokenLayout(
            tokenizer,
            pattern=hp.pattern,
            num_codebooks=hp.num_codebooks,
            codebook_size=hp.codebook_size,
            front_end=front_end(hp.cmvn, **kw) if hp.cmvn else front_end(**kw),
            supervise=hp.supervise,
            profile=hp.token_layout,
        )

    @property
    def layout(self) -> TokenLayout:
        """The layout of validation, test and generation (never dithered)."""
        if self._layout is None:
            hp = self.hparams
            self._layout = self._make_layout(load_tokenizer(hp.tokenizer, hp.token_layout), 0.0)
        return self._layout

    @property
    def train_layout(self) -> TokenLayout:
        """The training stream's layout: ``layout`` itself, or one whose front end dithers (``dither``)."""
        if self._train_layout is None:
            dither = self.hparams.dither
            self._train_layout = self._make_layout(self.layout.tokenizer, dither) if dither else self.layout
        return self._train_layout

    @property
    def tokenizer(self):
        return self.layout.tokenizer

    def catalog(self, split: str) -> Catalog:
        """Shards and sample counts of ``train`` or ``val`` (read once; fails on missing or empty sources)."""
        if split not in self._catalogs:
            self._catalogs[split] = Catalog.build(named_sources(getattr(self.hparams, split)), self.hparams.strict)
        return self._catalogs[split]

    def prepare_data(self) -> None:
        # fail at start, with the path in the message, rather than in a worker mid-epoch
        from .index import check_index_codec

        for split in ("train", "val"):
            if getattr(self.hparams, split):
                catalog = self.catalog(split)
                for src in catalog.sources:  # a built set's index.json names its codec: check it once, here
                    if os.path.isdir(src.path):
                        check_index_codec(src.path, self.hparams.num_codebooks, self.hparams.codebook_size)

    def _check_speakers(self) -> None:
        """A built set's ``speaker_dims`` against the model's ``speaker_dim``, before the first batch."""
        from .index import check_index_speakers

        module = self.trainer.lightning_module if self.trainer is not None else None
        speaker_dim = getattr(getattr(module, "net_config", None), "speaker_dim", None)
        if speaker_dim is None:
            return
        self._speaker_dim = int(speaker_dim)
        for split in ("train", "val"):
            if getattr(self.hparams, split):
                for src in self.catalog(split).sources:
                    if os.path.isdir(src.path):
                        check_index_speakers(src.path, speaker_dim)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self._check_speakers()
        if stage == "fit" and hp.tokens_per_step and self.trainer is not None:
            world = self.trainer.world_size
            per_micro = hp.pack_length * hp.batch_size * world
            accum = max(1, round(hp.tokens_per_step / per_micro))
            self.trainer.accumulate_grad_batches = accum
            print(
                f"[qinyu-lit] tokens per optimizer step: {hp.pack_length:,} per pack x {hp.batch_size} packs x "
                f"{world} ranks x {accum} accumulation = {per_micro * accum:,} (target {hp.tokens_per_step:,})"
            )

    def _stream(self, split: str, shuffle: bool) -> ShardStream:
        hp = self.hparams
        return ShardStream(
            self.catalog(split),
            self.train_layout if split == "train" else self.layout,
            batch_size=hp.batch_size,
            shuffle_buffer=hp.shuffle_buffer if shuffle else 0,
            seed=hp.seed,
            pack_length=hp.pack_length,
            window=hp.pack_window,
            min_fill=hp.min_fill,
            overlong=hp.overlong,
            mix_shards=hp.mix_shards,
            strict=hp.strict,
            speaker_dim=self._speaker_dim,
        )

    def train_dataloader(self) -> StreamLoader:
        if not self.hparams.train:
            raise ValueError("data.train is not set: give a shard directory, glob or pattern")
        return StreamLoader(self._stream("train", shuffle=True), self.hparams.num_workers, owner=self)

    def val_dataloader(self):
        if not self.hparams.val:
            return []
        # validation batches may differ per rank (no per-step collective there): nothing is dropped
        return StreamLoader(self._stream("val", shuffle=False), self.hparams.num_workers, equalize=False)

    def test_dataloader(self):
        return self.val_dataloader()

    # ------------------------------------------------------------------ stream position

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        state = batch.pop("stream_state", None) if isinstance(batch, dict) else None
        if state is not None and self.trainer is not None and self.trainer.training:
            self._consumed[state["slot"]] = state  # state_dict keeps only the current epoch's
            nw = max(self.hparams.num_workers, 1)
            self._next_worker = (state["slot"] % nw + 1) % nw
        return batch

    def state_dict(self) -> dict:
        """Position of the training stream: epoch and, per slot, the last batch trained on.
        Plain ints, strings and lists, so the checkpoint loads with ``weights_only=True``."""
        rank, world = rank_and_world()
        # an epoch that ended (the loader was exhausted) but whose positions are still recorded
        slots = {str(k): v for k, v in self._consumed.items() if v["epoch"] == self.epoch}
        mine = {"slots": slots, "next_worker": {str(rank): self._next_worker}}
        if world > 1:  # the checkpoint is written by rank 0: gather every rank's positions
            everyone = all_gather_objects(mine)
            mine = {
                "slots": {k: v for d in everyone for k, v in d["slots"].items()},
                "next_worker": {k: v for d in everyone for k, v in d["next_worker"].items()},
            }
        return {
            "epoch": self.epoch,
            "world_size": world,
            "num_workers": max(self.hparams.num_workers, 1),
            **mine,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch = int(state_dict.get("epoch", 0))
        self._resume_state = dict(state_dict)
        self._consumed = {int(k): v for k, v in state_dict.get("slots", {}).items()}
