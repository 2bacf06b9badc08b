"""Training stages: one small LightningModule per stage on a shared base."""

from .align import AlignStage
from .base import QinYuStage
from .persona import PersonaStage
from .pretrain import PretrainStage
from .sft import SFTStage

__all__ = ["AlignStage", "PersonaStage", "PretrainStage", "QinYuStage", "SFTStage"]
