"""Sanity check of the round-2 reference JSON files: they load, carry versions, and every
fit entry has the fields the tests read. Run from the repo root:

    /work/venv/bin/python tests/reference/check_reference_json.py
"""
import json
import math
from pathlib import Path

HERE = Path(__file__).parent
FIT_KEYS = ("fixef", "fixef_se", "G", "sigma2", "loglik", "theta", "search")


def check_fit(name, fit):
    for k in FIT_KEYS:
        assert k in fit, f"{name}: missing {k}"
    assert fit["sigma2"] > 0 and math.isfinite(fit["loglik"]), name
    assert set(fit["fixef"]) == set(fit["fixef_se"]), name
    for term, g in fit["G"].items():
        m = g["matrix"]
        assert len(m) == len(g["names"]) and all(len(r) == len(m) for r in m), (name, term)
        assert all(m[i][i] >= 0 for i in range(len(m))), (name, term)


def main():
    files = {
        "csv_reference.json": None,
        "formula_functions_reference.json": check_fit,
        "suite_reference.json": check_fit,
        "ddf_reference.json": check_fit,
        "multi_factor_reference.json": check_fit,
    }
    for fname, check in files.items():
        path = HERE / fname
        if not path.exists():
            print(f"{fname}: MISSING")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        assert "R_version" in data["meta"] and "date" in data["meta"], fname
        n = 0
        if fname == "csv_reference.json":
            for rid, r in data["reads"].items():
                if r["error"] is None:
                    assert len(r["names"]) == len(r["columns"]) == len(r["classes"]), rid
                    assert all(len(c["values"]) == r["nrow"] for c in r["columns"]), rid
                n += 1
        else:
            for key, fit in data.items():
                if key.endswith(("_REML", "_ML")):
                    check(key, fit)
                    n += 1
        print(f"{fname}: {n} entries OK ({data['meta']['date']})")


if __name__ == "__main__":
    main()
