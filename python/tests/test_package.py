"""The normcheck Python package: case(), check(), check_fn(), own tensors, torch via DLPack."""
import hashlib
import io
import os

import numpy as np
import pytest

import normcheck
from implementations import batch_norm_training, layer_norm, layer_norm_backward, layer_norm_unbiased


@pytest.fixture(autouse=True)
def _input_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMCHECK_INPUT_DIR", str(tmp_path / "inputs"))


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_case_gives_inputs_of_the_descriptor_shape_and_dtype():
    c = normcheck.case("layer_norm,shape=4x16,dtype=bf16")
    assert c["x"].shape == (4, 16) and c["x"].dtype == np.float32
    assert c["gamma"].shape == (16,) and c["beta"].shape == (16,)
    # bf16 handed out as float32 holding bf16 values: the low 16 bits of every binary32 are 0.
    assert not np.any(c["x"].view(np.uint32) & 0xFFFF)
    # platform-independent generators: the same descriptor, the same values
    assert np.array_equal(c["x"], normcheck.case("layer_norm,shape=4x16,dtype=bf16")["x"])
    assert c["eps"] == float(np.float32(1e-5))
    h = normcheck.case("group_norm,shape=2x6x3x4,dtype=f16,groups=2,layout=nhwc")
    assert h["x"].dtype == np.float16 and h["x"].shape == (2, 6, 3, 4)
    assert h["x"].strides[1] == 2  # channels-last in memory, as the backend sees it


def test_numpy_layer_norm_passes():
    for d in ("layer_norm,shape=8x64", "layer_norm,shape=2x3x4x5,norm_dims=3", "layer_norm,shape=4x32,dtype=f64",
              "layer_norm,shape=4x64,dtype=bf16", "layer_norm,shape=4x64,dtype=f16"):
        r = normcheck.check_fn(layer_norm, d)
        assert r.verdict == "PASS", r.message()
        (y,) = [t for t in r.tensors if t.name == "y"]
        assert y.passed and y.worst_ratio <= 1 and y.over_tolerance == 0


def test_wrong_layer_norm_fails_with_figures_and_reproducer():
    r = normcheck.check_fn(layer_norm_unbiased, "layer_norm,shape=8x64")
    assert r.verdict == "FAIL" and not r
    (y,) = [t for t in r.tensors if t.name == "y"]
    assert not y.passed and y.worst_ratio > 1 and y.over_tolerance > 0
    assert y.worst["coords"] and y.worst["got"] != y.worst["expected"]
    assert r.suspected_cause
    msg = r.message()
    assert "normcheck.check_fn(fn, 'layer_norm,pass=forward_training,dtype=f32,shape=8x64')" in msg
    assert "worst ratio" in msg and "y: FAIL" in msg
    assert r.cli_reproducer.startswith("normcheck --backend python --case ")


def test_check_judges_outputs_computed_on_case_inputs():
    d = "layer_norm,shape=6x32"
    c = normcheck.case(d)
    inp = {"x": c["x"], "gamma": c["gamma"], "beta": c["beta"], "eps": c["eps"], "norm_dims": 1}
    assert normcheck.check(d, layer_norm(inp)).verdict == "PASS"
    assert normcheck.check(d, layer_norm_unbiased(inp)).verdict == "FAIL"
    # a y of the wrong shape is an error, not a verdict
    with pytest.raises(normcheck.Error, match="shape"):
        normcheck.check(d, {"y": np.zeros((6, 31), np.float32)})
    with pytest.raises(normcheck.Error, match="not an output"):
        normcheck.check(d, {"dx": np.zeros((6, 32), np.float32)})


def test_malformed_descriptor_raises_error_with_the_cli_message():
    with pytest.raises(normcheck.Error, match="groups=4 must be ≥ 1 and divide C = 6"):
        normcheck.case("group_norm,shape=2x6x4,groups=4")
    assert issubclass(normcheck.Error, ValueError)


def test_own_tensors_large_offset_row_exactly():
    x = np.array([[40000, 40001, 40002, 40003]], np.float32)
    r = normcheck.check_fn(layer_norm, "layer_norm,shape=1x4", inputs={"x": x})
    assert r.verdict == "PASS", r.message()
    digest = hashlib.sha256(npy_bytes(x)).hexdigest()  # what sha256sum of np.save's file prints
    assert r.descriptor.endswith(",data=file:" + digest)
    assert digest in r.reproducer and "inputs=" in r.reproducer
    seen = {}
    normcheck.check_fn(lambda inp: seen.setdefault("x", inp["x"].copy()) * 0, "layer_norm,shape=1x4", inputs={"x": x})
    assert seen["x"].tolist() == [[40000, 40001, 40002, 40003]]
    assert normcheck.case("layer_norm,shape=1x4", inputs={"x": x})["x"].tolist() == [[40000, 40001, 40002, 40003]]


