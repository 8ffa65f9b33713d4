//! A streaming `multipart/related` reader (RFC 2046) for WADO-RS answers.
//!
//! Hand-written because the maintained multipart crates (`multer`, `mime-multipart`'s
//! successors) are async or form-data only; this one is small, bounded and reads a
//! blocking stream: each part is handed to a [`PartSink`] in pieces as it arrives, so a
//! series never sits in memory, and every buffer has a limit.

use std::io::Read;

use memchr::memmem::Finder;

use super::PacsError;

const CHUNK: usize = 64 * 1024;
const MAX_PREAMBLE: usize = 64 * 1024;
const MAX_PART_HEADERS: usize = 16 * 1024;

/// Receives the parts of a multipart body.
pub(crate) trait PartSink {
    /// A part starts (`part` counts from 1); `content_type` is its header, if any.
    fn begin(&mut self, part: usize, content_type: Option<&str>) -> Result<(), PacsError>;
    /// The next bytes of the current part.
    fn data(&mut self, bytes: &[u8]) -> Result<(), PacsError>;
    /// The current part is complete.
    fn end(&mut self) -> Result<(), PacsError>;
}

/// Bounds and how to report problems (the server's `host:port` names it).
pub(crate) struct Bounds<'a> {
    pub part_bytes: u64,
    pub total_bytes: u64,
    pub host: &'a str,
}

/// The `boundary` parameter of a `multipart/related` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .then(|| v.to_string())
    })
}

struct Stream<'a, R> {
    input: R,
    buf: Vec<u8>,
    pos: usize,
    total: u64,
    bounds: &'a Bounds<'a>,
    map_io: &'a dyn Fn(std::io::Error) -> PacsError,
}

