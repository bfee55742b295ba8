"""``bgmid data ...``: build the real-audio corpus, the fixed test sets and long-form test programmes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="build the music/speech corpus, fixed test sets and test programmes",
        description="Corpus of real music and speech from Debian packages (see docs/data.md). Typical use: "
        "'bgmid data fetch --preset demo' then 'bgmid data mix'.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    f = dsub.add_parser(
        "fetch", help="download, unpack and convert the corpus packages (resumable)",
        description="Download the Debian packages of a preset (music tracks; speech: voice acting and recorded "
        "prompts, no TTS), unpack them, decode every file to the cached rates and write ROOT/manifest.json with "
        "track-disjoint (speech: speaker-disjoint) train/val/test splits (music also an out-of-index split). "
        "Finished packages are skipped and an interrupted one resumes, so re-running is cheap. Needs apt-get "
        "(Debian/Ubuntu), or the .deb files placed in ROOT/debs/. "
        "Example: bgmid data fetch --preset demo",
    )
    _root(f)
    f.add_argument("--preset", default="full", help="package set: demo (~770 MB of .debs) or full (default)")
    f.add_argument("--music", nargs="*", metavar="PKG", help="music packages instead of the preset's")
    f.add_argument("--speech", nargs="*", metavar="PKG", help="speech packages instead of the preset's")
    f.add_argument("--workers", type=int, default=2, help="decoding processes (default %(default)s)")
    f.add_argument("--keep-work", action="store_true", help="keep the unpacked package trees")
    f.add_argument("--seed", type=int, default=0,
                   help="split seed (default %(default)s; changing it reshuffles splits)")
    f.add_argument("--list", action="store_true", help="list the packages of each preset and exit")
    f.set_defaults(func=_fetch)

    a = dsub.add_parser(
        "add", help="add your own folders of music and/or speech to the corpus",
        description="Decode your own folders of music and/or speech into the corpus cache (any audio format) and "
        "rebuild the manifest and splits, as 'bgmid data fetch' does for the packages. "
        "Example: bgmid data add --music ~/soundtracks --speech ~/voices --language fra",
    )
    _root(a)
    a.add_argument("--music", nargs="*", default=[], metavar="DIR", help="folders of music tracks")
    a.add_argument("--speech", nargs="*", default=[], metavar="DIR",
                   help="folders of speech (one sub-folder per speaker keeps splits speaker-disjoint)")
    a.add_argument("--language", default="",
                   help="language code recorded for the speech, e.g. eng, fra (default: none recorded)")
    a.add_argument("--workers", type=int, default=2, help="decoding processes (default %(default)s)")
    a.set_defaults(func=_add)

    m = dsub.add_parser(
        "mix", help="build the fixed 12 s test/validation sets (0, -10, -20 dB, negatives)",
        description="From the corpus's --splits, write the fixed sets every evaluation uses, under "
        "ROOT/fixed/<rate>/<split>/: 12 s clips of music under dialogue at 0, -10 and -20 dB music-to-speech "
        "ratio (the same clips at each), music alone, speech alone, and out-of-index music as negatives. "
        "The same --seed gives the same sets. Example: bgmid data mix --sr 16000 --clips 100",
    )
    _root(m)
    m.add_argument("--sr", type=int, nargs="+", default=[16000, 22050],
                   help="sample rates to write the sets at, Hz (default 16000 22050)")
    m.add_argument("--splits", nargs="+", default=["test", "val"],
                   help="corpus splits to draw from: test and/or val (default test val)")
    m.add_argument("--clips", type=int, default=200,
                   help="clips per set (default %(default)s; fewer if tracks are few)")
    m.add_argument("--seed", type=int, default=0,
                   help="seed of the clips drawn (tracks, offsets, dialogue); the same seed gives the same sets "
                   "(default %(default)s)")
    m.add_argument("--wav", type=int, default=0, metavar="N",
                   help="also write the first N clips of each test set as WAV under ROOT/listen/, at the first --sr "
                   "(default %(default)s: none)")
    m.add_argument("--conditions", nargs="+", default=[], metavar="NAME",
                   help="also write the same clips as broadcasters air them (default: none, the sets above are "
                   "unchanged): " + _conditions_help() + "; 'all' for every one. Sets are named "
                   "SPLIT_-10dB_NAME (speed changes also SPLIT_0dB_NAME) and SPLIT_speech_broadcast; their CSVs "
                   "add speed, tempo, pitch_semitones (clip time t plays the track at "
                   "track_offset_s + speed*tempo*t seconds)")
    m.set_defaults(func=_mix)

    g = dsub.add_parser(
        "programme", help="generate a broadcast-like test programme and its cue sheet",
        description="Generate a long test programme from the corpus's --split: dialogue over non-overlapping "
        "music cues at varied levels, written as a WAV with its ground-truth cue sheet (CSV next to it, plus "
        "a JSON of passages) for 'bgmid monitor --truth'. The same --seed gives the same programme. "
        "Example: bgmid data programme --duration 300 --seed 3 --out prog3.wav",
    )
    _root(g)
    g.add_argument("--out", type=Path, help="output WAV (default ROOT/programmes/prog_<seed>.wav)")
    g.add_argument("--duration", type=float, default=600.0, help="programme length, s (default %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the programme's layout, tracks and dialogue (default %(default)s)")
    g.add_argument("--sr", type=int, default=16000,
                   help="sample rate, Hz (default %(default)s; 16000 or 22050 are cached, others resampled)")
    g.add_argument("--split", default="test", help="music/speech split to draw from (default test)")
    g.add_argument("--no-music", action="store_true", help="a programme without music (false-alarm check)")
    g.add_argument("--hard", action="store_true",
                   help="a programme built like real ones (--duration 300 holds each structure once): cues of "
                   "one soundtrack back to back 0-3 s apart, a cross-fade, the same track twice with an edit, "
                   "3-5 s stings, a cue with a featured music-only passage inside (one cue-sheet row per part), "
                   "a crowd/ambience scene; --speed/--tempo/--pitch/--no-music do not apply")
    g.add_argument("--speed", type=_ratio, default=1.0, metavar="R",
                   help="air the whole programme R times faster, tempo and pitch x R (a ratio, e.g. 25/24 or "
                   "1.0416667 = PAL speed-up of a 24 fps film, 24/25 = 0.96); the cue sheet's programme times "
                   "are divided by R, track offsets stay in the track's own seconds (default 1: unchanged)")
    g.add_argument("--tempo", type=_ratio, default=1.0, metavar="R",
                   help="time-compress the whole programme: tempo x R with pitch kept (ffmpeg atempo; e.g. 1.03 "
                   "= 3 %% faster); programme times divided by R (default 1)")
    g.add_argument("--pitch", type=float, default=0.0, metavar="SEMITONES",
                   help="transpose the whole programme by SEMITONES with tempo kept (default 0)")
    g.set_defaults(func=_programme)

    h = dsub.add_parser("hard-sets", help="add the harder test sets (continuous dialogue, crowd, -25 dB) next to "
                        "the fixed sets, never overwriting a file",
                        description="From the clips of the fixed sets ('bgmid data mix' first): SPLIT_-10dB_turns, "
                        "SPLIT_-20dB_turns, SPLIT_-25dB_turns (continuous dialogue, turn gaps 0.1-0.6 s), "
                        "SPLIT_-10dB_crowd (the dialogue plus six other voices at its level, music 10 dB below "
                        "both), SPLIT_speech_crowd (its speech-only negative) and SPLIT_-25dB; per-set speech band "
                        "and pause statistics in scene_sets.json. Existing files are kept as they are. "
                        "Example: bgmid data hard-sets --sr 16000 --split test")
    _root(h)
    h.add_argument("--sr", type=int, default=16000, help="sample rate of the fixed sets, Hz (default %(default)s)")
    h.add_argument("--split", default="test", help="split of the fixed sets: test or val (default %(default)s)")
    h.add_argument("--seed", type=int, default=0,
                   help="seed of the dialogue turns and crowd voices drawn (default %(default)s)")
    h.set_defaults(func=_hard_sets)

    e = dsub.add_parser("effects", help="build the effects set (the packages' short sound effects) for scene "
                        "training and scene test sets (resumable)",
                        description="Converts the sound-effect folders of hedgewars-data, blobwars-data, "
                        "colobot-common-sounds and marsshooter-data (files of 0.1-20 s; music and voices left out) "
                        "into ROOT/effects/ (effects.json, audio/<rate>/<id>.npy at 16000 and 22050 Hz), split "
                        "80/10/10 train/val/test by content hash. The corpus manifest is not changed. "
                        "Example: bgmid data effects --workers 2")
    _root(e)
    e.add_argument("--workers", type=int, default=1, help="decoding processes (default %(default)s)")
    e.set_defaults(func=_effects)

    s = dsub.add_parser(
        "info", help="print the corpus summary (tracks, hours per split, speech per source)",
        description="Print the corpus of ROOT/manifest.json: items, hours and 99.9 % band edge (Hz) per source, "
        "items and hours per split. Reads only. Example: bgmid data info --root ~/.cache/bgmid",
    )
    _root(s)
    s.set_defaults(func=_info)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _ratio(text: str) -> float:
    """A positive ratio: ``1.0416667`` or ``25/24``."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            v = float(a) / float(b)
        else:
            v = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r}: not a ratio (e.g. 1.0416667 or 25/24)") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return v


