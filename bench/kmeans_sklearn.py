#!/usr/bin/env python3
"""Cluster a feature matrix with scikit-learn's KMeans, as the reference for Umbra's k-means.

Usage:
    python3 bench/kmeans_sklearn.py FEATURES.npy --k 12 --seed 1 [--n-init 4] [--max-iter 300]
                                    [--tol 1e-4] [--threads N] [--labels OUT.npy]

FEATURES.npy is a 2-D float array (rows × dims) as written by umbra_learn's
`Matrix::write_npy` ('<f4', C order); other float dtypes are converted to float32 so both sides
cluster the same numbers. Runs KMeans(n_clusters=k, n_init=n_init, random_state=seed) with the
default Lloyd algorithm and k-means++ seeding, then prints one JSON object on stdout:

    {"sklearn_inertia": ..., "sklearn_seconds": ..., "sklearn_iterations": ...,
     "sklearn_inertia_reported": ..., "rows": ..., "dims": ..., "k": ..., "n_init": ...,
     "seed": ..., "threads": ...}

sklearn_inertia is recomputed in float64 from the fitted centres and labels. scikit-learn's own
`inertia_` (sklearn_inertia_reported) is summed in the data's float32 and drifts by up to about
1e-4 relative on a million rows, which is the size of the differences we want to see.
sklearn_seconds covers `fit` only (not loading or the recomputation). --threads caps OpenMP and
BLAS threads (default: all cores, like Umbra's rayon pool). --labels saves the labels as int32
.npy, e.g. to compare with Umbra's labels by adjusted Rand index.

Needs numpy and scikit-learn:  pip install numpy scikit-learn
Errors (missing file, bad shape, non-finite values, k out of range) exit with status 2 and a
one-line message on stderr.
"""

import argparse
import json
import os
import sys
import time


def fail(msg):
    print(f"kmeans_sklearn.py: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args():
    p = argparse.ArgumentParser(
        description="Run scikit-learn KMeans on a .npy feature matrix and print JSON."
    )
    p.add_argument("features", help="2-D float .npy file (rows x dims)")
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    p.add_argument("--n-init", type=int, default=4, help="k-means++ restarts (default 4)")
    p.add_argument("--max-iter", type=int, default=300, help="Lloyd iterations per run (default 300)")
    p.add_argument("--tol", type=float, default=1e-4, help="sklearn tol (default 1e-4)")
    p.add_argument("--threads", type=int, default=None, help="cap on OpenMP/BLAS threads")
    p.add_argument("--labels", default=None, help="write fitted labels to this .npy file")
    return p.parse_args()


def main():
    args = parse_args()
    try:
        import numpy as np
        from sklearn.cluster import KMeans
    except ImportError as e:
        fail(f"{e}; install with: pip install numpy scikit-learn")

    try:
        X = np.load(args.features, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError) as e:
        fail(f"{args.features}: cannot load: {e}")
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        fail(f"{args.features}: want a 2-D array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        fail(f"{args.features}: want a float array, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    rows, dims = X.shape
    if rows == 0 or dims == 0:
        fail(f"{args.features}: empty matrix, shape {X.shape}")
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        fail(f"{args.features}: row {r}, column {c}: value {X[r, c]} is not finite")
    if not 1 <= args.k <= rows:
        fail(f"--k {args.k}: must be between 1 and the {rows} rows")

    threads = args.threads
    limiter = None
    if threads is not None:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        limiter = threadpool_limits(limits=threads)

    km = KMeans(
        n_clusters=args.k,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        random_state=args.seed,
    )
    started = time.perf_counter()
    km.fit(X)
    seconds = time.perf_counter() - started
    if limiter is not None:
        limiter.unregister()

    # float64 inertia, in blocks to keep memory flat on large inputs.
    centres = km.cluster_centers_.astype(np.float64)
    labels = km.labels_
    inertia = 0.0
    block = 1 << 16
    for start in range(0, rows, block):
        diff = X[start : start + block].astype(np.float64) - centres[labels[start : start + block]]
        inertia += float(np.einsum("ij,ij->", diff, diff))

    if args.labels:
        np.save(args.labels, labels.astype(np.int32))

    print(
        json.dumps(
            {
                "sklearn_inertia": inertia,
                "sklearn_seconds": round(seconds, 3),
                "sklearn_iterations": int(km.n_iter_),
                "sklearn_inertia_reported": float(km.inertia_),
                "rows": rows,
                "dims": dims,
                "k": args.k,
                "n_init": args.n_init,
                "seed": args.seed,
                "threads": threads if threads is not None else os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
