"""The QinYu model: backbone + frozen audio encoder + adapter + speaker projector + codebook heads."""

from .generate import Generated, generate
from .qinyu import LossOutput, QinYuConfig, QinYuModel

__all__ = ["Generated", "LossOutput", "QinYuConfig", "QinYuModel", "generate"]
