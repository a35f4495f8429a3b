"""The layer split is exact: it matches brute force over every composition."""

import itertools
import random

from hexserve.planner.split import equal_split, minmax_split, minsum_split


def _compositions(total: int, parts: int):
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds = (0, *cuts, total)
        yield [b - a for a, b in itertools.pairwise(bounds)]


def test_minmax_and_minsum_match_brute_force():
    rng = random.Random(3)
    for _ in range(60):
        n, total = rng.randint(1, 4), rng.randint(4, 14)
        fixed = [rng.uniform(0, 2) for _ in range(n)]
        per = [rng.uniform(0.1, 2) for _ in range(n)]
        caps = [rng.randint(1, total) for _ in range(n)]
        splits = _compositions(total, n) if n <= total else []
        ok = [c for c in splits if all(x <= k for x, k in zip(c, caps, strict=True))]
        got_max, got_sum = minmax_split(fixed, per, caps, total), minsum_split(per, caps, total)
        if not ok:
            assert got_max is None and got_sum is None
            continue
        best_max = min(max(f + p * x for f, p, x in zip(fixed, per, c, strict=False)) for c in ok)
        assert max(f + p * x for f, p, x in zip(fixed, per, got_max, strict=False)) <= best_max + 1e-9
        best_sum = min(sum(p * x for p, x in zip(per, c, strict=False)) for c in ok)
        assert sum(p * x for p, x in zip(per, got_sum, strict=False)) <= best_sum + 1e-9
        assert sum(got_max) == sum(got_sum) == total


def test_equal_split():
    assert equal_split(3, 80) == [27, 27, 26]
