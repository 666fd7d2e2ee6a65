"""gunshot_core.review_stats on synthetic runs whose truth is known.

A synthetic run: n windows, each a gunshot with probability `prevalence`; the logit of its score is
normal with mean `mu1` (gunshot) or `mu0` (not) and a common spread, so P(gunshot | score) is exactly
logistic in logit(score) and the truth of every window is known.
"""

import numpy as np
import pytest

from gunshot_core import review_stats as rs


def synthetic_run(rng, n=10000, prevalence=0.03, mu0=-4.0, mu1=1.0, sd=1.5):
    truth = rng.random(n) < prevalence
    z = np.where(truth, rng.normal(mu1, sd, n), rng.normal(mu0, sd, n))
    return 1.0 / (1.0 + np.exp(-z)), truth


def test_allocation_is_equal_capped_and_complete():
    assert rs.allocate(np.array([1000, 1000, 1000]), 30).tolist() == [10, 10, 10]
    assert rs.allocate(np.array([2, 1000, 1000]), 30).tolist() == [2, 14, 14]
    assert rs.allocate(np.array([2, 3]), 30).tolist() == [2, 3]
    assert rs.allocate(np.array([5, 5, 5]), 2).tolist() == [1, 1, 0]


def test_stratified_sample_probabilities_and_seed():
    scores, _ = synthetic_run(np.random.default_rng(0))
    strata = rs.score_bins(scores, 10)
    picked, pi = rs.stratified_sample(strata, 100, np.random.default_rng(1))
    again, _ = rs.stratified_sample(strata, 100, np.random.default_rng(1))
    assert picked.tolist() == again.tolist() and picked.size == 100 == np.unique(picked).size
    population = np.bincount(strata, minlength=10)
    taken = np.bincount(strata[picked], minlength=10)
    np.testing.assert_allclose(pi, taken[strata[picked]] / population[strata[picked]])
    # Inverse probabilities add up to the frame: each stratum stands for its population.
    assert np.isclose((1 / pi).sum(), scores.size)


def test_fit_recovers_the_known_model():
    # Equal-spread normal logits: log odds = const + (mu1 - mu0) / sd^2 * logit(s); slope 5/2.25.
    scores, truth = synthetic_run(np.random.default_rng(3), n=40000)
    model = rs.fit_logistic(scores, truth)
    assert model.slope == pytest.approx(5 / 2.25, rel=0.1)
    with pytest.raises(ValueError, match="all no"):
        rs.fit_logistic(scores[:5], np.zeros(5, bool))


def test_threshold_meets_precision_and_reports_recall_on_the_run():
    scores, truth = synthetic_run(np.random.default_rng(4), n=40000)
    model = rs.fit_logistic(scores, truth)
    choice = rs.threshold_for_precision(model, scores, 0.9)
    detected = scores >= choice.threshold
    assert choice.reached and choice.detections == detected.sum()
    assert truth[detected].mean() == pytest.approx(0.9, abs=0.03)
    assert choice.recall == pytest.approx(truth[detected].sum() / truth.sum(), abs=0.05)
    assert not rs.threshold_for_precision(model, scores, 0.99999999).reached


def test_a_recall_floor_gives_way_to_recall_only_when_the_precision_costs_more():
    scores, truth = synthetic_run(np.random.default_rng(4), n=40000)
    model = rs.fit_logistic(scores, truth)
    free = rs.threshold_for_precision(model, scores, 0.9)
    # a floor the precision target keeps anyway changes nothing
    assert rs.threshold_for_precision(model, scores, 0.9, min_recall=free.recall - 0.05) == free
    floored = rs.threshold_for_precision(model, scores, 0.9, min_recall=free.recall + 0.2)
    assert not floored.reached and floored.threshold < free.threshold
    assert floored.recall >= free.recall + 0.2 and floored.precision < 0.9
    # the highest threshold keeping the floor: one step up loses it
    above = np.unique(scores[scores > floored.threshold])[0]
    assert model.predict(scores[scores >= above]).sum() / model.predict(scores).sum() < free.recall + 0.2


def test_counts_per_domain_add_up_and_plain_estimator_is_exact_on_a_census():
    scores, truth = synthetic_run(np.random.default_rng(5), n=3000)
    strata = rs.score_bins(scores, 10)
    days = np.where(np.arange(scores.size) < 1000, "2024-01-01", "2024-01-02")
    census = np.arange(scores.size)
    exact = rs.estimate_totals(strata, census, truth[census], domains=days)
    assert exact["2024-01-01"].total == truth[:1000].sum() and exact["2024-01-01"].standard_error == 0
    picked, _ = rs.stratified_sample(strata, 200, np.random.default_rng(6))
    model = rs.fit_logistic(scores[picked], truth[picked])
    per_day = rs.estimate_totals(strata, picked, truth[picked], domains=days, predicted=model.predict(scores))
    overall = rs.estimate_totals(strata, picked, truth[picked], predicted=model.predict(scores))["all"]
    assert sum(e.total for e in per_day.values()) == pytest.approx(overall.total)
    assert all(e.low <= e.total <= e.high for e in per_day.values())


