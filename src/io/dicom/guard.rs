//! A structural pre-check of a DICOM file before it reaches the parser.
//!
//! The DICOM parser allocates each element's value from the length written in the
//! file; a single corrupted length field (up to 4 GiB) would make it reserve and zero
//! that much memory before noticing the file is shorter. It also recurses into nested
//! sequences without a depth limit. This walker reads only element *headers*, checks
//! that every defined length fits inside its enclosing item and the file, and limits
//! nesting, so the parser only ever sees files whose declared sizes are backed by real
//! bytes: memory stays proportional to the file size.
//!
//! It understands the three uncompressed encodings (explicit VR little endian — also
//! used by every compressed transfer syntax outside the pixel data —, implicit VR little
//! endian and explicit VR big endian). Deflated data sets are inflated (at most 1 GiB)
//! and walked as explicit VR little endian.

use dicom::core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom::core::{Tag, VR};
use dicom::dictionary_std::StandardDataDictionary;

/// Deeper nesting than this is refused (real files use fewer than 10 levels).
const MAX_DEPTH: usize = 32;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// What a completed walk learnt about the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalkSummary {
    /// The transfer syntax UID from the file meta group.
    pub transfer_syntax: String,
    /// Whether the top-level data set has a Pixel Data element.
    pub has_pixel_data: bool,
    /// Whether the walk covered the data set.
    pub checked: bool,
    /// Bytes of native (uncompressed) top-level pixel data.
    pub native_pixel_bytes: Option<u64>,
    /// Fragments of encapsulated (compressed) top-level pixel data, offset table
    /// included.
    pub pixel_fragments: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// An element header: tag, VR (`None` for implicit VR and item tags), value length
/// and where the value starts.
#[derive(Clone, Copy, Debug)]
struct Header {
    tag: (u16, u16),
    vr: Option<VR>,
    len: u32,
    value_at: usize,
}

struct Walker<'a> {
    bytes: &'a [u8],
    has_pixel_data: bool,
    native_pixel_bytes: Option<u64>,
    pixel_fragments: Option<u64>,
}

/// Checks the structure of a DICOM file (`bytes` start right after the 128-byte
/// preamble, at `DICM`). Returns a plain-words reason when the file cannot be sound.
pub fn check(bytes: &[u8]) -> Result<WalkSummary, String> {
    if bytes.len() < 4 || &bytes[..4] != b"DICM" {
        return Err("the DICOM signature is missing".into());
    }
    let mut w = Walker {
        bytes,
        has_pixel_data: false,
        native_pixel_bytes: None,
        pixel_fragments: None,
    };
    // File meta group: explicit VR little endian, group 0002 only.
    let mut pos = 4;
    let mut transfer_syntax = None;
    while pos + 4 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        if group != 0x0002 {
            break;
        }
        let Header {
            tag, len, value_at, ..
        } = w.header(pos, bytes.len(), Encoding::ExplicitLe)?;
        if len == UNDEFINED {
            return Err("the file header has an element of undefined length".into());
        }
        let end = value_at + len as usize;
        if tag == (0x0002, 0x0010) {
            let raw = &bytes[value_at..end];
            transfer_syntax = Some(
                String::from_utf8_lossy(raw)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        pos = end;
    }
    let Some(transfer_syntax) = transfer_syntax else {
        return Err("the file header names no transfer syntax".into());
    };
    let encoding = match transfer_syntax.as_str() {
        "1.2.840.10008.1.2" => Encoding::ImplicitLe,
        "1.2.840.10008.1.2.2" => Encoding::ExplicitBe,
        "1.2.840.10008.1.2.1.99" => return check_deflated(&bytes[pos..], transfer_syntax),
        _ => Encoding::ExplicitLe,
    };
    w.dataset(pos, bytes.len(), encoding, 0, true)?;
    Ok(w.into_summary(transfer_syntax))
}

/// The largest inflated data set of a deflated file; deflate can expand about
/// 1000-fold, so without a cap a small file could demand gigabytes.
const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Inflates a deflated data set (explicit VR little endian inside) and walks it.
fn check_deflated(deflated: &[u8], transfer_syntax: String) -> Result<WalkSummary, String> {
    use std::io::Read;
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| format!("the compressed data set is damaged: {e}"))?;
    if inflated.len() as u64 > MAX_INFLATED_BYTES {
        return Err("the compressed data set inflates to more than 1 GiB".into());
    }
    let mut w = Walker {
        bytes: &inflated,
        has_pixel_data: false,
        native_pixel_bytes: None,
        pixel_fragments: None,
    };
    w.dataset(0, inflated.len(), Encoding::ExplicitLe, 0, true)?;
    Ok(w.into_summary(transfer_syntax))
}

