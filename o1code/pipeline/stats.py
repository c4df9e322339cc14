"""Statistics of evaluation results: pass@k, bootstrap confidence intervals, paired tests.

Torch-free (numpy and the standard library), so reports and `o1code compare` run anywhere.

- `pass_at_k`: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
  Code", eq. 1) in its numerically stable product form: from n samples of which c pass,
  ``1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)``.
- `bootstrap_ci`: a percentile bootstrap over problems of the mean of per-problem values (verdicts
  0/1, or per-problem pass@k estimates): the uncertainty that comes from which problems were drawn.
- `paired_bootstrap_ci`: the same for the mean per-problem difference of two runs on the same problems;
  pairing removes the between-problem variance that dominates an unpaired comparison.
- `ratio_ci`: a bootstrap over problems of a pooled share (comparisons won / made, e.g. a PRM's
  within-problem pair accuracy), where the comparisons of one problem are not independent.
- `mcnemar_exact`: the exact McNemar test (a two-sided binomial sign test on the discordant pairs).

Every resampling is seeded, so a report is reproducible to the digit.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Bootstrap resamples: enough that the CI's end points move by < 0.5 points between seeds at n = 90.
N_BOOT = 10_000
#: The confidence level of every interval in the reports.
LEVEL = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from `n` samples of which `c` passed (requires k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def ks_up_to(n: int) -> list[int]:
    """The k of a pass@k report for `n` samples: 1, 2, 5, 10, 20, 50, 100, ... up to n."""
    ks, base = [], 1
    while base <= n:
        ks += [k for k in (base, 2 * base, 5 * base) if k <= n]
        base *= 10
    return ks


def _check(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError("expected one value per problem")
    return arr


def bootstrap_ci(values: Sequence[float], seed: int = 0, n_boot: int = N_BOOT,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem `values` (resampling problems).

    (nan, nan) for no values. With every value equal the interval is that value: the bootstrap cannot
    see variance the sample does not show (at n = 12 an all-fail run reads [0, 0]; report n with it)."""
    arr = _check(values)
    if arr.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // arr.size)  # resample in chunks: memory stays ~32 MB at any n
    means = np.concatenate([arr[rng.integers(0, arr.size, size=(min(chunk, n_boot - i), arr.size))].mean(axis=1)
                            for i in range(0, n_boot, chunk)])
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def ratio_ci(wins: Sequence[float], counts: Sequence[float], seed: int = 0, n_boot: int = N_BOOT,
             level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(wins) / sum(counts)`` where ``wins[i]`` of ``counts[i]``
    comparisons were won on problem i (problems resampled, so pairs of one problem move together: they
    are not independent). (nan, nan) without any comparison."""
    w, c = _check(wins), _check(counts)
    if w.shape != c.shape:
        raise ValueError(f"wins and counts need equal lengths ({w.size} vs {c.size})")
    if c.sum() <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.size, size=(n_boot, c.size))
    tot = c[idx].sum(axis=1)
    ratios = w[idx].sum(axis=1)[tot > 0] / tot[tot > 0]  # a resample without any pair says nothing
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], seed: int = 0, n_boot: int = N_BOOT,
                        level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(b) - mean(a)`` where ``a[i]`` and ``b[i]`` are the two runs'
    values on the same problem i (problems resampled as pairs)."""
    xa, xb = _check(a), _check(b)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need equal lengths ({xa.size} vs {xb.size})")
    return bootstrap_ci(xb - xa, seed=seed, n_boot=n_boot, level=level)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: `a_only` problems passed by run A only,
    `b_only` by run B only. Under "no difference" each discordant problem is a fair coin, so the p-value is
    twice the binomial tail of the smaller count (capped at 1); 1.0 when nothing flipped."""
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts must be >= 0")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def ci_yerr(values: Sequence[float], cis: Sequence[Sequence[float] | None]) -> list[list[float]]:
    """Matplotlib's ``yerr`` (below, above) of shares `values` and their CIs (None or nan: no bar), in the
    values' own unit."""
    below, above = [], []
    for v, ci in zip(values, cis):
        ok = ci is not None and not any(x != x for x in ci)
        below.append(max(0.0, v - ci[0]) if ok else 0.0)
        above.append(max(0.0, ci[1] - v) if ok else 0.0)
    return [below, above]


__all__ = ["LEVEL", "N_BOOT", "bootstrap_ci", "ci_yerr", "ks_up_to", "mcnemar_exact", "paired_bootstrap_ci",
           "pass_at_k", "ratio_ci"]
