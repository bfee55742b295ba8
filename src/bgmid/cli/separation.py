"""``bgmid separate`` and ``bgmid train``: argument handling only; the work is in bgmid.separation / bgmid.train."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from bgmid.separation.registry import DEFAULT_MODEL, FINE_TUNABLE, MODELS, PRETRAINED_MODELS

    p = sub.add_parser(
        "separate", help="split audio files into music and speech (writes NAME.music.wav, NAME.speech.wav)",
        description="Split audio/video files into music and speech: OUT/NAME.music.wav and OUT/NAME.speech.wav "
        "(NAME: the input's file name without extension), at the input's sample rate unless --sr says "
        "otherwise. Inputs that share a NAME (a/x.wav, b/x.wav) get "
        "distinct names in input order (x, x-2, x-3, ...), so none overwrites another; each output is written "
        "whole or not at all. An unreadable input is named on stderr and skipped (exit status 1). "
        "Example: bgmid separate --out stems/ show.mp4",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio/video files or folders")
    p.add_argument("--model", default=DEFAULT_MODEL, choices=[*MODELS, *PRETRAINED_MODELS],
                   help="separator model (default %(default)s); pretrained "
                   f"({', '.join(PRETRAINED_MODELS)}) need 'bgmid models fetch NAME' once")
    p.add_argument("--weights", help="checkpoint file (default: the shipped models/<model>-lite.pt; for a pretrained "
                   "model, its fetched TensorFlow checkpoint folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sr", type=int, metavar="HZ",
                   help="sample rate of the written stems in Hz (default: each input's own rate)")
    p.add_argument("--chunk", type=int, help="chunk length in samples (default: the model's training segment)")
    p.add_argument("--device", default="cpu",
                   help="torch device the separator runs on, e.g. cpu, cuda, cuda:1 (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on busy shared cores one thread is much faster than two)")
    p.set_defaults(func=cmd_separate)

    t = sub.add_parser(
        "train", help="train a separator on the corpus (checkpoints and resumes)",
        description="Train a music/speech separator on mixtures drawn on the fly from the corpus's train split "
        "('bgmid data fetch' and 'bgmid data mix' first: validation uses the fixed val sets). AdamW, linear "
        "warm-up then cosine decay over --steps (or over a horizon estimated from --minutes). The run lives in "
        "OUT/<model>: last.pt (full state, written every --ckpt-every seconds, for --resume) and best.pt (the "
        "best validated EMA weights, loadable by 'bgmid separate --weights'). Training stops at --steps, after "
        "--minutes, or on Ctrl-C (--resume continues from the last checkpoint written). "
        "Example: bgmid train --model unet --minutes 60; later: bgmid train --model unet --minutes 60 --resume",
    )
    t.add_argument("--model", required=True, choices=[*MODELS, *FINE_TUNABLE],
                   help="separator architecture to train; 'spleeter' fine-tunes Deezer's pretrained 2stems "
                   "network (with --init spleeter; 'bgmid models fetch spleeter' once)")
    t.add_argument("--config", default=None, choices=["lite", "paper", "16k", "2stems"],
                   help="network size: 'lite' (the default for the four separators: the shipped CPU-sized "
                   "networks, 11,025 Hz, fewer channels) or 'paper' (the papers' sizes, 16 kHz; much slower); for "
                   "spleeter '16k' (the default: its network on a 16 kHz STFT with its own bin width and hop) or "
                   "'2stems' (44.1 kHz, as published)")
    t.add_argument("--root", help="data root (default $BGMID_DATA or ~/.cache/bgmid)")
    t.add_argument("--out", default="runs", help="runs folder; the run lives in OUT/<model> (default runs)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/<model>/last.pt")
    t.add_argument("--minutes", type=float,
                   help="wall-time budget of this invocation, minutes (default: none, stop at --steps)")
    t.add_argument("--steps", type=int,
                   help="stop at this step, counted from the run's start (also the LR schedule horizon; default: none, "
                   "stop after --minutes; with neither, train until Ctrl-C)")
    t.add_argument("--batch-size", type=int, default=16,
                   help="mixtures per step, each one training segment of the model (default %(default)s)")
    t.add_argument("--lr", type=float, default=1e-3,
                   help="peak AdamW learning rate, reached after --warmup (default %(default)s)")
    t.add_argument("--warmup", type=int, default=100, help="linear LR warm-up, steps (default %(default)s)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and of every batch's mixtures: a run is a pure function of "
                   "it (default %(default)s)")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    t.add_argument("--ckpt-every", type=float, default=180.0,
                   help="time between checkpoints (last.pt), s (default %(default)s)")
    t.add_argument("--val-every", type=float, default=360.0,
                   help="time between validations (SI-SDR and identification on val_0dB and val_-10dB; best.pt "
                   "when the --select score improves), s (default %(default)s)")
    t.add_argument("--select", choices=["identification", "si-sdr"], default="identification",
                   help="what picks best.pt: 'identification' = share of validation clips whose separated music "
                   "alone is identified as its track in the corpus index (p1, built once if missing, ~1 min), "
                   "SI-SDR breaking ties (the paper: SI-SDR ranks separators wrongly for identification); "
                   "'si-sdr' = mean music SI-SDR alone (default %(default)s)")
    t.add_argument("--val-clips", type=int, default=16,
                   help="clips of each validation set used, the first N (default %(default)s)")
    t.add_argument("--val-sets", default="0dB,-10dB", metavar="NAME,NAME",
                   help="fixed validation sets, comma-separated, named without their 'val_' prefix (default "
                   "%(default)s); harder ones, where the unprocessed mixture is rarely identified and --select "
                   "identification can tell checkpoints apart: --val-sets=-10dB_crowd,-20dB_turns ('bgmid data "
                   "hard-sets --split val' once; write it with '=', the names start with '-')")
    t.add_argument("--val-seconds", type=float, default=6.0,
                   help="first seconds of each validation clip used, s (default %(default)s)")
    t.add_argument("--init", metavar="WEIGHTS",
                   help="fine-tune: start a fresh run from these weights (e.g. models/wave-densenet-lite.pt), or "
                   "from a pretrained model's fetched weights by its name (--model spleeter --init spleeter); "
                   "the run's constructor arguments come from --config, so its input normalisation applies")
    t.add_argument("--scenes", action="store_true",
                   help="train on real scenes: the non-music stem adds crowd babble (3-8 voices), effects and "
                   "ambience ('bgmid data effects'), room reverberation (RT60 0.2-1.2 s), EQ and level ramps")
    t.add_argument("--loss", choices=["l1", "balanced-l1", "peak-l1"], default="l1",
                   help="l1 sums both sources' errors (waveform L1; masked-magnitude L1 for the spectrogram models), "
                   "so the dialogue's dominates at -30..0 dB music; balanced-l1 (waveform models and spleeter) "
                   "divides each source's error by its own level, so the music counts as much; peak-l1 (spleeter) "
                   "adds the separated music's log-magnitude error weighted on its spectral peaks, what "
                   "identification keeps (default %(default)s)")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar (log lines only; for logs and CI)")
    t.set_defaults(func=cmd_train)


def cmd_separate(args: argparse.Namespace) -> int:
    from bgmid.audio import AudioError, iter_audio_files
    from bgmid.cli.common import audio_warnings
    from bgmid.errors import BgmidError
    from bgmid.paths import shown
    from bgmid.separation.apply import separate_file, unique_stems
    from bgmid.separation.registry import load_separator, torch_threads

    if args.sr is not None and args.sr <= 0:
        raise BgmidError(f"--sr {args.sr}: a sample rate must be a positive number of Hz.")
    sep = load_separator(args.model, device=args.device, weights=args.weights)
    total_s = total_wall = 0.0
    inputs = list(iter_audio_files(args.inputs))
    failed = 0
    with audio_warnings("separate"), torch_threads(max(1, args.threads)):
        for path, stem in zip(inputs, unique_stems(inputs), strict=True):
            try:
                r = separate_file(sep.runner, path, args.out, chunk=args.chunk, device=args.device, stem=stem,
                                  sample_rate=args.sr)
            except AudioError as exc:
                print(f"bgmid separate: skipped: {exc}", file=sys.stderr, flush=True)
                failed += 1
                continue
            total_s += r.seconds
            total_wall += r.wall_s
            print(f"{shown(path)}: {r.seconds:.1f} s in {r.wall_s:.1f} s ({r.x_real_time:.1f}x real time) -> "
                  f"{shown(r.music_path)}, {shown(r.speech_path)} ({r.sample_rate} Hz)", flush=True)
    if total_wall > 0:
        print(f"{sep.name}: {total_s:.1f} s of audio at {total_s / total_wall:.1f}x real time", file=sys.stderr)
    return 1 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    from bgmid.separation.registry import FINE_TUNABLE
    from bgmid.train import TrainConfig, train

    cfg = TrainConfig(
        model=args.model, config=args.config or ("16k" if args.model in FINE_TUNABLE else "lite"),
        root=args.root, out=args.out, batch_size=args.batch_size,
        lr=args.lr, warmup=args.warmup, steps=args.steps, minutes=args.minutes, seed=args.seed, threads=args.threads,
        ckpt_every_s=args.ckpt_every, val_every_s=args.val_every, val_clips=args.val_clips,
        val_seconds=args.val_seconds, val_sets=tuple(v.strip() for v in args.val_sets.split(",") if v.strip()),
        scenes=args.scenes, init=args.init,
        loss=args.loss, select=args.select,
    )
    train(cfg, resume=args.resume, progress=not args.no_progress)
    return 0
