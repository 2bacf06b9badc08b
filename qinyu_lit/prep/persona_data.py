"""Custom characters, the data side: a folder of voice clips + a profile + dialogues -> persona shards.

A persona folder::

    my_character/
      profile.yaml       name + the paper's four attributes: demographics, social_identity,
                         temperament, vocal_style (optional: system_prompt, language)
      voice/             clips of the character's voice (.wav/.flac/.ogg); a same-named .npy next to a
                         clip is used as its speaker embedding, otherwise the clip is embedded with
                         ``qinyu_lit.prep.speakers.WavLMSpeakerEncoder`` (``speaker_model``)
      dialogues.jsonl    one dialogue a line: {"key": "d001", "turns": [
                           {"role": "user", "text": "...", "audio": "clips/q1.wav"},        # audio optional
                           {"role": "assistant", "text": "...", "codes": "codes/a1.npy"}]}  # codes [C, T] int
                       (assistant recordings instead of codes -> ``manifest.jsonl`` for ``qinyu-lit data build``)

``build_persona`` (``qinyu-lit persona-data``) writes ``persona`` shards - system prompt from the profile,
agent voice = mean embedding over the clips - and ``persona.json`` (the card: prompt + voice). Train with
``recipes/persona_lora.yaml`` (``PersonaStage``), then ``qinyu-lit export CKPT DIR --adapter_only true``
writes a PEFT adapter directory (``stages/checkpoints.py``); ``qinyu_lit.persona_bank.PersonaBank`` holds one
base model and switches between many adapters.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import yaml

from ..data.audio import read_audio
from ..data.files import CARD_NAME  # noqa: F401 - lives below prep/: exports and the persona bank read it
from ..data.schema import AUDIO_EXTENSIONS, CodecInfo, Sample, Turn
from .writer import write_shards

# the codes a persona's dialogues hold by default: the release's XY-Tokenizer (8 x 1024 at 12.5 Hz, 16 kHz audio)
XY_TOKENIZER = CodecInfo("xy_tokenizer", 8, 1024, 12.5, 16000)
DEMO_RULE = CodecInfo("demo-rule", 8, 64, 12.5, 16000)  # the demo's rule codes (prep/demo.py)


@dataclass
class PersonaProfile:
    """A character as the paper's role-play data defines one (§4.3): four attributes and a name.

    Args:
        name: what the character is called.
        demographics: age, gender, origin ("a retired sea captain in her sixties").
        social_identity: occupation and role ("runs the harbour's lighthouse").
        temperament: behavioural temperament ("calm, dry humour, never hurried").
        vocal_style: how the voice sounds ("low, slow, warm, slight rasp").
        system_prompt: the exact prompt to use; ``None`` writes one from the four attributes.
        language: the dialogues' language code.
    """

    name: str
    demographics: str
    social_identity: str
    temperament: str
    vocal_style: str
    system_prompt: str | None = None
    language: str = "en"

    def prompt(self) -> str:
        if self.system_prompt:
            return self.system_prompt
        return (
            f"You are {self.name}, {self.demographics}, {self.social_identity}. "
            f"Temperament: {self.temperament}. Vocal style: {self.vocal_style}. Stay in character."
        )


def load_profile(path: str | Path) -> PersonaProfile:
    """Read ``profile.yaml`` (or .json); a missing or unknown field is named in the error."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of profile fields")
    known = {f.name for f in fields(PersonaProfile)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"{path}: unknown profile field(s) {unknown}; known: {sorted(known)}")
    for name in ("name", "demographics", "social_identity", "temperament", "vocal_style"):
        if not isinstance(doc.get(name), str) or not doc[name].strip():
            raise ValueError(
                f"{path}: field {name!r} is missing or empty (the paper's four attributes + name)"
            )
    return PersonaProfile(**doc)