def _conditions_help() -> str:
    from bgmid.data.transforms import CONDITIONS

    return "; ".join(f"{c.name} ({c.description})" for c in CONDITIONS.values()).replace("%", "%%")


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None,
                   help="corpus folder (default $BGMID_DATA or ~/.cache/bgmid)")


def _fetch(args: argparse.Namespace) -> int:
    from bgmid.data import corpus

    if args.list:
        print(corpus.list_packages())
        return 0
    man = corpus.fetch(args.root, preset=args.preset, music=args.music, speech=args.speech,
                       workers=args.workers, keep_work=args.keep_work, seed=args.seed)
    print(summary_text(man))
    return 0


def _add(args: argparse.Namespace) -> int:
    from bgmid.data import corpus
    from bgmid.errors import BgmidError

    if not args.music and not args.speech:
        raise BgmidError("give --music DIR and/or --speech DIR.")
    man = None
    for d in args.music:
        man = corpus.add_local(args.root, d, "music", workers=args.workers)
    for d in args.speech:
        man = corpus.add_local(args.root, d, "speech", language=args.language, workers=args.workers)
    if man:
        print(summary_text(man))
    return 0


def _mix(args: argparse.Namespace) -> int:
    from bgmid.data import mixing

    t0 = time.time()
    conditions = mixing.resolve_conditions(args.conditions)  # unknown names fail before any work
    for split in args.splits:
        counts = mixing.build_fixed_sets(args.root, split, args.sr, n_clips=args.clips, seed=args.seed,
                                         conditions=conditions)
        if conditions:
            names = mixing.condition_set_names(split, conditions)
            print(f"{split}: condition sets ({counts[names[0]]} clips each): {' '.join(names)}")
        if args.wav and split == "test":
            from bgmid.data.corpus import default_root

            root = args.root or default_root()
            for name in mixing.fixed_set_names(split, conditions=conditions):
                mixing.export_wavs(root, name, args.sr[0], Path(root) / "listen", args.wav)
    print(f"fixed sets written in {time.time() - t0:.0f} s")
    return 0


