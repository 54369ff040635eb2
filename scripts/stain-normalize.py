#!/usr/bin/env python3
"""Stain vectors of each data source, and a stain-normalised copy of the shared data
(experiment aid, not part of the build).

Why: the stage-2 network reads stain concentrations on fixed Ruifrok-Johnston vectors and is
trained with jitter along those vectors (never a rotation of them), while Macenko estimates put
the ICPR scanner-A haematoxylin at a markedly different optical-density direction from the
figure-crop sources' (print them with `vectors`). Normalising every training and evaluation
image to one stain (the pooled ICPR HPFs', the target scanner) asks whether that gap costs
out-of-fold F1, without touching the Rust pipeline: the recipe is run on the copy.

Macenko et al. 2009: optical density, pixels with every channel's OD > 0.15, the plane of the
two largest eigenvectors, the 1st and 99th percentile angles as the two stain vectors
(haematoxylin = the larger red OD), concentrations by least squares scaled so that their 99th
percentiles match the target's. Small crops are estimated per source slide (AMi-Br's table
names it), since a figure can be a 128x128 crop's darkest 1%; AtNorM-Br names no slides, so
each crop keeps its own vectors and takes the dataset's concentration scale.

Usage:
  python3 scripts/stain-normalize.py vectors [DATA]          # print each source's stain
  python3 scripts/stain-normalize.py copy OUT [DATA]         # write the normalised copy to OUT
  python3 scripts/stain-normalize.py copy OUT [DATA] --keep-scale
      # turn only the stain vectors; each source keeps its own concentration scale. Crops
      # centred on figures put their 99th-percentile haematoxylin on the figures, an HPF's on
      # ordinary nuclei: matching the two scales lightens the crops' figures.
(DATA default ../shared/data; needs numpy, pillow)
"""
import collections
import csv
import glob
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

BETA = 0.15  # OD below this in any channel is background or too faint to say which stain
ALPHA = 1.0  # percentile of the angles taken as the extreme stain directions
# Scanner padding: crops cut at a slide's edge are filled black (OD 5.5 in every channel). Left
# in, it is the extreme angle of whole slides (their "haematoxylin" came out grey, and their
# figures faded); no stain is that dark in all three channels.
PADDING_OD = 3.0


def optical_density(path):
    rgb = np.asarray(Image.open(path).convert('RGB'), dtype=np.float64).reshape(-1, 3)
    return -np.log((rgb + 1.0) / 256.0)


def subsample(od, n):
    if len(od) <= n:
        return od
    return od[np.random.default_rng(0).choice(len(od), n, replace=False)]


def macenko(od):
    """(2x3 unit stain vectors [H; E], 99th-percentile concentrations [H, E])."""
    tissue = od[(od > BETA).all(axis=1) & ~(od > PADDING_OD).all(axis=1)]
    if len(tissue) < 100:
        raise ValueError(f'only {len(tissue)} stained pixels')
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, [1, 2]]
    plane *= np.sign(plane[0, :])  # both eigenvectors pointing into positive OD
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    ends = [plane @ np.array([np.cos(a), np.sin(a)]) for a in np.percentile(phi, [ALPHA, 100 - ALPHA])]
    h, e = sorted(ends, key=lambda v: -v[0])
    stains = np.stack([h / np.linalg.norm(h), e / np.linalg.norm(e)])
    conc = np.linalg.lstsq(stains.T, tissue.T, rcond=None)[0]
    return stains, np.percentile(conc, 99, axis=1)


def pooled(paths, limit=None):
    od = np.concatenate([optical_density(p) for p in paths])
    return macenko(subsample(od, limit) if limit else od)


