"""``qinyu-lit fit|validate|test|predict``: LightningCLI with the project's links and one-line parse errors.

LightningCLI (jsonargparse) answers a mistyped option with a 50-60 line usage dump whose last lines
say what is wrong. ``QinYuCLI.parse_arguments`` turns that into one ``QinYuError`` line naming the bad
key and the nearest valid one (``--debug`` keeps jsonargparse's own output).
"""

from __future__ import annotations

import difflib
import inspect
import re
import warnings

from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI

from ..data.datamodule import QinYuDataModule
from ..data.errors import QinYuError
from ..data.index import absolute_if_local
from ..model.encoders import encoder_mel_bins, front_end_of
from ..stages.base import QinYuStage
from ..stages.resume import explain_missing_last


class QinYuCLI(LightningCLI):
    debug = False  # lightning_main sets it: True keeps jsonargparse's full usage output on a parse error

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

    def parse_arguments(self, parser, args) -> None:
        if self.debug:
            return super().parse_arguments(parser, args)
        subcommands = getattr(parser, "_subcommands_action", None)
        for p in [parser, *(subcommands._name_parser_map.values() if subcommands else [])]:
            p.exit_on_error = False  # raise instead of printing the usage: we print one line
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            raise QinYuError(parse_error_line(str(e), parser, self.subcommand_of(args))) from None

    @staticmethod
    def subcommand_of(args) -> str | None:
        import sys

        words = sys.argv[1:] if args is None else list(args)
        return next((w for w in words if w in ("fit", "validate", "test", "predict")), None)

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]  # what fit() is called with: --ckpt_path last may resolve elsewhere
        config["ckpt_path"] = explain_missing_last(self.trainer, config.get("ckpt_path"))


def lightning_main(args: list[str] | None = None, debug: bool = False) -> None:
    with warnings.catch_warnings():
        # The frozen audio encoder stays in eval mode on purpose (no dropout, fixed norms; enforced in
        # QinYuModel.encode_audio), so Lightning's "module(s) in eval mode at the start of training"
        # warning is expected for every stage with an encoder: silenced here, and only that message.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
        cli = type("QinYuCLI", (QinYuCLI,), {"debug": debug})
        cli(
            QinYuStage,
            QinYuDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )


# ---------------------------------------------------------------------------- one-line parse errors


def _nearest(bad: str, valid: list[str], prefix: str = "") -> str:
    near = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{near[0]}?" if near else ""


def _options_of(parser, subcommand: str | None) -> list[str]:
    """Every ``--a.b`` option the (sub)command parser knows, without the leading dashes."""
    sub = parser
    if subcommand and getattr(parser, "_subcommands_action", None) is not None:
        sub = parser._subcommands_action._name_parser_map.get(subcommand, parser)
    return [s[2:] for a in sub._actions for s in a.option_strings if s.startswith("--")]


def _init_args_of(class_path: str) -> list[str]:
    """The keyword arguments a ``class_path`` accepts: its ``__init__`` and, through ``**kwargs``, its bases'."""
    import importlib

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    names: list[str] = []
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters.values() if "__init__" in vars(klass) else []
        names += [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"]
        if "__init__" in vars(klass) and not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def parse_error_line(message: str, parser, subcommand: str | None) -> str:
    """jsonargparse's multi-line parse error -> one line: the bad key, and the nearest valid one."""
    options = _options_of(parser, subcommand)
    if m := re.search(r"unrecognized arguments: --?(\S+)", message):
        bad = m.group(1).split("=", 1)[0]
        return f"unknown option --{bad}{_nearest(bad, options, '--')} (qinyu-lit {subcommand or 'fit'} --help lists them)"
    if m := re.search(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message):
        bad = f"{m.group(1)}.{m.group(2)}"
        return f"unknown option {bad}{_nearest(bad, options)} (in a --config file)"
    if m := re.search(r'key "(\w+)":.*?class_path \'([\w.]+)\':\s*Option \'(\w+)\' is not accepted', message, re.S):
        group, class_path, bad = m.groups()
        hint = _nearest(bad, _init_args_of(class_path))
        return f"{group}.init_args: {class_path.rsplit('.', 1)[-1]} has no option {bad!r}{hint}"
    if m := re.search(r'key "config": File does not exist: \'?([^\'\n]+)', message):
        return f"--config {m.group(1)}: no such file"
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else "could not parse the command line"
