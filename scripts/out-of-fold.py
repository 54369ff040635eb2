#!/usr/bin/env python3
"""Scores out-of-fold candidate CSVs, and averages of them (analysis aid, not part of the build).

Each CSV is a recipe run's `out-of-fold.csv` (image,x,y,score,candidate_score; geometric-mean
fusion, score = sqrt(stage-1 peak x stage-2 probability)). Prints for each CSV, then for every
combination of two or more of them, the pooled AP, the best pooled F1 and the nested F1 (each
HPF at the best-F1 threshold of the others; ties go to the highest threshold) on the ICPR
scanner-A HPFs, greedy matching within 8 um at 0.2456 um/px. A combination averages the runs'
stage-2 probabilities (recovered as score^2 / stage-1 peak) and fuses the mean again, so runs
must share their stage 1 (the same candidates).

Usage: python3 scripts/out-of-fold.py RUN/out-of-fold.csv... [--data DIR]  (DIR: ../shared/data)
"""
import argparse
import csv
import itertools
import math
from collections import defaultdict

RADIUS_PX = 8 / 0.2456


def read_truth(data):
    truth = defaultdict(list)
    for r in csv.DictReader(open(f'{data}/icpr2012/centroids.csv')):
        truth[r['image']].append((float(r['x']), float(r['y'])))
    return truth


def read_run(path):
    """{(image, x, y): (stage-2 probability, stage-1 peak)}"""
    run = {}
    for r in csv.DictReader(open(path)):
        s, c = float(r['score']), float(r['candidate_score'])
        run[(r['image'], round(float(r['x']), 1), round(float(r['y']), 1))] = (min(1.0, s * s / c) if c > 0 else 0.0, c)
    return run


def fused(runs):
    keys = set(runs[0]).intersection(*runs[1:])
    by_image = defaultdict(list)
    for k in keys:
        p = sum(r[k][0] for r in runs) / len(runs)
        by_image[k[0]].append((k[1], k[2], math.sqrt(runs[0][k][1] * p)))
    return by_image


def matched(truth, preds, images):
    """(score, is true positive) per prediction: greedy by score, nearest free truth in reach."""
    out = []
    for im in images:
        free = list(truth[im])
        for x, y, s in sorted(preds.get(im, []), key=lambda p: -p[2]):
            near = [t for t in free if math.hypot(t[0] - x, t[1] - y) <= RADIUS_PX]
            if near:
                free.remove(min(near, key=lambda t: math.hypot(t[0] - x, t[1] - y)))
            out.append((s, bool(near)))
    return sorted(out, key=lambda p: -p[0])


def sweep(truth, preds, images):
    """(threshold, tp, fp) after each prediction, highest score first."""
    tp = fp = 0
    for s, hit in matched(truth, preds, images):
        tp, fp = tp + hit, fp + (not hit)
        yield s, tp, fp


def f1(tp, fp, n):
    return 2 * tp / (2 * tp + fp + (n - tp)) if n + fp else 0.0


def best_f1(truth, preds, images):
    n = sum(len(truth[i]) for i in images)
    return max(((f1(tp, fp, n), s, tp, fp) for s, tp, fp in sweep(truth, preds, images)), key=lambda b: b[0],
               default=(0.0, 1.0, 0, 0))


def average_precision(truth, preds, images):
    n = sum(len(truth[i]) for i in images)
    points = [(tp / n, tp / (tp + fp)) for _, tp, fp in sweep(truth, preds, images)]
    ap, prev = 0.0, 0.0
    for k, (recall, _) in enumerate(points):
        if recall > prev:
            ap += (recall - prev) * max(p for _, p in points[k:])
            prev = recall
    return ap


def report(name, truth, preds):
    images = sorted(truth)
    f, s, tp, fp = best_f1(truth, preds, images)
    ntp = nfp = 0
    for im in images:
        threshold = best_f1(truth, preds, [i for i in images if i != im])[1]
        kept = {im: [p for p in preds.get(im, []) if p[2] >= threshold]}
        hits = [hit for _, hit in matched(truth, kept, [im])]
        ntp, nfp = ntp + sum(hits), nfp + hits.count(False)
    n = sum(len(truth[i]) for i in images)
    print(f'{name}: AP {average_precision(truth, preds, images):.3f}, best F1 {f:.3f} at {s:.3f} '
          f'({tp} TP, {fp} FP), nested F1 {f1(ntp, nfp, n):.3f} ({ntp} TP, {nfp} FP)')


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument('runs', nargs='+')
    args.add_argument('--data', default='../shared/data')
    a = args.parse_args()
    truth = read_truth(a.data)
    runs = [read_run(p) for p in a.runs]
    for size in range(1, len(runs) + 1):
        for combo in itertools.combinations(range(len(runs)), size):
            report(' + '.join(a.runs[i] for i in combo), truth, fused([runs[i] for i in combo]))


if __name__ == '__main__':
    main()
