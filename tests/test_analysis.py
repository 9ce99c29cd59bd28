"""Tests for vit_explain.analysis on cases whose answers are known without the code under test."""

import itertools
import math

import numpy as np
import pytest
import torch

from vit_explain import analysis as an

RNG = np.random.default_rng(0)


def random_attention(shape, rng=RNG, temperature=1.0):
    """Softmax rows of random scores: a valid attention tensor of any shape [..., T, T]."""
    z = rng.normal(size=shape) / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def uniform_attention(heads, T):
    return np.full((heads, T, T), 1.0 / T)


def shift_right_attention(grid, heads=1):
    """Each patch attends to its right-hand neighbour, or to itself in the last column; CLS to CLS."""
    N = grid * grid
    T = N + 1
    a = np.zeros((heads, T, T))
    a[:, 0, 0] = 1.0
    for r, c in itertools.product(range(grid), range(grid)):
        q = 1 + r * grid + c
        k = q + 1 if c < grid - 1 else q
        a[:, q, k] = 1.0
    return a


# ----------------------------------------------------------------------------------------------
# rollout
# ----------------------------------------------------------------------------------------------


class TestAttentionRollout:
    def test_identity_attention_gives_identity(self):
        T = 5
        layers = [np.broadcast_to(np.eye(T), (3, T, T)) for _ in range(4)]
        for fusion in an.HEAD_FUSIONS:
            for residual in (True, False):
                r = an.attention_rollout(layers, head_fusion=fusion, residual=residual)
                np.testing.assert_allclose(r, np.eye(T), atol=1e-12)

    @pytest.mark.parametrize("fusion", an.HEAD_FUSIONS)
    @pytest.mark.parametrize("ratio", [0.0, 0.3, 0.9, 1.0])
    @pytest.mark.parametrize("residual", [True, False])
    def test_rows_sum_to_one(self, fusion, ratio, residual):
        layers = [random_attention((4, 10, 10)) for _ in range(6)]
        r = an.attention_rollout(layers, head_fusion=fusion, discard_ratio=ratio, residual=residual)
        assert r.shape == (10, 10)
        assert (r >= 0).all()
        np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-10)

    def test_hand_computed_three_tokens_two_layers(self):
        # Layer 1: two heads whose mean is A1 = [[1,0,0],[.5,.5,0],[0,.5,.5]].
        h1 = np.eye(3)
        h2 = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], float)
        # Layer 2: a cyclic permutation in both heads.
        p = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)
        layers = [np.stack([h1, h2]), np.stack([p, p])]
        # With the residual: A1' = [[1,0,0],[.25,.75,0],[0,.25,.75]],
        # A2' = [[.5,.5,0],[0,.5,.5],[.5,0,.5]], and R = A2' @ A1' worked out by hand:
        expected = np.array(
            [
                [0.625, 0.375, 0.0],
                [0.125, 0.5, 0.375],
                [0.5, 0.125, 0.375],
            ]
        )
        np.testing.assert_allclose(an.attention_rollout(layers), expected, atol=1e-12)
        # Without the residual: R = A2 @ A1 = rows of A1 permuted: [A1[1], A1[2], A1[0]].
        expected_plain = np.array([[0.5, 0.5, 0], [0, 0.5, 0.5], [1, 0, 0]])
        np.testing.assert_allclose(
            an.attention_rollout(layers, residual=False), expected_plain, atol=1e-12
        )

    def test_layer_order_matters(self):
        a = random_attention((2, 6, 6))
        b = random_attention((2, 6, 6))
        ab = an.attention_rollout([a, b])
        ba = an.attention_rollout([b, a])
        assert not np.allclose(ab, ba)
        fa = 0.5 * a.mean(0) + 0.5 * np.eye(6)
        fb = 0.5 * b.mean(0) + 0.5 * np.eye(6)
        np.testing.assert_allclose(ab, fb @ fa, atol=1e-12)

    def test_row_normalisation_not_column(self):
        # Max fusion of two heads gives rows summing to more than 1 and to different amounts,
        # so dividing by row sums and by a broadcast (column-wise) sum give different answers.
        h1 = np.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.6], [0.5, 0.5, 0.0]])
        h2 = np.array([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.0, 0.0, 1.0]])
        fused = np.maximum(h1, h2)  # [[.9,.1,.8],[.6,.2,.6],[.5,.5,1]]
        a = 0.5 * fused + 0.5 * np.eye(3)
        right = a / a.sum(-1, keepdims=True)
        wrong = a / a.sum(-1)  # the keepdims bug: column j divided by row j's sum
        assert not np.allclose(right, wrong)
        got = an.attention_rollout([np.stack([h1, h2])], head_fusion="max")
        np.testing.assert_allclose(got, right, atol=1e-12)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)
        # Row 0 by hand: a[0] = [.95, .05, .4], sum 1.4.
        np.testing.assert_allclose(got[0], np.array([0.95, 0.05, 0.4]) / 1.4, atol=1e-12)

    def test_min_fusion(self):
        h1 = random_attention((5, 5))
        h2 = random_attention((5, 5))
        a = 0.5 * np.minimum(h1, h2) + 0.5 * np.eye(5)
        got = an.attention_rollout([np.stack([h1, h2])], head_fusion="min")
        np.testing.assert_allclose(got, a / a.sum(-1, keepdims=True), atol=1e-12)

    def test_discard_hand_computed(self):
        A = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.35, 0.4]])
        # Off-diagonal entries: .3 .2 .1 .3 .25 .35; a ratio of 0.5 drops the three smallest
        # (.1, .2, .25), leaving [[.5,.3,0],[0,.6,.3],[0,.35,.4]].
        kept = np.array([[0.5, 0.3, 0], [0, 0.6, 0.3], [0, 0.35, 0.4]])
        a = 0.5 * kept + 0.5 * np.eye(3)
        expected = a / a.sum(-1, keepdims=True)
        got = an.attention_rollout([A[None]], discard_ratio=0.5)
        np.testing.assert_allclose(got, expected, atol=1e-12)
        plain = an.attention_rollout([A[None]], discard_ratio=0.5, residual=False)
        np.testing.assert_allclose(plain, kept / kept.sum(-1, keepdims=True), atol=1e-12)

    def test_discard_everything_without_residual_keeps_rows_valid(self):
        # All weight off the diagonal, everything off-diagonal discarded: rows become identity.
        A = np.array([[[0.0, 1.0], [1.0, 0.0]]])
        got = an.attention_rollout([A], discard_ratio=1.0, residual=False)
        np.testing.assert_allclose(got, np.eye(2))

    def test_batched_matches_single(self):
        layers = [random_attention((3, 2, 7, 7)) for _ in range(3)]
        batched = an.attention_rollout(layers, head_fusion="max", discard_ratio=0.4)
        assert batched.shape == (3, 7, 7)
        for b in range(3):
            single = an.attention_rollout(
                [l[b] for l in layers], head_fusion="max", discard_ratio=0.4
            )
            np.testing.assert_allclose(batched[b], single, atol=1e-12)

    def test_accepts_torch_and_stacked(self):
        layers = [random_attention((2, 5, 5)) for _ in range(3)]
        ref = an.attention_rollout(layers)
        got = an.attention_rollout([torch.tensor(l, dtype=torch.float32) for l in layers])
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, ref, atol=1e-6)
        np.testing.assert_allclose(an.attention_rollout(np.stack(layers)), ref)

    def test_bad_arguments(self):
        layers = [random_attention((2, 5, 5))]
        with pytest.raises(ValueError):
            an.attention_rollout(layers, head_fusion="median")
        with pytest.raises(ValueError):
            an.attention_rollout(layers, discard_ratio=1.5)
        with pytest.raises(ValueError):
            an.attention_rollout([])


