"""The ``qinyu-lit`` command (``qinyu-lit --help`` lists every command from ``COMMANDS``).

* ``qinyu-lit fit|validate|test|predict --config recipes/sft.yaml`` - LightningCLI: model and
  data chosen by ``class_path``, every argument overridable (``--trainer.max_steps 20``),
  ``--print_config`` shows the resolved recipe.
* ``qinyu-lit demo-data [--out_dir] DIR`` - write the deterministic demo corpus and its tokenizer.
* ``qinyu-lit generate CKPT_OR_EXPORT --text|--audio ...`` - an interleaved reply: text, codes, WAV (with a codec).
* ``qinyu-lit data build|inspect|validate`` - shards from audio manifests, and checks of them.
* ``qinyu-lit export CKPT DIR`` - a directory ``QinYuModel.from_pretrained`` loads (LoRA merged);
  ``--adapter_only true`` writes a persona's PEFT adapter instead.
* ``qinyu-lit convert-official SRC DIR`` - the released VITA-QinYu checkpoint as an exported directory.
* ``qinyu-lit demo-persona DIR`` / ``persona-data DIR OUT`` - persona shards; ``persona-reply BASE ADAPTER
  TEXT`` - a reply in character (docs/stages.md).

User errors print one ``qinyu-lit: error: ...`` line and exit 2 (``main``); ``--debug`` or
``QINYU_LIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings

from jsonargparse import CLI
from lightning.pytorch.cli import LightningCLI

from .data.datamodule import QinYuDataModule
from .data.errors import QinYuError
from .data.index import absolute_if_local
from .model.encoders import encoder_mel_bins, front_end_of
from .model.official import convert_official_cmd
from .persona_bank import persona_reply_cmd
from .prep.demo_pairs import demo_pairs_cmd
from .prep.inspect import data_main
from .prep.persona_data import demo_persona_cmd, persona_data_cmd
from .stages.base import QinYuStage
from .stages.checkpoints import export_cmd
from .stages.dpo_ref import dpo_ref_cmd
from .stages.merge import merge_cmd
from .stages.resume import explain_missing_last


class QinYuCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # sizes the data and the model must agree on are set once, on the data side
        # a local tokenizer folder is stored absolute in the checkpoint: export/generate run from anywhere
        parser.link_arguments("data.init_args.tokenizer", "model.init_args.net.tokenizer", compute_fn=absolute_if_local)
        parser.link_arguments("data.init_args.num_codebooks", "model.init_args.net.num_codebooks")
        parser.link_arguments("data.init_args.codebook_size", "model.init_args.net.codebook_size")
        # the audio front end is the encoder's: its kind and mel bins come from model.net (Whisper v3: 128 bins)
        parser.link_arguments("model.init_args.net.audio_encoder_type", "data.init_args.audio_front_end", compute_fn=front_end_of)
        parser.link_arguments(
            ("model.init_args.net.audio_encoder", "model.init_args.net.audio_encoder_type"),
            "data.init_args.num_mel_bins",
            compute_fn=encoder_mel_bins,
        )
        parser.link_arguments("data.init_args.token_layout", "model.init_args.net.token_layout")

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]  # what fit() is called with: --ckpt_path last may resolve elsewhere
        config["ckpt_path"] = explain_missing_last(self.trainer, config.get("ckpt_path"))


def lightning_main(args: list[str] | None = None) -> None:
    with warnings.catch_warnings():
        # The frozen audio encoder stays in eval mode on purpose (no dropout, fixed norms; enforced in
        # QinYuModel.encode_audio), so Lightning's "module(s) in eval mode at the start of training"
        # warning is expected for every stage with an encoder: silenced here, and only that message.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
        QinYuCLI(
            QinYuStage,
            QinYuDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )


def demo_data(
    out_dir: str = "data/demo",
    samples_per_task: int = 384,
    val_samples_per_task: int = 4,
    speaker_dim: int = 16,
    codebook_size: int = 64,
    seed: int = 0,
) -> None:
    """Write the deterministic demo corpus (every task type) and its tokenizer.

    Args:
        out_dir: where ``train/``, ``val/`` and ``tokenizer/`` go.
        samples_per_task: training samples for each of the 7 task types.
        val_samples_per_task: validation samples for each task type.
        speaker_dim: speaker embedding size of the demo voices.
        codebook_size: codes per codebook of the demo code rule (8 codebooks).
        seed: corpus seed; the same seed gives byte-identical shards.
    """
    from .prep.demo import make_demo_corpus

    path = make_demo_corpus(
        out_dir,
        samples_per_task=samples_per_task,
        val_samples_per_task=val_samples_per_task,
        speaker_dim=speaker_dim,
        codebook_size=codebook_size,
        seed=seed,
    )
    print(f"demo corpus written to {path} (train/, val/, tokenizer/)")


def generate_cmd(
    ckpt: str,
    text: str | None = None,
    audio: str | None = None,
    shard: str | None = None,
    key: str | None = None,
    system: str = "",
    speaker: str | None = None,
    user_speaker: str | None = None,
    out: str = "reply",
    codec: str | None = None,
    text_temperature: float = 0.0,
    text_top_k: int = 0,
    text_top_p: float = 1.0,
    audio_temperature: float = 0.0,
    audio_top_k: int = 0,
    audio_top_p: float = 1.0,
    seed: int = 0,
    max_new_positions: int = 512,
    device: str = "cpu",
) -> None:
    """Generate one interleaved reply (text + 8-codebook speech) and write it out.

    Writes OUT.npy (the speech codes [codebooks, frames], delay undone) and OUT.txt (the text);
    with --codec also OUT.wav decoded at the codec's sample rate. Greedy unless a temperature is set.

    Args:
        ckpt: a Lightning checkpoint from ``qinyu-lit fit`` or a directory from ``qinyu-lit export``.
        text: the user's message as text (with ``audio``: text that goes after the speech, e.g. an instruction).
        audio: the user's message as speech: a WAV/FLAC file (any rate; resampled for the encoder).
        shard: instead of text/audio, take the conversation from this shard (its last assistant turn is generated).
        key: the sample key inside ``shard``.
        system: system / persona prompt (e.g. "You are Captain Mira, ..."); a persona checkpoint's card gives the default.
        speaker: agent voice embedding, a ``.npy`` of [D] or [utterances, D] (averaged), D = the model's speaker_dim;
            a persona checkpoint's card gives the default.
        user_speaker: the user's voice embedding (``.npy``), for models trained with it.
        out: output path stem: OUT.npy, OUT.txt and (with ``codec``) OUT.wav.
        codec: Mimi codec to decode the codes to a WAV: a name or directory (``kyutai/mimi``); its codebooks
            must match the model's. ``None``: codes only (e.g. the demo's rule codes have no decoder).
        text_temperature: text-head temperature; 0 = greedy.
        text_top_k: text head: sample among the k most likely ids (0 = all).
        text_top_p: text head: nucleus sampling mass (1.0 = off).
        audio_temperature: codebook heads' temperature; 0 = greedy.
        audio_top_k: codebook heads: sample among the k most likely codes (0 = all).
        audio_top_p: codebook heads: nucleus sampling mass (1.0 = off).
        seed: sampling seed (the same seed and inputs give the same reply).
        max_new_positions: stop after this many generated positions (text ids + audio frames).
        device: ``cpu`` or ``cuda``.
    """
    from pathlib import Path

    import numpy as np

    from .inference import check_codec, load_codec, load_with_persona, reply_to, valid_codes, write_wav
    from .model.sampling import Sampler

    _check_generate_inputs(ckpt, audio, speaker, user_speaker)  # before the (slow) model load
    model, card = load_with_persona(ckpt, device=device)
    if card and shard is None:  # a persona checkpoint answers as its character unless told otherwise
        system = system or card.get("system_prompt", "")
        speaker = speaker if speaker is not None else card.get("voice")
        print(f"persona card: {'system prompt, ' if system else ''}{'voice' if speaker is not None else ''}")
    codec_model = load_codec(codec, device=device) if codec else None
    if codec_model is not None:
        check_codec(model, codec_model)  # before generating: fail fast
    result = reply_to(
        model,
        text=text,
        audio=audio,
        shard=shard,
        key=key,
        system=system,
        speaker=speaker,
        user_speaker=user_speaker,
        max_new_positions=max_new_positions,
        text_sampler=Sampler(text_temperature, text_top_k, text_top_p, seed),
        audio_sampler=Sampler(audio_temperature, audio_top_k, audio_top_p, seed + 1),
    )
    stem = str(Path(out).with_suffix("")) if Path(out).suffix in (".npy", ".wav", ".txt") else out
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    print(f"text: {result.text}")
    print(f"speech: {result.num_frames} frames x {result.codes.shape[0]} codebooks, "
          f"{result.frames_per_text_token:.2f} frames per text token; finished={result.finished}")
    np.save(f"{stem}.npy", result.codes.numpy(), allow_pickle=False)
    Path(f"{stem}.txt").write_text(result.text + "\n")
    print(f"wrote {stem}.npy and {stem}.txt")
    if codec_model is not None:
        _, replaced = valid_codes(result.codes, codec_model.codebook_size)
        if replaced:
            print(f"note: {replaced} pad / out-of-range codes replaced by 0 before decoding")
        samples, rate = write_wav(result.codes, codec_model, f"{stem}.wav")
        print(f"wrote {stem}.wav ({samples / rate:.2f} s at {rate} Hz)")


def _check_generate_inputs(ckpt: str, audio: str | None, speaker: str | None, user_speaker: str | None) -> None:
    import soundfile

    if not os.path.exists(ckpt):
        raise QinYuError(f"{ckpt}: no such checkpoint (.ckpt from qinyu-lit fit) or export directory")
    if audio is not None:
        if not os.path.isfile(audio):
            raise QinYuError(f"--audio {audio}: no such file")
        try:
            soundfile.info(audio)
        except soundfile.SoundFileError as e:
            raise QinYuError(f"--audio {audio}: not a readable audio file (WAV/FLAC/OGG): {_first_line(str(e))}") from None
    for flag, path in (("--speaker", speaker), ("--user_speaker", user_speaker)):
        if path is not None and not os.path.isfile(path):
            raise QinYuError(f"{flag} {path}: no such .npy file")


# every command of ``qinyu-lit``: name -> (what runs it, its line in ``qinyu-lit --help``).
# LightningCLI's subcommands run through ``lightning_main``; the others through jsonargparse's ``CLI``.
COMMANDS: dict[str, tuple[object, str]] = {
    "fit": (None, "train a stage from a recipe: qinyu-lit fit --config recipes/tiny/sft.yaml"),
    "validate": (None, "validation loss and metrics of a checkpoint (--config RECIPE --ckpt_path CKPT)"),
    "test": (None, "test metrics (per task, WER/CER, speech pace) of a checkpoint"),
    "predict": (None, "LightningCLI predict over the recipe's data"),
    "demo-data": (demo_data, "write the demo corpus and its tokenizer (qinyu-lit demo-data data/demo)"),
    "data": (data_main, "build shards from an audio manifest, inspect or validate them (data build|inspect|validate)"),
    "generate": (generate_cmd, "an interleaved reply (text, codes, WAV) from a checkpoint or export"),
    "export": (export_cmd, "a checkpoint -> a from_pretrained directory (LoRA merged) or a persona adapter"),
    "demo-persona": (demo_persona_cmd, "write a demo persona folder (profile, voice, dialogues)"),
    "persona-data": (persona_data_cmd, "persona folder -> persona shards"),
    "persona-reply": (persona_reply_cmd, "a reply in character: base model + persona adapter"),
    "convert-official": (convert_official_cmd, "the released VITA-QinYu checkpoint -> a qinyu-lit export directory"),
    "demo-pairs": (demo_pairs_cmd, "write the demo's DPO preference pairs (train.jsonl, val.jsonl)"),
    "dpo-ref": (dpo_ref_cmd, "add a reference model's reply log-probabilities to DPO pairs (no reference in memory)"),
    "merge": (merge_cmd, "Core-Cocktail: alpha * tuned + (1 - alpha) * base -> an export directory"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# commands whose first option may also be given as a bare first argument
OPTIONAL_POSITIONAL = {"demo-data": "--out_dir"}


def _entry(name: str) -> tuple[object, str]:
    """(target, help line) of a command; a bare function (or dict) entry gets its docstring's first line."""
    entry = COMMANDS[name]
    if isinstance(entry, tuple):
        return entry
    doc = (entry.__doc__ or "").strip() if callable(entry) else ""
    return entry, doc.splitlines()[0] if doc else ""


