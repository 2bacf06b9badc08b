"""Data at training time: shard schema, token layout, delay, streaming, packing, batching.

Preparing data (building shards, codecs, speakers, the demo corpus) is ``qinyu_lit.prep``; the
LightningDataModule is ``qinyu_lit.data.datamodule.QinYuDataModule`` (not imported here, so the model
side can use the data contract without Lightning)."""

from .delay import delay, undelay
from .layout import TokenLayout, TokenSequence
from .schema import SCHEMA_VERSION, CodecInfo, Sample, SampleError, Turn, decode_sample, encode_sample

__all__ = [
    "SCHEMA_VERSION",
    "CodecInfo",
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
