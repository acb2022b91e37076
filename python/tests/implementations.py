"""Plain NumPy reference implementations used by the tests and the docs/python.md example.

Shapes: x (N, ..., normalized dims); gamma, beta: the normalized dims (inp["norm_dims"] trailing
dims). Computed in float64 and returned in x's dtype (normcheck rounds bf16 when storing).
"""
import numpy as np


def _axes(inp):
    x = inp["x"]
    return tuple(range(x.ndim - inp["norm_dims"], x.ndim))


def layer_norm(inp):
    """y = (x − mean)/sqrt(var + eps)·gamma + beta (Ba et al. 2016, eq. 4), biased variance."""
    x = inp["x"].astype(np.float64)
    ax = _axes(inp)
    mean = x.mean(axis=ax, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
    y = (x - mean) / np.sqrt(var + inp["eps"])
    if "gamma" in inp:
        y = y * inp["gamma"] + inp.get("beta", 0.0)
    return {"y": y.astype(inp["x"].dtype)}


def layer_norm_unbiased(inp):
    """A deliberate bug: the unbiased variance (ddof = 1) in place of the biased one."""
    x = inp["x"].astype(np.float64)
    ax = _axes(inp)
    mean = x.mean(axis=ax, keepdims=True)
    var = x.var(axis=ax, keepdims=True, ddof=1)
    y = (x - mean) / np.sqrt(var + inp["eps"])
    if "gamma" in inp:
        y = y * inp["gamma"] + inp.get("beta", 0.0)
    return {"y": y.astype(inp["x"].dtype)}


def layer_norm_backward(inp):
    """dx, dgamma, dbeta of layer_norm from the saved mean and inv_std (x̂ = (x − mean)·inv_std):
    dx = inv_std·(g − mean(g) − x̂·mean(g·x̂)), g = dy·gamma."""
    x, dy = inp["x"].astype(np.float64), inp["dy"].astype(np.float64)
    ax = _axes(inp)
    lead = x.shape[: x.ndim - inp["norm_dims"]]
    shape = lead + (1,) * inp["norm_dims"]
    mean = inp["mean"].astype(np.float64).reshape(shape)
    rstd = inp["inv_std"].astype(np.float64).reshape(shape)
    xhat = (x - mean) * rstd
    g = dy * inp["gamma"] if "gamma" in inp else dy
    dx = rstd * (g - g.mean(axis=ax, keepdims=True) - xhat * (g * xhat).mean(axis=ax, keepdims=True))
    out = {"dx": dx.astype(inp["x"].dtype)}
    lead_axes = tuple(range(x.ndim - inp["norm_dims"]))
    if "gamma" in inp:
        out["dgamma"] = (dy * xhat).sum(axis=lead_axes).astype(inp["gamma"].dtype)
        out["dbeta"] = dy.sum(axis=lead_axes).astype(inp["gamma"].dtype)
    return out


def batch_norm_training(inp):
    """BatchNorm forward training over (N, spatial) per channel; updates running_mean and
    running_var in place, PyTorch-style (new weight inp["batch_weight"], unbiased running_var)."""
    x = inp["x"].astype(np.float64)
    ax = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=ax)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=ax)
    m = x.size // x.shape[1]
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + inp["eps"])
    if "gamma" in inp:
        y = y * inp["gamma"].reshape(shape) + inp["beta"].reshape(shape)
    w = inp["batch_weight"]
    unbiased = var * m / (m - 1) if inp["running_var_unbiased"] and m > 1 else var
    inp["running_mean"][...] = (1 - w) * inp["running_mean"] + w * mean
    inp["running_var"][...] = (1 - w) * inp["running_var"] + w * unbiased
    return {"y": y.astype(inp["x"].dtype), "mean": mean, "variance": var}
