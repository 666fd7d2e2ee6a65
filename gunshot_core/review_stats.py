"""Statistics of reviewed detections: sampling designs, calibration of scores, counts with intervals.

A review draws a sample of windows from a scoring run, a person answers yes/no for each, and from the
answers we estimate (a) how the score relates to the chance that a window truly holds a gunshot, (b)
the threshold that reaches a target precision and the recall it implies, and (c) how many windows
truly hold gunshots, per group (site), per day and overall, with 90 % intervals. The practice follows
Wood and Kahl 2024 ("Guidelines for appropriate use of BirdNET scores and other detector outputs",
J. Ornithol.): verify across score bins, fit a logistic regression of the verdict on the logit of the
score, read the threshold off the fit.

Sampling (`stratified_sample`): the frame (all windows offered) is cut into strata (score bins,
optionally crossed with groups); each stratum gets an equal share of the sample (capped at its size;
what a small stratum cannot take goes to the others) drawn without replacement, so window i of
stratum h is included with probability pi_i = n_h / N_h. `random_sample` is one stratum. `top_sample`
and `margin_sample` are not probability samples (pi is NaN): good for training examples and a fit,
not for counts.

Calibration (`fit_logistic`): P(yes | s) = sigmoid(a + b * logit(s)), fitted by scikit-learn on the
answered items, unweighted. Sampling on the score does not bias a model of the verdict given the
score, so the design weights are not needed for the fit (they would only add variance).

Threshold (`threshold_for_precision`): with the fitted p(s) and ALL the run's scores, the expected
precision of "detected = s >= t" is mean(p(s_i) for s_i >= t); the threshold chosen is the lowest t
whose expected precision reaches the target; implied recall = sum(p(s_i), s_i >= t) / sum(p(s_i)).
Assumes the logistic model holds (a gunshot's chance rises smoothly with the logit of the score).
Items already answered count as their verdicts instead of p(s_i) (`known`): the expectation is then
conditional on what was heard, exact when every item was answered (a census), the model's when few.
With a recall floor (`min_recall`) the precision target gives way when it would cost more recall:
then the highest threshold whose implied recall keeps the floor is chosen (reached = False).

Counts (`estimate_totals`): the model-assisted stratified estimator (a difference / GREG estimator,
Saerndal, Swensson and Wretman 1992) of a total: T = sum_i p(s_i) over the frame (the fit's prediction
for every window) + sum_h N_h * mean_h(z - p) over the answered sample (z_i = 1 when item i is "yes"
and in the domain: a group or a day). It is design-unbiased whatever the model (the residual term
corrects the model's error; without a model it is the plain Horvitz-Thompson estimator) and the
model only makes it more precise. Items left unanswered or "unsure" are treated as missing at random
within their stratum (its answered items stand for it: pi_i = m_h / N_h). Variance:
sum_h N_h^2 (1 - m_h/N_h) s_h^2 / m_h, where s_h^2 is the sample variance of the residuals, floored
at the model's mean p(1-p) over the stratum: a stratum whose few answers all agree still carries
the uncertainty of its unseen items. Interval: T +- 1.645 sqrt(V) (normal approximation, 90 %),
clipped below at the yeses actually seen. Assumptions: the sample was drawn as its inclusion
probabilities say, verdicts are correct, unsure/unanswered items are like the answered ones of their
stratum, and the count is of windows in the frame (windows outside it, e.g. under a --min_score, are
not counted; overlapping windows of one shot each count). On synthetic runs (tests) 200 reviews of
100 verdicts cover the truth in ~91 % of them.

    strata = score_bins(scores, 10)                         # int [n]
    picked, pi = stratified_sample(strata, 100, rng)        # int [100], float [100]
    model = fit_logistic(scores[answered], verdicts)        # Logistic(intercept, slope)
    choice = threshold_for_precision(model, scores, 0.9)    # ThresholdChoice
    totals = estimate_totals(strata[picked], yes, population_of(strata))
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: Scores are clipped to [EPS, 1 - EPS] before the logit (a float32 score can be exactly 0 or 1).
EPS = 1e-6
#: z for a two-sided 90 % normal interval.
Z90 = 1.6448536269514722


def logit(scores: np.ndarray) -> np.ndarray:
    """float [n] in [0, 1] -> float64 [n], log(s / (1 - s)) after clipping to [EPS, 1 - EPS]."""
    s = np.clip(np.asarray(scores, np.float64), EPS, 1 - EPS)
    return np.log(s) - np.log1p(-s)


def score_bins(scores: np.ndarray, bins: int = 10) -> np.ndarray:
    """Equal-width score bins over [0, 1]: int64 [n] in [0, bins) (a score of 1.0 goes to the last)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    s = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    return np.minimum((s * bins).astype(np.int64), bins - 1)


