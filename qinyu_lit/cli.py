"""The ``qinyu-lit`` command.

* ``qinyu-lit fit|validate|test|predict --config recipes/sft.yaml`` - LightningCLI: model and
  data chosen by ``class_path``, every argument overridable (``--trainer.max_steps 20``),
  ``--print_config`` shows the resolved recipe.
* ``qinyu-lit demo-data DIR`` - write the deterministic demo corpus and its tokenizer.
* ``qinyu-lit generate --ckpt CKPT ...`` - greedy decoding of an interleaved reply.
"""

from __future__ import annotations

import sys

from jsonargparse import CLI
from lightning.pytorch.cli import LightningCLI

from .data.datamodule import QinYuDataModule
from .stages.base import QinYuStage


class QinYuCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # sizes the data and the model must agree on are set once, on the data side
        parser.link_arguments("data.init_args.tokenizer", "model.init_args.net.tokenizer")
        parser.link_arguments("data.init_args.num_codebooks", "model.init_args.net.num_codebooks")
        parser.link_arguments("data.init_args.codebook_size", "model.init_args.net.codebook_size")


def lightning_main(args: list[str] | None = None) -> None:
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
    samples_per_task: int = 24,
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
    from .data.demo import make_demo_corpus

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
    shard: str | None = None,
    key: str | None = None,
    system: str = "",
    out: str | None = None,
    max_new_positions: int = 512,
) -> None:
    """Greedy generation from a Lightning checkpoint.

    Args:
        ckpt: a checkpoint written by ``qinyu-lit fit``.
        text: a user message (text input). Either this or ``shard`` + ``key``.
        shard: a shard to take the conversation from (its last assistant turn is generated).
        key: the sample key inside ``shard``.
        system: system / persona prompt for ``text`` input.
        out: write the generated codes ``[8, frames]`` to this ``.npy`` file.
        max_new_positions: stop after this many generated positions.
    """
    import numpy as np

    from .inference import load_stage, reply_to

    stage = load_stage(ckpt)
    result = reply_to(stage.model, text=text, shard=shard, key=key, system=system, max_new_positions=max_new_positions)
    print(f"text: {result.text}")
    print(f"audio frames: {result.codes.shape[1]} x {result.codes.shape[0]} codebooks; finished={result.finished}")
    if out:
        np.save(out, result.codes.numpy(), allow_pickle=False)
        print(f"codes written to {out}")


COMMANDS = {"demo-data": demo_data, "generate": generate_cmd}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        CLI(COMMANDS[argv[0]], args=argv[1:], prog=f"qinyu-lit {argv[0]}")
        return
    lightning_main(argv)


if __name__ == "__main__":
    main()