def test_repeated_reviews_cover_the_truth_and_reach_the_precision():
    """200 seeded reviews of 100 verdicts each: the 90 % count interval covers the true number of
    gunshot windows in >= 85 % of them, and the threshold chosen for precision 0.9 has a true
    precision within 0.1 of 0.9 on the whole run in >= 80 % of them."""
    covered = precise = recalled = precise_heard = recalled_heard = 0
    widths = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        scores, truth = synthetic_run(rng)
        strata = rs.score_bins(scores, 10)
        picked, _ = rs.stratified_sample(strata, 100, rng)
        model = rs.fit_logistic(scores[picked], truth[picked])
        estimate = rs.estimate_totals(strata, picked, truth[picked], predicted=model.predict(scores))["all"]
        covered += estimate.low <= truth.sum() <= estimate.high
        widths.append((estimate.high - estimate.low) / truth.sum())
        choice = rs.threshold_for_precision(model, scores, 0.9)
        detected = scores >= choice.threshold
        precise += abs(truth[detected].mean() - 0.9) <= 0.1
        recalled += abs(choice.recall - truth[detected].sum() / truth.sum()) <= 0.15
        # as `gunshot calibrate` chooses: the answered windows count as their verdicts
        known = np.full(scores.size, np.nan)
        known[picked] = truth[picked]
        choice = rs.threshold_for_precision(model, scores, 0.9, known=known)
        detected = scores >= choice.threshold
        precise_heard += abs(truth[detected].mean() - 0.9) <= 0.1
        recalled_heard += abs(choice.recall - truth[detected].sum() / truth.sum()) <= 0.15
    print(
        f"coverage {covered}/200, precise {precise}/200, recall {recalled}/200, width {np.median(widths):.2f};"
        f" with the verdicts heard: precise {precise_heard}/200, recall {recalled_heard}/200"
    )
    assert covered >= 170, covered
    assert precise >= 160, precise
    assert recalled >= 160, recalled  # the implied recall is within 0.15 of the true one
    assert precise_heard >= 160 and recalled_heard >= 160, (precise_heard, recalled_heard)
    # Not trivially wide: the interval is narrower than the true count itself in most reviews.
    assert np.median(widths) < 1.0, np.median(widths)


def _grouped_verdicts(rng, offsets, per_group):
    scores, yes, groups = [], [], []
    for j, (offset, n) in enumerate(zip(offsets, per_group, strict=True)):
        s = rng.uniform(0.02, 0.995, n)
        p = 1 / (1 + np.exp(-(offset + 1.2 * rs.logit(s))))
        scores += list(s)
        yes += list(rng.random(n) < p)
        groups += [f"g{j}"] * n
    return np.array(scores), np.array(yes), np.array(groups, object)


def test_partial_pooling_shrinks_group_intercepts_by_their_evidence():
    rng = np.random.default_rng(3)
    # Groups that do not differ: the between-group spread is estimated small, offsets stay near 0.
    alike = [rs.fit_partial_pooling(*_grouped_verdicts(rng, [0, 0, 0, 0], [40] * 4)) for _ in range(20)]
    assert np.median([f.tau for f in alike]) < 0.3
    assert max(abs(o) for f in alike for o in f.offsets.values()) < 0.8
    # Groups that differ by +-2 logits: offsets recovered (relative to the overall fit, within noise);
    # a group with 6 verdicts is pulled toward 0 more than a group with 80 of the same offset.
    errors, small, large = [], [], []
    for _ in range(20):
        fit = rs.fit_partial_pooling(*_grouped_verdicts(rng, [2.0, -2.0, 0.0, 2.0], [80, 80, 80, 6]))
        assert fit.tau > 0.5
        centre = fit.offsets["g2"]
        errors += [fit.offsets["g0"] - centre - 2.0, fit.offsets["g1"] - centre + 2.0]
        large.append(fit.offsets["g0"] - centre)
        small.append(fit.offsets["g3"] - centre)
        assert fit.offset_sd["g3"] > fit.offset_sd["g0"]
        assert fit.shrinkage("g3") < fit.shrinkage("g0")
    assert np.median(np.abs(errors)) < 0.5, errors
    assert np.mean(small) < np.mean(large), (small, large)
    # A group whose answers are all yes (separated) still gets a finite offset.
    scores, yes, groups = _grouped_verdicts(rng, [0, 0, 0], [30, 30, 30])
    yes[groups == "g0"] = True
    fit = rs.fit_partial_pooling(scores, yes, groups)
    assert np.isfinite(fit.offsets["g0"]) and fit.offsets["g0"] > 0
    assert fit.model("unseen") == fit.overall
