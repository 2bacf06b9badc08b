"""Text tokenizer plus the special tokens QinYu adds to it.

Any ``transformers`` tokenizer works (Qwen3's for real runs). The demo corpus ships its
own small byte-level BPE tokenizer, trained locally with the ``tokenizers`` library and
saved like any Hugging Face tokenizer, so the tiny recipes need no download.

Two profiles name the special tokens:

* ``"qinyu"`` (models trained here): ``QINYU_TOKENS``, added by ``load_tokenizer`` when missing.
* ``"official"`` (the released VITA-QinYu): the release's own tokens, which must already be in
  the tokenizer (``<|begin_of_audio|>`` ... ``<|end_of_conv|>``, the 8 x (K+8) ``<|audio_i_j|>``
  ids, ``<|speaker|>``, ``<|user_speaker|>``). Ids are always looked up, never hard-coded;
  ``official_demo_tokenizer`` writes a tiny tokenizer with the release's add order for tests.
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


# The release's tokens, in the order its tokenizer adds them (official_spec: update_tokenizer,
# then update_tokenizer_for_sensevoice_xyspktokenizer); the order fixes the ids.
OFFICIAL_MULTIMODAL = (
    *(f"<|{edge}_of_{kind}|>" for kind in ("image", "video") for edge in ("begin", "end", "context")),
    "<|begin_of_patch|>", "<|end_of_patch|>", "<|context_of_patch|>",
    "<|begin_of_quad|>", "<|end_of_quad|>", "<|begin_of_ref|>", "<|end_of_ref|>",
    "<|begin_of_box|>", "<|end_of_box|>", "<|image|>", "<|video|>",
    "<|begin_of_audio|>", "<|end_of_audio|>", "<|context_of_audio|>", "<|audio|>", "<|end_of_conv|>",
)  # fmt: skip
OFFICIAL_TRAILING = (
    "<|audio_token_start|>", "<|audio_token_end|>", "<function=", "</function>", "<|speaker|>", "<|user_speaker|>",
)  # fmt: skip
OFFICIAL_TOKENS = (
    "<|begin_of_audio|>",  # opens the user-speech span (and a speech-only assistant turn)
    "<|end_of_audio|>",
    "<|context_of_audio|>",  # one per encoder output frame (N + 4 for SenseVoice)
    "<|end_of_conv|>",  # ends the reply text, before its last speech
    "<|speaker|>",  # agent voice, once, in the system prompt
    "<|user_speaker|>",  # user voice, before each user speech span
    "<|audio_0_0|>",  # first audio id: codebook i, value v -> id(<|audio_0_0|>) + i * (K + 8) + v
)
PROFILES = ("qinyu", "official")


def official_audio_token(codebook: int, value: int, codebook_size: int) -> str:
    """Name of codebook ``codebook``'s value ``value`` (``>= codebook_size``: pad ``value - K``)."""
    if value < codebook_size:
        return f"<|audio_{codebook}_{value}|>"
    return f"<|audio_{codebook}_{value - codebook_size}_pad|>"


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the layout's special tokens.

    For the ``official`` profile ``audio_start/audio_end/audio`` are ``<|begin_of_audio|>``,
    ``<|end_of_audio|>`` and ``<|context_of_audio|>``; assistant audio positions hold
    ``audio_base + c0`` (``frame`` is set to ``audio_base``).
    """

    im_start: int
    im_end: int
    audio_start: int
    audio_end: int
    audio: int
    speaker: int
    user_speaker: int
    frame: int
    pad: int
    end_of_conv: int = -1  # official only
    audio_base: int = -1  # official only: id of <|audio_0_0|>
    profile: str = "qinyu"


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(
            f"token layout profile must be one of {PROFILES}, got {profile!r} (set token_layout)"
        )


def _looks_local(name: str) -> bool:
    """A path, not a hub id ("Qwen/Qwen3-8B"): absolute, relative (./, ../, ~), deeper than one slash, or
    under a folder that exists here ("data/tok" next to data/)."""
    first = name.split("/", 1)[0]
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or ("/" in name and Path(first).is_dir())


def load_tokenizer(name_or_path: str, profile: str = "qinyu") -> PreTrainedTokenizerBase:
    """Load a tokenizer. ``qinyu``: add any missing QinYu special token at the end.
    ``official``: add nothing; every release token must be present."""
    _check_profile(profile)
    if _looks_local(str(name_or_path)) and not Path(name_or_path).is_dir():  # not a hub "Repo id" error
        from .errors import QinYuError

        raise QinYuError(f"no such tokenizer folder: {name_or_path}")
    # never the custom code a folder may point at (the release's config.json has auto_map): no "run the
    # custom code? [y/N]" prompt, and the tokenizer is transformers' own class
    tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    vocab = tok.get_vocab()
    if profile == "official":
        missing = [t for t in CHAT_TOKENS + OFFICIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"{name_or_path}: tokenizer lacks the official VITA-QinYu tokens {missing}; use the release's "
                "tokenizer (or the converted export's) or set token_layout: qinyu"
            )
        if tok.pad_token is None:
            tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else "<|im_end|>"
        return tok
    missing = [t for t in CHAT_TOKENS + QINYU_TOKENS if t not in vocab]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = "<|im_end|>"
    return tok


# SpecialIds field -> token, where the two layouts name them differently
_PROFILE_TOKENS = {
    "qinyu": dict(audio_start="<|audio_start|>", audio_end="<|audio_end|>", audio="<|audio|>", frame="<|frame|>"),
    "official": dict(  # the release: <|context_of_audio|> placeholders; a frame's input id is its codebook-0 token
        audio_start="<|begin_of_audio|>", audio_end="<|end_of_audio|>", audio="<|context_of_audio|>",
        frame="<|audio_0_0|>", end_of_conv="<|end_of_conv|>", audio_base="<|audio_0_0|>",
    ),
}  # fmt: skip


def special_ids(tok: PreTrainedTokenizerBase, profile: str = "qinyu") -> SpecialIds:
    _check_profile(profile)
    tokens = dict(im_start="<|im_start|>", im_end="<|im_end|>", speaker="<|speaker|>", user_speaker="<|user_speaker|>")
    tokens.update(_PROFILE_TOKENS[profile])
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in tokens.items()}
    return SpecialIds(pad=tok.pad_token_id, profile=profile, **ids)


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


_DEMO_TEXT = (
    "Your Voice Embedding: ",
    "system\nuser\nassistant\n",
    "Hello! How are you today? I am fine, thank you. Tell me a short story about the sea.",
    "Convert the speech to text. Convert the text to speech. Respond in text-audio interleaved manner.",
)


def official_demo_tokenizer(
    out_dir: str | Path,
    codebook_size: int,
    num_codebooks: int = 8,
    texts: list[str] | None = None,
    vocab_size: int = 384,
) -> Path:
    """A tiny tokenizer with the released VITA-QinYu's added tokens, in its add order.

    Base: a byte-level BPE trained on ``texts`` with ``<|endoftext|> <|im_start|> <|im_end|>``
    first (Qwen's order). Then, as the release does: the 22 multimodal specials, the
    ``num_codebooks x (codebook_size + num_codebooks)`` non-special ``<|audio_i_j|>`` /
    ``<|audio_i_p_pad|>`` tokens codebook-major, and the 6 trailing specials. Saved as a
    Hugging Face tokenizer in ``out_dir``, which is returned.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts or _DEMO_TEXT), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens(list(OFFICIAL_MULTIMODAL), special_tokens=True)
    rows = codebook_size + num_codebooks  # K codes + one pad per delay position
    tok.add_tokens(
        [official_audio_token(i, j, codebook_size) for i in range(num_codebooks) for j in range(rows)],
        special_tokens=False,
    )
    tok.add_tokens(list(OFFICIAL_TRAILING), special_tokens=True)
    out_dir = Path(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
