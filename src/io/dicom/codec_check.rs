//! Checks of compressed pixel data against the DICOM header before a decoder runs.
//!
//! dicom-rs's codec adapters size their output from Rows × Columns × Samples but copy
//! whatever the codec decodes, indexing without bounds checks: a JPEG, JPEG-LS or
//! JPEG 2000 stream whose own header announces a larger image (a damaged file, or one
//! found by the fuzzer) makes them panic, and an RLE segment shorter than the image
//! does too. These functions read the few header fields that decide the decoded size
//! and refuse mismatches, so decoders only see data whose size agrees with the DICOM
//! header.

/// What the DICOM header says a frame holds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expected {
    pub rows: usize,
    pub columns: usize,
    pub samples: usize,
    pub bits_allocated: usize,
    pub frames: u64,
}

const JPEG: [&str; 4] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];
const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];
const JPEG_2000: [&str; 5] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];
const RLE: &str = "1.2.840.10008.1.2.5";

/// Checks the fragments of a frame set compressed with `transfer_syntax`; other
/// transfer syntaxes pass unchecked.
pub(super) fn check(
    transfer_syntax: &str,
    fragments: &[Vec<u8>],
    e: Expected,
) -> Result<(), String> {
    let ts = transfer_syntax;
    if ts == RLE {
        check_rle(fragments, e)
    } else if JPEG.contains(&ts) {
        check_jpeg_markers(fragments, e, |m| {
            matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC)
        })
    } else if JPEG_LS.contains(&ts) {
        check_jpeg_markers(fragments, e, |m| m == 0xF7)
    } else if JPEG_2000.contains(&ts) {
        check_jpeg_2000(fragments, e)
    } else {
        Ok(())
    }
}

