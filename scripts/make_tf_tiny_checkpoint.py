"""Write tests/data/tf_tiny/model.{index,data-00000-of-00001}: a small checkpoint saved by TensorFlow itself, so the
default test run checks bgmid's TensorFlow-free reader (bgmid.separation.tfcheckpoint) on real TF bytes.

    /tmp/tfvenv/bin/python scripts/make_tf_tiny_checkpoint.py tests/data/tf_tiny/model

Variables (values are formulas that tests/test_tfcheckpoint.py recomputes): 40 float32 ``layer_NN/kernel`` of shape
(3, 2, NN % 4 + 1) and ``layer_NN/bias`` (enough keys for several index blocks and shared-prefix keys), and one
each of float64, int32, int64, int8, bool, float16 and bfloat16, plus a scalar.
"""

import sys

import numpy as np


def expected() -> dict[str, np.ndarray]:
    out = {}
    for k in range(40):
        n = 3 * 2 * (k % 4 + 1)
        out[f"layer_{k:02d}/kernel"] = (np.arange(n, dtype=np.float32) * 0.25 - k).reshape(3, 2, k % 4 + 1)
        out[f"layer_{k:02d}/bias"] = np.full(k % 4 + 1, k / 7, np.float32)
    out["other/f64"] = np.linspace(-1, 1, 7)
    out["other/i32"] = np.arange(-5, 5, dtype=np.int32).reshape(2, 5)
    out["other/i64"] = np.array([2**40, -3, 7], np.int64)
    out["other/i8"] = np.array([-128, 0, 127], np.int8)
    out["other/bool"] = np.array([True, False, True])
    out["other/f16"] = np.array([0.5, -2.0, 65504.0], np.float16)
    out["other/bf16"] = np.array([1.0, -0.5, 3.0], np.float32)  # exactly representable in bfloat16
    out["scalar"] = np.array(42.0, np.float32)
    return out


def main() -> int:
    import tensorflow as tf

    prefix = sys.argv[1]
    variables = {}
    for name, value in expected().items():
        dtype = tf.bfloat16 if name == "other/bf16" else None
        variables[name] = tf.Variable(tf.constant(value, dtype=dtype), name=name)
    # tf.compat.v1 Saver writes the variables under exactly these names (tf.train.Checkpoint would add paths)
    tf.compat.v1.train.Saver(var_list=variables).save(None, prefix, write_meta_graph=False, write_state=False)
    print(tf.train.list_variables(prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
