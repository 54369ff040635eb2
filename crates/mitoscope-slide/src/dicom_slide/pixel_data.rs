//! Where a DICOM file's pixel data and its frames lie, found by walking
//! element and item headers only (the module docs of `dicom_slide` say why
//! this is not left to dicom-rs): [`locate_pixel_data`], then
//! [`index_frames`]. Every declared length must fit in the file.

use std::io::{Read, Seek, SeekFrom};

/// Nesting depth of sequences the header walk follows (the WSI IOD nests
/// about four deep).
const MAX_DEPTH: usize = 32;

/// An undefined length in an element or item header.
pub(super) const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Where a file's Pixel Data value starts, its declared length (maybe
/// [`UNDEFINED`]) and the file's length, as [`locate_pixel_data`] found them.
#[derive(Debug, Clone, Copy)]
pub(super) struct PixelData {
    start: u64,
    length: u32,
    file_len: u64,
}

/// Walks the file meta group (explicit VR little endian), then the data set
/// in the file's transfer syntax, skipping every value (nested sequences by
/// their items) until Pixel Data. Every length on the way must fit in the
/// file. `None` when the data set has no pixel data.
pub(super) fn locate_pixel_data<R: Read + Seek>(r: &mut R) -> Result<Option<PixelData>, String> {
    let mut w = Walker::after_meta(r)?;
    let Some(header) = w.skip_to_pixel_data()? else {
        return Ok(None);
    };
    Ok(Some(PixelData { start: w.pos()?, length: header.length, file_len: w.file_len }))
}

/// Byte ranges of each frame of the pixel data at `pixel`. Encapsulated
/// pixel data: one frame a fragment, or grouped by the Basic Offset Table;
/// native: `frame_bytes` each, back to back.
pub(super) fn index_frames<R: Read + Seek>(
    r: &mut R,
    pixel: PixelData,
    frames: usize,
    frame_bytes: Option<u64>,
) -> Result<Vec<Vec<(u64, u64)>>, String> {
    let PixelData { start, file_len, .. } = pixel;
    let mut w = Walker { r, explicit: true, file_len };
    w.seek(start)?;
    if let Some(frame_bytes) = frame_bytes {
        if pixel.length == UNDEFINED {
            return Err("uncompressed pixel data with an undefined length".into());
        }
        let needed = frame_bytes.saturating_mul(frames as u64);
        if (pixel.length as u64) < needed || needed > file_len - start.min(file_len) {
            return Err(format!(
                "pixel data of {} bytes ({} in the file) for {frames} frames of {frame_bytes} bytes",
                pixel.length,
                file_len - start
            ));
        }
        return Ok((0..frames as u64).map(|i| vec![(start + i * frame_bytes, frame_bytes)]).collect());
    }
    if pixel.length != UNDEFINED {
        return Err("compressed pixel data must be encapsulated (undefined length)".into());
    }
    // Basic Offset Table: the first item, possibly empty.
    let bot = w.item_header()?;
    if bot.0 != 0xE000 || bot.1 == UNDEFINED || bot.1 % 4 != 0 || bot.1 as u64 > file_len {
        return Err("pixel data does not start with a Basic Offset Table item".into());
    }
    let mut offsets = Vec::with_capacity(bot.1 as usize / 4);
    for _ in 0..bot.1 / 4 {
        offsets.push(w.u32()? as u64);
    }
    let first_item = w.pos()?;
    // Each fragment: (offset of its item from the first fragment item, data start, length).
    let mut fragments = Vec::new();
    loop {
        let item_pos = w.pos()?;
        let (element, len) = w.item_header().map_err(|e| format!("truncated pixel data ({e})"))?;
        match element {
            0xE000 if len != UNDEFINED => {
                let data = w.pos()?;
                if data + len as u64 > file_len {
                    return Err(format!("fragment {} runs past the end of the file", fragments.len() + 1));
                }
                fragments.push((item_pos - first_item, data, len as u64));
                w.seek(data + len as u64)?;
            }
            0xE0DD => break,
            _ => return Err(format!("unexpected item (FFFE,{element:04X}) in the pixel data")),
        }
    }
    if offsets.len() >= frames && frames > 0 && fragments.len() != frames {
        let mut out = vec![Vec::new(); frames];
        for &(rel, data, len) in &fragments {
            let frame = offsets.partition_point(|&o| o <= rel).saturating_sub(1).min(frames - 1);
            out[frame].push((data, len));
        }
        return Ok(out);
    }
    if fragments.len() == frames {
        return Ok(fragments.iter().map(|&(_, data, len)| vec![(data, len)]).collect());
    }
    if frames == 1 && !fragments.is_empty() {
        return Ok(vec![fragments.iter().map(|&(_, data, len)| (data, len)).collect()]);
    }
    Err(format!("{} fragments for {frames} frames and no offset table to group them", fragments.len()))
}

fn io_text(e: std::io::Error) -> String {
    e.to_string()
}

/// One element or item header.
struct Header {
    group: u16,
    element: u16,
    /// Sequence (SQ), or a value whose VR is unknown and length undefined.
    sequence: bool,
    length: u32,
}