def persona_voice(
    voice_dir: str | Path, speaker_model: str | dict | None = None, max_clips: int = 100
) -> np.ndarray:
    """The agent voice: mean speaker embedding over the character's clips (paper: ~100 samples)."""
    from .speakers import load_embedding, voice_embedding

    voice_dir = Path(voice_dir)
    clips = sorted(p for p in voice_dir.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    loose = sorted(
        p for p in voice_dir.glob("*.npy") if not any(p.with_suffix(e).exists() for e in AUDIO_EXTENSIONS)
    )
    embeddings, encoder = [load_embedding(p) for p in loose], None
    for clip in clips:
        if clip.with_suffix(".npy").exists():
            embeddings.append(load_embedding(clip.with_suffix(".npy")))
            continue
        if encoder is None:
            from .speakers import WavLMSpeakerEncoder

            encoder = WavLMSpeakerEncoder(speaker_model) if speaker_model else WavLMSpeakerEncoder()
        embeddings.append(encoder.embed(*read_audio(clip)))
    if not embeddings:
        raise ValueError(f"{voice_dir}: no voice clips ({', '.join(AUDIO_EXTENSIONS)}) or .npy embeddings")
    return voice_embedding(embeddings, max_clips=max_clips)


@dataclass
class Dialogue:
    """One line of ``dialogues.jsonl``, parsed once and checked (roles, last turn)."""

    where: str  # path:line, for errors
    key: str
    turns: list[dict]


def parse_dialogues(persona_dir: Path, profile: PersonaProfile) -> list[Dialogue]:
    """Every dialogue of ``dialogues.jsonl``; errors name the line and the field."""
    path = persona_dir / "dialogues.jsonl"
    dialogues = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from err
        turns = doc.get("turns") or [] if isinstance(doc, dict) else []
        for i, t in enumerate(turns):
            if not isinstance(t, dict) or t.get("role") not in ("user", "assistant"):
                role = t.get("role") if isinstance(t, dict) else t
                raise ValueError(f"{where}: turns[{i}].role must be 'user' or 'assistant', got {role!r}")
        if not turns or turns[-1]["role"] != "assistant":
            raise ValueError(f"{where}: field 'turns' must end with an assistant turn")
        key = str(doc.get("key") or f"{profile.name.lower().replace(' ', '_')}{lineno:05d}")
        dialogues.append(Dialogue(where, key, turns))
    return dialogues


def to_samples(persona_dir: Path, dialogues: list[Dialogue], profile: PersonaProfile, voice: np.ndarray,
               codec: CodecInfo):  # fmt: skip
    """Dialogues whose assistant turns hold codes -> ``Sample``s of task ``persona``."""
    for d in dialogues:
        turns = []
        for i, t in enumerate(d.turns):
            turn = Turn(t["role"], t.get("text", ""))
            if t.get("audio"):
                turn.audio, turn.sample_rate = read_audio(persona_dir / t["audio"], f"{d.where}: turns[{i}].audio")
            if t.get("codes"):
                codes = np.load(persona_dir / t["codes"], allow_pickle=False)
                if codes.ndim != 2 or codes.shape[0] != codec.num_codebooks:
                    raise ValueError(
                        f"{d.where}: turns[{i}].codes has shape {codes.shape}, expected [{codec.num_codebooks}, T]"
                    )
                turn.codes = codes.astype(np.int64)
            turns.append(turn)
        yield Sample(d.key, "persona", turns, codec, profile.language, system=profile.prompt(), agent_speaker=voice,
                     meta={"persona": profile.name})  # fmt: skip


def _needs_codec(dialogues: list[Dialogue]) -> bool:
    """True when some assistant turn has a recording but no codes (the codec must encode it)."""
    return any(t["role"] == "assistant" and t.get("audio") and not t.get("codes") for d in dialogues for t in d.turns)


def write_manifest(persona_dir: Path, out_dir: Path, profile: PersonaProfile, dialogues: list[Dialogue]) -> Path:
    """The dialogues as a ``qinyu-lit data build`` manifest (task ``persona``, prompt, ``voice.npy``)."""
    rows = []
    for d in dialogues:
        if any(t.get("codes") and not t.get("audio") for t in d.turns):
            raise ValueError(
                f"{d.where}: codes without a recording, while other assistant turns are recordings; "
                "give every assistant turn as `audio` or every one as `codes`"
            )
        turns = [
            {"role": t["role"], "text": t.get("text", ""), **({"audio": str((persona_dir / t["audio"]).resolve())} if t.get("audio") else {})}
            for t in d.turns
        ]  # fmt: skip
        rows.append({"key": d.key, "task": "persona", "language": profile.language, "system": profile.prompt(),
                     "agent_speaker": str((out_dir / "voice.npy").resolve()), "turns": turns})  # fmt: skip
    path = out_dir / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_persona(
    persona_dir: str | Path,
    out_dir: str | Path,
    codec: CodecInfo = XY_TOKENIZER,
    speaker_model: str | dict | None = None,
    samples_per_shard: int = 1000,
) -> Path:
    """Write ``out_dir/train/shard-*.tar`` (task ``persona``), ``persona.json`` and ``voice.npy``.

    Dialogues whose assistant turns hold recordings instead of codes go to ``out_dir/manifest.jsonl``
    for ``qinyu-lit data build`` (which runs the codec) instead of to shards.
    """
    persona_dir, out_dir = Path(persona_dir), Path(out_dir)
    profile = load_profile(next((persona_dir / n for n in ("profile.yaml", "profile.yml", "profile.json") if (persona_dir / n).exists()),
                                persona_dir / "profile.yaml"))  # fmt: skip
    voice = persona_voice(persona_dir / "voice", speaker_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "voice.npy", voice)  # the agent voice, also for `generate --speaker`
    card = {"profile": asdict(profile), "system_prompt": profile.prompt(), "voice": voice.tolist()}
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    dialogues = parse_dialogues(persona_dir, profile)
    if _needs_codec(dialogues):
        manifest = write_manifest(persona_dir, out_dir, profile, dialogues)
        print(
            f"[qinyu-lit] persona {profile.name!r}: assistant turns hold audio, not codes; encode them with the codec:\n"
            f"  qinyu-lit data build --manifest {manifest} --out {out_dir / 'train'} --codec CODEC ..."
        )
        return out_dir
    samples = list(to_samples(persona_dir, dialogues, profile, voice, codec))
    if (out_dir / "train").exists():
        shutil.rmtree(out_dir / "train")  # a rebuild must not leave shards of an older, longer run
    write_shards(samples, out_dir / "train", samples_per_shard)
    print(
        f"[qinyu-lit] persona {profile.name!r}: {len(samples)} dialogues, voice of dim {voice.shape[0]} -> {out_dir}"
    )
    return out_dir


def persona_data_cmd(
    persona_dir: str,
    out_dir: str,
    codec_name: str = "xy_tokenizer",
    num_codebooks: int = 8,
    codebook_size: int = 1024,
    frame_rate: float = 12.5,
    sample_rate: int = 16000,
    speaker_model: str | None = None,
) -> None:
    """Build persona shards and the persona card from a character folder (its layout: this module's docstring).

    Args:
        persona_dir: folder with ``profile.yaml``, ``voice/`` and ``dialogues.jsonl``.
        out_dir: where ``train/`` shards and ``persona.json`` go; point ``data.train`` and ``model.persona_card`` here.
        codec_name: name of the codec that produced the assistant codes (checked against the model).
        num_codebooks: codebooks of the assistant codes.
        codebook_size: codes per codebook.
        frame_rate: codec frames per second.
        sample_rate: the codec's audio sample rate.
        speaker_model: speaker encoder for clips without a .npy embedding (default WavLM x-vector).
    """
    codec = CodecInfo(codec_name, num_codebooks, codebook_size, frame_rate, sample_rate)  # one codec description
    build_persona(persona_dir, out_dir, codec, speaker_model)


def demo_persona_cmd(
    out_dir: str, name: str = "captain", voice: int | None = None, dialogues: int = 160, speaker_dim: int = 16
) -> None:
    """Write a demo persona folder (profile, voice clips with embeddings, dialogues) from the demo rules.

    The character answers a 1-2 word question (spoken or typed) with the demo's opposites rule and adds its
    catchphrase ("hot sun" -> "cold moon calm" for the captain), in its own voice (``prep.demo.PERSONAS``).

    Args:
        out_dir: the persona folder to create.
        name: one of the demo characters: captain, grandpa, robot.
        voice: demo voice id (its codes and embedding); default the character's own (3, 4, 5).
        dialogues: number of dialogues (half spoken questions, half typed).
        speaker_dim: speaker embedding size (must match the model).
    """
    out = make_demo_persona(out_dir, name, voice, dialogues, speaker_dim)
    print(f"demo persona {name!r} written to {out}: profile.yaml, voice/ (4 clips + embeddings), "
          f"clips/ + codes/ ({dialogues} dialogues), dialogues.jsonl; next: qinyu-lit persona-data {out} OUT_DIR --codec_name demo-rule --codebook_size 64")  # fmt: skip


def demo_persona_questions(name: str, dialogues: int, seed: int = 0) -> list[tuple[str, bool]]:
    """The training questions of a demo persona: (one demo word, spoken?). Each word is asked in one way only:
    the even-indexed words spoken, the odd ones typed, so the other way of asking each word is held out
    (``held_out_persona_questions``)."""
    from .demo import WORDS

    order = np.random.default_rng([seed, sum(map(ord, name))]).permutation(dialogues)
    return [(WORDS[i % len(WORDS)], (i % len(WORDS)) % 2 == 0) for i in order]


def held_out_persona_questions() -> list[tuple[str, bool, int]]:
    """The 16 questions no demo persona trains on: (word, spoken?, user voice), each word asked the other way
    (odd words spoken, by user voice 107, which the persona data does not use; even words typed)."""
    from .demo import WORDS

    return [(word, i % 2 == 1, 107 if i % 2 == 1 else 0) for i, word in enumerate(WORDS)]


def make_demo_persona(out_dir: str | Path, name: str = "captain", voice: int | None = None, dialogues: int = 160,
                      speaker_dim: int = 16, codebook_size: int = 64, seed: int = 0) -> Path:  # fmt: skip
    """A deterministic persona folder built from the demo corpus rules (no downloads), plus ``question.wav``:
    a held-out spoken question ("day", the captain's rule answers "night calm")."""
    import soundfile

    from .demo import (
        CHARACTERS,
        PERSONAS,
        SAMPLE_RATE,
        WORDS,
        demo_codes,
        demo_speech,
        persona_answer,
        voice_embedding,
    )

    profiles = {
        "captain": ("Captain Mira", "a woman in her fifties from a harbour town", "captain of a small starship",
                    "calm and kind, speaks briefly", "low, steady, unhurried"),
        "grandpa": ("Grandpa Lin", "a man in his seventies", "a retired teacher and storyteller",
                    "warm, patient, fond of old songs", "soft, slow, a little husky"),
        "robot": ("Unit Seven", "a robot built last year", "a household helper robot",
                  "cheerful and curious about feelings", "bright, even, slightly metallic"),
    }  # fmt: skip
    if name not in profiles:
        raise ValueError(f"demo persona must be one of {sorted(profiles)}, got {name!r}")
    voice = PERSONAS[name][0] if voice is None else voice
    out = Path(out_dir)
    for sub in ("voice", "codes", "clips"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    full, demo, social, temper, style = profiles[name]
    profile = dict(name=full, demographics=demo, social_identity=social, temperament=temper, vocal_style=style,
                   system_prompt=CHARACTERS[name])  # fmt: skip
    (out / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    rng = np.random.default_rng([seed, voice])
    base = voice_embedding(voice, speaker_dim)
    for i in range(4):  # a few clips, each with its own noisy utterance embedding
        words = " ".join(rng.choice(WORDS, 4))
        soundfile.write(out / "voice" / f"clip{i}.wav", demo_speech(words, voice), SAMPLE_RATE)
        np.save(out / "voice" / f"clip{i}.npy", (base + 0.1 * rng.standard_normal(speaker_dim)).astype(np.float32))
    lines = []
    for d, (question, spoken) in enumerate(demo_persona_questions(name, dialogues, seed)):
        reply = persona_answer(question, name)
        np.save(out / "codes" / f"a{d}.npy", demo_codes(reply, voice, 8, codebook_size))
        soundfile.write(out / "clips" / f"q{d}.wav", demo_speech(question, 100 + d % 4), SAMPLE_RATE)
        # the question as speech (a user voice of the demo corpus, no text) or typed
        user = {"role": "user", "text": "", "audio": f"clips/q{d}.wav"} if spoken else {"role": "user", "text": question}
        turns = [user, {"role": "assistant", "text": reply, "codes": f"codes/a{d}.npy"}]
        lines.append(json.dumps({"key": f"{name}{d:04d}", "turns": turns}))
    (out / "dialogues.jsonl").write_text("\n".join(lines) + "\n")
    word, _, user_voice = next(q for q in held_out_persona_questions() if q[1])  # never heard: docs/stages.md asks it
    soundfile.write(out / "question.wav", demo_speech(word, user_voice), SAMPLE_RATE)
    return out
