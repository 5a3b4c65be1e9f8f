"""Multinomial logistic regression as scikit-learn's LogisticRegression(lbfgs) fits it, faster;
shared by linear-probe and fewshot-logistic.

Objective (scikit-learn's, multinomial, intercept fitted and not penalised), for n training rows
x_i with labels y_i and weights W [K, D], b [K]:

    f(W, b) = (1/n) sum_i CE(softmax(W x_i + b), y_i) + 1/(2 C n) ||W||^2

minimised by scipy's L-BFGS-B from zeros with scikit-learn's settings (gtol `tol` = 1e-4,
ftol 64 eps, maxls 50, maxiter `max_iter`). So the iterates, and with them the point where the
optimiser stops, are scikit-learn's: with float32 products the stopping iteration and the
predictions matched LogisticRegression's exactly on 10^3-10^4 x 768 data (benchmarks/probes.py).

Why not warm starts along the C path: f is strictly convex, so its minimiser does not depend on
the start, but gtol = 1e-4 on the mean loss is loose at large C (scikit-learn's own fits agree
with a tightly converged optimum on only 90-95% of validation clips at C >= 1). A warm start
stops at a different point of that loose region (93-96% agreement with scikit-learn measured),
which changes inner-CV scores and hence the chosen C. The speed comes instead from:

- **float32 products on one BLAS thread.** The two products per evaluation (X W^T and
  X^T (P - Y)) run in float32 (`dtype`); the softmax, the loss sum and the gradient handed to
  L-BFGS are float64. The caller limits BLAS to one thread (`one_blas_thread`, threadpoolctl):
  the products are small, and a multi-threaded BLAS spinning against a busy neighbour process
  is what made probes 10x slower under load.
- **the Cs of a path in lockstep.** With K classes each product is a skinny GEMM whose cost is
  mostly reading X; the fits of several Cs on the same rows each run their own L-BFGS (own
  thread, own iterates) while every round of evaluations shares one X [W_1..W_m]^T and one
  [R_1..R_m]^T X (`_minimize_all`). Measured at 5335 x 768, 10 classes, 5 Cs: 0.25 s instead
  of 0.46 s, identical iterations and predictions.
- **no estimator bookkeeping** (no cloning, parameter validation, or pipeline per fit), and
  independent fits run in parallel threads by the caller.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

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

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / scale formed in float64, rounded once to float32."""
        x = np.asarray(x)
        out = np.empty(x.shape, dtype=np.float32)
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


