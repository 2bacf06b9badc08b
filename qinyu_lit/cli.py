"""The ``qinyu-lit`` command.

* ``qinyu-lit fit|validate|test|predict --config recipes/sft.yaml`` - LightningCLI: model and
  data chosen by ``class_path``, every argument overridable (``--trainer.max_steps 20``),
  ``--print_config`` shows the resolved recipe.
* ``qinyu-lit demo-data DIR`` - write the deterministic demo corpus and its tokenizer.
* ``qinyu-lit generate CKPT_OR_EXPORT --text|--audio ...`` - an interleaved reply: text, codes, WAV (with a codec).
* ``qinyu-lit data build|inspect|validate`` - shards from audio manifests, and checks of them.
* ``qinyu-lit export CKPT DIR`` - a directory ``QinYuModel.from_pretrained`` loads (LoRA merged);
  ``--adapter_only true`` writes a persona's PEFT adapter instead.
* ``qinyu-lit demo-persona DIR`` / ``persona-data DIR OUT`` - persona shards; ``persona-reply BASE ADAPTER
  TEXT`` - a reply in character (docs/stages.md).
"""

from __future__ import annotations

import sys

from jsonargparse import CLI
from lightning.pytorch.cli import LightningCLI

from .data.datamodule import QinYuDataModule
from .persona_bank import persona_reply_cmd
from .prep.inspect import data_main
from .prep.persona_data import demo_persona_cmd, persona_data_cmd
from .stages.base import QinYuStage
from .stages.checkpoints import export_cmd


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


COMMANDS = {"demo-data": demo_data, "generate": generate_cmd, "data": data_main}
COMMANDS.update({"export": export_cmd, "persona-data": persona_data_cmd, "demo-persona": demo_persona_cmd,
                 "persona-reply": persona_reply_cmd})  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Console entry; ``argv`` is for calling it from Python (tests, notebooks)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in COMMANDS:
        CLI(COMMANDS[args[0]], args=args[1:], prog=f"qinyu-lit {args[0]}")
        return
    # from a terminal LightningCLI reads sys.argv itself (and warns if it is also given args)
    lightning_main(None if argv is None else args)


if __name__ == "__main__":
    main()
