"""How alike two representations of the same examples are: centred linear CKA (Kornblith et al., 2019).

Pure numpy functions (see :mod:`vit_explain.analysis` for the conventions). A representation is a
feature matrix ``[n, d]``: one row per example (a token of a picture, say), one column per feature.
Two representations of the same ``n`` examples may have different widths (``d1``, ``d2``): CKA
compares which examples each one finds alike, not the features themselves, so it does not change
when either side is rotated (any orthogonal map of its features) or scaled as a whole.

* :func:`linear_cka`: the centred linear CKA of two feature matrices over all their rows;
* :func:`hsic`: the Hilbert-Schmidt independence criterion of two Gram matrices, biased (the
  centring form ``tr(K H L H) / (n - 1)^2``) or unbiased (Song et al., 2012);
* :class:`MinibatchCKA`: CKA between every layer of one model and every layer of another,
  accumulated one batch of examples at a time (Nguyen et al., 2021, the estimator Raghu et al.,
  2021 used to compare ViTs with CNNs): memory stays that of one batch, however many batches.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._common import _np


def _matrix(x: Any, what: str) -> np.ndarray:
    a = _np(x)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a feature matrix [n, d], got shape {a.shape}")
    return a


def linear_cka(x: Any, y: Any) -> float:
    """Centred linear CKA of two feature matrices over the same examples: a number in [0, 1].

    ``x`` ``[n, d1]`` and ``y`` ``[n, d2]``: row ``k`` of both describes the same example. Each
    column is centred, then ``CKA = ||yᵀx||²_F / (||xᵀx||_F ||yᵀy||_F)``, which equals
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for the Gram matrices ``K = x xᵀ`` and ``L = y yᵀ``.
    1: the two sides see the same similarity structure among the examples (up to a rotation and an
    overall scale); near 0: unrelated structure. NaN when either side is constant over the examples.
    Computed in the cheaper of the two forms (features when ``d1 * d2`` is below ``n * n``).
    """
    a, b = _matrix(x, "linear_cka"), _matrix(y, "linear_cka")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"linear_cka: the two sides describe {a.shape[0]} and {b.shape[0]} examples; "
                         "each row must be the same example on both sides")
    if a.shape[0] < 2:
        raise ValueError("linear_cka: at least two examples are needed")
    a = a - a.mean(axis=0, keepdims=True)
    b = b - b.mean(axis=0, keepdims=True)
    n = a.shape[0]
    if a.shape[1] * b.shape[1] <= n * n:
        cross = float(np.square(b.T @ a).sum())
        self_a = float(np.linalg.norm(a.T @ a))
        self_b = float(np.linalg.norm(b.T @ b))
    else:
        k, l = a @ a.T, b @ b.T
        cross = float((k * l).sum())
        self_a, self_b = float(np.linalg.norm(k)), float(np.linalg.norm(l))
    denominator = self_a * self_b
    return cross / denominator if denominator > 0 else float("nan")


def hsic(k: Any, l: Any, *, unbiased: bool = False) -> float:
    """HSIC of two ``[n, n]`` Gram matrices of the same examples.

    Biased (default): ``tr(K H L H) / (n - 1)²`` with the centring matrix ``H = I - 11ᵀ/n``
    (Gretton et al., 2005); the CKA built from it is :func:`linear_cka`. ``unbiased``: the estimator
    of Song et al. (2012), which needs ``n >= 4``: with the diagonals of ``K`` and ``L`` set to 0
    (``K~``, ``L~``), ``[tr(K~L~) + 1ᵀK~1 1ᵀL~1 / ((n-1)(n-2)) - 2/(n-2) 1ᵀK~L~1] / (n(n-3))``.
    Its expectation does not depend on ``n``, so sums over batches of any size estimate the same thing.
    """
    k, l = _np(k), _np(l)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(f"hsic: expected two [n, n] Gram matrices of the same n, got {k.shape} and {l.shape}")
    n = k.shape[0]
    if unbiased:
        if n < 4:
            raise ValueError("hsic: the unbiased estimator needs at least 4 examples")
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(l, 0.0)
        ones_k, ones_l = k.sum(axis=1), l.sum(axis=1)
        value = (k * l).sum() + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_k @ ones_l
        return float(value / (n * (n - 3)))
    h = np.eye(n) - 1.0 / n
    return float(np.trace(k @ h @ l @ h) / (n - 1) ** 2)


class MinibatchCKA:
    """Linear CKA between every layer of A and every layer of B, one batch of examples at a time.

    ``update(a, b)`` takes one batch: ``a`` a sequence of ``La`` feature matrices ``[n, d_a]`` (one
    per layer of A, all of one width), ``b`` of ``Lb`` matrices ``[n, d_b]``, row ``k`` the same
    example everywhere.
    Each batch adds its HSIC of every pair of Gram matrices to running sums; the CKA of a pair is
    ``sum HSIC(K, L) / sqrt(sum HSIC(K, K) sum HSIC(L, L))`` (Nguyen et al., 2021). ``unbiased``
    (default) uses Song et al.'s estimator per batch, which also removes the upward bias plain CKA
    has when the features outnumber the examples (a batch of 197 tokens of width 768); with it off
    and a single batch, each entry equals :func:`linear_cka` of the two layers.

    :meth:`cross` is ``[La, Lb]`` (A against B); :meth:`within_a` ``[La, La]`` and :meth:`within_b`
    ``[Lb, Lb]`` (each model against itself), from the same Gram matrices at no extra forward pass.
    """

    def __init__(self, layers_a: int, layers_b: int, *, unbiased: bool = True):
        self.unbiased = unbiased
        self.batches = 0
        self.examples = 0
        self._ab = np.zeros((layers_a, layers_b))
        self._aa = np.zeros((layers_a, layers_a))
        self._bb = np.zeros((layers_b, layers_b))

    def _grams(self, layers: Sequence[Any], n: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch's Gram matrices flattened [L, n*n] and, for the unbiased form, their row sums [L, n] and totals [L].

        One batched product for all the layers of a side (they share one width): a few large products cost
        far less than many small ones, above all where other programs keep the cores busy."""
        x = np.stack([_matrix(a, what) for a in layers])  # [L, n, d]
        if x.shape[1] != n:
            raise ValueError(f"MinibatchCKA: the layers of {what} have {x.shape[1]} examples, expected {n}")
        if not self.unbiased:
            x = x - x.mean(axis=1, keepdims=True)  # H K H: the Gram matrix of centred features
        k = np.matmul(x, x.transpose(0, 2, 1))  # [L, n, n]
        if self.unbiased:
            k[:, np.arange(n), np.arange(n)] = 0.0
        rows = k.sum(axis=2)
        return k.reshape(len(layers), n * n), rows, rows.sum(axis=1)

    def _hsic(self, g1, g2, n: int) -> np.ndarray:
        """HSIC of every pair of Gram matrices of two stacks: [L1, L2]."""
        (f1, r1, t1), (f2, r2, t2) = g1, g2
        if not self.unbiased:
            return (f1 @ f2.T) / (n - 1) ** 2
        value = f1 @ f2.T + np.outer(t1, t2) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (r1 @ r2.T)
        return value / (n * (n - 3))

    def update(self, a: Sequence[Any], b: Sequence[Any]) -> None:
        if len(a) != self._ab.shape[0] or len(b) != self._ab.shape[1]:
            raise ValueError(f"MinibatchCKA: expected {self._ab.shape[0]} layers of A and {self._ab.shape[1]} of B, "
                             f"got {len(a)} and {len(b)}")
        n = _np(a[0]).shape[0]
        if n < (4 if self.unbiased else 2):
            raise ValueError(f"MinibatchCKA: a batch of {n} examples is too small")
        ga, gb = self._grams(a, n, "A"), self._grams(b, n, "B")
        self._ab += self._hsic(ga, gb, n)
        self._aa += self._hsic(ga, ga, n)
        self._bb += self._hsic(gb, gb, n)
        self.batches += 1
        self.examples += n

    @staticmethod
    def _normalise(cross: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.sqrt(np.outer(np.clip(left, 0.0, None), np.clip(right, 0.0, None)))
            return np.where(scale > 0, cross / np.where(scale > 0, scale, 1.0), np.nan)

    def cross(self) -> np.ndarray:
        """CKA of layer i of A with layer j of B: ``[La, Lb]``."""
        return self._normalise(self._ab, np.diag(self._aa), np.diag(self._bb))

    def within_a(self) -> np.ndarray:
        """CKA of layer i of A with layer k of A: ``[La, La]`` (1 on the diagonal)."""
        return self._normalise(self._aa, np.diag(self._aa), np.diag(self._aa))

    def within_b(self) -> np.ndarray:
        """CKA of layer j of B with layer k of B: ``[Lb, Lb]`` (1 on the diagonal)."""
        return self._normalise(self._bb, np.diag(self._bb), np.diag(self._bb))