def _hard_sets(args: argparse.Namespace) -> int:
    from bgmid.data.hard_sets import build_scene_sets

    t0 = time.time()
    counts = build_scene_sets(args.root, args.split, args.sr, seed=args.seed)
    print(f"wrote {len(counts)} sets ({', '.join(f'{k} {v}' for k, v in counts.items()) or 'none new'}) "
          f"in {time.time() - t0:.0f} s")
    return 0


def _effects(args: argparse.Namespace) -> int:
    from bgmid.data.effects import effects_root, fetch_effects

    man = fetch_effects(args.root, workers=args.workers)
    print(f"effects set {effects_root(args.root)}: {len(man['items'])} effects from {', '.join(man['packages'])}; "
          + ", ".join(f"{k} {v['items']} ({v['seconds'] / 60:.1f} min)" for k, v in sorted(man["summary"].items())))
    return 0


def _programme(args: argparse.Namespace) -> int:
    from bgmid.data import programmes

    if args.hard:
        wav, cues = programmes.generate_hard_programme(args.root, duration_s=args.duration, seed=args.seed,
                                                       sample_rate=args.sr, split=args.split, out=args.out)
        print(f"programme: {wav}\ncue sheet: {cues}")
        return 0
    wav, cues = programmes.generate_programme(
        args.root, duration_s=args.duration, seed=args.seed, sample_rate=args.sr, split=args.split,
        with_music=not args.no_music, out=args.out, speed=args.speed, tempo=args.tempo,
        pitch_semitones=args.pitch)
    print(f"programme: {wav}\ncue sheet: {cues}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from bgmid.data.corpus import load_manifest

    print(summary_text(load_manifest(args.root)))
    return 0


def summary_text(man: dict) -> str:
    """Corpus figures: per source items/hours/band, per split items/hours."""
    s = man["summary"]
    lines = [f"corpus {man['root']}: {len(man['items'])} items, {len(man['duplicates'])} duplicates dropped"]
    for key, v in sorted(s["sources"].items()):
        lines.append(f"  {key:45s} {v['items']:6d} items {v['hours']:7.2f} h  band99.9% {v['band_hz']:6.0f} Hz")
    for key, v in sorted(s["splits"].items()):
        lines.append(f"  split {key:20s} {v['items']:6d} items {v['hours']:7.2f} h")
    return "\n".join(lines)
