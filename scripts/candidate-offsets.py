#!/usr/bin/env python3
"""How far each labelled mitosis lies from its nearest candidate (analysis aid, not part of the build).

Each CSV is a recipe run's `out-of-fold.csv` or a `detect --all-candidates` `candidates.csv`
(image,x,y,score,...). For each CSV, prints the median, 75th and 90th percentile distance (um)
from each ICPR scanner-A mitosis to its nearest candidate, and the mean score of the candidates
nearest to the mitoses they find (within 8 um). Stage 2 reads a crop centred on the candidate,
so this says how far off-centre it sees a figure.

Usage: python3 scripts/candidate-offsets.py RUN/out-of-fold.csv... [--data DIR]  (DIR: ../shared/data)
"""
import argparse
import csv
import math
from collections import defaultdict

MPP = 0.2456
RADIUS_UM = 8.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('csv', nargs='+')
    parser.add_argument('--data', default='../shared/data')
    args = parser.parse_args()
    truth = defaultdict(list)
    for r in csv.DictReader(open(f'{args.data}/icpr2012/centroids.csv')):
        truth[r['image']].append((float(r['x']), float(r['y'])))
    for path in args.csv:
        candidates = defaultdict(list)
        for r in csv.DictReader(open(path)):
            candidates[r['image']].append((float(r['x']), float(r['y']), float(r['score'])))
        offsets, found_scores = [], []
        for image, points in truth.items():
            for tx, ty in points:
                near = min(((math.hypot(x - tx, y - ty) * MPP, s) for x, y, s in candidates[image]), default=None)
                if near is None:
                    offsets.append(math.inf)
                    continue
                offsets.append(near[0])
                if near[0] <= RADIUS_UM:
                    found_scores.append(near[1])
        offsets.sort()
        at = lambda q: offsets[min(len(offsets) - 1, int(q * (len(offsets) - 1) + 0.5))]
        mean = sum(found_scores) / len(found_scores) if found_scores else float('nan')
        print(f'{path}: {len(offsets)} mitoses, offset to the nearest candidate (um) median {at(0.5):.2f}, '
              f'p75 {at(0.75):.2f}, p90 {at(0.9):.2f}; {len(found_scores)} within {RADIUS_UM:g} um, '
              f'mean score {mean:.3f}')


if __name__ == '__main__':
    main()
