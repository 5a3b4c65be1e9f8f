"""Multinomial logistic regression as scikit-learn's LogisticRegression(lbfgs) fits it, faster;
shared by linear-probe and fewshot-logistic.

Objective (scikit-learn's, multinomial, intercept fitted and not penalised), for n training rows
x_i with labels y_i and weights W [K, D], b [K]:

    f(W, b) = (1/n) sum_i CE(softmax(W x_i + b), y_i) + 1/(2 C n) ||W||^2

minimised by scipy's L-BFGS-B from zeros with scikit-learn's settings (gtol `tol` = 1e-4,
ftol 64 eps, maxcor 10, maxls 50, maxiter `max_iter`). So the iterates, and with them the point
where the optimiser stops, are scikit-learn's up to the rounding of the products.

That rounding matters more than it seems: gtol = 1e-4 on the mean loss is loose at large C, so
where it stops moves with the last bits of the products, and the validation accuracy of two Cs
often ties exactly, which GridSearchCV breaks by the 1-ulp rounding of the mean score. Measured
on demo logmel-stats embeddings (1440 x 256, 0.25-s clips): float64 products chose
GridSearchCV's C on every fold; float32 or shared products chose another C on one fold (an
exact tie), 99.2% identical test predictions. Hence `dtype` (float64 for small fits, where the
products are not the cost; float32 where they are) and `share_products` (off by default).

Why not warm starts along the C path: f is strictly convex, so its minimiser does not depend on
the start, but a warm start stops at a different point of the loose region (93-96% agreement
with scikit-learn measured at C >= 1), which changes inner-CV scores and hence the chosen C.
The speed comes instead from:

- **one BLAS thread.** The caller limits BLAS to one thread (`one_blas_thread`, threadpoolctl):
  the products are small, and a multi-threaded BLAS spinning against a busy neighbour process
  is what made probes 10x slower under load. With `dtype` float32 the two products per
  evaluation (X W^T and X^T (P - Y)) run in float32; the softmax, the loss sum and the
  gradient handed to L-BFGS are always float64.
- **the fits of a path side by side** (`_minimize_all`): one thread steps scipy's own L-BFGS-B
  routine for every C, without scipy.optimize.minimize's per-evaluation wrappers (bit for bit
  the same fits). With `share_products` every round of evaluations shares one X [W_1..W_m]^T
  and one [R_1..R_m]^T X: with K classes each product is a skinny GEMM whose cost is mostly
  reading X (5335 x 768, 10 classes, 5 Cs: 0.24 s instead of 0.48 s; same iterations).
- **no estimator bookkeeping** (no cloning, parameter validation, or pipeline per fit), and
  independent fits run in parallel threads by the caller.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

TOL = 1e-4
_ROWS = 256                    # rows per float64 block (stays in L2)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread inside the block (threadpoolctl).

    threadpoolctl limits the libraries loaded when the block is entered, so scipy.optimize is
    imported first: it loads scipy's own OpenBLAS (L-BFGS-B's vector operations), which
    otherwise kept its default threads and spun against the fits (measured: 4x slower fits).
    """
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@dataclass
class Standardiser:
    """Per-feature mean and standard deviation of the rows it was fitted on (StandardScaler's
    rule: population s.d., a constant feature gets scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        x = np.asarray(x)
        mean = x.mean(axis=0, dtype=np.float64)
        ss = np.zeros_like(mean)
        for lo in range(0, x.shape[0], _ROWS):          # two-pass variance, float64, in cache
            t = np.subtract(x[lo:lo + _ROWS], mean, dtype=np.float64)
            ss += np.einsum("ij,ij->j", t, t)
        sd = np.sqrt(ss / max(x.shape[0], 1))
        sd[sd < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
        return cls(mean, sd)

    def transform(self, x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """(x - mean) / scale formed in float64, rounded once to `dtype`."""
        x = np.asarray(x)
        out = np.empty(x.shape, dtype=dtype)
        for lo in range(0, x.shape[0], _ROWS):
            t = np.subtract(x[lo:lo + _ROWS], self.mean, dtype=np.float64)
            np.divide(t, self.scale, out=t)
            out[lo:lo + _ROWS] = t
        return out


@dataclass
class LogReg:
    """A fitted multinomial model: logits = x W^T + b over `n_classes` classes (rows 0..K-1)."""

    coef: np.ndarray            # [K, D] float64
    intercept: np.ndarray       # [K] float64
    n_iter: int
    converged: bool

    def decision(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef.T + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class with the largest logit (ties: the lowest class, as numpy's argmax)."""
        return np.argmax(self.decision(x), axis=1)