impl Walker<'_> {
    /// What a completed walk found.
    fn into_summary(self, transfer_syntax: String) -> WalkSummary {
        WalkSummary {
            transfer_syntax,
            has_pixel_data: self.has_pixel_data,
            checked: true,
            native_pixel_bytes: self.native_pixel_bytes,
            pixel_fragments: self.pixel_fragments,
        }
    }

    fn u16_at(&self, at: usize, enc: Encoding) -> u16 {
        let b = [self.bytes[at], self.bytes[at + 1]];
        if enc == Encoding::ExplicitBe {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize, enc: Encoding) -> u32 {
        let b = [
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ];
        if enc == Encoding::ExplicitBe {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Reads the element header at `pos` (which must end before `end`): tag, VR (None
    /// for implicit VR and item tags), value length and where the value starts.
    fn header(&self, pos: usize, end: usize, enc: Encoding) -> Result<Header, String> {
        let need = |n: usize| {
            if pos + n > end {
                Err("an element header runs past the end of its container".to_string())
            } else {
                Ok(())
            }
        };
        need(8)?;
        let tag = (self.u16_at(pos, enc), self.u16_at(pos + 2, enc));
        if tag.0 == 0xFFFE || enc == Encoding::ImplicitLe {
            let len = self.u32_at(pos + 4, enc);
            return self.bounded(tag, None, len, pos + 8, end);
        }
        let vr = VR::from_binary([self.bytes[pos + 4], self.bytes[pos + 5]]).unwrap_or(VR::UN);
        let short = matches!(
            vr,
            VR::AE
                | VR::AS
                | VR::AT
                | VR::CS
                | VR::DA
                | VR::DS
                | VR::DT
                | VR::FL
                | VR::FD
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::SL
                | VR::SS
                | VR::ST
                | VR::TM
                | VR::UI
                | VR::UL
                | VR::US
        );
        if short {
            let len = self.u16_at(pos + 6, enc) as u32;
            self.bounded(tag, Some(vr), len, pos + 8, end)
        } else {
            need(12)?;
            let len = self.u32_at(pos + 8, enc);
            self.bounded(tag, Some(vr), len, pos + 12, end)
        }
    }

    fn bounded(
        &self,
        tag: (u16, u16),
        vr: Option<VR>,
        len: u32,
        value_at: usize,
        end: usize,
    ) -> Result<Header, String> {
        if len != UNDEFINED && value_at as u64 + len as u64 > end as u64 {
            return Err(format!(
                "element ({:04X},{:04X}) announces {} bytes but only {} remain",
                tag.0,
                tag.1,
                len,
                end.saturating_sub(value_at)
            ));
        }
        Ok(Header {
            tag,
            vr,
            len,
            value_at,
        })
    }

    /// Walks data set elements from `pos` to `end` (or, when `until_item_end`, to an
    /// item delimiter). Returns the position after the last byte consumed.
    fn dataset(
        &mut self,
        mut pos: usize,
        end: usize,
        enc: Encoding,
        depth: usize,
        top_level: bool,
    ) -> Result<usize, String> {
        self.dataset_inner(&mut pos, end, enc, depth, top_level, false)?;
        Ok(pos)
    }

    fn dataset_inner(
        &mut self,
        pos: &mut usize,
        end: usize,
        enc: Encoding,
        depth: usize,
        top_level: bool,
        until_item_end: bool,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("sequences are nested too deeply".into());
        }
        while *pos < end {
            if top_level && end - *pos < 8 {
                // trailing padding shorter than an element header
                return Ok(());
            }
            let Header {
                tag,
                vr,
                len,
                value_at,
            } = self.header(*pos, end, enc)?;
            if tag == ITEM_END {
                if until_item_end {
                    *pos = value_at;
                    return Ok(());
                }
                return Err("an item ends where none started".into());
            }
            if tag.0 == 0xFFFE {
                return Err(format!(
                    "misplaced item marker ({:04X},{:04X})",
                    tag.0, tag.1
                ));
            }
            if top_level && tag == PIXEL_DATA {
                self.has_pixel_data = true;
                if len != UNDEFINED {
                    self.native_pixel_bytes = Some(len as u64);
                }
            }
            let is_sequence = match vr {
                Some(VR::SQ) => true,
                Some(VR::UN) => len == UNDEFINED,
                Some(_) => false,
                None => len == UNDEFINED || dictionary_says_sequence(tag),
            };
            if len == UNDEFINED {
                if tag == PIXEL_DATA {
                    let (after, count) = self.fragments(value_at, end, enc)?;
                    if top_level {
                        self.pixel_fragments = Some(count);
                    }
                    *pos = after;
                } else if is_sequence {
                    // An undefined-length UN holds an implicit VR little endian sequence.
                    let inner = if vr == Some(VR::UN) {
                        Encoding::ImplicitLe
                    } else {
                        enc
                    };
                    *pos = self.sequence(value_at, end, inner, depth + 1, None)?;
                } else {
                    return Err(format!(
                        "element ({:04X},{:04X}) has an undefined length",
                        tag.0, tag.1
                    ));
                }
            } else {
                let value_end = value_at + len as usize;
                if is_sequence {
                    self.sequence(value_at, value_end, enc, depth + 1, Some(value_end))?;
                }
                *pos = value_end;
            }
        }
        if until_item_end {
            return Err("an item has no end marker".into());
        }
        Ok(())
    }

    /// Walks sequence items. With `defined_end`, items fill exactly up to it; without,
    /// the sequence ends at a sequence delimiter.
    fn sequence(
        &mut self,
        mut pos: usize,
        end: usize,
        enc: Encoding,
        depth: usize,
        defined_end: Option<usize>,
    ) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err("sequences are nested too deeply".into());
        }
        loop {
            if let Some(e) = defined_end
                && pos >= e
            {
                return Ok(pos);
            }
            let Header {
                tag, len, value_at, ..
            } = self.item_header(pos, end, enc)?;
            match tag {
                SEQUENCE_END if defined_end.is_none() => return Ok(value_at),
                ITEM if len == UNDEFINED => {
                    let mut p = value_at;
                    self.dataset_inner(&mut p, end, enc, depth + 1, false, true)?;
                    pos = p;
                }
                ITEM => {
                    let item_end = value_at + len as usize;
                    self.dataset(value_at, item_end, enc, depth + 1, false)?;
                    pos = item_end;
                }
                _ => {
                    return Err(format!(
                        "a sequence holds ({:04X},{:04X}) where an item should be",
                        tag.0, tag.1
                    ));
                }
            }
        }
    }

    fn item_header(&self, pos: usize, end: usize, enc: Encoding) -> Result<Header, String> {
        if pos + 8 > end {
            return Err("a sequence runs past the end of the file".into());
        }
        let tag = (self.u16_at(pos, enc), self.u16_at(pos + 2, enc));
        let len = self.u32_at(pos + 4, enc);
        self.bounded(tag, None, len, pos + 8, end)
    }

    /// Walks the fragments of encapsulated pixel data up to the sequence delimiter.
    /// Returns the position after the delimiter and the number of items.
    fn fragments(&self, mut pos: usize, end: usize, enc: Encoding) -> Result<(usize, u64), String> {
        let mut count = 0;
        loop {
            let Header {
                tag, len, value_at, ..
            } = self.item_header(pos, end, enc)?;
            match tag {
                SEQUENCE_END => return Ok((value_at, count)),
                ITEM if len != UNDEFINED => {
                    pos = value_at + len as usize;
                    count += 1;
                }
                _ => return Err("the compressed pixel data is malformed".into()),
            }
        }
    }
}

