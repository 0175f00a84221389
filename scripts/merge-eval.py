#!/usr/bin/env python3
"""Merge `ichnet eval --json` reports of disjoint parts of one data folder into one report.

Evaluating a folder in parts (one process per core) is how the model card's figures were made on a
2-core machine; the summaries are recomputed from the per-case scores exactly as `ichnet eval`
computes them (src/cli/eval.rs), so a merged report reads like one run over the whole folder.

Usage: scripts/merge-eval.py PART.json... > merged.json
"""
import json
import statistics
import sys


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def summarise(pairs):
    """pairs: (true_ml, scores dict) per case."""
    big = [s["dice"] for ml, s in pairs if ml >= 1.0]
    errs = [abs(s["volume_error_ml"]) for _, s in pairs]
    neg = [s["pred_ml"] for ml, s in pairs if ml < 0.05]
    return {
        "cases_ge_1ml": len(big),
        "mean_dice_ge_1ml": mean(big),
        "median_dice_ge_1ml": statistics.median(big) if big else None,
        "median_abs_volume_error_ml": statistics.median(errs) if errs else None,
        "mean_abs_volume_error_ml": mean(errs),
        "mean_hd95_mm": mean(s["hd95_mm"] for _, s in pairs if s["hd95_mm"] is not None),
        "mean_sensitivity": mean(s["sensitivity"] for _, s in pairs if s["sensitivity"] is not None),
        "mean_precision": mean(s["precision"] for _, s in pairs if s["precision"] is not None),
        "negative_cases": len(neg),
        "max_ml_on_negatives": max(neg) if neg else None,
    }


def main(paths):
    parts = [json.load(open(p)) for p in paths]
    first = parts[0]
    for p in parts[1:]:
        for key in ("threshold", "crf"):
            if p.get(key) != first.get(key):
                sys.exit(f"parts differ in {key}: cannot merge")
    cases = [c for p in parts for c in p["cases"]]
    out = {
        "data": [p["data"] for p in parts],
        "threshold": first["threshold"],
        "crf": first.get("crf"),
        "cases": cases,
        "seconds": sum(p["seconds"] for p in parts),
    }
    for method in ("ichnet", "ichnet_crf", "baseline"):
        pairs = [(c["true_ml"], c[method]) for c in cases if c.get(method) is not None]
        out[method] = summarise(pairs) if pairs else None
    sweeps = [p.get("crf_sweep", []) for p in parts]
    if any(sweeps):
        merged = []
        for k, row in enumerate(sweeps[0]):
            per_case = [s for p, sw in zip(parts, sweeps) for s in sw[k]["per_case"]]
            true_ml = [c["true_ml"] for p in parts for c in p["cases"]]
            merged.append({
                "crf": row["crf"],
                "summary": summarise(list(zip(true_ml, per_case))),
                "per_case": per_case,
            })
        out["crf_sweep"] = merged
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