def _objective(x32: np.ndarray, onehot: np.ndarray, n_classes: int, l2s: Sequence[float]):
    """f(slots, ws) -> [(loss, gradient)] for the fits `slots` (indices into `l2s`) at their
    points `ws`, with ONE product X [W_1..W_m]^T and ONE product [R_1..R_m]^T X for all of them:
    with K = 10 classes a product is a skinny, memory-bound GEMM, and m fits sharing it read X
    once instead of m times (5 fits: 2.6x less product time measured at 5335 x 768)."""
    n, d = x32.shape
    dt = x32.dtype
    k = n_classes
    rows, y = np.arange(n), np.argmax(onehot, axis=1)
    onehot_t = np.ascontiguousarray(onehot.T)                             # [K, n]

    def f(slots: Sequence[int], ws: Sequence[np.ndarray]) -> list[tuple[float, np.ndarray]]:
        m = len(ws)
        wm = np.stack([w.reshape(k, d + 1) for w in ws])                  # [m, K, D+1]
        coef = wm[:, :, :d].reshape(m * k, d)
        # Softmax work in float64 on [m, K, n]: reductions over the classes then run along
        # contiguous rows (9x faster than over a last axis of length K).
        z = np.empty((m * k, n))
        z[...] = (x32 @ coef.T.astype(dt)).T
        z = z.reshape(m, k, n)
        z += wm[:, :, d, None]
        zmax = z.max(axis=1, keepdims=True)
        e = np.exp(z - zmax)
        s = e.sum(axis=1, keepdims=True)
        lse = np.log(s[:, 0]) + zmax[:, 0]                                # [m, n]
        e /= s
        e -= onehot_t                                                     # residuals [m, K, n]
        gw = (e.reshape(m * k, n).astype(dt) @ x32).astype(np.float64).reshape(m, k, d)
        gb = e.sum(axis=2) / n                                            # [m, K]
        data = (lse.sum(axis=1) - z[:, y, rows].sum(axis=1)) / n          # [m]
        out = []
        for j, slot in enumerate(slots):
            l2 = l2s[slot]
            w_j = wm[j, :, :d]
            g = np.empty((k, d + 1))
            g[:, :d] = gw[j] / n + l2 * w_j
            g[:, d] = gb[j]
            out.append((float(data[j]) + 0.5 * l2 * float(np.dot(w_j.ravel(), w_j.ravel())),
                        g.ravel()))
        return out

    return f


MAXCOR, MAXLS, MAXFUN = 10, 50, 15000       # scipy's L-BFGS-B defaults (scikit-learn's too)


def _setulb():
    """scipy's L-BFGS-B step (reverse communication, scipy >= 1.15's C version), or None.

    `_minimize_lbfgsb` is a loop around it; calling it directly lets one thread advance several
    fits side by side. tests/test_probes.py checks that this driver reproduces
    scipy.optimize.minimize bit for bit, so a change of the private interface cannot pass
    unnoticed; where the step is missing, `_minimize_all` uses `minimize` itself.
    """
    try:
        from scipy.optimize import _lbfgsb
    except ImportError:
        return None
    return getattr(_lbfgsb, "setulb", None)


