#!/usr/bin/env python3
"""Reference values for src/eval/stats.c, computed independently of it:

- Wilson 95 % intervals by the textbook formula (Wilson 1927) in Python floats;
- exact two-sided McNemar p-values as exact rationals:
  min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)), with math.comb and
  fractions.Fraction (no floating point until the end, no lgamma);
- the paired bootstrap with its own PCG32 (O'Neill's pcg32_srandom_r /
  pcg32_random_r, stream 54, as src/model/sample.c documents it), index
  (u32 * n) >> 32, the mean of each resample summed in index order, and the
  percentile interval with linear interpolation between order statistics.

Writes tests/data/eval/stats_goldens.json. Run with /usr/bin/python3 from the
repository root; scipy is not needed (it may be absent)."""
import json
import math
from fractions import Fraction

Z95 = 1.959963984540054
M64 = (1 << 64) - 1


def wilson(k, n, z=Z95):
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = max(0.0, center - half), min(1.0, center + half)
    if k == 0:
        lo = 0.0
    if k == n:
        hi = 1.0
    return lo, hi


def mcnemar(b, c):
    n = b + c
    if n == 0:
        return 1.0
    m = min(b, c)
    tail = Fraction(sum(math.comb(n, k) for k in range(m + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


class PCG32:
    def __init__(self, seed):
        self.state = 0
        self.inc = (54 << 1) | 1
        self.next()
        self.state = (self.state + seed) & M64
        self.next()

    def next(self):
        old = self.state
        self.state = (old * 6364136223846793005 + self.inc) & M64
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & 0xFFFFFFFF


def percentile(sorted_values, q):
    n = len(sorted_values)
    pos = q * (n - 1)
    i = math.floor(pos)
    if i + 1 >= n:
        return sorted_values[n - 1]
    t = pos - i
    return sorted_values[i] + (sorted_values[i + 1] - sorted_values[i]) * t


def bootstrap(d, iters, seed, level=0.95):
    n = len(d)
    total = 0.0
    for x in d:
        total += x
    mean = total / n
    rng = PCG32(seed)
    means = []
    for _ in range(iters):
        s = 0.0
        for _ in range(n):
            s += d[(rng.next() * n) >> 32]
        means.append(s / n)
    means.sort()
    return mean, percentile(means, (1 - level) / 2), percentile(means, (1 + level) / 2)


def main():
    wilson_cases = [(0, 0), (0, 10), (10, 10), (1, 2), (7, 20), (45, 50), (500, 1000), (3, 1000), (999, 1000)]
    mcnemar_cases = [(0, 0), (1, 0), (0, 5), (3, 7), (10, 10), (2, 25), (25, 2), (40, 60), (0, 30), (100, 130),
                     (600, 650), (1, 1), (900, 1000), (2000, 2100)]
    # score differences: binary flips, continuous scores, all equal
    boot_cases = [
        ([1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 1.0, 0.0, -1.0, 1.0], 2000, 1234),
        ([0.25, -0.5, 0.125, 0.0, 0.75, -0.25, 0.5, 0.0625, -0.125, 0.3, 0.1, -0.7, 0.9], 3000, 7),
        ([0.0] * 6, 500, 99),
        ([-1.0, -1.0, 0.0, -1.0, 0.0, 0.0, -1.0, 1.0, -1.0, -1.0, 0.0, -1.0, 0.0, -1.0, -1.0, 0.0], 10000, 42),
    ]
    out = {
        "wilson": [{"k": k, "n": n, "lo": wilson(k, n)[0], "hi": wilson(k, n)[1]} for k, n in wilson_cases],
        "mcnemar": [{"b": b, "c": c, "p": mcnemar(b, c)} for b, c in mcnemar_cases],
        "bootstrap": [],
    }
    for d, iters, seed in boot_cases:
        mean, lo, hi = bootstrap(d, iters, seed)
        out["bootstrap"].append({"d": d, "iters": iters, "seed": seed, "mean": mean, "lo": lo, "hi": hi})
    with open("tests/data/eval/stats_goldens.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
