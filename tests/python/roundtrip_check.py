#!/usr/bin/env python3
"""Check that .h5ad files written by latentlab's Rust writer open in Python anndata with the
right values.

Usage:
    python tests/python/roundtrip_check.py DIR

DIR holds pairs `<name>.h5ad` + `<name>.expected.json`, written by the Rust test
`data::h5ad_write::tests::python_roundtrip_fixtures` (run it with
`LATENTLAB_ROUNDTRIP_DIR=DIR cargo test -p latentlab-framework python_roundtrip`; with
`LATENTLAB_PYTHON=/path/to/python` set, that test also runs this script itself).

Requires: anndata >= 0.10, numpy, pandas (`pip install anndata`).
Exit status 0 when every file matches, 1 otherwise (each mismatch printed on one line).
"""

import json
from importlib.metadata import version
import math
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

FAILURES = []


def fail(file, what):
    FAILURES.append(f"{file}: {what}")


def close(a, b, tol=1e-6):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


def dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def check_column(file, where, series, spec):
    kind, values = spec["kind"], spec["values"]
    if kind == "categorical":
        if not isinstance(series.dtype, pd.CategoricalDtype):
            return fail(file, f"{where}: expected categorical, got {series.dtype}")
        if list(series.cat.categories) != spec["categories"]:
            return fail(file, f"{where}: categories {list(series.cat.categories)} != {spec['categories']}")
        got = [None if pd.isna(v) else str(v) for v in series]
    elif kind in ("float", "int"):
        if not pd.api.types.is_numeric_dtype(series.dtype) or series.dtype == bool:
            return fail(file, f"{where}: expected {kind}, got {series.dtype}")
        if kind == "int" and not pd.api.types.is_integer_dtype(series.dtype):
            return fail(file, f"{where}: expected integer dtype, got {series.dtype}")
        if not close(series.to_numpy(dtype=float), values):
            return fail(file, f"{where}: values differ")
        return
    elif kind == "bool":
        if series.dtype != bool:
            return fail(file, f"{where}: expected bool, got {series.dtype}")
        got = [bool(v) for v in series]
    elif kind == "string":
        got = [str(v) for v in series]
    elif kind in ("nullable-int", "nullable-bool"):
        expect_dtype = "Int" if kind == "nullable-int" else "boolean"
        if not str(series.dtype).startswith(expect_dtype):
            return fail(file, f"{where}: expected pandas {expect_dtype} dtype, got {series.dtype}")
        got = [None if pd.isna(v) else (int(v) if kind == "nullable-int" else bool(v)) for v in series]
    else:
        return fail(file, f"{where}: unknown kind {kind}")
    if got != values:
        fail(file, f"{where}: {got} != {values}")


def check_frame(file, where, df, spec):
    if list(df.index) != spec["index"]:
        fail(file, f"{where}: index differs")
    if list(df.columns) != spec["order"]:
        fail(file, f"{where}: columns {list(df.columns)} != {spec['order']}")
    for name, col in spec["columns"].items():
        if name in df.columns:
            check_column(file, f"{where}[{name!r}]", df[name], col)


def check_uns(file, where, got, spec):
    kind = spec["kind"]
    value = spec["value"]
    if kind == "map":
        if not isinstance(got, dict):
            return fail(file, f"{where}: expected dict, got {type(got).__name__}")
        if sorted(got.keys()) != sorted(value.keys()):
            return fail(file, f"{where}: keys {sorted(got.keys())} != {sorted(value.keys())}")
        for k, v in value.items():
            check_uns(file, f"{where}/{k}", got[k], v)
    elif kind == "str":
        if got != value:
            fail(file, f"{where}: {got!r} != {value!r}")
    elif kind in ("float", "int", "bool"):
        if np.ndim(got) != 0 or not close(float(got), float(value)):
            fail(file, f"{where}: {got!r} != {value!r}")
    elif kind == "strings":
        if [str(v) for v in got] != value:
            fail(file, f"{where}: {list(got)} != {value}")
    elif kind == "floats":
        if not close(got, value):
            fail(file, f"{where}: {got} != {value}")


def check(h5ad, expected):
    file = h5ad.name
    spec = json.loads(expected.read_text())
    try:
        a = ad.read_h5ad(h5ad)
    except Exception as e:  # noqa: BLE001 - report any reader failure
        return fail(file, f"anndata cannot read it: {type(e).__name__}: {e}")
    if list(a.shape) != spec["shape"]:
        fail(file, f"shape {a.shape} != {spec['shape']}")
    if spec["x_sparse"] != sp.issparse(a.X):
        fail(file, f"X sparse={sp.issparse(a.X)}, expected {spec['x_sparse']}")
    if a.X.dtype != np.float32:
        fail(file, f"X dtype {a.X.dtype}, expected float32")
    if not close(dense(a.X), spec["X"]):
        fail(file, "X values differ")
    check_frame(file, "obs", a.obs, spec["obs"])
    check_frame(file, "var", a.var, spec["var"])
    if sorted(a.layers.keys()) != sorted(spec["layers"].keys()):
        fail(file, f"layers {sorted(a.layers.keys())} != {sorted(spec['layers'].keys())}")
    for k, v in spec["layers"].items():
        if k in a.layers and not close(dense(a.layers[k]), v):
            fail(file, f"layers[{k!r}] values differ")
    for k, v in spec["obsm"].items():
        if k not in a.obsm:
            fail(file, f"obsm[{k!r}] missing")
        elif v["kind"] == "array":
            if not close(np.asarray(a.obsm[k]), v["values"]):
                fail(file, f"obsm[{k!r}] values differ")
        else:
            check_frame(file, f"obsm[{k!r}]", a.obsm[k], v["frame"])
    if spec["raw"] is None:
        if a.raw is not None:
            fail(file, "unexpected raw")
    else:
        if a.raw is None:
            fail(file, "raw missing")
        else:
            if not close(dense(a.raw.X), spec["raw"]["X"]):
                fail(file, "raw.X values differ")
            if list(a.raw.var_names) != spec["raw"]["var_names"]:
                fail(file, "raw.var_names differ")
    check_uns(file, "uns", dict(a.uns), {"kind": "map", "value": spec["uns"]})
    # The object must survive a Python write/read cycle too.
    try:
        out = h5ad.with_suffix(".python.h5ad")
        a.write_h5ad(out)
        ad.read_h5ad(out)
        out.unlink()
    except Exception as e:  # noqa: BLE001
        fail(file, f"anndata cannot re-write it: {type(e).__name__}: {e}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = Path(sys.argv[1])
    pairs = sorted(root.glob("*.expected.json"))
    if not pairs:
        print(f"{root}: no *.expected.json files; run the Rust test first (see --help)")
        return 2
    for expected in pairs:
        h5ad = expected.with_name(expected.name.replace(".expected.json", ".h5ad"))
        check(h5ad, expected)
    for f in FAILURES:
        print("FAIL", f)
    print(f"anndata {version('anndata')}: {len(pairs)} file(s) checked, {len(FAILURES)} mismatch(es)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