def test_own_tensor_files_bf16_bits_fortran_order_and_refusal(tmp_path):
    bits = np.array([[0x3F80, 0x4000], [0xC040, 0x3F00]], np.uint16)  # bf16 1, 2, −3, 0.5
    p = tmp_path / "xb.npy"
    np.save(p, bits)
    c = normcheck.case("layer_norm,dtype=bf16,shape=2x2", inputs={"x": str(p)})
    assert c["x"].tolist() == [[1, 2], [-3, 0.5]]
    f = tmp_path / "xf.npy"
    np.save(f, np.asfortranarray(np.array([[1, 2, 3], [4, 5, 6]], np.float64)))
    assert normcheck.case("layer_norm,dtype=f64,shape=2x3", inputs={"x": str(f)})["x"].tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(normcheck.Error, match="dtype '<f8' does not match"):
        normcheck.case("layer_norm,shape=2x3", inputs={"x": str(f)})
    d = c["descriptor"]
    other = tmp_path / "other.npy"
    np.save(other, bits + 1)
    with pytest.raises(normcheck.Error, match="not the data the descriptor was made with"):
        normcheck.case(d, inputs={"x": str(other)})
    with pytest.raises(normcheck.Error, match="give it with --input x="):
        normcheck.case(d)


def test_backward_with_saved_statistics_passes():
    for d in ("layer_norm,pass=backward_training,shape=4x32", "layer_norm,pass=backward_training,shape=2x3x4x5,norm_dims=3"):
        r = normcheck.check_fn(layer_norm_backward, d)
        assert r.verdict == "PASS", r.message()
        assert {t.name for t in r.tensors} == {"dx", "dgamma", "dbeta"}


def test_batch_norm_running_statistics_in_place_over_steps():
    r = normcheck.check_fn(batch_norm_training, "batch_norm,shape=4x3x5x5,steps=3")
    assert r.verdict == "PASS", r.message()
    assert {"y", "mean", "variance", "running_mean", "running_var"} <= {t.name for t in r.tensors}

    def forgets_running(inp):
        return {"y": batch_norm_training(dict(inp, running_mean=inp["running_mean"].copy(),
                                              running_var=inp["running_var"].copy()))["y"]}

    r = normcheck.check_fn(forgets_running, "batch_norm,shape=4x3x5x5,steps=2")
    assert r.verdict == "FAIL" and "running_mean" in r.reason


def test_exception_in_the_function_propagates():
    def boom(inp):
        raise KeyError("no such thing")

    with pytest.raises(KeyError, match="no such thing"):
        normcheck.check_fn(boom, "layer_norm,shape=2x4")


def _torch():
    try:
        import torch
    except ImportError as e:
        pytest.skip(f"torch is not importable ({e}); Debian's python3-torch is optional")
    return torch


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_torch_layer_norm_via_dlpack(device, dtype):
    """torch.nn.functional.layer_norm in f32 passes; for bf16 data the tensors arrive as
    torch.bfloat16 and are normalized in f32 (x.float()), then rounded to bf16 by normcheck."""
    torch = _torch()
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")

    def fn(inp):
        x = inp["x"]
        assert isinstance(x, torch.Tensor) and x.device.type == device
        assert x.dtype == (torch.bfloat16 if dtype == "bf16" else torch.float32)
        return torch.nn.functional.layer_norm(x.float(), x.shape[-1:], inp["gamma"], inp["beta"], inp["eps"])

    r = normcheck.check_fn(fn, f"layer_norm,shape=8x64,dtype={dtype}", framework="torch", device=device)
    assert r.verdict in ("PASS", "WARN"), r.message()
    t = torch.tensor([[40000.0, 40001.0, 40002.0, 40003.0]])
    r = normcheck.check_fn(lambda inp: torch.nn.functional.layer_norm(inp["x"], (4,), inp["gamma"], inp["beta"], inp["eps"]),
                           "layer_norm,shape=1x4", inputs={"x": t.to(device)}, framework="torch", device=device)
    assert r.verdict == "PASS" and "data=file:" in r.descriptor, r.message()


def test_torch_1_13_bf16_layer_norm_is_caught_accumulating_in_16_bits():
    """Debian bookworm's torch 1.13 CPU layer_norm on bfloat16 input (gamma = 1, beta = 0, so
    no parameter rounding is involved) misses the f32-accumulation budget by ~100x, and the
    diagnosis names 16-bit sums. A witness that check_fn(framework="torch") reaches torch's own
    bf16 kernel; other torch versions may differ, so it runs on 1.13 only."""
    torch = _torch()
    if not torch.__version__.startswith("1.13"):
        pytest.skip(f"the finding is about torch 1.13; this is {torch.__version__}")
    n = 64

    def fn(inp):
        x = inp["x"]
        return torch.nn.functional.layer_norm(x, (n,), inp["gamma"].to(x.dtype), inp["beta"].to(x.dtype), inp["eps"])

    r = normcheck.check_fn(fn, f"layer_norm,shape=8x{n},dtype=bf16", framework="torch",
                           inputs={"gamma": np.ones(n, np.float32), "beta": np.zeros(n, np.float32)})
    assert r.verdict == "FAIL", r.message()
    assert "16 bits" in r.suspected_cause, r.message()