def _minimize_all(batch_f, n_fits: int, size: int, options: dict, wrap, lockstep: bool) -> list:
    """scipy L-BFGS-B from zeros for each of `n_fits` problems whose evaluations `batch_f`
    computes together; `wrap(i, fun)` -> (fun, callback) for fit i.

    lockstep=False: the fits run one after another, each evaluation alone. lockstep=True: each
    fit's `minimize` runs in its own thread and every evaluation request waits until each
    unfinished fit has made its next one; then one batched evaluation answers them all. Round r
    holds the r-th evaluation of every fit that has not stopped, so which fits share a product
    is fixed by the fits themselves, never by thread timing: the result is deterministic.
    """
    import queue
    import threading

    from scipy.optimize import minimize

    def solve(i: int, raw) -> object:
        fun, callback = wrap(i, raw)
        return minimize(fun, np.zeros(size), method="L-BFGS-B", jac=True, options=options,
                        callback=callback)

    if not lockstep or n_fits == 1:
        return [solve(i, lambda w, i=i: batch_f([i], [w])[0]) for i in range(n_fits)]

    requests: queue.SimpleQueue = queue.SimpleQueue()
    replies = [queue.SimpleQueue() for _ in range(n_fits)]
    results: list = [None] * n_fits

    def ask(i: int, w: np.ndarray):
        requests.put((i, w))
        answer = replies[i].get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def worker(i: int) -> None:
        try:
            results[i] = solve(i, lambda w: ask(i, w))
        except BaseException as exc:            # handed to the caller below
            results[i] = exc
        finally:
            requests.put((i, None))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_fits)]
    for t in threads:
        t.start()
    active = n_fits
    try:
        while active:
            pending: dict[int, np.ndarray] = {}
            while len(pending) < active:
                i, w = requests.get()
                if w is None:
                    active -= 1
                else:
                    pending[i] = w
            if not pending:
                break
            slots = sorted(pending)
            try:
                answers = batch_f(slots, [pending[i] for i in slots])
            except BaseException as exc:
                answers = [exc] * len(slots)
            for i, a in zip(slots, answers):
                replies[i].put(a)
    finally:
        for q in replies:                       # unblock any fit still waiting (interrupts)
            q.put(RuntimeError("batched logistic-regression fits aborted"))
        for t in threads:
            t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _full_gradient_stop(f, q: np.ndarray, n_classes: int, tol: float):
    """(f that remembers its last gradient, callback stopping when the gradient of the full
    problem, G_A Q^T and the intercept part, has inf-norm <= tol: scipy's gtol test)."""
    r_dim = q.shape[1]
    last: dict[str, np.ndarray] = {}

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        val, grad = f(w)
        last["w"], last["g"] = w.copy(), grad
        return val, grad

    d = q.shape[0]

    def callback(intermediate_result) -> None:
        w_now = intermediate_result.x
        g = last["g"] if np.array_equal(last.get("w"), w_now) else f(w_now)[1]
        gm = g.reshape(-1, r_dim + 1)
        # Rows of G_A Q^T have the 2-norms of the rows of G_A (Q orthonormal), and
        # |v|_2 / sqrt(d) <= |v|_inf <= |v|_2: the product is needed only in between.
        bias = np.abs(gm[:, r_dim]).max()
        rows = np.sqrt(np.einsum("kr,kr->k", gm[:, :r_dim], gm[:, :r_dim])).max()
        if bias > tol or rows > tol * np.sqrt(d):
            return
        if rows <= tol or np.abs(gm[:, :r_dim] @ q.T).max() <= tol:
            raise StopIteration

    return fun, callback


LOCKSTEP_MIN = 1 << 18         # training-matrix entries from which a path's fits run in lockstep


def fit_path(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], n_classes: int, *,
             max_iter: int = 1000, tol: float = TOL, dtype: type = np.float32,
             lockstep: bool | None = None) -> list[LogReg]:
    """One model per C (in the given order), each fitted from zeros (scikit-learn's start).

    `x` [n, D] (any float dtype; the products run in `dtype`), `y` [n] ints in 0..n_classes-1
    (classes absent from y get weights too; they are pushed down and practically never win).
    `lockstep` (default: when x has >= LOCKSTEP_MIN entries and there are several Cs) runs the
    fits side by side so that each evaluation's two products serve every C at once (see
    `_minimize_all`); each fit is still its own L-BFGS run from zeros, so it stops where it would
    alone (products of the same rows in the same dtype; measured: same iterations and
    predictions).
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
        # invariant, so it is done on the full gradient G_A Q^T in the callback instead.
        q = np.linalg.qr(np.asarray(x, dtype=np.float64).T)[0]               # [D, r]
        xr = np.ascontiguousarray(np.asarray(x, dtype=np.float64) @ q, dtype=dtype)
    else:
        q, xr = None, x32
    r_dim = xr.shape[1]
    cs = [float(c) for c in Cs]
    batch = _objective(xr, onehot, n_classes, [1.0 / (c * n) for c in cs])
    options = {"maxiter": max_iter, "maxls": 50, "gtol": 0.0 if reduce else tol,
               "ftol": 64 * np.finfo(float).eps}

    def wrap(i: int, fun):
        return _full_gradient_stop(fun, q, n_classes, tol) if reduce else (fun, None)

    if lockstep is None:
        lockstep = len(cs) > 1 and x32.size >= LOCKSTEP_MIN
    out = []
    for res in _minimize_all(batch, len(cs), n_classes * (r_dim + 1), options, wrap, lockstep):
        wm = res.x.reshape(n_classes, r_dim + 1)
        coef = wm[:, :r_dim] @ q.T if reduce else wm[:, :d].copy()
        out.append(LogReg(coef, wm[:, r_dim].copy(), int(res.nit), bool(res.nit < max_iter)))
    return out
