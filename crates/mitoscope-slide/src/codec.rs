//! Pixel codecs shared by the built-in readers: JPEG 2000 frames and tiles
//! (DICOM transfer syntaxes .4.90 / .4.91, Aperio TIFF compressions 33003 /
//! 33005) through hayro-jpeg2000, DICOM RLE Lossless frames, and the
//! YCbCr -> RGB conversion.

/// Full-range (JFIF) YCbCr to RGB.
pub(crate) fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (y as f32, cb as f32 - 128.0, cr as f32 - 128.0);
    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [c(y + 1.402 * cr), c(y - 0.344_136 * cb - 0.714_136 * cr), c(y + 1.772 * cb)]
}

/// [`ycbcr_to_rgb`] over interleaved 3-sample pixels, in place.
pub(crate) fn ycbcr_to_rgb_in_place(samples: &mut [u8]) {
    for p in samples.chunks_exact_mut(3) {
        p.copy_from_slice(&ycbcr_to_rgb(p[0], p[1], p[2]));
    }
}

/// Decodes a JPEG 2000 codestream (or JP2 file) of `width` x `height` with
/// `samples` components to interleaved 8-bit samples. `ycbcr`: the
/// components are YCbCr that the codestream does not transform itself
/// (DICOM `YBR_FULL`, Aperio 33003): converted to RGB here. A component
/// transform inside the codestream (DICOM `YBR_ICT` / `YBR_RCT`) is undone
/// by the decoder.
pub(crate) fn decode_jpeg2000(
    bytes: &[u8],
    (width, height): (u32, u32),
    samples: usize,
    ycbcr: bool,
) -> Result<Vec<u8>, String> {
    let settings = hayro_jpeg2000::DecodeSettings::default();
    let image = hayro_jpeg2000::Image::new(bytes, &settings).map_err(|e| format!("JPEG 2000: {e}"))?;
    if (image.width(), image.height()) != (width, height) {
        return Err(format!("JPEG 2000 data is {}x{}, expected {width}x{height}", image.width(), image.height()));
    }
    let channels = image.color_space().num_channels() as usize + usize::from(image.has_alpha());
    if channels != samples {
        return Err(format!("JPEG 2000 data has {channels} components, expected {samples}"));
    }
    let mut context = hayro_jpeg2000::DecoderContext::default();
    let mut data = image.decode(&mut context).map_err(|e| format!("JPEG 2000: {e}"))?.data_u8();
    let expected = width as usize * height as usize * samples;
    if data.len() != expected {
        return Err(format!("JPEG 2000 decoded to {} bytes, expected {expected}", data.len()));
    }
    if ycbcr && samples == 3 {
        ycbcr_to_rgb_in_place(&mut data);
    }
    Ok(data)
}

