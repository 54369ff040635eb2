#!/usr/bin/env python3
"""Do the figure-crop sources share the ICPR HPFs' scale? (analysis aid, not part of the build)

The recipe reads every crop source at 0.25 um/px. If one source were scanned at another
magnification its mitotic figures would be larger or smaller than the HPFs' in pixels. This
measures, per source, the area of the haematoxylin blob at the centre of 128x128 crops centred
on mitotic figures (haematoxylin by colour deconvolution, blurred, Otsu threshold per crop; the
largest blob of >= 20 px whose centroid is within 16 px of the centre) and prints the median
area and the linear scale against the ICPR scanner-A figures.

Usage: python3 scripts/figure-scale.py [DATA]   (DATA default ../shared/data;
needs numpy, pillow, scikit-image)
"""
import csv
import glob
import random
import sys

import numpy as np
from PIL import Image
from skimage.color import rgb2hed
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label, regionprops

DATA = sys.argv[1] if len(sys.argv) > 1 else '../shared/data'
HALF = 64  # ICPR figure crops are 128x128, as the crop sources


def centre_figure_area(rgb):
    h = gaussian(rgb2hed(rgb)[..., 0], 1.0)
    best = None
    cy, cx = h.shape[0] / 2, h.shape[1] / 2
    for p in regionprops(label(h > threshold_otsu(h))):
        y, x = p.centroid
        if p.area >= 20 and np.hypot(y - cy, x - cx) < 16 and (best is None or p.area > best):
            best = p.area
    return best


def load(path):
    return np.asarray(Image.open(path).convert('RGB'))


def icpr_figure_crops():
    images, crops = {}, []
    for row in csv.DictReader(open(f'{DATA}/icpr2012/centroids.csv')):
        name = row['image']
        if name not in images:
            images[name] = load(glob.glob(f'{DATA}/icpr2012/hpf/{name}.*')[0])
        im = images[name]
        x = min(max(int(float(row['x'])), HALF), im.shape[1] - HALF)
        y = min(max(int(float(row['y'])), HALF), im.shape[0] - HALF)
        crops.append(im[y - HALF:y + HALF, x - HALF:x + HALF])
    return crops


def sample(pattern, n, rng):
    paths = sorted(glob.glob(pattern))
    rng.shuffle(paths)
    return [load(p) for p in paths[:n]]


def main():
    rng = random.Random(0)
    sources = {
        'ICPR 2012 scanner A, the 35 figures': icpr_figure_crops(),
        'AMi-Br, 600 crops': sample(f'{DATA}/amibr/patches/*/*.png', 600, rng),
        'AtNorM-Br, 600 crops': sample(f'{DATA}/atnorm-br/*/*.png', 600, rng),
    }
    # Control: the same AtNorM-Br crops shrunk by 0.7 must read about 0.7x as large, or the
    # measure could not see the 1.3-1.5x magnification it is meant to test for.
    sources['control: AtNorM-Br shrunk 0.7x'] = [
        np.asarray(Image.fromarray(c).resize((90, 90), Image.BILINEAR)) for c in sources['AtNorM-Br, 600 crops']
    ]
    reference = None
    for name, crops in sources.items():
        areas = [a for a in map(centre_figure_area, crops) if a is not None]
        median = float(np.median(areas))
        reference = reference or median
        print(f'{name:40s} centre blob found in {len(areas):3d} of {len(crops):3d}: '
              f'median area {median:5.0f} px, linear scale {np.sqrt(median / reference):.2f}x')


if __name__ == '__main__':
    main()