impl<R: Read> Stream<'_, R> {
    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// Reads more; `false` at the end of the body.
    fn fill(&mut self) -> Result<bool, PacsError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let n = loop {
            match self.input.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err((self.map_io)(e));
                }
            }
        };
        self.buf.truncate(old + n);
        self.total += n as u64;
        if self.total > self.bounds.total_bytes {
            return Err(PacsError::TooLarge {
                host: self.bounds.host.into(),
                what: "the series",
                limit_mb: self.bounds.total_bytes.div_ceil(1 << 20),
            });
        }
        Ok(n > 0)
    }

    /// At least `n` bytes available; `false` when the body ends first.
    fn ensure(&mut self, n: usize) -> Result<bool, PacsError> {
        while self.available().len() < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Reads every part of `input` into `sink`; returns the number of parts. A body that
/// ends before the closing boundary is [`PacsError::Truncated`].
pub(crate) fn read_parts(
    input: impl Read,
    boundary: &str,
    bounds: &Bounds<'_>,
    map_io: &dyn Fn(std::io::Error) -> PacsError,
    sink: &mut dyn PartSink,
) -> Result<usize, PacsError> {
    // "\r\n--boundary"; the body is read as if it began with CRLF, so the first
    // delimiter (which may open the body) matches too.
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let finder = Finder::new(&delimiter);
    let mut s = Stream {
        input,
        buf: b"\r\n".to_vec(),
        pos: 0,
        total: 0,
        bounds,
        map_io,
    };
    let mut parts = 0;
    let truncated = |parts| PacsError::Truncated {
        host: bounds.host.into(),
        parts,
    };
    let bad = |reason: &str| PacsError::BadResponse {
        host: bounds.host.into(),
        reason: reason.into(),
    };
    // The preamble, up to the first delimiter.
    loop {
        if let Some(i) = finder.find(s.available()) {
            s.consume(i + delimiter.len());
            break;
        }
        if s.available().len() > MAX_PREAMBLE {
            return Err(bad("no multipart boundary found"));
        }
        if !s.fill()? {
            return Err(truncated(0));
        }
    }
    loop {
        // After a delimiter: "--" closes the body, else padding and CRLF.
        if !s.ensure(2)? {
            return Err(truncated(parts));
        }
        if s.available().starts_with(b"--") {
            return Ok(parts);
        }
        loop {
            let pad = s
                .available()
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t'))
                .count();
            s.consume(pad);
            if pad > 0 && s.available().is_empty() {
                if !s.fill()? {
                    return Err(truncated(parts));
                }
                continue;
            }
            break;
        }
        if !s.ensure(2)? {
            return Err(truncated(parts));
        }
        if !s.available().starts_with(b"\r\n") {
            return Err(bad("a malformed multipart boundary line"));
        }
        s.consume(2);
        // Part headers, up to the empty line.
        let headers = loop {
            if !s.ensure(2)? {
                return Err(truncated(parts));
            }
            if s.available().starts_with(b"\r\n") {
                s.consume(2);
                break String::new();
            }
            if let Some(i) = memchr::memmem::find(s.available(), b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&s.available()[..i]).into_owned();
                s.consume(i + 4);
                break text;
            }
            if s.available().len() > MAX_PART_HEADERS {
                return Err(bad("multipart part headers are too long"));
            }
            if !s.fill()? {
                return Err(truncated(parts));
            }
        };
        let content_type = headers.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        });
        sink.begin(parts + 1, content_type.as_deref())?;
        let mut part_bytes = 0u64;
        let too_large = || PacsError::TooLarge {
            host: bounds.host.into(),
            what: "one instance",
            limit_mb: bounds.part_bytes.div_ceil(1 << 20),
        };
        loop {
            if let Some(i) = finder.find(s.available()) {
                part_bytes += i as u64;
                if part_bytes > bounds.part_bytes {
                    return Err(too_large());
                }
                sink.data(&s.available()[..i])?;
                s.consume(i + delimiter.len());
                break;
            }
            // Everything but a tail that could start the delimiter is part data.
            let emit = s.available().len().saturating_sub(delimiter.len() - 1);
            if emit > 0 {
                part_bytes += emit as u64;
                if part_bytes > bounds.part_bytes {
                    return Err(too_large());
                }
                sink.data(&s.available()[..emit])?;
                s.consume(emit);
            }
            if !s.fill()? {
                return Err(truncated(parts));
            }
        }
        sink.end()?;
        parts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        parts: Vec<(Option<String>, Vec<u8>)>,
        open: bool,
    }

    impl PartSink for Collect {
        fn begin(&mut self, part: usize, content_type: Option<&str>) -> Result<(), PacsError> {
            assert_eq!(part, self.parts.len() + 1);
            self.parts
                .push((content_type.map(str::to_string), Vec::new()));
            self.open = true;
            Ok(())
        }
        fn data(&mut self, bytes: &[u8]) -> Result<(), PacsError> {
            self.parts.last_mut().unwrap().1.extend_from_slice(bytes);
            Ok(())
        }
        fn end(&mut self) -> Result<(), PacsError> {
            self.open = false;
            Ok(())
        }
    }

    /// Hands out at most `step` bytes per read, to cross every buffer edge.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn bounds() -> Bounds<'static> {
        Bounds {
            part_bytes: 1 << 20,
            total_bytes: 1 << 22,
            host: "h:1",
        }
    }

    fn read(body: &[u8], step: usize, bounds: &Bounds<'_>) -> Result<Collect, PacsError> {
        let mut sink = Collect::default();
        let map_io = |e: std::io::Error| PacsError::Connection {
            host: "h:1".into(),
            reason: e.kind().to_string(),
        };
        read_parts(Trickle(body, step), "b0und", bounds, &map_io, &mut sink)?;
        Ok(sink)
    }

    fn body(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for p in parts {
            out.extend_from_slice(b"--b0und\r\nContent-Type: application/dicom\r\n\r\n");
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--b0und--\r\nepilogue");
        out
    }

    #[test]
    fn parts_are_split_at_every_read_size() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let b = b"\r\n--b0un not a boundary \r\n-- b0und".to_vec();
        let whole = body(&[&a, &b, b""]);
        for step in [1, 2, 3, 7, 64, 1000, 1 << 20] {
            let got = read(&whole, step, &bounds()).unwrap();
            assert_eq!(got.parts.len(), 3, "step {step}");
            assert_eq!(got.parts[0].1, a);
            assert_eq!(got.parts[1].1, b);
            assert!(got.parts[2].1.is_empty());
            assert_eq!(got.parts[0].0.as_deref(), Some("application/dicom"));
        }
        // No preamble, parts without headers.
        let got = read(b"--b0und\r\n\r\nxyz\r\n--b0und--", 5, &bounds()).unwrap();
        assert_eq!(got.parts, vec![(None, b"xyz".to_vec())]);
    }

    #[test]
    fn a_body_cut_anywhere_is_truncated() {
        let whole = body(&[b"first part", b"second part"]);
        let end = whole.len() - b"--\r\nepilogue".len();
        for cut in 0..end {
            match read(&whole[..cut], 3, &bounds()) {
                Err(PacsError::Truncated { parts, .. }) => assert!(parts <= 2),
                other => panic!("cut at {cut}: {:?}", other.map(|c| c.parts.len())),
            }
        }
    }

    #[test]
    fn oversized_parts_and_bodies_stop_the_read() {
        let big = vec![7u8; 3000];
        let small = Bounds {
            part_bytes: 1000,
            total_bytes: 1 << 20,
            host: "h:1",
        };
        assert!(matches!(
            read(&body(&[&big]), 100, &small),
            Err(PacsError::TooLarge {
                what: "one instance",
                ..
            })
        ));
        let total = Bounds {
            part_bytes: 1 << 20,
            total_bytes: 2000,
            host: "h:1",
        };
        assert!(matches!(
            read(&body(&[&big]), 100, &total),
            Err(PacsError::TooLarge {
                what: "the series",
                ..
            })
        ));
        assert!(matches!(
            read(&vec![b'x'; 200_000], 4096, &bounds()),
            Err(PacsError::BadResponse { .. })
        ));
    }

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/related; type=\"application/dicom\"; boundary=abc-123").as_deref(),
            Some("abc-123")
        );
        assert_eq!(
            boundary("Multipart/Related;boundary=\"q r\";type=application/dicom").as_deref(),
            Some("q r")
        );
        assert_eq!(boundary("application/dicom; boundary=x"), None);
        assert_eq!(boundary("multipart/related; type=application/dicom"), None);
    }
}
