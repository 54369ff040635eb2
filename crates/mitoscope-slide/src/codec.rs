//! Pixel codecs shared by the built-in readers: JPEG 2000 frames and tiles
//! (DICOM transfer syntaxes .4.90 / .4.91, Aperio TIFF compressions 33003 /
//! 33005) through hayro-jpeg2000, and the YCbCr -> RGB conversion.

/// Full-range (JFIF) YCbCr to RGB.
pub(crate) fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (y as f32, cb as f32 - 128.0, cr as f32 - 128.0);
    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [c(y + 1.402 * cr), c(y - 0.344_136 * cb - 0.714_136 * cr), c(y + 1.772 * cb)]
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
        for p in data.chunks_exact_mut(3) {
            p.copy_from_slice(&ycbcr_to_rgb(p[0], p[1], p[2]));
        }
    }
    Ok(data)
}