/// JPEG and JPEG-LS: every start-of-frame segment in the stream must describe a frame
/// of the expected size. The stream is walked marker by marker, skipping segment
/// payloads (an APP segment may embed a thumbnail with its own header) and
/// entropy-coded data (where 0xFF is followed by a byte below 0x80 or a restart
/// marker, never by a segment marker).
fn check_jpeg_markers(
    fragments: &[Vec<u8>],
    e: Expected,
    is_start_of_frame: impl Fn(u8) -> bool,
) -> Result<(), String> {
    let data: Vec<u8> = fragments.iter().flatten().copied().collect();
    let mut found = 0u64;
    let mut at = 0;
    while at + 1 < data.len() {
        let marker = data[at + 1];
        if data[at] != 0xFF || marker < 0x80 {
            at += 1;
            continue;
        }
        match marker {
            0xFF => at += 1,        // fill byte
            0xD0..=0xD9 => at += 2, // restart, start and end of image
            _ => {
                let Some(len) = data.get(at + 2..at + 4) else {
                    return Err("a compressed frame header is cut short".into());
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if is_start_of_frame(marker) {
                    // Lf(2), P(1), Y(2), X(2), Nf(1)
                    let Some(h) = data.get(at + 2..at + 10) else {
                        return Err("a compressed frame header is cut short".into());
                    };
                    let precision = h[2] as usize;
                    let rows = u16::from_be_bytes([h[3], h[4]]) as usize;
                    let columns = u16::from_be_bytes([h[5], h[6]]) as usize;
                    let components = h[7] as usize;
                    if (rows, columns, components) != (e.rows, e.columns, e.samples) {
                        return Err(format!(
                            "a compressed frame is {columns} × {rows} with {components} components, the header says {} × {} with {}",
                            e.columns, e.rows, e.samples
                        ));
                    }
                    if (precision <= 8) != (e.bits_allocated == 8) {
                        return Err(format!(
                            "a compressed frame has {precision}-bit samples but {} bits are allocated",
                            e.bits_allocated
                        ));
                    }
                    found += 1;
                }
                at += 2 + len.max(2);
            }
        }
    }
    if found < e.frames {
        return Err(format!(
            "the compressed pixel data holds {found} frames, the header says {}",
            e.frames
        ));
    }
    Ok(())
}

/// JPEG 2000: the SIZ marker at the start of each frame's codestream (or of the
/// `jp2c` box of a JP2 file) must give the expected size and component count.
fn check_jpeg_2000(fragments: &[Vec<u8>], e: Expected) -> Result<(), String> {
    // With one fragment per frame each is checked; otherwise only the first fragment
    // certainly starts a frame.
    let starts: &[Vec<u8>] = if fragments.len() as u64 == e.frames {
        fragments
    } else {
        &fragments[..fragments.len().min(1)]
    };
    if starts.is_empty() {
        return Err("the compressed pixel data is empty".into());
    }
    for f in starts {
        let codestream = if f.starts_with(&[0xFF, 0x4F]) {
            &f[..]
        } else if let Some(p) = f.windows(4).position(|w| w == b"jp2c") {
            &f[p + 4..]
        } else {
            return Err("a frame is not a JPEG 2000 codestream".into());
        };
        // FF4F FF51 Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4
        // each) Csiz(2), then Ssiz XRsiz YRsiz per component
        let Some(h) = codestream.get(0..42) else {
            return Err("a JPEG 2000 header is cut short".into());
        };
        if h[0..4] != [0xFF, 0x4F, 0xFF, 0x51] {
            return Err("a JPEG 2000 codestream lacks its size marker".into());
        }
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
        let width = word(8).saturating_sub(word(16));
        let height = word(12).saturating_sub(word(20));
        let components = u16::from_be_bytes([h[40], h[41]]) as usize;
        if (height, width, components) != (e.rows as u64, e.columns as u64, e.samples) {
            return Err(format!(
                "a JPEG 2000 frame is {width} × {height} with {components} components, the header says {} × {} with {}",
                e.columns, e.rows, e.samples
            ));
        }
        for c in 0..components {
            let Some(sub) = codestream.get(42 + 3 * c..45 + 3 * c) else {
                return Err("a JPEG 2000 header is cut short".into());
            };
            if sub[1] != 1 || sub[2] != 1 {
                return Err("subsampled JPEG 2000 components are not supported".into());
            }
        }
    }
    Ok(())
}

/// RLE Lossless: one fragment per frame, a sound 64-byte header with one segment per
/// byte of a sample, and every segment expanding to at least one byte per pixel.
fn check_rle(fragments: &[Vec<u8>], e: Expected) -> Result<(), String> {
    if fragments.len() as u64 != e.frames {
        return Err(format!(
            "RLE pixel data must hold one fragment per frame ({} fragments, {} frames)",
            fragments.len(),
            e.frames
        ));
    }
    let segments_expected = e.samples * e.bits_allocated / 8;
    let pixels = e.rows * e.columns;
    for (f, fragment) in fragments.iter().enumerate() {
        let bad = |what: &str| Err(format!("frame {} of the RLE pixel data {what}", f + 1));
        if fragment.len() < 64 {
            return bad("has no complete header");
        }
        let word = |i: usize| {
            u32::from_le_bytes([
                fragment[4 * i],
                fragment[4 * i + 1],
                fragment[4 * i + 2],
                fragment[4 * i + 3],
            ]) as usize
        };
        let segments = word(0);
        if segments != segments_expected || segments > 15 {
            return bad("has the wrong number of segments");
        }
        let mut starts: Vec<usize> = (1..=segments).map(word).collect();
        starts.push(fragment.len());
        if starts[0] < 64 || starts.windows(2).any(|w| w[0] > w[1]) {
            return bad("has impossible segment offsets");
        }
        for w in starts.windows(2) {
            if packbits_len(&fragment[w[0]..w[1]]) < pixels {
                return bad("is shorter than the image");
            }
        }
    }
    Ok(())
}

/// How many bytes a PackBits segment expands to (stopping where its input ends).
fn packbits_len(segment: &[u8]) -> usize {
    let (mut at, mut out) = (0usize, 0usize);
    while at < segment.len() {
        let h = segment[at] as i8;
        at += 1;
        match h {
            0..=127 => {
                let n = h as usize + 1;
                out += n.min(segment.len() - at);
                at += n;
            }
            -127..=-1 => {
                if at >= segment.len() {
                    break;
                }
                out += (1 - h as isize) as usize;
                at += 1;
            }
            _ => {} // -128: no operation
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(rows: usize, columns: usize, bits: usize) -> Expected {
        Expected {
            rows,
            columns,
            samples: 1,
            bits_allocated: bits,
            frames: 1,
        }
    }

    #[test]
    fn rle_fragments_are_checked_before_decoding() {
        // PackBits: literal run of 3, repeat 0x07 four times, no-op
        assert_eq!(packbits_len(&[2, 1, 2, 3, 0xFD, 7, 0x80]), 7);
        assert_eq!(packbits_len(&[5, 1]), 1); // cut literal run
        let mut fragment = vec![0u8; 64];
        fragment[0] = 1;
        fragment[4] = 64;
        fragment.extend_from_slice(&[0xFB, 9]); // 6 × 9
        let ok = expected(2, 3, 8);
        assert!(check(RLE, &[fragment.clone()], ok).is_ok());
        let e = check(RLE, &[fragment.clone()], expected(2, 4, 8)).unwrap_err();
        assert!(e.contains("shorter"), "{e}");
        let e = check(RLE, &[fragment.clone()], Expected { frames: 2, ..ok }).unwrap_err();
        assert!(e.contains("one fragment per frame"), "{e}");
        let e = check(RLE, &[fragment.clone()], expected(2, 3, 16)).unwrap_err();
        assert!(e.contains("segments"), "{e}");
        fragment[4] = 200;
        assert!(check(RLE, &[fragment], ok).unwrap_err().contains("offsets"));
        assert!(
            check(RLE, &[vec![1, 0, 0]], ok)
                .unwrap_err()
                .contains("header")
        );
    }

    fn jpeg_sof(marker: u8, precision: u8, rows: u16, columns: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, marker, 0, 11, precision];
        v.extend_from_slice(&rows.to_be_bytes());
        v.extend_from_slice(&columns.to_be_bytes());
        v.extend_from_slice(&[1, 1, 0x11, 0, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn jpeg_and_jpeg_ls_frame_sizes_must_match_the_header() {
        let lossless = "1.2.840.10008.1.2.4.70";
        assert!(
            check(
                lossless,
                &[jpeg_sof(0xC3, 16, 384, 384)],
                expected(384, 384, 16)
            )
            .is_ok()
        );
        let e = check(
            lossless,
            &[jpeg_sof(0xC3, 16, 385, 384)],
            expected(384, 384, 16),
        )
        .unwrap_err();
        assert!(e.contains("384 × 385"), "{e}");
        assert!(
            check(
                lossless,
                &[jpeg_sof(0xC3, 12, 384, 384)],
                expected(384, 384, 8)
            )
            .is_err()
        );
        let ls = "1.2.840.10008.1.2.4.80";
        assert!(check(ls, &[jpeg_sof(0xF7, 16, 10, 20)], expected(10, 20, 16)).is_ok());
        assert!(check(ls, &[jpeg_sof(0xC3, 16, 10, 20)], expected(10, 20, 16)).is_err());
    }

    #[test]
    fn a_thumbnail_inside_an_app_segment_is_skipped() {
        let thumbnail = jpeg_sof(0xC0, 8, 16, 16);
        let mut stream = vec![0xFF, 0xD8, 0xFF, 0xE1];
        stream.extend_from_slice(&((thumbnail.len() + 2) as u16).to_be_bytes());
        stream.extend_from_slice(&thumbnail);
        stream.extend_from_slice(&jpeg_sof(0xC0, 8, 4, 5)[2..]);
        let baseline = "1.2.840.10008.1.2.4.50";
        assert!(check(baseline, &[stream], expected(4, 5, 8)).is_ok());
    }

    #[test]
    fn jpeg_2000_size_must_match_the_header() {
        let mut siz = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for v in [20u32, 10, 0, 0, 20, 10, 0, 0] {
            siz.extend_from_slice(&v.to_be_bytes());
        }
        siz.extend_from_slice(&[0, 1, 15, 1, 1]);
        let j2k = "1.2.840.10008.1.2.4.90";
        assert!(check(j2k, &[siz.clone()], expected(10, 20, 16)).is_ok());
        let e = check(j2k, &[siz.clone()], expected(10, 19, 16)).unwrap_err();
        assert!(e.contains("20 × 10"), "{e}");
        siz[41] = 2;
        assert!(check(j2k, &[siz], expected(10, 20, 16)).is_err());
        assert!(check(j2k, &[vec![1, 2, 3]], expected(10, 20, 16)).is_err());
    }
}