/// Decodes one DICOM RLE Lossless frame (PS3.5 Annex G) of `pixels` 8-bit
/// pixels with `samples` samples each to interleaved samples.
///
/// Written here rather than taken from dicom-transfer-syntax-registry
/// (0.10), whose RLE adapter panics on a corrupt frame (it indexes the
/// header and a short segment's output without checks): a slide reader must
/// turn a corrupt tile into an error. The format is small: a 64-byte header
/// (segment count, then up to 15 segment offsets), one PackBits segment per
/// sample plane.
pub(crate) fn decode_rle(bytes: &[u8], pixels: usize, samples: usize) -> Result<Vec<u8>, String> {
    let word = |i: usize| bytes.get(4 * i..4 * i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if bytes.len() < 64 {
        return Err(format!("RLE frame of {} bytes is shorter than its 64-byte header", bytes.len()));
    }
    let segments = word(0).unwrap_or(0);
    if segments != samples {
        return Err(format!("RLE frame has {segments} segments, expected {samples} (one per 8-bit sample)"));
    }
    let mut out = vec![0u8; pixels * samples];
    for s in 0..samples {
        let start = word(1 + s).unwrap_or(0);
        let end = if s + 1 < samples { word(2 + s).unwrap_or(0) } else { bytes.len() };
        if start < 64 || start > end || end > bytes.len() {
            return Err(format!("RLE segment {} spans bytes {start}..{end} of a {}-byte frame", s + 1, bytes.len()));
        }
        let plane = unpack_bits(&bytes[start..end], pixels).map_err(|why| format!("RLE segment {}: {why}", s + 1))?;
        for (i, v) in plane.into_iter().enumerate() {
            out[i * samples + s] = v;
        }
    }
    Ok(out)
}

/// PackBits: a header byte n in 0..=127 copies the next n + 1 bytes, n in
/// -127..=-1 repeats the next byte 1 - n times, -128 does nothing. Stops
/// once `len` bytes are out (a segment may carry a padding byte); fewer is
/// an error.
fn unpack_bits(data: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len && i < data.len() {
        let n = data[i] as i8;
        i += 1;
        match n {
            0..=127 => {
                let count = n as usize + 1;
                let run = data.get(i..i + count).ok_or("a literal run passes the end of the segment")?;
                out.extend_from_slice(run);
                i += count;
            }
            -127..=-1 => {
                let value = *data.get(i).ok_or("a repeat run passes the end of the segment")?;
                out.resize(out.len() + (1 - n as isize) as usize, value);
                i += 1;
            }
            -128 => {}
        }
    }
    if out.len() < len {
        return Err(format!("decodes to {} bytes, expected {len}", out.len()));
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// PackBits as the standard describes it: runs of 3+ equal bytes
    /// repeated, the rest literal (an encoder of our own for the tests,
    /// independent of the decoder above).
    pub(crate) fn pack_bits(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let run = data[i..].iter().take(128).take_while(|&&b| b == data[i]).count();
            if run >= 3 {
                out.push((1 - run as i32) as i8 as u8);
                out.push(data[i]);
                i += run;
                continue;
            }
            let start = i;
            while i < data.len() && i - start < 128 {
                if i + 2 < data.len() && data[i] == data[i + 1] && data[i] == data[i + 2] {
                    break;
                }
                i += 1;
            }
            out.push((i - start - 1) as u8);
            out.extend_from_slice(&data[start..i]);
        }
        out
    }

    /// An RLE Lossless frame of interleaved 8-bit samples.
    pub(crate) fn rle_frame(interleaved: &[u8], samples: usize) -> Vec<u8> {
        let segments: Vec<Vec<u8>> = (0..samples)
            .map(|s| {
                let mut seg = pack_bits(&interleaved.iter().skip(s).step_by(samples).copied().collect::<Vec<_>>());
                if seg.len() % 2 == 1 {
                    seg.push(0); // even length, as the standard asks
                }
                seg
            })
            .collect();
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&(samples as u32).to_le_bytes());
        let mut offset = 64u32;
        for (s, seg) in segments.iter().enumerate() {
            header[4 + 4 * s..8 + 4 * s].copy_from_slice(&offset.to_le_bytes());
            offset += seg.len() as u32;
        }
        header.into_iter().chain(segments.into_iter().flatten()).collect()
    }

    #[test]
    fn rle_frames_round_trip_and_corrupt_ones_are_errors() {
        // Runs, literals, a 200-long run (two repeat packets) and noise.
        let mut rgb = Vec::new();
        for i in 0..300u32 {
            let v = if i < 200 { 255 } else { (i * 37 % 251) as u8 };
            rgb.extend([v, (i % 7) as u8, 128]);
        }
        let frame = rle_frame(&rgb, 3);
        assert!(frame.len() < rgb.len(), "the runs compress");
        assert_eq!(decode_rle(&frame, 300, 3).unwrap(), rgb);
        // A no-op byte (-128) is skipped.
        let mut noop = frame[..64].to_vec();
        for s in 0..3 {
            let plane: Vec<u8> = rgb.iter().skip(s).step_by(3).copied().collect();
            let seg = [vec![0x80], pack_bits(&plane)].concat();
            let at = noop.len() as u32;
            noop[4 + 4 * s..8 + 4 * s].copy_from_slice(&at.to_le_bytes());
            noop.extend(seg);
        }
        assert_eq!(decode_rle(&noop, 300, 3).unwrap(), rgb);

        for (bytes, needle) in [
            (frame[..40].to_vec(), "header"),
            (frame[..frame.len() - 3].to_vec(), "segment 3: a repeat run passes the end"),
            (rle_frame(&rgb[..150], 3), "expected 300"),
            (rle_frame(&rgb, 1), "1 segments"),
        ] {
            let err = decode_rle(&bytes, 300, 3).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let mut bad_offset = frame.clone();
        bad_offset[8..12].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(decode_rle(&bad_offset, 300, 3).unwrap_err().contains("spans"));
    }
}
