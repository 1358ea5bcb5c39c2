"""Penalized linear models as pure functions: ridge regression and L2-penalized logistic regression.

Both take the design matrix as row chunks or one array and return (coef (P,), intercept); the intercept is
never penalized, as in scikit-learn:

ridge      min_{w,b} ||y - X w - b||^2 + alpha ||w||^2            (sklearn.linear_model.Ridge(alpha))
           solved from the centred normal equations (Xc'Xc + alpha I) w = Xc'yc, b = mean(y) - mean(X) w;
           Xc'Xc is accumulated over row chunks in float64, so the (n, P) design need never exist at once.
logistic   min_{w,b} sum_i logloss(y_i, sigmoid(x_i w + b)) + alpha / 2 ||w||^2
           (sklearn.linear_model.LogisticRegression(C = 1 / alpha)), by L-BFGS (scipy) with the exact
           gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy import linalg, optimize


def ridge_from_chunks(chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                      alpha: float) -> tuple[np.ndarray, float]:
    """Ridge coefficients from `chunks()`, an iterable of (X (b, P), y (b,)) row blocks (read twice)."""
    n, sx, sy = 0, None, 0.0
    for X, y in chunks():  # pass 1: the means (centring makes the intercept unpenalized)
        X64 = np.asarray(X, dtype=np.float64)
        sx = X64.sum(axis=0) if sx is None else sx + X64.sum(axis=0)
        sy += float(np.sum(y, dtype=np.float64))
        n += len(y)
    if sx is None or n == 0:
        raise ValueError("ridge needs at least one row")
    mx, my = sx / n, sy / n
    p = len(mx)
    gram, xty = np.zeros((p, p)), np.zeros(p)
    for X, y in chunks():  # pass 2: Xc'Xc and Xc'yc, (P, P) and (P,)
        Xc = np.asarray(X, dtype=np.float64) - mx
        gram += Xc.T @ Xc
        xty += Xc.T @ (np.asarray(y, dtype=np.float64) - my)
    gram[np.diag_indices_from(gram)] += alpha
    try:
        coef = linalg.solve(gram, xty, assume_a="pos")
    except (linalg.LinAlgError, ValueError):  # alpha = 0 with collinear columns: the least-squares solution
        coef = np.linalg.lstsq(gram, xty, rcond=None)[0]
    return coef, float(my - mx @ coef)


def ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge coefficients of one in-memory design X (n, P) and target y (n,)."""
    return ridge_from_chunks(lambda: [(X, y)], alpha)


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