class _Lbfgsb:
    """One L-BFGS-B run from zeros, stepped by `_minimize_all` (the state `_minimize_lbfgsb`
    keeps)."""

    def __init__(self, size: int, stop: Callable[[np.ndarray], bool] | None) -> None:
        m = MAXCOR
        self.x = np.zeros(size)
        self.f = np.array(0.0)
        self.g = np.zeros(size)
        self.wa = np.zeros(2 * m * size + 5 * size + 11 * m * m + 8 * m)
        self.iwa = np.zeros(3 * size, dtype=np.int32)
        self.task = np.zeros(2, dtype=np.int32)
        self.ln_task = np.zeros(2, dtype=np.int32)
        self.lsave = np.zeros(4, dtype=np.int32)
        self.isave = np.zeros(44, dtype=np.int32)
        self.dsave = np.zeros(29)
        self.nit = 0
        self.nfev = 0
        self.last: tuple[np.ndarray, float, np.ndarray] | None = None   # scipy's x-cache
        self.stop = stop

    def advance(self, setulb, bounds, options: dict) -> bool:
        """Step until the run asks for f and g at self.x (True) or has ended (False)."""
        low, up, nbd = bounds
        factr = options["ftol"] / np.finfo(float).eps
        while True:
            setulb(MAXCOR, self.x, low, up, nbd, self.f, self.g, factr, options["gtol"],
                   self.wa, self.iwa, self.task, self.lsave, self.isave, self.dsave,
                   options["maxls"], self.ln_task)
            if self.task[0] == 3:                                  # FG: evaluate at x
                if self.last is not None and np.array_equal(self.last[0], self.x):
                    self.f, self.g = self.last[1], self.last[2]    # ScalarFunction's cache
                    continue
                return True
            if self.task[0] != 1:                                  # converged / stopped
                return False
            self.nit += 1                                          # NEW_X
            if self.stop is not None and self.stop(self.g):
                self.task[:] = (5, 505)
            if self.nit >= options["maxiter"]:
                self.task[:] = (5, 504)
            elif self.nfev > MAXFUN:
                self.task[:] = (5, 502)

    def answer(self, f: float, g: np.ndarray) -> None:
        self.nfev += 1
        self.f, self.g = f, np.asarray(g, dtype=np.float64)
        self.last = (self.x.copy(), f, self.g)


def _minimize_all(batch_f, n_fits: int, size: int, options: dict,
                  stops: Sequence[Callable[[np.ndarray], bool] | None], share: bool
                  ) -> list[tuple[np.ndarray, int]]:
    """L-BFGS-B from zeros, scipy's algorithm and settings, for each of `n_fits` problems whose
    evaluations `batch_f(slots, points)` computes together; returns (x, iterations) per fit.
    `stops[i](g)`, where given, ends fit i at a new iterate whose gradient passes it (scipy's
    callback StopIteration).

    The fits advance side by side in this thread, stepping scipy's L-BFGS-B routine without
    scipy's per-evaluation wrappers (where this scipy lacks it: scipy.optimize.minimize, one
    fit after another). With `share`, each round answers every fit that asked for an
    evaluation with one batched evaluation (round r holds the r-th evaluation of each fit that
    has not stopped, so which fits share a product is fixed by the fits themselves); without,
    each fit's evaluation is its own, and every fit is bit for bit scipy.optimize.minimize's.
    """
    setulb = _setulb()
    if setulb is None:
        return [_minimize_public(batch_f, i, size, options, stops[i]) for i in range(n_fits)]
    bounds = (np.zeros(size), np.zeros(size), np.zeros(size, dtype=np.int32))
    runs = [_Lbfgsb(size, stops[i]) for i in range(n_fits)]
    waiting = [i for i, r in enumerate(runs) if r.advance(setulb, bounds, options)]
    while waiting:
        points = [runs[i].x for i in waiting]
        answers = (batch_f(waiting, points) if share else
                   [batch_f([i], [x])[0] for i, x in zip(waiting, points)])
        for i, (f, g) in zip(waiting, answers):
            runs[i].answer(f, g)
        waiting = [i for i in waiting if runs[i].advance(setulb, bounds, options)]
    return [(r.x, r.nit) for r in runs]


def _minimize_public(batch_f, i: int, size: int, options: dict,
                     stop: Callable[[np.ndarray], bool] | None) -> tuple[np.ndarray, int]:
    """Fit i alone through scipy.optimize.minimize (the reference the lockstep driver
    reproduces)."""
    from scipy.optimize import minimize

    last: dict[str, np.ndarray] = {}

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        val, grad = batch_f([i], [w])[0]
        last["w"], last["g"] = w.copy(), grad
        return val, grad

    def callback(intermediate_result) -> None:
        w_now = intermediate_result.x
        g = last["g"] if np.array_equal(last.get("w"), w_now) else fun(w_now)[1]
        if stop(g):
            raise StopIteration

    res = minimize(fun, np.zeros(size), method="L-BFGS-B", jac=True,
                   options={**options, "maxcor": MAXCOR, "maxfun": MAXFUN},
                   callback=None if stop is None else callback)
    return res.x, int(res.nit)