def test_cls_rollout_map():
    g = 3
    T = g * g + 1
    r = np.zeros((T, T))
    r[0, 0] = 0.5
    r[0, 1:] = np.arange(1, g * g + 1)  # patch weights 1..9
    m = an.cls_rollout_map(r)
    assert m.shape == (g, g)
    np.testing.assert_allclose(m.sum(), 1.0)
    np.testing.assert_allclose(m, np.arange(1, 10).reshape(3, 3) / 45.0)
    # Row-major layout: patch (0, 2) is token 3, patch (2, 0) is token 7.
    assert m[0, 2] == pytest.approx(3 / 45) and m[2, 0] == pytest.approx(7 / 45)
    batched = an.cls_rollout_map(np.stack([r, r]))
    assert batched.shape == (2, g, g)
    with pytest.raises(ValueError):
        an.cls_rollout_map(np.zeros((9, 9)))  # 8 patches is not a square


# ----------------------------------------------------------------------------------------------
# mean attention distance
# ----------------------------------------------------------------------------------------------


class TestAttentionDistance:
    @pytest.mark.parametrize("grid", [2, 3, 5])
    def test_uniform_equals_brute_force_mean_pairwise_distance(self, grid):
        patch = 16
        cells = list(itertools.product(range(grid), range(grid)))
        total = 0.0
        for (r1, c1), (r2, c2) in itertools.product(cells, cells):
            total += math.hypot(r1 - r2, c1 - c2) * patch
        expected = total / len(cells) ** 2
        got = an.mean_attention_distance(uniform_attention(3, grid * grid + 1), grid, patch)
        assert got.shape == (3,)
        np.testing.assert_allclose(got, expected, rtol=1e-12)

    def test_attention_to_self_is_zero(self):
        grid = 4
        a = np.broadcast_to(np.eye(grid * grid + 1), (2, grid * grid + 1, grid * grid + 1))
        np.testing.assert_allclose(an.mean_attention_distance(a, grid, 16), 0.0)

    def test_right_neighbour_is_one_patch(self):
        grid, patch = 4, 14
        a = shift_right_attention(grid)
        per_query = an.attention_distance_map(a, grid, patch)[0]  # [g, g]
        np.testing.assert_allclose(per_query[:, :-1], patch)
        np.testing.assert_allclose(per_query[:, -1], 0.0)
        mean = an.mean_attention_distance(a, grid, patch)
        np.testing.assert_allclose(mean, patch * (grid - 1) / grid)

    def test_diagonal_neighbour_is_sqrt2_patches(self):
        grid, patch = 3, 10
        T = grid * grid + 1
        a = np.zeros((1, T, T))
        a[0, 0, 0] = 1
        for r, c in itertools.product(range(grid), range(grid)):
            q = 1 + r * grid + c
            k = 1 + (r + 1) * grid + c + 1 if r < grid - 1 and c < grid - 1 else q
            a[0, q, k] = 1
        d = an.attention_distance_map(a, grid, patch)[0]
        np.testing.assert_allclose(d[:-1, :-1], patch * math.sqrt(2))

    def test_cls_key_is_dropped_and_rest_renormalised(self):
        grid, patch = 3, 16
        a = shift_right_attention(grid)
        # Move 70 % of every patch query's weight onto CLS: the renormalised answer is unchanged.
        b = a.copy()
        b[:, 1:, 1:] *= 0.3
        b[:, 1:, 0] = 0.7
        np.testing.assert_allclose(
            an.mean_attention_distance(b, grid, patch), an.mean_attention_distance(a, grid, patch)
        )

    def test_batched_and_all_layers(self):
        grid, patch = 3, 16
        T = grid * grid + 1
        local = np.broadcast_to(np.eye(T), (2, T, T))
        wide = uniform_attention(2, T)
        both = np.stack([local, wide])  # [B=2, H=2, T, T]
        got = an.mean_attention_distance(both, grid, patch)
        expected = 0.5 * an.mean_attention_distance(wide, grid, patch)  # batch mean
        np.testing.assert_allclose(got, expected)
        all_layers = an.attention_distance_all([local, wide, local], grid, patch)
        assert all_layers.shape == (3, 2)
        np.testing.assert_allclose(all_layers[0], 0.0)
        assert (all_layers[1] > 0).all()

    def test_wrong_grid_raises(self):
        with pytest.raises(ValueError):
            an.mean_attention_distance(uniform_attention(1, 10), 4, 16)


