"""normcheck: judge a normalization kernel's outputs against a rounding-error budget.

The package calls normcheck's C++ core (the same descriptor parser, input generator, 128-bit
reference, error budget and diagnosis as the ``normcheck`` command). See docs/python.md.

Conventions used throughout:

* A *descriptor* is one case in normcheck's descriptor syntax (docs/descriptor.md), e.g.
  ``"layer_norm,shape=4096x1024,dtype=bf16"``.
* Arrays have the descriptor's *logical* shape: x, y, dy, dx are N x C x spatial... (for
  ``layout=nhwc`` the arrays normcheck hands out keep channels-last strides); gamma, beta, dgamma,
  dbeta have the affine shape (C, or normalized_shape for layer_norm/rms_norm); the statistics
  (mean, variance, inv_std; rms_norm: mean_square, inv_rms) have the set shape (batch_norm: (C,);
  instance_norm: (N, C); group_norm: (N, groups); layer_norm/rms_norm: the leading dims);
  running_mean and running_var (C,).
* dtypes: f32 -> float32, f64 -> float64, f16 -> float16. bf16 has no NumPy dtype: bf16 inputs are
  handed out as float32 arrays holding the bf16 values exactly; bf16 outputs may be returned as
  float32/float64 (rounded to nearest-even bf16 when stored, as a bf16 kernel stores them) or as
  uint16 arrays holding the bf16 bit pattern. Statistics, gamma/beta and their gradients are f64
  for f64 data and f32 otherwise.
* Your own tensors (``inputs=``): a dict from x, x0, x1, ..., dy, gamma, beta, running_mean,
  running_var to a ``.npy`` path, a NumPy array, or a torch tensor. Files must follow the dtype
  convention of docs/descriptor.md (bf16 as '<u2' bit patterns); arrays and tensors are written
  to ``.npy`` files named by their SHA-256 under $NORMCHECK_INPUT_DIR (default
  ~/.cache/normcheck/inputs), so the descriptor and the reproducer name exactly the data.

Errors: a malformed descriptor, a file of the wrong shape or dtype, or an output of the wrong
shape raise :class:`normcheck.Error` (a ValueError) with normcheck's one-line message.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
import json
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from . import _normcheck
from ._normcheck import Error

__all__ = ["Error", "Result", "TensorResult", "case", "check", "check_fn", "suite", "canonical",
           "__version__"]
__version__ = _normcheck.__version__


@dataclass
class TensorResult:
    """The comparison of one output tensor (one entry of the CLI's JSON ``tensors`` list).

    ``worst_ratio`` is max |got - expected| / budget over the elements (dimensionless; > 1 fails),
    ``worst_ratio_prob`` the same against the probabilistic budget (> 1 warns), ``max_ulp`` the
    largest error in units in the last place of the tensor's dtype, ``worst`` the worst element:
    ``{"index": logical row-major index, "coords": [n, c, ...], "got", "expected", "abs_err",
    "tolerance"}`` (values in the tensor's own units).
    """
    name: str
    passed: bool
    dtype: str
    shape: List[int]
    numel: int
    over_tolerance: int
    worst_ratio: Optional[float]
    worst_ratio_prob: Optional[float]
    max_abs_err: Optional[float]
    max_ulp: Optional[float]
    dominant_term: str
    worst: Optional[Dict[str, Any]]
    record: Dict[str, Any] = field(repr=False)


@dataclass
class Result:
    """One judged case: what the CLI reports for it (its JSON case record, docs/report-format.md).

    ``verdict`` is one of PASS, FAIL, WARN, NOT_CERTIFIABLE, UNSUPPORTED, ERROR; ``passed`` is true
    for PASS and WARN. ``reproducer`` is a line that reruns the case (a Python call naming the
    descriptor, with input files when the case has them); ``cli_reproducer`` the field of the JSON
    case record (its backend "python" is this package's callback, not a CLI backend: rerun the
    descriptor from Python, or with the CLI on a backend of your own). ``explanation`` is the CLI's per-tensor text for failing tensors.
    """
    descriptor: str
    verdict: str
    reason: str
    suspected_cause: str
    condition_number: Optional[float]
    weak_check: bool
    tensors: List[TensorResult]
    reproducer: str
    cli_reproducer: str
    explanation: str
    record: Dict[str, Any] = field(repr=False)

    @property
    def passed(self) -> bool:
        return self.verdict in ("PASS", "WARN")

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        """Multi-line text: verdict, descriptor, reason, per-tensor figures, suspected cause,
        reproducer (the failure message of the pytest plugin)."""
        lines = [f"{self.verdict} {self.descriptor}"]
        if self.reason:
            lines.append(f"  {self.reason}")
        for t in self.tensors:
            w = t.worst or {}
            lines.append(f"  {t.name}: {'pass' if t.passed else 'FAIL'}, {t.over_tolerance}/{t.numel} over "
                         f"tolerance, worst ratio {_fmt(t.worst_ratio)} (probabilistic {_fmt(t.worst_ratio_prob)}), "
                         f"max {_fmt(t.max_ulp)} ulp"
                         + (f", worst at {w.get('coords')}: got {_fmt(w.get('got'))}, expected "
                            f"{_fmt(w.get('expected'))}, budget {_fmt(w.get('tolerance'))}" if w else ""))
        if self.suspected_cause:
            lines.append(f"  suspected cause: {self.suspected_cause}")
        lines.append(f"  reproduce: {self.reproducer}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _input_dir() -> str:
    d = os.environ.get("NORMCHECK_INPUT_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "normcheck", "inputs")
    os.makedirs(d, exist_ok=True)
    return d


def _to_numpy_input(value: Any) -> np.ndarray:
    """A NumPy array from an array or a torch tensor; torch bf16 becomes its uint16 bit pattern."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        import torch  # only when the caller passed a tensor
        t = value.detach().to("cpu")
        if t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(np.uint16)
        return t.numpy()
    return np.asarray(value)


def _save_array(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    data = buf.getvalue()
    path = os.path.join(_input_dir(), hashlib.sha256(data).hexdigest() + ".npy")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def _files(inputs: Optional[Mapping[str, Any]]) -> Dict[str, List[str]]:
    """inputs -> {name: [paths]} for the C++ side; x may be a list (one per call)."""
    out: Dict[str, List[str]] = {}
    for name, value in (inputs or {}).items():
        values = list(value) if name == "x" and isinstance(value, (list, tuple)) else [value]
        for v in values:
            path = os.fspath(v) if isinstance(v, (str, os.PathLike)) else _save_array(_to_numpy_input(v))
            out.setdefault(name, []).append(path)
    return out


def canonical(descriptor: str) -> str:
    """The canonical form of a descriptor (docs/descriptor.md). Raises Error when malformed."""
    return _normcheck.canonical(descriptor)


def case(descriptor: str, inputs: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The inputs of a case, exactly as normcheck passes them to a backend.

    Returns a dict: ``x`` (the compared call's input, logical shape), ``x_steps`` (every call's x,
    in call order; only for batch_norm cases with several calls), and where the case has them
    ``dy``, ``gamma``, ``beta``, ``running_mean``, ``running_var`` (the initial running
    statistics), ``eps`` (float: the descriptor's eps rounded to the statistics dtype) and
    ``descriptor`` (canonical, with the digests of any ``inputs`` files). Saved statistics of
    backward_training cases are not included; :func:`check_fn` passes them to the function.
    Generated values are platform-independent (docs/descriptor.md). Raises Error.

    >>> c = case("layer_norm,shape=2x8")
    >>> c["x"].shape, c["x"].dtype, c["gamma"].shape
    ((2, 8), dtype('float32'), (8,))
    """
    return _normcheck.case_inputs(descriptor, _files(inputs))


def check_fn(fn: Callable[[Dict[str, Any]], Any], descriptor: str, inputs: Optional[Mapping[str, Any]] = None, *,
             framework: str = "numpy", device: str = "cpu", summation: str = "recursive", block: int = 0,
             rsqrt_error: float = 2.0, reference_bits: int = 128) -> Result:
    """Calls ``fn`` on the case's inputs (once per backend call) and judges what it returns.

    ``fn`` receives a dict: arrays ``x``, and where the pass has them ``gamma``, ``beta``, ``dy``,
    ``running_mean``, ``running_var`` and, for backward_training, the saved statistics ``mean``,
    ``variance``, ``inv_std`` (rms_norm: ``mean_square``, ``inv_rms``; exact values rounded to the
    statistics dtype); scalars ``op``, ``pass`` (e.g. "forward_training"), ``eps`` (already rounded
    to the statistics dtype), ``norm_dims``, ``groups``, ``batch_weight`` (batch_norm: the new
    batch's weight in the running update, PyTorch's momentum) and ``running_var_unbiased``.
    It returns a dict of outputs — forward: ``y`` and optionally ``mean``, ``variance``,
    ``inv_std``, ``running_mean``, ``running_var``; backward: ``dx``, ``dgamma``, ``dbeta`` — or
    one array (``y`` forward, ``dx`` backward). batch_norm running statistics may instead be
    updated in place in the arrays passed in (PyTorch's convention).

    framework="torch" passes torch tensors (via DLPack) on ``device`` ("cpu", or "cuda" when a
    device is present) instead of NumPy arrays; bf16 arrives as torch.bfloat16.
    summation/block/rsqrt_error declare the kernel's precision profile (docs/comparison.md):
    the budget is computed for recursive (default, the most permissive), pairwise, blocked (over
    ``block`` accumulators) or compensated sums, and an inverse square root accurate to
    ``rsqrt_error`` units of u.

    Returns a :class:`Result`. Raises Error for a malformed descriptor or an output of the wrong
    name or shape; an exception raised by ``fn`` propagates unchanged.
    """
    if framework not in ("numpy", "torch"):
        raise Error(f"framework={framework!r}: must be 'numpy' or 'torch'")
    call = _torch_adapter(fn, device) if framework == "torch" else fn
    files = _files(inputs)
    desc, text, explanation = _normcheck.run(call, descriptor, files, summation, block, rsqrt_error, reference_bits)
    return _result(json.loads(text), explanation, desc, files)


def check(descriptor: str, outputs: Mapping[str, Any], inputs: Optional[Mapping[str, Any]] = None, **kw: Any) -> Result:
    """Judges outputs a kernel already produced on the inputs :func:`case` returns.

    ``outputs`` is the dict :func:`check_fn`'s function would return (``y`` and optionally the
    saved statistics and updated running statistics for forward passes; ``dx``, ``dgamma``,
    ``dbeta`` for backward); arrays or torch tensors. For batch_norm with several training steps,
    give the running statistics after the last step. Keyword arguments as for check_fn.
    """
    outs = {k: _to_numpy_input(v) for k, v in outputs.items()}
    return check_fn(lambda _inputs: outs, descriptor, inputs, **kw)


def suite(name_or_path: str) -> List[tuple]:
    """The cases of a built-in suite (e.g. "smoke", "edge") or a suite file: [(descriptor, note)]."""
    return [tuple(c) for c in _normcheck.suite_cases(name_or_path)]


def _torch_adapter(fn: Callable, device: str) -> Callable:
    import torch  # raises ImportError when torch is missing, as asked for

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Error(f"device={device!r}: torch sees no CUDA device")
    def call(inp: Dict[str, Any]) -> Any:
        targs = {k: torch.from_dlpack(v).to(device) if isinstance(v, np.ndarray) else v for k, v in inp.items()}
        if inp["dtype"] == "bf16":  # handed over as exact float32; the kernel sees torch.bfloat16
            for k in ("x", "dy"):
                if k in targs:
                    targs[k] = targs[k].to(torch.bfloat16)
        ret = fn(targs)
        items = ret.items() if isinstance(ret, dict) else [("__single__", ret)]
        out = {}
        for k, t in items:
            if isinstance(t, torch.Tensor):
                t = t.detach().to("cpu")
                if t.dtype == torch.bfloat16:
                    t = t.float()
                t = np.from_dlpack(t.contiguous())
            out[k] = t
        for k in ("running_mean", "running_var"):  # in-place updates on the device
            if k in targs and k not in out and isinstance(targs[k], torch.Tensor) and k in inp:
                np.copyto(inp[k], targs[k].detach().to("cpu").numpy())
        return out.get("__single__") if "__single__" in out else out

    return call


def _result(record: Dict[str, Any], explanation: str, desc: str, files: Dict[str, List[str]]) -> Result:
    c = record["cases"][0]
    tensors = [TensorResult(name=t["name"], passed=t["pass"], dtype=t["dtype"], shape=t["shape"], numel=t["numel"],
                            over_tolerance=t["over_tolerance"], worst_ratio=t.get("worst_ratio"),
                            worst_ratio_prob=t.get("worst_ratio_prob"), max_abs_err=t.get("max_abs_err"),
                            max_ulp=t.get("max_ulp"), dominant_term=t.get("dominant_term", ""), worst=t.get("worst"),
                            record=t) for t in c["tensors"]]
    ins = ""
    if files:
        shown = {k: (v if len(v) > 1 else v[0]) for k, v in files.items()}
        ins = f", inputs={shown!r}"
    repro = f"normcheck.check_fn(fn, {c['descriptor']!r}{ins})"
    return Result(descriptor=c["descriptor"], verdict=c["verdict"], reason=c["reason"],
                  suspected_cause=c["suspected_cause"], condition_number=c.get("condition_number"),
                  weak_check=c["weak_check"], tensors=tensors, reproducer=repro,
                  cli_reproducer=c["reproducer"], explanation=explanation, record=c)
