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
- **no estimator bookkeeping** (no cloning, parameter validation, or pipeline per fit), and
  independent fits run in parallel threads by the caller.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

TOL = 1e-4


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread inside the block (threadpoolctl)."""
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
        x64 = np.asarray(x, dtype=np.float64)
        mean = x64.mean(axis=0)
        sd = x64.std(axis=0)
        sd[sd < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
        return cls(mean, sd)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale).astype(np.float32)


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


def _objective(x32: np.ndarray, onehot: np.ndarray, n_classes: int, l2: float):
    n, d = x32.shape
    dt = x32.dtype

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        wm = w.reshape(n_classes, d + 1)
        z = (x32 @ wm[:, :d].T.astype(dt)).astype(np.float64)
        z += wm[:, d]
        zmax = z.max(axis=1, keepdims=True)
        e = np.exp(z - zmax)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.sum(np.log(s) + zmax) - np.sum(z * onehot)) / n
        loss += 0.5 * l2 * float(np.dot(wm[:, :d].ravel(), wm[:, :d].ravel()))
        r = e / s - onehot                                             # [n, K]
        g = np.empty_like(wm)
        g[:, :d] = (r.astype(dt).T @ x32).astype(np.float64) / n + l2 * wm[:, :d]
        g[:, d] = r.sum(axis=0) / n
        return loss, g.ravel()

    return f


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


def fit_path(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], n_classes: int, *,
             max_iter: int = 1000, tol: float = TOL,
             dtype: type = np.float32) -> list[LogReg]:
    """One model per C (in the given order), each fitted from zeros (scikit-learn's start).


    `x` [n, D] (any float dtype; the products run in `dtype`), `y` [n] ints in 0..n_classes-1 (classes
    absent from y get weights too; they are pushed down and practically never win).
    """
    from scipy.optimize import minimize

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
    out = []
    options = {"maxiter": max_iter, "maxls": 50, "gtol": 0.0 if reduce else tol,
               "ftol": 64 * np.finfo(float).eps}
    for c in Cs:
        fun = _objective(xr, onehot, n_classes, 1.0 / (float(c) * n))
        callback = None
        if reduce:
            fun, callback = _full_gradient_stop(fun, q, n_classes, tol)
        res = minimize(fun, np.zeros(n_classes * (r_dim + 1)), method="L-BFGS-B", jac=True,
                       options=options, callback=callback)
        wm = res.x.reshape(n_classes, r_dim + 1)
        coef = wm[:, :r_dim] @ q.T if reduce else wm[:, :d].copy()
        out.append(LogReg(coef, wm[:, r_dim].copy(), int(res.nit), bool(res.nit < max_iter)))
    return out
