#!/usr/bin/env python3
"""Draws the PNG of a benches/compare run: gcsfs's advantage over gcsfuse per workload (left) and
the absolute medians of every mount, each workload scaled to its best mount (right).

Usage: chart.py RESULTS.json OUT.png
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src, dest = sys.argv[1], sys.argv[2]
    with open(src) as f:
        run = json.load(f)
    results = run["results"]
    mounts = []
    for r in results:
        if r["mount"] not in mounts:
            mounts.append(r["mount"])
    rows = []
    for name, unit, better, _ in run["workloads"]:
        med = {}
        for m in mounts:
            vals = [r["value"] for r in results if r["workload"] == name and r["mount"] == m]
            if vals:
                med[m] = statistics.median(vals)
        if med:
            rows.append((name, unit, better, med))

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 0.5 * len(rows) + 2.5))
    names = [r[0] for r in rows]
    ratios = []
    for _, _, better, med in rows:
        g, f = med.get("gcsfs"), med.get("gcsfuse")
        ratios.append((g / f if better == "high" else f / g) if g and f else 0)
    y = range(len(rows))
    colors = ["tab:green" if r >= 1 else "tab:red" for r in ratios]
    left.barh(list(y), ratios, color=colors)
    left.axvline(1, color="black", linewidth=0.8)
    left.set_yticks(list(y), names)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("gcsfs advantage over gcsfuse (×, log scale; > 1 = gcsfs better)")
    for i, r in enumerate(ratios):
        if r:
            left.text(r, i, " %.2f×" % r, va="center")

    width = 0.8 / len(mounts)
    for j, m in enumerate(mounts):
        xs, ys, labels = [], [], []
        for i, (_, unit, better, med) in enumerate(rows):
            if m not in med:
                continue
            vals = [v for v in med.values() if v]
            best = max(vals) if better == "high" else min(vals)
            score = (med[m] / best) if better == "high" else (best / med[m] if med[m] else 0)
            xs.append(i + (j - (len(mounts) - 1) / 2) * width)
            ys.append(score)
            labels.append("%.3g %s" % (med[m], unit))
        bars = right.barh(xs, ys, height=width, label=m)
        for bar, label in zip(bars, labels):
            right.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label,
                       va="center", fontsize=7)
    right.set_yticks(list(y), names)
    right.invert_yaxis()
    right.set_xlim(0, 1.45)
    right.set_xlabel("score relative to the best mount (1 = best); labels are the medians")
    right.legend(loc="lower right")
    fig.suptitle(run["meta"]["settings"], fontsize=9)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main()