def allocate(population: np.ndarray, size: int) -> np.ndarray:
    """Equal allocation of `size` items over strata, capped at each stratum's population.

    Args:
      population: int [H] items per stratum.
      size: total sample size wanted.
    Returns:
      int64 [H] items to draw per stratum; sums to min(size, population.sum()). What a small stratum
      cannot take is shared among the others; a remainder goes to the first strata with room.
    """
    population = np.asarray(population, np.int64)
    take = np.zeros_like(population)
    left = min(int(size), int(population.sum()))
    while left > 0:
        room = population - take
        open_ = np.flatnonzero(room > 0)
        share = left // open_.size
        if share == 0:  # fewer items left than open strata: one each to the first ones
            take[open_[:left]] += 1
            break
        add = np.minimum(room[open_], share)
        take[open_] += add
        left -= int(add.sum())
    return take


def stratified_sample(
    strata: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draws an equal-allocation stratified sample without replacement.

    Args:
      strata: int [n] stratum code of every item in the frame (any integers).
      size: total sample size.
      rng: the random generator (seeded by the caller: same seed, same sample).
    Returns:
      (indices int64 [m] into the frame, sorted; inclusion probability float64 [m] = n_h / N_h).
    """
    strata = np.asarray(strata)
    codes, inverse, population = np.unique(strata, return_inverse=True, return_counts=True)
    take = allocate(population, size)
    # A random key per item; within each stratum the `take` smallest keys are drawn.
    keys = rng.random(strata.size)
    order = np.lexsort((keys, inverse))
    starts = np.concatenate([[0], np.cumsum(population)[:-1]])
    rank = np.empty(strata.size, np.int64)
    rank[order] = np.arange(strata.size) - np.repeat(starts, population)
    chosen = np.flatnonzero(rank < take[inverse])
    pi = take[inverse[chosen]] / population[inverse[chosen]]
    return chosen, pi.astype(np.float64)


def random_sample(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simple random sample of `size` of n items: (sorted indices int64 [m], pi float64 [m] = m / n)."""
    return stratified_sample(np.zeros(n, np.int64), size, rng)


def top_sample(scores: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The `size` highest scores (ties by position): (sorted indices, pi = NaN: not a probability sample)."""
    scores = np.asarray(scores, np.float64)
    order = np.lexsort((np.arange(scores.size), -scores))[:size]
    chosen = np.sort(order)
    return chosen, np.full(chosen.size, np.nan)


def margin_sample(scores: np.ndarray, size: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The `size` scores nearest `threshold` on the logit scale (pi = NaN: not a probability sample)."""
    distance = np.abs(logit(scores) - logit(np.array([threshold]))[0])
    order = np.lexsort((np.arange(distance.size), distance))[:size]
    chosen = np.sort(order)
    return chosen, np.full(chosen.size, np.nan)


@dataclasses.dataclass(frozen=True)
class Logistic:
    """P(yes | score) = sigmoid(intercept + slope * logit(score))."""

    intercept: float
    slope: float

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """float [n] scores -> float64 [n] probability that the window truly holds a gunshot."""
        z = self.intercept + self.slope * logit(scores)
        return 1.0 / (1.0 + np.exp(-z))

    def score_at(self, probability: float) -> float:
        """The score at which the fitted probability equals `probability` (NaN for a flat fit)."""
        if self.slope <= 0:
            return math.nan
        z = (math.log(probability / (1 - probability)) - self.intercept) / self.slope
        return float(1.0 / (1.0 + math.exp(-z)))


def fit_logistic(scores: np.ndarray, verdicts: np.ndarray, *, c: float = 1e4) -> Logistic:
    """Logistic regression of the verdict on logit(score) (scikit-learn, lbfgs, almost no penalty).

    Args:
      scores: float [m] scores of the answered items.
      verdicts: bool [m], True = yes (a gunshot).
      c: inverse regularisation strength; large keeps the fit the plain maximum likelihood one while
        staying finite when yes and no are perfectly separated by the score.
    Raises:
      ValueError: when the verdicts are all yes or all no (nothing to fit).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(verdicts, bool)
    if y.all() or not y.any():
        raise ValueError(f"{y.size} verdicts are all {'yes' if y.all() else 'no'}: a fit needs both")
    x = logit(scores)[:, None]
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(x, y)
    return Logistic(float(model.intercept_[0]), float(model.coef_[0, 0]))


#: Grid of site offsets u (logit scale) over which the random-intercept posteriors are computed.
OFFSET_GRID = np.linspace(-10.0, 10.0, 2001)
#: Between-site standard deviations tau tried by the empirical-Bayes fit (0 = no site differs).
TAU_GRID = np.concatenate([[0.0], np.geomspace(0.02, 5.0, 120)])


@dataclasses.dataclass(frozen=True)
class PooledFit:
    """Per-group logistic fits whose intercepts are shrunk toward the overall fit (partial pooling).

    Model: P(yes | s, group j) = sigmoid(a + u_j + b * logit(s)), u_j ~ Normal(0, tau^2), with (a, b)
    the overall fit. tau is the empirical-Bayes (maximum marginal likelihood) estimate and u_j the
    posterior mean of group j's offset given its verdicts (see `fit_partial_pooling`).

    Attributes:
      overall: the overall fit (a, b).
      tau: estimated between-group standard deviation of the intercept (logit scale).
      offsets: {group: posterior mean of u_j}; a group without verdicts has 0 (the overall fit).
      offset_sd: {group: posterior standard deviation of u_j}.
      verdicts: {group: yes/no verdicts it had}.
    """

    overall: Logistic
    tau: float
    offsets: dict
    offset_sd: dict
    verdicts: dict

    def model(self, group) -> Logistic:
        """The group's fit: the overall slope, the overall intercept plus the group's offset."""
        return Logistic(self.overall.intercept + self.offsets.get(group, 0.0), self.overall.slope)

    def shrinkage(self, group) -> float:
        """Share of the group's own evidence kept: 1 - posterior variance / tau^2 (0 = the overall fit)."""
        if self.tau <= 0 or group not in self.offset_sd:
            return 0.0
        return float(max(0.0, 1.0 - self.offset_sd[group] ** 2 / self.tau**2))


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def fit_partial_pooling(
    scores: np.ndarray, verdicts: np.ndarray, groups: np.ndarray, *, overall: Logistic | None = None
) -> PooledFit:
    """Empirical-Bayes shrinkage of per-group intercepts toward the overall logistic fit.

    A two-stage approximation of the random-intercept logistic model (a generalised linear mixed
    model, as lme4's glmer fits): (1) the overall fit (a, b) on every verdict (`fit_logistic`);
    (2) with (a, b) held, each group's likelihood of an offset u, L_j(u) = prod_i P(y_i | a + u +
    b * logit(s_i)), on a grid of u; tau maximises the marginal likelihood prod_j integral L_j(u)
    Normal(u; 0, tau^2) du (grid integration, tau on TAU_GRID); each group's offset is its posterior
    mean E[u | y_j] under Normal(0, tau^2). A group with few verdicts, or whose verdicts the overall
    fit already explains, stays near the overall fit; one with many verdicts that disagree with it
    moves toward its own fit. Unlike a separate fit per group it never diverges when a group's
    answers are all alike (perfect separation), and no verdict count decides all or nothing.

    Args:
      scores: float [m] scores of the answered items.
      verdicts: bool [m] True = yes.
      groups: [m] group of each answered item.
      overall: the overall fit if already made (else fitted here).
    Returns:
      PooledFit.
    """
    y = np.asarray(verdicts, bool)
    overall = overall or fit_logistic(scores, y)
    eta = overall.intercept + overall.slope * logit(scores)  # float [m]
    groups = np.asarray(groups, object)
    names = sorted(set(groups.tolist()), key=str)
    u = OFFSET_GRID
    # log L_j(u) for every group j and grid point: float [J, G]
    sign = np.where(y, 1.0, -1.0)  # log P(y | eta) = log sigmoid(sign * eta)
    loglik = np.stack(
        [_log_sigmoid(sign[groups == g, None] * (eta[groups == g, None] + u)).sum(0) for g in names]
    )
    step = u[1] - u[0]

    def log_prior(tau):  # float [G]: a discretised Normal(0, tau^2); tau = 0 puts all mass on u = 0
        if tau <= 0:
            prior = np.where(np.isclose(u, 0.0, atol=step / 2), 0.0, -np.inf)
        else:
            prior = -0.5 * (u / tau) ** 2
        return prior - np.logaddexp.reduce(prior)

    marginal = [float(np.logaddexp.reduce(loglik + log_prior(t), axis=1).sum()) for t in TAU_GRID]
    tau = float(TAU_GRID[int(np.argmax(marginal))])
    log_post = loglik + log_prior(tau)
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    mean = post @ u
    sd = np.sqrt(np.maximum(post @ u**2 - mean**2, 0.0))
    counts = {g: int((groups == g).sum()) for g in names}
    return PooledFit(
        overall=overall,
        tau=tau,
        offsets={g: float(m) for g, m in zip(names, mean, strict=True)},
        offset_sd={g: float(s) for g, s in zip(names, sd, strict=True)},
        verdicts=counts,
    )


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what the model expects of it on a run.

    Attributes:
      threshold: detect when score >= threshold (NaN when no threshold reaches the target).
      precision: expected precision of the detections at the threshold.
      recall: expected share of all true windows of the run that it detects.
      detections: windows at or above the threshold.
      reached: whether the target precision is reached (else the threshold of highest precision).
    """

    threshold: float
    precision: float
    recall: float
    detections: int
    reached: bool


def threshold_for_precision(
    model: Logistic,
    scores: np.ndarray,
    target: float,
    *,
    min_recall: float | None = None,
    known: np.ndarray | None = None,
) -> ThresholdChoice:
    """The lowest threshold whose expected precision on `scores` reaches `target` (see module doc).

    Args:
      model: the fit.
      scores: float [n] every item's score in the run (or the group).
      target: precision wanted, in (0, 1).
      min_recall: the implied recall the threshold must keep, or None. When the lowest threshold
        reaching `target` keeps less, the target is not reached and the highest threshold keeping
        `min_recall` is given instead (the most precise one that keeps the recall asked for).
      known: float [n] the verdict of each item that was answered (1 = yes, 0 = no), NaN for the
        others, or None. An answered item counts as its verdict, the others as the fit's p(s): the
        expected precision and recall are then conditional on what was heard (with every item
        answered they are the exact ones; with few, they are the model's).
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    s = np.asarray(scores, np.float64)[order]
    if s.size == 0:
        return ThresholdChoice(math.nan, math.nan, math.nan, 0, False)
    p = model.predict(s)
    if known is not None:
        k = np.asarray(known, np.float64)[order]
        p = np.where(np.isnan(k), p, k)
    expected = np.cumsum(p)
    precision = expected / np.arange(1, s.size + 1)
    total = float(expected[-1])
    recall = expected / total if total > 0 else np.full(s.size, np.nan)
    # A threshold lies between distinct scores: only the last index of a run of ties is a cut.
    cut = np.ones(s.size, bool)
    cut[:-1] = s[:-1] != s[1:]
    ok = np.flatnonzero(cut & (precision >= target))
    reached = ok.size > 0
    i = int(ok[-1]) if reached else int(np.flatnonzero(cut)[np.argmax(precision[cut])])
    if min_recall is not None and total > 0 and recall[i] < min_recall:
        keeps = np.flatnonzero(cut & (recall >= min_recall - 1e-12))  # the last cut (every item) keeps it
        i, reached = int(keeps[0]), False
    return ThresholdChoice(
        threshold=float(s[i]),
        precision=float(precision[i]),
        recall=float(recall[i]) if total > 0 else math.nan,
        detections=i + 1,
        reached=reached,
    )


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An estimated total with its interval (see the module docstring for the estimator)."""

    total: float
    low: float
    high: float
    standard_error: float
    answered: int
    yes: int


def estimate_totals(
    strata: np.ndarray,
    sample: np.ndarray,
    yes: np.ndarray,
    *,
    domains: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
    z: float = Z90,
) -> dict:
    """Stratified estimates of the number of "yes" items in the frame, overall or per domain.

    Args:
      strata: [n] stratum code of every item of the frame.
      sample: int [m] indices into the frame of the answered sample items.
      yes: bool [m] their verdicts.
      domains: [n] domain of every frame item (group, day); None = one domain "all".
      predicted: float [n] a model's probability of "yes" for every frame item (the logistic fit), or
        None for the plain Horvitz-Thompson estimator. With it, the model-assisted (difference)
        estimator: sum of the predictions plus the design-weighted sum of the sample's residuals.
      z: normal quantile of the interval (1.645 = 90 %).
    Returns:
      {domain: Estimate}, domains sorted. Strata without an answered item contribute their
      predictions only (none without a model): the caller reports them.
    """
    strata = np.asarray(strata)
    sample = np.asarray(sample, np.int64)
    yes = np.asarray(yes, bool)
    codes, inverse = np.unique(strata, return_inverse=True)
    big_n = np.bincount(inverse, minlength=codes.size).astype(np.float64)
    h = inverse[sample]
    m = np.bincount(h, minlength=codes.size).astype(np.float64)
    answered = m > 0
    frame_domains = (
        np.full(strata.size, "all", dtype=object) if domains is None else np.asarray(domains, object)
    )
    pred = np.zeros(strata.size) if predicted is None else np.asarray(predicted, np.float64)
    result = {}
    for domain in sorted(set(frame_domains.tolist()), key=str):
        in_domain = frame_domains == domain
        in_sample = in_domain[sample]
        residual = np.where(in_sample, yes - pred[sample], 0.0)  # float [m]: z_i - prediction_i
        modelled = float(pred[in_domain].sum())
        sums = np.bincount(h, residual, minlength=codes.size)
        squares = np.bincount(h, residual**2, minlength=codes.size)
        mean = np.divide(sums, m, out=np.zeros_like(sums), where=answered)
        # Sample variance (ddof 1); a stratum with one answered item uses that item's square.
        s2 = np.where(m > 1, (squares - m * mean**2) / np.maximum(m - 1, 1), squares)
        s2 = np.maximum(s2, 0.0)
        if predicted is not None:
            # A stratum whose answers all agree has a sample variance of 0 although its items are
            # uncertain: floor it at the model's variance of the domain's verdicts there.
            p = np.where(in_domain, pred, 0.0)
            model_s2 = np.bincount(inverse, p * (1 - p), minlength=codes.size) / big_n
            s2 = np.maximum(s2, model_s2)
        total = modelled + float((big_n * mean).sum())
        fpc = np.where(answered, 1 - m / big_n, 0.0)
        variance = float((big_n**2 * fpc * np.divide(s2, m, out=np.zeros_like(s2), where=answered)).sum())
        seen = int((yes & in_sample).sum())
        se = math.sqrt(variance)
        result[domain] = Estimate(
            total=total,
            low=max(float(seen), total - z * se),
            high=max(float(seen), total + z * se),
            standard_error=se,
            answered=int(in_sample.sum()),
            yes=seen,
        )
    return result


def design_recall(
    strata: np.ndarray, sample: np.ndarray, yes: np.ndarray, predicted: np.ndarray, detected: np.ndarray
) -> tuple[float, float]:
    """Recall and precision of a detector from the sample's design (see `estimate_totals`).

    Args:
      strata, sample, yes, predicted: as for `estimate_totals` (frame [n], answered sample [m]).
      detected: bool [n] the frame windows the detector keeps (e.g. score >= threshold).
    Returns:
      (estimated gunshot windows detected / estimated gunshot windows in the frame,
       estimated gunshot windows detected / windows detected); NaN where a denominator is 0.
    """
    side = np.where(detected, "above", "below").astype(object)
    totals = estimate_totals(strata, sample, yes, domains=side, predicted=predicted)
    found = totals["above"].total if "above" in totals else 0.0
    everything = found + (totals["below"].total if "below" in totals else 0.0)
    kept = int(np.count_nonzero(detected))
    return (found / everything if everything > 0 else math.nan, found / kept if kept else math.nan)
