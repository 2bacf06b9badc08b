"""Training stages: one small LightningModule per stage on a shared base."""

from .base import QinYuStage
from .sft import SFTStage

__all__ = ["QinYuStage", "SFTStage"]
