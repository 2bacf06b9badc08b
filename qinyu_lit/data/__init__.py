"""Data: shard schema, writer, demo corpus, token layout, streaming and batching."""

from .datamodule import QinYuDataModule
from .delay import delay, undelay
from .layout import TokenLayout, TokenSequence
from .schema import SCHEMA_VERSION, CodecInfo, Sample, SampleError, Turn, decode_sample, encode_sample

__all__ = [
    "SCHEMA_VERSION",
    "CodecInfo",
    "QinYuDataModule",
    "Sample",
    "SampleError",
    "TokenLayout",
    "TokenSequence",
    "Turn",
    "decode_sample",
    "delay",
    "encode_sample",
    "undelay",
]
