"""Many personas on one base model: LoRA adapters loaded side by side and switched, never merged.

    bank = PersonaBank(QinYuModel.from_pretrained("exports/sft"))
    bank.add("mira", "adapters/mira")          # qinyu-lit export CKPT DIR --adapter_only true
    bank.reply("hello", persona="mira")
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data.files import CARD_NAME
from .inference import reply_to
from .stages.checkpoints import PARTS_NAME


class PersonaBank:
    """One base model, many personas: LoRA adapters loaded side by side and switched, never merged.

    ``bank = PersonaBank(QinYuModel.from_pretrained("exports/sft"))``; ``bank.add("mira", "adapters/mira")``;
    ``bank.reply("hello", persona="mira")``. The base weights are never changed; ``use(None)`` is the base.
    """

    def __init__(self, base):
        self.model = base.eval()
        self.cards: dict[str, dict] = {}
        self._parts: dict[str, dict] = {}
        self._base_parts: dict = {}
        self.active: str | None = None

    def add(self, name: str, adapter_dir: str | Path) -> dict:
        from peft import PeftModel
        from safetensors.torch import load_file

        adapter_dir = Path(adapter_dir)
        if isinstance(self.model.backbone, PeftModel):
            self.model.backbone.load_adapter(str(adapter_dir), adapter_name=name)
        else:
            self.model.backbone = PeftModel.from_pretrained(
                self.model.backbone, str(adapter_dir), adapter_name=name
            )
        parts = load_file(adapter_dir / PARTS_NAME) if (adapter_dir / PARTS_NAME).exists() else {}
        state = self.model.state_dict()
        for key in parts:  # keep the base's copy of every part some persona replaces
            self._base_parts.setdefault(key, state[key].clone())
        self._parts[name] = parts
        card_path = adapter_dir / CARD_NAME
        self.cards[name] = json.loads(card_path.read_text()) if card_path.exists() else {}
        self.use(self.active)
        return self.cards[name]

    def use(self, name: str | None) -> None:
        """Make ``name`` the active persona (``None``: the base model)."""
        backbone = self.model.backbone
        if name is not None and name not in self.cards:
            raise KeyError(f"no persona {name!r}; added: {sorted(self.cards)}")
        if hasattr(backbone, "base_model"):
            if name is None:
                backbone.base_model.disable_adapter_layers()
            else:
                backbone.base_model.enable_adapter_layers()
                backbone.set_adapter(name)
        parts = dict(self._base_parts)
        parts.update(self._parts.get(name, {}) if name else {})
        if parts:
            self.model.load_state_dict(parts, strict=False)
        self.model.eval()
        self.active = name

    def reply(self, text: str | None = None, persona: str | None = None, **kwargs):
        """Generate as ``persona``: its system prompt and voice unless ``system`` / ``speaker`` are given."""
        self.use(persona)
        card = self.cards.get(persona, {}) if persona else {}
        kwargs.setdefault("system", card.get("system_prompt", ""))
        if card.get("voice") is not None:
            kwargs.setdefault("speaker", np.asarray(card["voice"], dtype=np.float32))
        return reply_to(self.model, text=text, **kwargs)

