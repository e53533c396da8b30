"""Ridge probes: the leave-one-episode-out choice of the ridge strength is exact, and steadier than one split."""

from __future__ import annotations

import numpy as np
import pytest

from aime_rl.evaluation.fitting import fit_ridge, fit_ridge_grouped, leave_one_group_out_r2

ALPHAS = (1e-2, 1.0, 1e2, 1e4)


def brute_force_held_out_r2(x, y, groups, alpha):
    """R² of the pooled predictions of each group by a ridge (intercept unpenalised) fitted on the other groups, in
    float64 and in the dual form (a solve of rows × rows: well conditioned at a weak ridge with more features than
    rows, too)."""
    x = x.astype(np.float64)
    predictions = np.empty_like(y)
    for g in np.unique(groups):
        out, keep = groups == g, groups != g
        mean_x, mean_y = x[keep].mean(0), y[keep].mean(0)
        xc = x[keep] - mean_x
        dual = np.linalg.solve(xc @ xc.T + alpha * np.eye(len(xc)), y[keep] - mean_y)
        predictions[out] = (x[out] - mean_x) @ (xc.T @ dual) + mean_y
    return 1 - ((y - predictions) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def episodes_with_a_constant_speed(num_episodes=12, length=20, dims=6, seed=0):
    """Features ``[N, dims]`` of noisy positions; targets ``[N, 2]``: the position (readable) and a speed that is
    constant within each episode and not in the features (unreadable)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(num_episodes), length)
    position = rng.normal(size=len(groups))
    speed = rng.normal(size=num_episodes)[groups]
    x = position[:, None] * rng.normal(size=dims) + 0.5 * rng.normal(size=(len(groups), dims))
    return x, np.stack([position, speed], axis=1), groups


@pytest.mark.parametrize("dims", [6, 400], ids=["fewer features than rows", "more features than rows"])
def test_leave_one_group_out_scores_equal_refitting_without_each_group(dims):
    x, y, groups = episodes_with_a_constant_speed(dims=dims)
    expected = np.array([brute_force_held_out_r2(x, y, groups, a) for a in ALPHAS])  # [A, V]
    np.testing.assert_allclose(leave_one_group_out_r2(x, y, groups, ALPHAS), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dims", [60, 150, 400], ids=["D < N", "D > N", "D > N, rank 30"])
def test_leave_one_group_out_scores_hold_for_float32_features_at_a_weak_ridge(dims):
    # as probes pass them: float32 features, here off-centre (and in the last case 30 columns repeated); at a weak
    # ridge (I − H_gg)⁻¹ is large, so the features must be centred in float64 and the fit's residuals must come
    # from the same spectrum as H_gg
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 10)
    base = rng.normal(size=(len(groups), min(dims, 150)))
    x = (np.tile(base[:, :30], (1, dims // 30)) if dims == 400 else base) + 5
    x = x.astype(np.float32)
    y = x.astype(np.float64) @ rng.normal(size=(x.shape[1], 1)) + 3 * rng.normal(size=(len(groups), 1))
    alphas = (1e-6, 1e-2, 1.0, 1e2)
    expected = np.array([brute_force_held_out_r2(x, y, groups, a) for a in alphas])
    np.testing.assert_allclose(leave_one_group_out_r2(x, y, groups, alphas), expected, rtol=1e-4, atol=1e-4)


def test_directions_without_variance_carry_nothing_at_a_weak_ridge():
    # 30 columns repeated 13 times at a large scale: the Gram matrix's null directions have eigenvalues of rounding
    # size (≈ 1e-8 here), above a weak ridge; they carry no signal, so every ridge far below the real directions'
    # variance must hold out the same (a refit cannot be the reference: its solve is as ill-conditioned)
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 10)
    base = rng.normal(size=(len(groups), 30))
    x = np.tile(base, (1, 13)) * 1e3
    y = base @ rng.normal(size=(30, 1)) + rng.normal(size=(len(groups), 1))
    weak, strong = leave_one_group_out_r2(x, y, groups, (1e-6, 1e-2))
    np.testing.assert_allclose(weak, strong, rtol=1e-6)


def test_a_target_constant_on_the_rows_scores_zero_at_every_alpha():
    x, _, groups = episodes_with_a_constant_speed()
    constant = np.full((len(x), 1), 1 / 3)
    np.testing.assert_array_equal(leave_one_group_out_r2(x, constant, groups, ALPHAS), 0.0)


def test_grouped_fit_chooses_the_alpha_of_the_best_held_out_score():
    x, y, groups = episodes_with_a_constant_speed()
    _, _, alphas = fit_ridge_grouped(x, y, groups, ALPHAS)
    scores = leave_one_group_out_r2(x, y, groups, ALPHAS)
    np.testing.assert_array_equal(alphas, np.asarray(ALPHAS)[scores.argmax(0)])


def test_grouped_fit_is_the_ridge_on_all_rows_at_the_chosen_alpha():
    x, y, groups = episodes_with_a_constant_speed()
    weight, intercept, alphas = fit_ridge_grouped(x, y, groups, ALPHAS)
    xc = x - x.mean(0)
    for j, alpha in enumerate(alphas):
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y[:, j] - y[:, j].mean()))
        np.testing.assert_allclose(weight[:, j], w, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(x @ weight[:, j] + intercept[j], xc @ w + y[:, j].mean(), atol=1e-8)


def test_a_variable_constant_within_episodes_and_absent_from_the_features_reads_near_zero():
    # the speed is one number per episode: one validation episode can favour a weak ridge that fits the training
    # episodes' speeds through the noise; every episode held out in turn favours the strongest
    x, y, groups = episodes_with_a_constant_speed(num_episodes=10, length=30, dims=40, seed=3)
    test = groups >= 8
    _, _, alphas = fit_ridge_grouped(x[~test], y[~test], groups[~test], ALPHAS)
    assert alphas[1] == max(ALPHAS)
    weight, intercept, _ = fit_ridge_grouped(x[~test], y[~test], groups[~test], ALPHAS)
    predicted = x[test] @ weight + intercept
    r2 = 1 - ((y[test] - predicted) ** 2).sum(0) / ((y[test] - y[test].mean(0)) ** 2).sum(0)
    assert r2[0] > 0.8 and r2[1] < 0.05


def test_grouped_fit_needs_two_groups_and_one_group_id_per_row():
    x, y, groups = episodes_with_a_constant_speed()
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_ridge_grouped(x, y, np.zeros(len(x), dtype=int))
    with pytest.raises(ValueError, match="groups must be"):
        fit_ridge_grouped(x, y, groups[:-1])


def test_validation_choice_keeps_its_results():
    x, y, groups = episodes_with_a_constant_speed()
    train, val = groups < 9, groups >= 9
    xs = (x - x[train].mean(0)) / x[train].std(0)
    weight, intercept, alphas = fit_ridge(xs[train], y[train], xs[val], y[val], ALPHAS)
    for j, alpha in enumerate(alphas):
        xt = xs[train]
        w = np.linalg.solve(xt.T @ xt + alpha * np.eye(x.shape[1]), xt.T @ (y[train, j] - y[train, j].mean()))
        np.testing.assert_allclose(weight[:, j], w, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(intercept, y[train].mean(0))