def command_args(name: str, rest: list[str]) -> list[str]:
    """The arguments jsonargparse gets: ``demo-data data/demo`` = ``demo-data --out_dir data/demo``."""
    flag = OPTIONAL_POSITIONAL.get(name)
    return [flag, *rest] if flag and rest and not rest[0].startswith("-") else rest


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name:<{width}}  {_entry(name)[1]}" for name in COMMANDS]
    return (
        "usage: qinyu-lit COMMAND [options]   (qinyu-lit COMMAND --help shows its options)\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n--debug (or QINYU_LIT_DEBUG=1) shows the full traceback of an error."
    )


def _run(args: list[str], from_terminal: bool) -> None:
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    name = args[0]
    if name in COMMANDS and name not in LIGHTNING_COMMANDS:
        CLI(_entry(name)[0], args=command_args(name, args[1:]), prog=f"qinyu-lit {name}")
        return
    if name.startswith("-") or name in LIGHTNING_COMMANDS:  # LightningCLI also takes --config before the subcommand
        # from a terminal LightningCLI reads sys.argv itself (and warns if it is also given args)
        lightning_main(None if from_terminal else args)
        return
    near = difflib.get_close_matches(name, list(COMMANDS), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise QinYuError(f"unknown command {name!r}{hint} (qinyu-lit --help lists them all)")


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _raised_here(e: BaseException) -> bool:
    """The innermost frame that raised ``e`` is this package's code: its message was written for users."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE)


def user_error_message(e: BaseException, args: list[str]) -> str | None:
    """The one line to print for a user error, or ``None`` for a bug (shown with its traceback)."""
    import pickle

    import soundfile

    text = str(e).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: the message holds the traceback
        files = [ln for ln in text.splitlines() if ln.strip().startswith('File "')]
        if not files or _PACKAGE not in files[-1]:
            return None
        text = text.splitlines()[-1].split(": ", 1)[-1]
    elif isinstance(e, pickle.UnpicklingError) or "PytorchStreamReader" in text:
        return f"not a qinyu-lit checkpoint (.ckpt from qinyu-lit fit) or export directory ({_first_line(text)})"
    elif not isinstance(e, (QinYuError, OSError, soundfile.SoundFileError)):
        if not (isinstance(e, (ValueError, TypeError, KeyError, RuntimeError)) and _raised_here(e)):
            return None
    line = _first_line(text) or type(e).__name__
    if isinstance(e, FileNotFoundError) and "shard" in line and args and args[0] in LIGHTNING_COMMANDS:
        line += "; `qinyu-lit demo-data data/demo` writes the demo corpus the tiny recipes read"
    elif ("huggingface.co" in text or "couldn't connect" in text) and "offline" not in line:
        fast = "" if os.environ.get("HF_HUB_OFFLINE") else ", or set HF_HUB_OFFLINE=1 to fail at once"
        line += f" (offline? pass local folders{fast}; docs/data.md, Offline)"
    return line


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def main(argv: list[str] | None = None) -> None:
    """Console entry; ``argv`` is for calling it from Python (tests, notebooks).

    A user error (``QinYuError``, a missing or unreadable file, a message of this package) is
    printed as one ``qinyu-lit: error: ...`` line with exit status 2; ``--debug`` or
    ``QINYU_LIT_DEBUG=1`` re-raises it with its traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("QINYU_LIT_DEBUG", "") not in ("", "0")
    if "--debug" in args:
        args.remove("--debug")
        if argv is None:
            sys.argv.remove("--debug")  # LightningCLI reads sys.argv itself
    try:
        _run(args, from_terminal=argv is None)
    except Exception as e:
        message = user_error_message(e, args)
        if debug or message is None:
            raise
        print(f"qinyu-lit: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
