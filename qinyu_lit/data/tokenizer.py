"""Text tokenizer plus the special tokens QinYu adds to it.

Any ``transformers`` tokenizer works (Qwen3's for real runs). The demo corpus ships its
own small byte-level BPE tokenizer, trained locally with the ``tokenizers`` library and
saved like any Hugging Face tokenizer, so the tiny recipes need no download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
QINYU_TOKENS = (
    "<|audio_start|>",  # opens the user-speech span
    "<|audio_end|>",  # closes it
    "<|audio|>",  # one per encoder frame; replaced by the adapter output
    "<|speaker|>",  # agent voice placeholder; replaced by the projected agent embedding
    "<|user_speaker|>",  # user voice placeholder; replaced by the projected user embedding
    "<|frame|>",  # input id at assistant audio positions (the codes carry the content)
)


@dataclass(frozen=True)
class SpecialIds:
    im_start: int
    im_end: int
    audio_start: int
    audio_end: int
    audio: int
    speaker: int
    user_speaker: int
    frame: int
    pad: int


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure every QinYu special token exists (added at the end if not)."""
    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    missing = [t for t in CHAT_TOKENS + QINYU_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = "<|im_end|>"
    return tok


def special_ids(tok: PreTrainedTokenizerBase) -> SpecialIds:
    ids = {t: tok.convert_tokens_to_ids(t) for t in CHAT_TOKENS + QINYU_TOKENS}
    return SpecialIds(
        im_start=ids["<|im_start|>"],
        im_end=ids["<|im_end|>"],
        audio_start=ids["<|audio_start|>"],
        audio_end=ids["<|audio_end|>"],
        audio=ids["<|audio|>"],
        speaker=ids["<|speaker|>"],
        user_speaker=ids["<|user_speaker|>"],
        frame=ids["<|frame|>"],
        pad=tok.pad_token_id,
    )


def train_demo_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE tokenizer on ``texts`` and save it as a Hugging Face tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", *CHAT_TOKENS, *QINYU_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(CHAT_TOKENS + QINYU_TOKENS),
    )
    out_dir = Path(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