def normalise(job):
    src, dst, source_stain, target = job
    img = Image.open(src)
    w, h = img.size
    od = optical_density(src)
    stains, scale = source_stain
    if stains is None:  # own vectors, the given concentration scale
        stains = macenko(od)[0]
    conc = np.linalg.lstsq(stains.T, od.T, rcond=None)[0] * (target[1] / scale)[:, None]
    rgb = 256.0 * np.exp(-(target[0].T @ conc)).T - 1.0
    padding = (od > PADDING_OD).all(axis=1)
    rgb[padding] = 256.0 * np.exp(-od[padding]) - 1.0  # kept as it was
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(h, w, 3)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    Image.fromarray(out).save(dst, **({'quality': 95} if dst.endswith('.jpg') else {}))


def sources(data):
    """(name, [paths], how to estimate): 'each' per image, 'pool' over the paths, 'vectors' per image
    with the pool's concentration scale."""
    hpfs = sorted(glob.glob(f'{data}/icpr2012/hpf/*.jpg'))
    out = [(os.path.basename(p), [p], 'each') for p in hpfs]
    out += [(os.path.basename(p)[:24], [p], 'each') for p in sorted(glob.glob(f'{data}/cmc-negatives/*.jpg'))]
    out.append(('icpr mask patches', sorted(glob.glob(f'{data}/icpr2012/mask-patches/images/*.jpg')), 'pool'))
    slide = {f"{r['dataset']}_{r['uid']}": f"{r['dataset']} {r['slide']}"
             for r in csv.DictReader(open(f'{data}/amibr/AMI-BR.csv'))}
    by_slide = collections.defaultdict(list)
    for p in sorted(glob.glob(f'{data}/amibr/patches/*/*.png')):
        by_slide[slide[os.path.basename(p)[:-4]]].append(p)
    out += [(f'amibr {s}', ps, 'pool') for s, ps in sorted(by_slide.items())]
    out.append(('atnorm-br', sorted(glob.glob(f'{data}/atnorm-br/*/*.png')), 'vectors'))
    return out


def main():
    keep_scale = '--keep-scale' in sys.argv
    if keep_scale:
        sys.argv.remove('--keep-scale')
    if len(sys.argv) < 2 or sys.argv[1] not in ('vectors', 'copy'):
        sys.exit(__doc__)
    copy = sys.argv[1] == 'copy'
    if copy and len(sys.argv) < 3:
        sys.exit('copy needs OUT')
    out_dir = sys.argv[2] if copy else None
    data = sys.argv[3 if copy else 2] if len(sys.argv) > (3 if copy else 2) else '../shared/data'
    target = pooled(sorted(glob.glob(f'{data}/icpr2012/hpf/*.jpg')), limit=2_000_000)
    print(f'target (the 5 ICPR HPFs pooled): H {np.round(target[0][0], 3)} E {np.round(target[0][1], 3)} '
          f'99th-percentile concentrations {np.round(target[1], 2)}')
    jobs = []
    for name, paths, how in sources(data):
        if not copy and how == 'pool' and len(paths) < 50:
            continue  # too few crops to print a slide's stain
        stain = pooled(paths)  # an 'each' source is one image: its own estimate
        if not copy:
            print(f'{name:26s} H {np.round(stain[0][0], 3)} E {np.round(stain[0][1], 3)} '
                  f'conc {np.round(stain[1], 2)} ({len(paths)} images)')
            continue
        given = (None, stain[1]) if how == 'vectors' else stain
        to = (target[0], stain[1]) if keep_scale else target
        if how == 'pool':
            print(f'{name:26s} 99th-percentile concentrations {np.round(stain[1], 2)} ({len(paths)} images)')
        jobs += [(p, out_dir + p[len(data):], given, to) for p in paths]
    if not copy:
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(data, out_dir, symlinks=True)
    os.chmod(out_dir, 0o755)
    for root, dirs, files in os.walk(out_dir):
        for n in dirs + files:
            os.chmod(os.path.join(root, n), 0o755 if n in dirs else 0o644)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(normalise, jobs, chunksize=32))
    print(f'{len(jobs)} images normalised into {out_dir}')


if __name__ == '__main__':
    main()
