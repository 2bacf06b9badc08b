"""The ``qinyu-lit`` command (``qinyu-lit --help`` lists every command from ``COMMANDS``).

* ``qinyu-lit fit|validate|test|predict --config recipes/sft.yaml`` - LightningCLI (``cli/lightning_cli.py``):
  model and data chosen by ``class_path``, every argument overridable (``--trainer.max_steps 20``),
  ``--print_config`` shows the resolved recipe.
* ``qinyu-lit demo-data [--out_dir] DIR`` - write the deterministic demo corpus and its tokenizer.
* ``qinyu-lit generate CKPT_OR_EXPORT --text|--audio ...`` - an interleaved reply: text, codes, WAV (``cli/generate.py``).
* ``qinyu-lit data build|inspect|validate`` - shards from audio manifests, and checks of them.
* ``qinyu-lit export CKPT DIR`` - a directory ``QinYuModel.from_pretrained`` loads (LoRA merged);
  ``--adapter_only true`` writes a persona's PEFT adapter instead.
* ``qinyu-lit convert-official SRC DIR`` - the released VITA-QinYu checkpoint as an exported directory.
* ``qinyu-lit demo-persona DIR`` / ``persona-data DIR OUT`` - persona shards; ``persona-reply BASE ADAPTER
  TEXT`` (or ``--audio``) - a reply in character, in its voice (docs/stages.md).

A command is one row of ``COMMANDS``: its name, ``"module:function"`` (imported only when it runs, so
``--help`` stays fast) and its help line. User errors print one ``qinyu-lit: error: ...`` line and exit 2
(``main``); ``--debug`` or ``QINYU_LIT_DEBUG=1`` shows the traceback (and LightningCLI's full usage).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

# Lightning's log handler binds the sys.stderr of the moment it is first imported: import it here, before any
# command runs, not inside one (a notebook's or a test's captured stderr would go stale and break logging)
import lightning.pytorch  # noqa: F401, I001

from ..data.errors import QinYuError
from .errors import LIGHTNING_COMMANDS, user_error_message

# every command of ``qinyu-lit``: name -> (what runs it, relative to qinyu_lit; its line in ``qinyu-lit --help``).
# LightningCLI's subcommands (target None) run through ``cli.lightning_cli``; the others through jsonargparse's ``CLI``.
COMMANDS: dict[str, tuple[str | None, str]] = {
    "fit": (None, "train a stage from a recipe: qinyu-lit fit --config recipes/tiny/sft.yaml"),
    "validate": (None, "validation loss and metrics of a checkpoint (--config RECIPE --ckpt_path CKPT)"),
    "test": (None, "test metrics (per task, WER/CER, speech pace) of a checkpoint"),
    "predict": (None, "LightningCLI predict over the recipe's data"),
    "demo-data": ("cli.demo:demo_data", "write the demo corpus and its tokenizer (qinyu-lit demo-data data/demo)"),
    "data": ("prep.inspect:data_main", "build shards from an audio manifest, inspect or validate them (data build|inspect|validate)"),
    "generate": ("cli.generate:generate_cmd", "an interleaved reply (text, codes, WAV) from a checkpoint or export"),
    "export": ("stages.checkpoints:export_cmd", "a checkpoint -> a from_pretrained directory (LoRA merged) or a persona adapter"),
    "demo-persona": ("prep.persona_data:demo_persona_cmd", "write a demo persona folder (profile, voice, dialogues)"),
    "persona-data": ("prep.persona_data:persona_data_cmd", "persona folder -> persona shards"),
    "persona-reply": ("cli.persona:persona_reply_cmd", "a reply in character, in its voice: base model + persona adapter"),
    "convert-official": ("model.official:convert_official_cmd", "the released VITA-QinYu checkpoint -> a qinyu-lit export directory"),
    "convert-voice-design": ("model.voice_design_official:convert_voice_design_cmd", "the released VoiceDesign weights (.pt) -> a voice-design directory"),
    "voice-design-data": ("prep.voice_design_data:voice_design_data_cmd", "VoiceDesign training pairs (description, embedding) from recordings and persona folders"),
    "voice-design": ("stages.voice_design_cli:voice_design_cmd", "a speaker embedding (.npy) from a description of the voice (VoiceDesign)"),
    "merge": ("stages.merge:merge_cmd", "Core-Cocktail: alpha * tuned + (1 - alpha) * base -> an export directory"),
    "demo-pairs": ("prep.demo_pairs:demo_pairs_cmd", "write the demo's DPO preference shards (OUT_DIR/train, OUT_DIR/val)"),
    "dpo-ref": ("cli.dpo_ref:dpo_ref_cmd", "a reference model's reply log-probabilities for DPO pairs, stored (no reference in memory)"),
    "evaluate": ("evaluate:evaluate_cmd", "the paper's tables (ASR, TTS, SS, pitch, ablation, QA, speed) for checkpoints, side by side"),
}  # fmt: skip
# positional arguments that may stand for an option: (how many plain positionals come first, the option)
OPTIONAL_POSITIONAL = {"demo-data": (0, "--out_dir"), "persona-reply": (2, "--text")}


def __getattr__(name: str):
    """``qinyu_lit.cli.QinYuCLI`` and ``lightning_main`` (``cli/lightning_cli.py``), imported on first use."""
    if name in ("QinYuCLI", "lightning_main"):
        from . import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _entry(name: str) -> tuple[object, str]:
    """(the function that runs a command, its help line); ``None`` for LightningCLI's commands."""
    target, line = COMMANDS[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.{module}"), attr)
    return target, line


def command_args(name: str, rest: list[str]) -> list[str]:
    """The arguments jsonargparse gets: ``demo-data data/demo`` = ``demo-data --out_dir data/demo``,
    ``persona-reply BASE ADAPTER "hot"`` = ``persona-reply BASE ADAPTER --text hot``."""
    if name == "evaluate":  # CKPT [CKPT ...] --tasks a b --set x=.. --set y=.. -> jsonargparse's lists
        from ..evaluate import evaluate_argv

        return evaluate_argv(rest)
    if name not in OPTIONAL_POSITIONAL:
        return rest
    before, flag = OPTIONAL_POSITIONAL[name]
    if len(rest) > before and all(not a.startswith("-") for a in rest[: before + 1]):
        return [*rest[:before], flag, *rest[before:]]
    return rest


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()]
    return (
        "usage: qinyu-lit COMMAND [options]   (qinyu-lit COMMAND --help shows its options)\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n--debug (or QINYU_LIT_DEBUG=1) shows the full traceback of an error."
    )


def _run(args: list[str], from_terminal: bool, debug: bool = False) -> None:
    from jsonargparse import CLI

    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    name = args[0]
    if name in COMMANDS and name not in LIGHTNING_COMMANDS:
        CLI(_entry(name)[0], args=command_args(name, args[1:]), prog=f"qinyu-lit {name}")
        return
    if name.startswith("-") or name in LIGHTNING_COMMANDS:  # LightningCLI also takes --config before the subcommand
        from ..stages.voice_design_cli import is_voice_design_recipe, voice_design_lightning_main

        if is_voice_design_recipe(args):  # VoiceDesign's recipes: their own CLI (no speech-LM links)
            return voice_design_lightning_main(None if from_terminal else args)
        from .lightning_cli import lightning_main

        # from a terminal LightningCLI reads sys.argv itself (and warns if it is also given args)
        lightning_main(None if from_terminal else args, debug=debug)
        return
    near = difflib.get_close_matches(name, list(COMMANDS), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise QinYuError(f"unknown command {name!r}{hint} (qinyu-lit --help lists them all)")


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
        _run(args, from_terminal=argv is None, debug=debug)
    except Exception as e:
        message = user_error_message(e, args)
        if debug or message is None:
            raise
        print(f"qinyu-lit: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
