"""The LightningDataModule: shard sets in, collated batches out."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from .features import FRONT_ENDS
from .layout import TokenLayout
from .stream import ShardStream, expand_shards
from .tokenizer import load_tokenizer


class QinYuDataModule(L.LightningDataModule):
    """Streams WebDataset shards (schema ``qinyu/v1``) and lays them out for QinYu.

    Args:
        train: training shards: a directory of ``.tar`` files, a glob or a brace pattern
            (``data/train/shard-{000000..000099}.tar``); a list concatenates several.
        val: validation shards, same forms; ``None`` for no validation.
        tokenizer: Hugging Face tokenizer name or directory (QinYu special tokens are added).
        pattern: interleave blocks ``[n_text, m_audio, ...]``; paper default ``1 8 4 8``.
        num_codebooks: codebooks per audio frame (must match the shards and the model).
        codebook_size: codes per codebook (must match the shards and the model).
        audio_front_end: ``fbank_lfr`` (SenseVoice / FunAsrNano encoder) or ``whisper``.
        batch_size: sequences per micro-batch.
        num_workers: DataLoader worker processes; shards are split across them.
        shuffle_buffer: samples held for shuffling (0 keeps shard order).
        supervise: ``last`` assistant turn only (paper) or ``all`` assistant turns.
        seed: seed for shard and sample order.
    """

    def __init__(
        self,
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        tokenizer: str = "Qwen/Qwen3-8B",
        pattern: list[int] = [1, 8, 4, 8],  # noqa: B006 - jsonargparse shows list defaults in --help
        num_codebooks: int = 8,
        codebook_size: int = 1024,
        audio_front_end: str = "fbank_lfr",
        batch_size: int = 4,
        num_workers: int = 0,
        shuffle_buffer: int = 256,
        supervise: str = "last",
        seed: int = 0,
    ):
        super().__init__()
        if audio_front_end not in FRONT_ENDS:
            raise ValueError(f"data.audio_front_end must be one of {sorted(FRONT_ENDS)}, got {audio_front_end!r}")
        self.save_hyperparameters()
        self._layout: TokenLayout | None = None

    @property
    def layout(self) -> TokenLayout:
        if self._layout is None:
            hp = self.hparams
            self._layout = TokenLayout(
                load_tokenizer(hp.tokenizer),
                pattern=hp.pattern,
                num_codebooks=hp.num_codebooks,
                codebook_size=hp.codebook_size,
                front_end=FRONT_ENDS[hp.audio_front_end](),
                supervise=hp.supervise,
            )
        return self._layout

    @property
    def tokenizer(self):
        return self.layout.tokenizer

    def _shards(self, spec) -> list[str]:
        specs = [spec] if isinstance(spec, str) else list(spec)
        return [p for s in specs for p in expand_shards(s)]

    def prepare_data(self) -> None:
        # fail at start, with the path in the message, rather than in a worker mid-epoch
        for spec in (self.hparams.train, self.hparams.val):
            if spec:
                self._shards(spec)

    def _loader(self, spec, shuffle: bool) -> DataLoader:
        hp = self.hparams
        stream = ShardStream(
            self._shards(spec),
            self.layout,
            batch_size=hp.batch_size,
            shuffle_buffer=hp.shuffle_buffer if shuffle else 0,
            seed=hp.seed,
        )
        if self.trainer is not None:
            stream.set_epoch(self.trainer.current_epoch)
        return DataLoader(
            stream, batch_size=None, num_workers=hp.num_workers, persistent_workers=False, pin_memory=False
        )

    def train_dataloader(self) -> DataLoader:
        if not self.hparams.train:
            raise ValueError("data.train is not set: give a shard directory, glob or pattern")
        return self._loader(self.hparams.train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.hparams.val, shuffle=False) if self.hparams.val else []

    def test_dataloader(self):
        return self.val_dataloader()