fn dictionary_says_sequence(tag: (u16, u16)) -> bool {
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal file: meta group with a transfer syntax, then `body`.
    fn file(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut ts_bytes = ts.as_bytes().to_vec();
        if ts_bytes.len() % 2 == 1 {
            ts_bytes.push(0);
        }
        let mut b = b"DICM".to_vec();
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(ts_bytes.len() as u16).to_le_bytes());
        b.extend_from_slice(&ts_bytes);
        b.extend_from_slice(body);
        b
    }

    fn explicit(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&group.to_le_bytes());
        b.extend_from_slice(&elem.to_le_bytes());
        b.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            b.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        b.extend_from_slice(value);
        b
    }

    #[test]
    fn a_sound_explicit_file_passes_and_reports_pixel_data() {
        let mut body = explicit(0x0028, 0x0010, b"US", &[2, 0]);
        body.extend(explicit(0x7FE0, 0x0010, b"OW", &[0; 8]));
        let s = check(&file("1.2.840.10008.1.2.1", &body)).unwrap();
        assert!(s.checked && s.has_pixel_data);
        assert_eq!(s.transfer_syntax, "1.2.840.10008.1.2.1");
    }

    #[test]
    fn a_length_beyond_the_end_of_file_is_refused() {
        let mut body = explicit(0x0010, 0x0010, b"PN", b"ab");
        let mut big = explicit(0x7FE0, 0x0010, b"OW", &[0; 8]);
        big[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        body.extend(big);
        let e = check(&file("1.2.840.10008.1.2.1", &body)).unwrap_err();
        assert!(e.contains("announces"), "{e}");
    }

    #[test]
    fn nested_lengths_are_checked_against_their_item() {
        // SQ (defined) > item (defined, 12 bytes) > element claiming 100 bytes
        let mut inner = explicit(0x0008, 0x0100, b"SH", b"ab");
        inner[6..8].copy_from_slice(&100u16.to_le_bytes());
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        item.extend(&inner);
        let mut body = explicit(0x0008, 0x1115, b"SQ", &item);
        body.extend(vec![0u8; 200]); // plenty of bytes after: the item bound still applies
        assert!(check(&file("1.2.840.10008.1.2.1", &body)).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 40 nested undefined-length sequences, never closed
        let mut body = Vec::new();
        for _ in 0..40 {
            body.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
            body.extend_from_slice(&UNDEFINED.to_le_bytes());
            body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            body.extend_from_slice(&UNDEFINED.to_le_bytes());
        }
        let e = check(&file("1.2.840.10008.1.2.1", &body)).unwrap_err();
        assert!(e.contains("deeply"), "{e}");
    }

    #[test]
    fn deflated_data_sets_are_inflated_and_checked() {
        use std::io::Write;
        let deflate = |body: &[u8]| {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        };
        let mut body = explicit(0x0028, 0x0010, b"US", &[2, 0]);
        body.extend(explicit(0x7FE0, 0x0010, b"OW", &[0; 8]));
        let s = check(&file("1.2.840.10008.1.2.1.99", &deflate(&body))).unwrap();
        assert!(s.checked && s.has_pixel_data);
        assert_eq!(s.native_pixel_bytes, Some(8));
        let last = body.len() - 9;
        body[last - 3..last + 1].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        assert!(check(&file("1.2.840.10008.1.2.1.99", &deflate(&body))).is_err());
        assert!(check(&file("1.2.840.10008.1.2.1.99", b"not deflate at all")).is_err());
    }

    #[test]
    fn implicit_sequences_are_recognised_from_the_dictionary() {
        // (0008,1115) ReferencedSeriesSequence, implicit VR, defined length, one empty item
        let mut body = vec![0x08, 0x00, 0x15, 0x11];
        body.extend_from_slice(&8u32.to_le_bytes());
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        assert!(check(&file("1.2.840.10008.1.2", &body)).is_ok());
        // the same with an item claiming more than the sequence holds
        body[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(check(&file("1.2.840.10008.1.2", &body)).is_err());
    }
}
