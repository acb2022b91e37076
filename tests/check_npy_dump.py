"""The .npy files from `normcheck --dump` load in NumPy with the right shapes and values.

Usage: check_npy_dump.py NORMCHECK_BINARY OUT_DIR. Exit 0 on success; an assertion error otherwise.
Independent check: y recomputed here in float64 NumPy from the dumped inputs matches the
reference to 1e-12 (LayerNorm over the last dim, eps 1e-5 as float32).
"""
import pathlib
import shutil
import subprocess
import sys

import numpy as np

binary, out = sys.argv[1], pathlib.Path(sys.argv[2])
shutil.rmtree(out, ignore_errors=True)
desc = "layer_norm,pass=forward_training,dtype=f32,shape=3x5"
subprocess.run([binary, "--case", desc, "--dump", str(out), "-q"], check=True)
case = out / desc.replace(",", "+")
x = np.load(case / "input_x.npy")
gamma = np.load(case / "input_gamma.npy")
beta = np.load(case / "input_beta.npy")
ref = np.load(case / "reference_y.npy")
got = np.load(case / "backend_y.npy")
assert x.shape == (3, 5) and x.dtype == np.float32, (x.shape, x.dtype)
assert ref.dtype == np.float64 and got.dtype == np.float32
xd = x.astype(np.float64)
mean = xd.mean(axis=1, keepdims=True)
var = ((xd - mean) ** 2).mean(axis=1, keepdims=True)
eps = float(np.float32(1e-5))
y = (xd - mean) / np.sqrt(var + eps) * gamma.astype(np.float64) + beta.astype(np.float64)
assert np.allclose(y, ref, rtol=0, atol=1e-12), np.abs(y - ref).max()
assert np.allclose(got, ref, rtol=0, atol=1e-5), np.abs(got - ref).max()
print("npy dump OK:", sorted(p.name for p in case.iterdir()))