def _full_gradient_stop(q: np.ndarray, tol: float) -> Callable[[np.ndarray], bool]:
    """stop(g_A): whether the gradient of the full problem, G_A Q^T and the intercept part, has
    inf-norm <= tol (scipy's gtol test, which is not rotation invariant)."""
    d, r_dim = q.shape

    def stop(g: np.ndarray) -> bool:
        gm = g.reshape(-1, r_dim + 1)
        # Rows of G_A Q^T have the 2-norms of the rows of G_A (Q orthonormal), and
        # |v|_2 / sqrt(d) <= |v|_inf <= |v|_2: the product is needed only in between.
        bias = np.abs(gm[:, r_dim]).max()
        rows = np.sqrt(np.einsum("kr,kr->k", gm[:, :r_dim], gm[:, :r_dim])).max()
        if bias > tol or rows > tol * np.sqrt(d):
            return False
        return bool(rows <= tol or np.abs(gm[:, :r_dim] @ q.T).max() <= tol)

    return stop


def fit_path(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], n_classes: int, *,
             max_iter: int = 1000, tol: float = TOL, dtype: type = np.float32,
             share_products: bool = False) -> list[LogReg]:
    """One model per C (in the given order), each fitted from zeros (scikit-learn's start).

    `x` [n, D] (any float dtype; the products run in `dtype`), `y` [n] ints in 0..n_classes-1
    (classes absent from y get weights too; they are pushed down and practically never win).
    The fits advance side by side (`_minimize_all`), each its own L-BFGS run from zeros, bit
    for bit scipy.optimize.minimize's. `share_products` makes each evaluation's two products
    serve every C at once: on large x (GEMM-bound) about 2x faster for 5 Cs, and only the
    rounding of the shared products differs from fitting each C alone.
    """
    x32 = np.ascontiguousarray(x, dtype=dtype)
    y = np.asarray(y, dtype=np.int64)
    n, d = x32.shape
    onehot = np.zeros((n, n_classes), dtype=np.float64)
    onehot[np.arange(n), y] = 1.0
    reduce = n + 1 < d
    if reduce:
        # Rows span at most n dimensions, and every L-BFGS iterate from zeros stays in that span
        # (gradients are R^T X + lambda W). With an orthonormal basis Q [D, r] of the span,
        # W = A Q^T and X W^T = (X Q) A^T, ||W|| = ||A||: L-BFGS (rotation-equivariant without
        # bounds) takes the same steps in A. Only scipy's gtol test (inf-norm) is not rotation
        # invariant, so it is done on the full gradient G_A Q^T instead (`_full_gradient_stop`).
        q = np.linalg.qr(np.asarray(x, dtype=np.float64).T)[0]               # [D, r]
        xr = np.ascontiguousarray(np.asarray(x, dtype=np.float64) @ q, dtype=dtype)
    else:
        q, xr = None, x32
    r_dim = xr.shape[1]
    cs = [float(c) for c in Cs]
    batch = _objective(xr, onehot, n_classes, [1.0 / (c * n) for c in cs])
    options = {"maxiter": max_iter, "maxls": MAXLS, "gtol": 0.0 if reduce else tol,
               "ftol": 64 * np.finfo(float).eps}
    stops = [_full_gradient_stop(q, tol) if reduce else None for _ in cs]
    out = []
    for w, nit in _minimize_all(batch, len(cs), n_classes * (r_dim + 1), options, stops,
                                share_products):
        wm = w.reshape(n_classes, r_dim + 1)
        coef = wm[:, :r_dim] @ q.T if reduce else wm[:, :d].copy()
        out.append(LogReg(coef, wm[:, r_dim].copy(), nit, nit < max_iter))
    return out