/// Reads element headers and skips values; never reads a value into memory.
struct Walker<'a, R> {
    r: &'a mut R,
    explicit: bool,
    file_len: u64,
}

impl<'a, R: Read + Seek> Walker<'a, R> {
    /// A walker at the start of the data set, in its transfer syntax's
    /// encoding, having checked the DICM magic and walked the meta group.
    fn after_meta(r: &'a mut R) -> Result<Self, String> {
        let file_len = r.seek(SeekFrom::End(0)).map_err(io_text)?;
        let mut w = Walker { r, explicit: true, file_len };
        w.seek(128)?;
        let mut magic = [0u8; 4];
        w.r.read_exact(&mut magic).map_err(|_| "no DICM magic at byte 128".to_owned())?;
        if &magic != b"DICM" {
            return Err("no DICM magic at byte 128".into());
        }
        // The meta group (0002,xxxx) is always explicit VR little endian;
        // (0002,0010) names the data set's transfer syntax.
        let mut transfer_syntax = String::new();
        loop {
            let pos = w.pos()?;
            let h = w.header()?;
            if h.group != 0x0002 {
                w.seek(pos)?;
                break;
            }
            if h.element == 0x0010 && h.length <= 64 {
                let mut uid = vec![0u8; h.length as usize];
                w.r.read_exact(&mut uid).map_err(io_text)?;
                transfer_syntax = String::from_utf8_lossy(&uid).trim_end_matches(['\0', ' ']).to_owned();
            } else {
                w.skip_value(&h, 0)?;
            }
        }
        // Implicit VR little endian; every other transfer syntax's data set
        // is explicit VR little endian (big endian is retired and refused later).
        w.explicit = transfer_syntax != "1.2.840.10008.1.2";
        Ok(w)
    }

    /// Skips elements up to Pixel Data and returns its header (the reader is
    /// then at its value); `None` when the data set ends without one. Every
    /// length on the way must fit in the file, so a hostile length is an
    /// error here rather than a huge allocation in a parser.
    fn skip_to_pixel_data(&mut self) -> Result<Option<Header>, String> {
        loop {
            if self.pos()? >= self.file_len {
                return Ok(None);
            }
            let h = self.header()?;
            if (h.group, h.element) == (0x7FE0, 0x0010) {
                return Ok(Some(h));
            }
            if h.group > 0x7FE0 && h.group != 0xFFFE {
                return Ok(None);
            }
            self.skip_value(&h, 0)?;
        }
    }

    fn pos(&mut self) -> Result<u64, String> {
        self.r.stream_position().map_err(io_text)
    }
    fn seek(&mut self, to: u64) -> Result<(), String> {
        if to > self.file_len {
            return Err("a length runs past the end of the file".into());
        }
        self.r.seek(SeekFrom::Start(to)).map(|_| ()).map_err(io_text)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let mut b = [0u8; 2];
        self.r.read_exact(&mut b).map_err(io_text)?;
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b).map_err(io_text)?;
        Ok(u32::from_le_bytes(b))
    }

    /// An item header `(FFFE,eeee) length`: (element, length).
    fn item_header(&mut self) -> Result<(u16, u32), String> {
        let group = self.u16()?;
        let element = self.u16()?;
        if group != 0xFFFE {
            return Err(format!("expected an item, found ({group:04X},{element:04X})"));
        }
        Ok((element, self.u32()?))
    }

    fn header(&mut self) -> Result<Header, String> {
        let group = self.u16()?;
        let element = self.u16()?;
        // Item and delimiter tags carry no VR in any encoding.
        if group == 0xFFFE || !self.explicit {
            let length = self.u32()?;
            return Ok(Header { group, element, sequence: length == UNDEFINED, length });
        }
        let mut vr = [0u8; 2];
        self.r.read_exact(&mut vr).map_err(io_text)?;
        let long = matches!(
            &vr,
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
        );
        let length = if long {
            self.u16()?; // reserved
            self.u32()?
        } else {
            self.u16()? as u32
        };
        Ok(Header { group, element, sequence: &vr == b"SQ" || length == UNDEFINED, length })
    }

    /// Skips the value after `h`; sequences of undefined length item by item.
    fn skip_value(&mut self, h: &Header, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("sequences nested too deep".into());
        }
        if h.length != UNDEFINED {
            let to = self.pos()? + h.length as u64;
            return self.seek(to);
        }
        if !h.sequence {
            return Err(format!("({:04X},{:04X}) has an undefined length", h.group, h.element));
        }
        // Items until the sequence delimiter.
        loop {
            let (element, len) = self.item_header()?;
            match element {
                0xE0DD => return Ok(()),
                0xE000 if len != UNDEFINED => {
                    let to = self.pos()? + len as u64;
                    self.seek(to)?;
                }
                0xE000 => loop {
                    let inner = self.header()?;
                    if (inner.group, inner.element) == (0xFFFE, 0xE00D) {
                        break;
                    }
                    self.skip_value(&inner, depth + 1)?;
                },
                _ => return Err(format!("unexpected item (FFFE,{element:04X}) in a sequence")),
            }
        }
    }
}
