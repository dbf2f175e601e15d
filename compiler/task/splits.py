"""Seeded splits that keep the targets' spread: per class (one class per image), by iterative
stratification (tags: every tag's share, Sechidis et al., through `iterative-stratification`),
and by quantile bins of a number (regression). A split depends only on the seed and the targets."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tlc check` loads the task without NumPy)


SALT = 20261125  # (mixed into every split's seed, so a split does not repeat the training seed's draws)


def stratified(labels: np.ndarray, validation: float, test: float, seed: int):
    """(train, validation, test) index arrays, each sorted; per class, `round(n * fraction)`
    examples go to the test split, then to validation, the rest to training."""
    import numpy as np

    rng = np.random.default_rng([seed, SALT])
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test))
        n_val = int(round(len(members) * validation))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_val])
        parts[0].append(members[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype("int64") if p else np.zeros(0, "int64") for p in parts)


def asked(n: int, fraction: float) -> int:
    """How many of `n` examples a split of `fraction` takes: never none when it was asked for
    (and one is left to train on)."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, int(round(n * fraction))), n - 1)


def iterative(tags: np.ndarray, validation: float, test: float, seed: int):
    """(train, validation, test) of a 0/1 matrix (n, k), each split keeping every tag's share."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    import numpy as np

    n = len(tags)
    every = np.arange(n)

    def take(indices: np.ndarray, size: int, salt: int):
        if size == 0:
            return indices, np.zeros(0, "int64")
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=size, random_state=_seed(seed, salt))
        kept, taken = next(splitter.split(np.zeros(len(indices)), tags[indices]))
        return indices[kept], indices[taken]

    rest, test_part = take(every, asked(n, test), 1)
    train, val = take(rest, asked(len(rest), validation / max(1e-9, 1 - test)) if validation else 0, 2)
    return tuple(np.sort(p).astype("int64") for p in (train, val, test_part))


def by_quantiles(values: np.ndarray, validation: float, test: float, seed: int, bins: int = 10):
    """(train, validation, test) of numbers, each split drawing from every quantile bin (of the
    values) in proportion, the totals `asked`: a requested split is never empty."""
    import numpy as np

    n = len(values)
    bins = max(1, min(bins, n // 5))
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.zeros(0)
    groups = np.searchsorted(edges, values, side="right")
    rng = np.random.default_rng([seed, SALT])
    members = [rng.permutation(np.flatnonzero(groups == g)) for g in np.unique(groups)]
    sizes = np.array([len(m) for m in members])
    n_test = _apportioned(sizes, asked(n, test))
    n_val = _apportioned(sizes - n_test, asked(n - int(n_test.sum()), validation / max(1e-9, 1 - test))
                         if validation else 0)
    parts: tuple[list, list, list] = ([], [], [])
    for m, t, v in zip(members, n_test, n_val):
        parts[2].append(m[:t])
        parts[1].append(m[t:t + v])
        parts[0].append(m[t + v:])
    return tuple(np.sort(np.concatenate(p)).astype("int64") for p in parts)


def _apportioned(sizes: np.ndarray, total: int) -> np.ndarray:
    """`total` shared among groups of `sizes` in proportion (largest remainders), none over its size."""
    import numpy as np

    if total == 0 or sizes.sum() == 0:
        return np.zeros(len(sizes), "int64")
    exact = sizes * total / sizes.sum()
    out = np.floor(exact).astype("int64")
    for i in np.argsort(-(exact - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return np.minimum(out, sizes)


def _seed(seed: int, salt: int) -> int:
    import numpy as np

    return int(np.random.default_rng([seed, SALT, salt]).integers(2**31))