# ----------------------------------------------------------------------------------------------
# position embeddings
# ----------------------------------------------------------------------------------------------


class TestPositionSimilarity:
    def test_sincos_shape_and_norm(self):
        e = an.sincos_2d_position_embeddings(5, 32)
        assert e.shape == (25, 32)
        # Each of the 16 frequencies contributes sin^2 + cos^2 = 1, so every norm is 4.
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 4.0)
        # Patch (0, 0): all sines 0, all cosines 1.
        np.testing.assert_allclose(e[0], np.tile(np.r_[np.zeros(8), np.ones(8)], 2))
        # Patch (0, 1) is token 1 (row-major): its row half is still that of row 0, its column
        # half encodes 1 at the frequencies 10000 ** (-k / 8).
        freqs = 10000.0 ** (-np.arange(8) / 8)
        np.testing.assert_allclose(e[1, :16], np.r_[np.zeros(8), np.ones(8)])
        np.testing.assert_allclose(e[1, 16:], np.r_[np.sin(freqs), np.cos(freqs)])
        np.testing.assert_allclose(e[5, :16], np.r_[np.sin(freqs), np.cos(freqs)])  # patch (1, 0)
        assert an.sincos_2d_position_embeddings(5, 32, cls_token=True).shape == (26, 32)
        with pytest.raises(ValueError):
            an.sincos_2d_position_embeddings(5, 30)

    def test_sincos_similarity_peaks_at_self_and_falls_with_distance(self):
        grid, dim = 14, 768  # the ViT-B/16 layout
        maps = an.position_similarity_maps(an.sincos_2d_position_embeddings(grid, dim, cls_token=True))
        assert maps.shape == (grid, grid, grid, grid)
        rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        bins_total = np.zeros(2 * grid)
        bins_count = np.zeros(2 * grid)
        for i, j in itertools.product(range(grid), range(grid)):
            m = maps[i, j]
            assert m[i, j] == pytest.approx(1.0)
            others = np.delete(m.ravel(), i * grid + j)
            assert others.max() < 1.0 - 1e-6  # the peak is the patch itself, strictly
            dist = np.hypot(rows - i, cols - j)
            assert np.corrcoef(dist.ravel(), m.ravel())[0, 1] < -0.6
            np.add.at(bins_total, np.floor(dist).astype(int).ravel(), m.ravel())
            np.add.at(bins_count, np.floor(dist).astype(int).ravel(), 1)
        used = bins_count > 0
        mean_by_distance = bins_total[used] / bins_count[used]
        assert np.all(np.diff(mean_by_distance) <= 1e-12)

    def test_hand_computed_cosines(self):
        e = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-1, 0, 0]])
        sim = an.position_similarity(e[None])  # [1, T=5, D]: CLS + 2x2 grid
        expected = np.array(
            [[1, 0, 1 / math.sqrt(2), -1], [0, 1, 1 / math.sqrt(2), 0],
             [1 / math.sqrt(2), 1 / math.sqrt(2), 1, -1 / math.sqrt(2)],
             [-1, 0, -1 / math.sqrt(2), 1]]
        )
        np.testing.assert_allclose(sim, expected, atol=1e-12)
        # Without a CLS row the same 4 patches give the same answer.
        np.testing.assert_allclose(an.position_similarity(e[1:], grid=2), expected, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# patch filter PCA
# ----------------------------------------------------------------------------------------------


class TestPatchFilterPCA:
    def test_ratios_descending_and_at_most_one(self):
        w = RNG.normal(size=(64, 3, 4, 4))
        comps, ratio = an.patch_filter_pca(w, k=10)
        assert comps.shape == (10, 3, 4, 4) and ratio.shape == (10,)
        assert ratio.sum() <= 1 + 1e-12
        assert np.all(np.diff(ratio) <= 1e-15)
        assert comps.min() >= 0 and comps.max() <= 1
        # Every tile uses the full 0..1 range.
        np.testing.assert_allclose(comps.reshape(10, -1).min(1), 0)
        np.testing.assert_allclose(comps.reshape(10, -1).max(1), 1)
        _, all_ratio = an.patch_filter_pca(w, k=1000)
        assert all_ratio.shape == (48,)  # capped at C*P*P
        np.testing.assert_allclose(all_ratio.sum(), 1.0)

    def test_multiples_of_one_pattern(self):
        pattern = RNG.normal(size=(3, 4, 4))
        coeffs = RNG.normal(size=32)
        w = coeffs[:, None, None, None] * pattern
        raw, ratio = an.patch_filter_pca(w, k=3, scale=False)
        assert ratio[0] == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(ratio[1:], 0.0, atol=1e-12)
        unit = pattern.ravel() / np.linalg.norm(pattern)
        assert abs(raw[0].ravel() @ unit) == pytest.approx(1.0, abs=1e-10)
        tiles, _ = an.patch_filter_pca(w, k=1)
        # The display tile is an affine image of the pattern: correlation of magnitude one.
        assert abs(np.corrcoef(tiles[0].ravel(), pattern.ravel())[0, 1]) == pytest.approx(1.0)

    def test_signs_are_deterministic(self):
        # SVD may return either sign; the result must not depend on it (negating every filter
        # negates the centred data, which leaves the principal directions unchanged).
        w = RNG.normal(size=(20, 3, 2, 2))
        a, ra = an.patch_filter_pca(w, k=4)
        b, rb = an.patch_filter_pca(-w, k=4)
        np.testing.assert_allclose(a, b, atol=1e-12)
        np.testing.assert_allclose(ra, rb)
        raw, _ = an.patch_filter_pca(w, k=4, scale=False)
        flat = raw.reshape(4, -1)
        assert (flat[np.arange(4), np.abs(flat).argmax(1)] > 0).all()  # documented sign rule
        # For tokens the principal directions are also sign-fixed, so negating the tokens
        # negates every projection and min-max scaling turns each channel c into 1 - c.
        tokens = RNG.normal(size=(9, 6))
        np.testing.assert_allclose(an.token_pca_rgb(-tokens), 1 - an.token_pca_rgb(tokens), atol=1e-12)

    def test_agrees_with_svd(self):
        for shape in [(30, 1, 2, 2), (5, 3, 2, 2)]:  # more filters than numbers, and fewer
            w = RNG.normal(size=shape)
            X = w.reshape(shape[0], -1)
            X = X - X.mean(0)
            _, s, vt = np.linalg.svd(X, full_matrices=False)
            raw, ratio = an.patch_filter_pca(w, k=3, scale=False)
            np.testing.assert_allclose(ratio, s[:3] ** 2 / (s**2).sum(), rtol=1e-9)
            for got, ref in zip(raw.reshape(3, -1), vt[:3]):
                assert abs(got @ ref) == pytest.approx(1.0, abs=1e-9)

    def test_matches_covariance_eigenvalues(self):
        w = RNG.normal(size=(40, 1, 3, 3)) * np.linspace(0.1, 2, 9).reshape(1, 1, 3, 3)
        X = w.reshape(40, -1)
        eig = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False)))[::-1]
        _, ratio = an.patch_filter_pca(w, k=9)
        np.testing.assert_allclose(ratio, eig / eig.sum(), rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# token maps
# ----------------------------------------------------------------------------------------------


class TestTokenMaps:
    def test_token_pca_rgb_separates_two_groups(self):
        grid, D = 4, 16
        direction = RNG.normal(size=D)
        labels = (np.arange(grid * grid) % grid) >= 2  # right half of the grid
        tokens = np.where(labels[:, None], direction, -direction) + 0.01 * RNG.normal(size=(16, D))
        cls = np.full((1, D), 100.0)  # a CLS row that must be ignored
        rgb = an.token_pca_rgb(np.concatenate([cls, tokens]), grid)
        assert rgb.shape == (grid, grid, 3)
        assert rgb.min() >= 0 and rgb.max() <= 1
        red = rgb[..., 0]
        # The first component splits left from right: one half near 0, the other near 1.
        left, right = red[:, :2], red[:, 2:]
        assert abs(left.mean() - right.mean()) > 0.9
        assert left.std() < 0.05 and right.std() < 0.05

    def test_token_pca_rgb_tiny_inputs(self):
        rgb = an.token_pca_rgb(np.ones((1, 4)), grid=1)
        np.testing.assert_allclose(rgb, 0.5)

    def test_token_norms(self):
        h0 = np.zeros((3, 2))
        h1 = np.array([[3.0, 4.0], [0, 1], [1, 0]])
        norms = an.token_norms([h0, h1])
        np.testing.assert_allclose(norms, [[0, 0, 0], [5, 1, 1]])
        batched = an.token_norms([torch.tensor(np.stack([h0, h1])), torch.tensor(np.stack([h1, h0]))])
        assert batched.shape == (2, 2, 3)
        np.testing.assert_allclose(batched[0], [[0, 0, 0], [5, 1, 1]])
        np.testing.assert_allclose(batched[1], [[5, 1, 1], [0, 0, 0]])

    def test_high_norm_outliers(self):
        norms = 50 + RNG.normal(scale=2.0, size=197)
        norms[0] = 500.0  # CLS: large but not an artefact
        norms[[17, 120]] = [400.0, 380.0]
        np.testing.assert_array_equal(an.high_norm_outliers(norms), [17, 120])
        assert 0 in an.high_norm_outliers(norms, skip_cls=False)
        # A tight healthy distribution flags nothing even though its MAD is tiny.
        calm = 50 + RNG.normal(scale=1e-6, size=50)
        calm[10] = 50.1
        assert an.high_norm_outliers(calm).size == 0
        layered = np.stack([50 + RNG.normal(scale=2, size=197), norms])
        mask = an.high_norm_mask(layered)
        assert mask.shape == layered.shape and not mask[0].any()
        np.testing.assert_array_equal(np.flatnonzero(mask[1]), [17, 120])
        np.testing.assert_array_equal(an.high_norm_outliers(layered), [17, 120])

    def test_attention_entropy(self):
        T, H = 7, 3
        uniform = uniform_attention(H, T)
        one_hot = np.broadcast_to(np.eye(T), (H, T, T))
        ent = an.attention_entropy([uniform, one_hot])
        assert ent.shape == (2, H)
        np.testing.assert_allclose(ent[0], math.log(T))
        np.testing.assert_allclose(ent[1], 0.0, atol=1e-15)
        # Half the rows uniform over two keys: the mean over queries is log(2) / 2.
        half = np.zeros((1, 4, 4))
        half[0, :2, :2] = 0.5
        half[0, 2, 2] = half[0, 3, 3] = 1.0
        np.testing.assert_allclose(an.attention_entropy([half]), [[math.log(2) / 2]])
        batched = an.attention_entropy([np.stack([uniform, one_hot])])
        np.testing.assert_allclose(batched, [np.full(H, math.log(T) / 2)])


# ----------------------------------------------------------------------------------------------
# layer similarity
# ----------------------------------------------------------------------------------------------


def test_layer_similarity():
    h = RNG.normal(size=(5, 8))
    np.testing.assert_allclose(an.layer_similarity([h, h, 2 * h]), [1.0, 1.0])
    np.testing.assert_allclose(an.layer_similarity([h, -h]), [-1.0])
    e = np.eye(4)
    np.testing.assert_allclose(an.layer_similarity([e[:2], e[2:]]), [0.0])
    with pytest.raises(ValueError):
        an.layer_similarity([h])


def test_cls_similarity_matrix():
    h0 = np.array([[1.0, 0.0], [9, 9]])
    h1 = np.array([[0.0, 2.0], [9, 9]])
    h2 = np.array([[-3.0, 0.0], [9, 9]])
    m = an.cls_similarity_matrix([h0, h1, h2])
    np.testing.assert_allclose(m, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# logit lens
# ----------------------------------------------------------------------------------------------


class TestLogitLens:
    W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # 3 classes from 2 features

    def hidden(self):
        # CLS vectors per stage; the second token is noise that must be ignored.
        cls = [np.array([0.0, 0.0]), np.array([2.0, 0.0]), np.array([0.0, 3.0])]
        return [np.stack([c, np.array([50.0, -50.0])]) for c in cls]

    def expected_probs(self):
        rows = []
        for c in [np.array([0.0, 0.0]), np.array([2.0, 0.0]), np.array([0.0, 3.0])]:
            z = self.W @ c
            rows.append(np.exp(z) / np.exp(z).sum())
        return np.array(rows)

    def test_numpy_callables(self):
        out = an.logit_lens(self.hidden(), lambda x: x, lambda x: x @ self.W.T, top_k=2,
                            id2label={0: "a", 1: "b", 2: "c"})
        exp = self.expected_probs()
        np.testing.assert_allclose(out["probs"], exp, atol=1e-12)
        np.testing.assert_allclose(out["probs"][0], 1 / 3)
        # Stage 2: logits (2, 0, 2) -> classes 0 and 2 tie at the top; stable order keeps 0 first.
        assert out["top_indices"].shape == (3, 2)
        np.testing.assert_array_equal(out["top_indices"][1], [0, 2])
        # Stage 3: logits (0, 3, 3) -> 1 then 2.
        np.testing.assert_array_equal(out["top_indices"][2], [1, 2])
        assert out["labels"][2] == ["b", "c"]
        assert int(out["final_class"]) == 1
        np.testing.assert_allclose(out["final_class_prob"], exp[:, 1])
        np.testing.assert_allclose(out["top_probs"], np.take_along_axis(exp, out["top_indices"], 1))

    def test_torch_modules(self):
        clf = torch.nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            clf.weight.copy_(torch.tensor(self.W, dtype=torch.float32))
        hs = [torch.tensor(h, dtype=torch.float32) for h in self.hidden()]
        out = an.logit_lens(hs, torch.nn.Identity(), clf)
        np.testing.assert_allclose(out["probs"], self.expected_probs(), atol=1e-6)
        # numpy hidden states with torch modules work too, batched along a leading axis
        batched = [np.stack([h, h]) for h in self.hidden()]
        out_b = an.logit_lens(batched, torch.nn.Identity(), clf)
        assert out_b["probs"].shape == (2, 3, 3)
        np.testing.assert_allclose(out_b["probs"][1], self.expected_probs(), atol=1e-6)
        assert out_b["final_class"].tolist() == [1, 1]

    def test_layernorm_is_applied(self):
        ln = torch.nn.LayerNorm(2, elementwise_affine=False, eps=0.0)
        clf = torch.nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            clf.weight.copy_(torch.tensor(self.W, dtype=torch.float32))
        # LayerNorm maps (2, 0) to (1, -1) and (0, 3) to (-1, 1): logits (1,-1,0) and (-1,1,0).
        hs = [torch.tensor(h, dtype=torch.float32) for h in self.hidden()[1:]]
        out = an.logit_lens(hs, ln, clf)
        for row, z in zip(out["probs"], [np.array([1, -1, 0.0]), np.array([-1, 1, 0.0])]):
            np.testing.assert_allclose(row, np.exp(z) / np.exp(z).sum(), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# occlusion
# ----------------------------------------------------------------------------------------------


class TestOcclusion:
    def test_mask(self):
        m = an.occlusion_mask(8, 4, [(0, 1), (3, 3)])
        assert m.shape == (8, 8) and m.dtype == bool
        assert m.sum() == 8
        assert m[0:2, 2:4].all() and m[6:8, 6:8].all()
        assert not m[0:2, 0:2].any()
        with pytest.raises(ValueError):
            an.occlusion_mask(8, 4, [(4, 0)])
        with pytest.raises(ValueError):
            an.occlusion_mask(10, 4, [])

    def test_apply_occlusion_copies(self):
        x = torch.ones(1, 3, 8, 8)
        y = an.apply_occlusion(x, [(1, 0)], patch_size=4, fill=0.0)
        assert torch.all(x == 1)  # input untouched
        assert isinstance(y, torch.Tensor) and y.dtype == x.dtype
        assert torch.all(y[:, :, 4:8, 0:4] == 0) and y.sum() == 3 * 64 - 3 * 16
        z = an.apply_occlusion(x.numpy(), [(0, 0)], 4, fill=[0.1, 0.2, 0.3])
        np.testing.assert_allclose(z[0, :, 0, 0], [0.1, 0.2, 0.3], rtol=1e-6)
        assert z[0, 0, 5, 5] == 1

    def test_delta(self):
        np.testing.assert_allclose(an.occlusion_delta([0.7, 0.3], [0.2, 0.8]), [0.5, -0.5])

    def test_sensitivity_only_at_the_known_patch(self):
        patch, g = 4, 3
        x = torch.rand(1, 3, g * patch, g * patch) + 0.5  # strictly positive pixels
        calls = []

        def predict(batch):
            calls.append(batch.shape[0])
            # Class 0's score depends only on patch (1, 2): its mean brightness.
            s = batch[:, :, 4:8, 8:12].mean(dim=(1, 2, 3))
            return torch.stack([s, 1 - s], dim=1)

        done = []
        sens = an.occlusion_sensitivity(predict, x, patch, target=0, batch=4,
                                        progress=lambda d, t: done.append((d, t)))
        assert sens.shape == (g, g)
        expected = float(x[:, :, 4:8, 8:12].mean())
        assert sens[1, 2] == pytest.approx(expected, rel=1e-5)
        sens[1, 2] = 0
        np.testing.assert_allclose(sens, 0.0, atol=1e-7)
        assert calls == [1, 4, 4, 1]
        assert done[-1] == (9, 9)

    def test_sensitivity_numpy_predict(self):
        x = np.zeros((1, 1, 4, 4))
        x[0, 0, 2:, :2] = 1.0  # only patch (1, 0) is bright

        def predict(b):
            s = b.reshape(b.shape[0], -1).sum(1) / 4.0
            return np.stack([s, 1 - s], 1)

        sens = an.occlusion_sensitivity(predict, x, 2, target=1)
        np.testing.assert_allclose(sens, [[0, 0], [-1, 0]])


# ----------------------------------------------------------------------------------------------
# shared colour scale
# ----------------------------------------------------------------------------------------------


def test_normalise_map():
    m = np.array([[1.0, 3.0], [0.0, 4.0]])
    np.testing.assert_allclose(an.normalise_map(m), m / 4)
    np.testing.assert_allclose(an.normalise_map(m, "sum").sum(), 1.0)
    signed = np.array([[-2.0, 1.0]])
    np.testing.assert_allclose(an.normalise_map(signed), [[-1.0, 0.5]])
    with pytest.raises(ValueError):
        an.normalise_map(signed, "sum")
    np.testing.assert_array_equal(an.normalise_map(np.zeros((2, 2))), 0)


def test_shared_scale():
    a = np.array([[0.1, 0.5]])
    b = np.array([[-0.2, np.nan, 0.3]])
    assert an.shared_scale(a, b) == (-0.2, 0.5)
    assert an.shared_scale(a, b, symmetric=True) == (-0.5, 0.5)
    lo, hi = an.shared_scale(np.zeros(3))
    assert hi > lo
    assert an.shared_scale(np.array([np.nan])) == (0.0, 1.0)
    assert an.shared_scale(torch.tensor([2.0, 3.0])) == (2.0, 3.0)


def test_prefix_tokens_beyond_cls_are_not_patches():
    """CLS + 4 registers + a 2x2 grid: every analysis reads the last 4 tokens as the patches."""
    from vit_explain import analysis as an

    rng = np.random.default_rng(0)
    T, g = 1 + 4 + 4, 2
    att = rng.random((3, T, T))
    att /= att.sum(-1, keepdims=True)
    row = att[0][0, 5:]
    np.testing.assert_allclose(an.cls_rollout_map(att[0], g).ravel(), row / row.sum())
    distance = an.attention_distance_map(att, g, 1)
    patches = att[:, 5:, 5:] / att[:, 5:, 5:].sum(-1, keepdims=True)
    d = np.array([[0, 1, 1, 2 ** 0.5], [1, 0, 2 ** 0.5, 1], [1, 2 ** 0.5, 0, 1], [2 ** 0.5, 1, 1, 0]])
    np.testing.assert_allclose(distance.reshape(3, 4), (patches * d).sum(-1))
    # register tokens with huge norms are not judged as artefact patches; a huge patch is
    norms = np.array([1.0, 50, 50, 50, 50, 1, 1, 1, 1] + [1] * 12 + [40.0])
    mask = an.high_norm_mask(norms, num_prefix_tokens=5)
    assert list(np.flatnonzero(mask)) == [len(norms) - 1]
