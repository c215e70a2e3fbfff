"""Benchmark: Krippendorff's alpha against the `krippendorff` package.

    .venv/bin/python bench/agreement.py                      # 1M and 10M annotations
    .venv/bin/python bench/agreement.py --sizes 1000000

Each size draws the same data for both implementations, in each one's natural input: a
long (item, annotator, label) polars frame for prefstream, a dense (raters x units) array
with NaN for missing for the package; building the inputs is not timed. Both results
must agree to 1e-6. Where the package's dense arrays would not fit in memory, it says so
and times the package at the largest size that fits. The whole audit's benchmark is
bench/audit.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

# Two shapes of the same kind of data: a labelling "panel" (10 raters, 80% of cells filled:
# the package's best case) and a production "crowd" (1,000 annotators, 3 labels per item:
# the package needs a dense 1,000 x items array, which is what rules it out at scale).
SHAPES = {"panel": (10, 8), "crowd": (1000, 3)}  # raters, labels per item


def make_data(annotations: int, shape: str, seed: int = 0) -> tuple[pl.DataFrame, int, int]:
    raters, per_item = SHAPES[shape]
    rng = np.random.default_rng(seed)
    units = annotations // per_item
    truth = rng.integers(1, 6, units)
    unit = np.repeat(np.arange(units), per_item)
    # per_item distinct raters per unit: a random first one, the others at random offsets
    # from disjoint stretches of the pool (so no unit gets the same rater twice).
    stretch = raters // per_item
    offsets = np.arange(per_item) * stretch + rng.integers(0, stretch, (units, per_item))
    offsets[:, 0] = 0
    rater = ((rng.integers(0, raters, units)[:, None] + offsets) % raters).ravel()
    label = np.where(rng.random(unit.size) < 0.75, truth[unit], rng.integers(1, 6, unit.size)).astype(np.float64)
    frame = pl.DataFrame({"item_id": unit.astype(np.int64), "annotator_id": rater.astype(np.int32), "label": label})
    return frame, raters, units


def dense(frame: pl.DataFrame, raters: int, units: int) -> np.ndarray:
    out = np.full((raters, units), np.nan)
    out[frame.get_column("annotator_id").to_numpy(), frame.get_column("item_id").to_numpy()] = frame.get_column("label").to_numpy()
    return out


def package_bytes(raters: int, units: int, values: int = 5) -> int:
    """What krippendorff.alpha holds at its peak: the float array and a (units, raters, values) bool array."""
    return raters * units * 8 + units * raters * values


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def bench_alpha(sizes: list[int]) -> None:
    import krippendorff
    import psutil

    from prefstream.quality import krippendorff_alpha

    budget = psutil.virtual_memory().available * 0.7
    print("Krippendorff's alpha: prefstream (codes + numpy bincount, long format) vs the krippendorff package (dense raters x units)")
    print("labels 1-5, 75% agree with a latent truth; both results agree to 1e-6")
    print(f"{'shape':>6} {'annotations':>12} {'level':>9} {'prefstream s':>13} {'krippendorff s':>15} {'ratio':>8}  alpha")
    for shape, (raters, per_item) in SHAPES.items():
        for size in sizes:
            frame, raters, units = make_data(size, shape)
            need = package_bytes(raters, units)
            package_size = size
            if need > budget:
                fitting = [s for s in (5_000_000, 2_000_000, 1_000_000, 500_000) if s < size and package_bytes(raters, s // per_item) <= budget]
                package_size = fitting[0] if fitting else 0
                print(f"{shape:>6} {size:>12,}  krippendorff package: too big here (needs ~{need / 2**30:.0f} GiB for its dense arrays, "
                      f"{budget / 2**30:.0f} GiB available); timing it at {package_size:,} annotations instead")
            for level in ("nominal", "interval"):
                ours, ours_s = timed(krippendorff_alpha, frame, level)
                if package_size == size:
                    theirs, theirs_s = timed(krippendorff.alpha, dense(frame, raters, units), level_of_measurement=level)
                    assert abs(ours - theirs) < 1e-6, (ours, theirs)
                    print(f"{shape:>6} {len(frame):>12,} {level:>9} {ours_s:>13.3f} {theirs_s:>15.3f} {theirs_s / ours_s:>7.1f}x  {ours:.6f}")
                else:
                    print(f"{shape:>6} {len(frame):>12,} {level:>9} {ours_s:>13.3f} {'(too big)':>15} {'':>8}  {ours:.6f}")
            if package_size not in (0, size):
                small, raters, units = make_data(package_size, shape)
                for level in ("nominal", "interval"):
                    ours, ours_s = timed(krippendorff_alpha, small, level)
                    theirs, theirs_s = timed(krippendorff.alpha, dense(small, raters, units), level_of_measurement=level)
                    assert abs(ours - theirs) < 1e-6, (ours, theirs)
                    print(f"{shape:>6} {len(small):>12,} {level:>9} {ours_s:>13.3f} {theirs_s:>15.3f} {theirs_s / ours_s:>7.1f}x  {ours:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated numbers of annotations")
    args = parser.parse_args()
    bench_alpha([int(float(s)) for s in args.sizes.split(",") if s])


if __name__ == "__main__":
    main()
