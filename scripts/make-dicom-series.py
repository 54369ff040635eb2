#!/usr/bin/env python3
"""Writes an image as a DICOM whole-slide series (analysis aid, not part of the build).

One VL Whole Slide Microscopy file per level, TILED_FULL, JPEG baseline frames (YBR_FULL_422,
Pillow's encoder; or with --codec j2k, lossy JPEG 2000 codestreams, YBR_ICT; or with --codec rle,
RLE Lossless RGB frames, pydicom's encoder), Pixel Spacing from --mpp; with --parts N level 0 is
split into a concatenation of N files (level-0-part-K.dcm). Level 0 is the image, each further
level halves
it (Pillow's bilinear resize), down to a side of --min-side, plus a THUMBNAIL file. Used to
check `mitoscope slide` on DICOM against the same pixels as a TIFF (BENCHMARKS.md, "Whole
slides"). The output folder holds one series; the files are named level-N.dcm, thumbnail.dcm.

Needs pydicom and Pillow, and numpy for RLE (pip install pydicom pillow numpy).

Usage: python3 scripts/make-dicom-series.py IMAGE OUT_DIR [--mpp 0.2456] [--tile 256] [--quality 90]
       [--codec jpeg|j2k|rle] [--j2k-rate 10] [--parts N]
"""
import argparse
import io
import os

from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, JPEGBaseline8Bit, RLELossless, generate_uid

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


TRANSFER_SYNTAX = {"jpeg": JPEGBaseline8Bit, "j2k": JPEG2000, "rle": RLELossless}
PHOTOMETRIC = {"jpeg": "YBR_FULL_422", "j2k": "YBR_ICT", "rle": "RGB"}


def encode(frame, args):
    out = io.BytesIO()
    if args.codec == "rle":
        import numpy as np
        from pydicom.pixels.encoders.base import get_encoder

        return get_encoder(RLELossless).encode(
            np.asarray(frame), rows=frame.height, columns=frame.width, samples_per_pixel=3, bits_allocated=8,
            bits_stored=8, pixel_representation=0, photometric_interpretation="RGB", number_of_frames=1,
            planar_configuration=0)
    if args.codec == "j2k":
        frame.save(out, "JPEG2000", irreversible=True, no_jp2=True, quality_mode="rates",
                   quality_layers=[args.j2k_rate])
    else:
        frame.save(out, "JPEG", quality=args.quality)
    return out.getvalue()


def write_level(path, image, tile, flavour, mpp, series, study, args, parts=1):
    w, h = image.size
    frames = []
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            # Edge tiles are stored whole, padded with white.
            frame = Image.new("RGB", (tile, tile), (255, 255, 255))
            frame.paste(image.crop((tx, ty, min(tx + tile, w), min(ty + tile, h))), (0, 0))
            frames.append(encode(frame, args))
    if parts == 1:
        write_file(path, frames, tile, w, h, flavour, mpp, series, study, args)
        return
    concatenation, source = generate_uid(), generate_uid()
    per_part = -(-len(frames) // parts)
    for k in range(parts):
        start = k * per_part
        write_file(path.replace(".dcm", f"-part-{k + 1}.dcm"), frames[start:start + per_part], tile, w, h, flavour,
                   mpp, series, study, args, (concatenation, source, start, k + 1, parts))


def write_file(path, frames, tile, w, h, flavour, mpp, series, study, args, concatenation=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = TRANSFER_SYNTAX[args.codec]
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = WSI_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series
    ds.StudyInstanceUID = study
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", flavour, "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = PHOTOMETRIC[args.codec]
    ds.PlanarConfiguration = 0
    ds.Rows = tile
    ds.Columns = tile
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixColumns = w
    ds.TotalPixelMatrixRows = h
    if concatenation:
        uid, source, offset, number, total = concatenation
        ds.ConcatenationUID = uid
        ds.SOPInstanceUIDOfConcatenationSource = source
        ds.ConcatenationFrameOffsetNumber = offset
        ds.InConcatenationNumber = number
        ds.InConcatenationTotalNumber = total
    measures = Dataset()
    measures.PixelSpacing = [mpp / 1000, mpp / 1000]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("out_dir")
    ap.add_argument("--mpp", type=float, default=0.2456, help="level-0 microns per pixel")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--min-side", type=int, default=256)
    ap.add_argument("--codec", choices=["jpeg", "j2k", "rle"], default="jpeg")
    ap.add_argument("--parts", type=int, default=1, help="files in level 0's concatenation")
    ap.add_argument("--j2k-rate", type=float, default=10, help="JPEG 2000 compression ratio")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    image = Image.open(args.image).convert("RGB")
    series, study = generate_uid(), generate_uid()
    level, mpp = 0, args.mpp
    while True:
        write_level(os.path.join(args.out_dir, f"level-{level}.dcm"), image, args.tile, "VOLUME", mpp, series, study,
                    args, args.parts if level == 0 else 1)
        if max(image.size) // 2 < args.min_side:
            break
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BILINEAR)
        level, mpp = level + 1, mpp * 2
    thumb = image.copy()
    thumb.thumbnail((128, 128))
    write_level(os.path.join(args.out_dir, "thumbnail.dcm"), thumb, max(thumb.size), "THUMBNAIL",
                mpp * image.width / thumb.width, series, study, args)


if __name__ == "__main__":
    main()
