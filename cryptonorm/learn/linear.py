"""Penalized linear models as pure functions: ridge regression and L2-penalized logistic regression.

Both take the design matrix as row chunks or one array and return (coef (P,), intercept); the intercept is
never penalized, as in scikit-learn:

ridge      min_{w,b} ||y - X w - b||^2 + alpha ||w||^2            (sklearn.linear_model.Ridge(alpha))
           solved from the centred normal equations (Xc'Xc + alpha I) w = Xc'yc, b = mean(y) - mean(X) w,
           in float64. The products are taken of Z = X - shift (a rough column mean), so that centring
           afterwards, Xc'Xc = Z'Z - n (m - shift)(m - shift)', cancels nothing large. For the lagged design
           of the tabular models, `lagged_normal` forms Z'Z from (F, F) products per lag distance without
           ever building the (n, L x F) design.
logistic   min_{w,b} sum_i logloss(y_i, sigmoid(x_i w + b)) + alpha / 2 ||w||^2
           (sklearn.linear_model.LogisticRegression(C = 1 / alpha)), by L-BFGS (scipy) with the exact
           gradient.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize

CHUNK_ROWS = 8192  # design rows formed at once where the design itself is needed


def solve_normal(gram: np.ndarray, xty: np.ndarray, dz: np.ndarray, my: float, n: int, shift: np.ndarray,
                 alpha: float) -> tuple[np.ndarray, float]:
    """Ridge (coef, intercept) from Z'Z (P, P), Z'y (P,), dz = mean(Z) (P,), mean(y), n, Z = X - shift."""
    gram = gram - n * np.outer(dz, dz)  # Xc'Xc
    xty = xty - n * dz * my  # Xc'yc (Z'y - n dz my)
    mx = dz + shift
    gram[np.diag_indices_from(gram)] += alpha
    try:
        coef = linalg.solve(gram, xty, assume_a="pos")
    except (linalg.LinAlgError, ValueError):  # alpha = 0 with collinear columns: the least-squares solution
        coef = np.linalg.lstsq(gram, xty, rcond=None)[0]
    return coef, float(my - mx @ coef)


def lagged_normal(X: np.ndarray, rows: np.ndarray, y: np.ndarray, lags: int,
                  shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """(Z'Z (P, P), Z'y (P,), mean(Z) (P,), mean(y), n) of the lagged design without building it.

    Z's row for END row t is (X[t-L+1] .. X[t]) - shift, P = L x F, oldest bar first (learn/tabular.design);
    y (n,) the targets of `rows`. The block of lags (a, b), b = a + d, is sum over t in rows of
    X[t-a]'X[t-b]: over the contiguous span of rows that is one (F, F) product per lag distance d, shared by
    every a, minus the few bars at the span's ends and at the rows missing inside it. L x 2 n F^2 flops
    instead of n (L F)^2. With many missing rows (more than a quarter of the span) the plain chunked
    products are used instead."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0 or rows[0] < lags - 1 or np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be ascending END rows of complete windows")
    Xs = np.asarray(X, dtype=np.float64) - shift  # (N, F) shifted once
    f, n = Xs.shape[1], len(rows)
    r0, r1 = int(rows[0]), int(rows[-1])
    present = np.zeros(r1 - r0 + 1, dtype=bool)
    present[rows - r0] = True
    holes = np.flatnonzero(~present) + r0  # END rows inside the span that are not samples
    yv = np.asarray(y, dtype=np.float64)
    if len(holes) > (r1 - r0 + 1) // 4:  # scattered rows: the products of the design itself, by chunks
        p = lags * f
        gram, xty, sz = np.zeros((p, p)), np.zeros(p), np.zeros(p)
        for a in range(0, n, CHUNK_ROWS):
            Z = Xs[rows[a:a + CHUNK_ROWS, None] + np.arange(-lags + 1, 1)].reshape(-1, p)  # (b, P)
            gram += Z.T @ Z
            xty += Z.T @ yv[a:a + CHUNK_ROWS]
            sz += Z.sum(axis=0)
        return gram, xty, sz / n, float(yv.mean()), n
    blocks = np.empty((lags, lags, f, f))  # [a, b] = sum_t X[t-a]' X[t-b], a, b lags
    for d in range(lags):
        lo = r0 - (lags - 1 - d)  # the span of s = t - a over every a that pairs with a + d
        full = Xs[lo:r1 + 1].T @ Xs[lo - d:r1 + 1 - d]  # (F, F)
        for a in range(lags - d):
            b = a + d
            head = np.arange(lo, r0 - a)  # s before this a's span
            tail = np.arange(r1 - a + 1, r1 + 1)  # s after it
            out = np.concatenate([head, tail, holes - a])
            g = full - Xs[out].T @ Xs[out - d] if len(out) else full.copy()
            blocks[a, b] = g
            blocks[b, a] = g.T
    order = np.arange(lags - 1, -1, -1)  # design block j holds lag L-1-j
    gram = blocks[np.ix_(order, order)].transpose(0, 2, 1, 3).reshape(lags * f, lags * f)
    xty, sz = np.empty(lags * f), np.empty(lags * f)
    for j in range(lags):
        Xa = Xs[rows - (lags - 1 - j)]  # (n, F): design block j holds lag L-1-j
        xty[j * f:(j + 1) * f] = Xa.T @ yv
        sz[j * f:(j + 1) * f] = Xa.sum(axis=0)
    return gram, xty, sz / n, float(yv.mean()), n


def ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge coefficients of one in-memory design X (n, P) and target y (n,)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    shift = X.mean(axis=0)
    Z = X - shift
    return solve_normal(Z.T @ Z, Z.T @ y, Z.mean(axis=0), float(y.mean()), len(y), shift, alpha)


def logistic(X: np.ndarray, y: np.ndarray, alpha: float, max_iter: int = 500) -> tuple[np.ndarray, float]:
    """L2-penalized logistic regression of 0/1 labels y (n,) on X (n, P); (coef (P,), intercept)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    p = X.shape[1]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:p], theta[p]
        z = X @ w + b  # (n,)
        # log(1 + e^z) - y z, stable for large |z|
        loss = float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * alpha * (w @ w))
        r = 1.0 / (1.0 + np.exp(-z)) - y  # (n,) d loss / d z
        return loss, np.concatenate([X.T @ r + alpha * w, [r.sum()]])

    res = optimize.minimize(loss_grad, np.zeros(p + 1), jac=True, method="L-BFGS-B",
                            options={"maxiter": max_iter, "gtol": 1e-10, "ftol": 1e-15})
    return res.x[:p].copy(), float(res.x[p])


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z), elementwise."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64))), dtype=np.float64)
