//! What the fast path accepts of HTTP/1.1 message syntax (RFC 9112), beyond httparse: body
//! lengths, chunked framing (followed, checked, and re-emitted canonically) and Host values.
//! Invariant: whatever these accept, hyper's parser accepts too and delimits the same way.

use httparse::Status;

pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Where a message's body ends.
pub(super) enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Until the sender closes (responses without a length).
    UntilClose,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid chunked encoding")]
pub(super) struct BadChunk;

impl Framing {
    /// How many of `avail`'s bytes belong to the message, and whether it ends there.
    pub(super) fn take(&mut self, avail: &[u8]) -> Result<(usize, bool), BadChunk> {
        match self {
            Framing::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(avail.len());
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Framing::Chunked(c) => c.scan(avail),
            Framing::UntilClose => Ok((avail.len(), false)),
        }
    }
}

/// Follows chunked framing (RFC 9112 §7.1) over bytes that are forwarded unchanged, to find
/// where the message ends. Chunk extensions and trailers are skipped over, not interpreted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) enum Chunked {
    /// Reading the hex size.
    #[default]
    Start,
    Size {
        size: u64,
    },
    /// Whitespace after the size, before `;ext` or CR (as hyper allows).
    SizeLws {
        size: u64,
    },
    /// A `;ext`, up to CR.
    Ext {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

impl Chunked {
    pub(super) fn scan(&mut self, bytes: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if *self == Chunked::Done {
                break;
            }
            if let Chunked::Data { left } = *self {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += n;
                let left = left - n as u64;
                *self = if left == 0 {
                    Chunked::DataCr
                } else {
                    Chunked::Data { left }
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Start, _) => match hex(b) {
                    Some(d) => Chunked::Size { size: d },
                    None => return Err(BadChunk),
                },
                (Chunked::Size { size }, _) => match hex(b) {
                    // Leading zeros are fine; a size past u64 is not (as hyper).
                    Some(d) => Chunked::Size {
                        size: size.checked_mul(16).ok_or(BadChunk)? | d,
                    },
                    None if b == b'\r' => Chunked::SizeLf { size },
                    None if b == b';' => Chunked::Ext { size },
                    None if b == b' ' || b == b'\t' => Chunked::SizeLws { size },
                    None => return Err(BadChunk),
                },
                (Chunked::SizeLws { size }, b' ' | b'\t') => Chunked::SizeLws { size },
                (Chunked::SizeLws { size }, b';') => Chunked::Ext { size },
                (Chunked::SizeLws { size }, b'\r') => Chunked::SizeLf { size },
                (Chunked::Ext { size }, b'\r') => Chunked::SizeLf { size },
                (Chunked::Ext { .. }, b'\n') => return Err(BadChunk),
                (Chunked::Ext { size }, _) => Chunked::Ext { size },
                (Chunked::SizeLf { size: 0 }, b'\n') => Chunked::TrailerStart,
                (Chunked::SizeLf { size }, b'\n') => Chunked::Data { left: size },
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::Start,
                (Chunked::TrailerStart, b'\r') => Chunked::EndLf,
                (Chunked::TrailerStart, b'\n') => return Err(BadChunk),
                (Chunked::TrailerLine, b'\r') => Chunked::TrailerLineLf,
                (Chunked::TrailerLine, b'\n') => return Err(BadChunk),
                (Chunked::TrailerStart | Chunked::TrailerLine, _) => Chunked::TrailerLine,
                (Chunked::TrailerLineLf, b'\n') => Chunked::TrailerStart,
                (Chunked::EndLf, b'\n') => Chunked::Done,
                _ => return Err(BadChunk),
            };
        }
        Ok((i, *self == Chunked::Done))
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// Re-emit a complete chunked message that `Chunked::scan` accepted (`body`) the way hyper
/// would send it: sizes in lowercase hex without leading zeros, no extensions or whitespace,
/// no trailers (the hyper path drops undeclared request trailers). Trailers are still checked
/// as hyper checks them, so that what one path refuses the other refuses too.
pub(super) fn canonical_chunked(mut body: &[u8], out: &mut Vec<u8>) -> Result<(), BadChunk> {
    use std::io::Write;
    loop {
        let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = body[..digits]
            .iter()
            .try_fold(0u64, |n, &b| n.checked_mul(16)?.checked_add(hex(b)?))
            .ok_or(BadChunk)?;
        let line = body.windows(2).position(|w| w == b"\r\n").ok_or(BadChunk)?;
        body = &body[line + 2..];
        if size == 0 {
            let mut storage = [httparse::EMPTY_HEADER; 100];
            match httparse::parse_headers(body, &mut storage) {
                Ok(Status::Complete((_, trailers))) => {
                    for t in trailers.iter() {
                        http::HeaderName::from_bytes(t.name.as_bytes()).map_err(|_| BadChunk)?;
                        http::HeaderValue::from_bytes(t.value).map_err(|_| BadChunk)?;
                    }
                }
                _ => return Err(BadChunk),
            }
            out.extend_from_slice(b"0\r\n\r\n");
            return Ok(());
        }
        let size = usize::try_from(size).map_err(|_| BadChunk)?;
        let data = body.get(..size).ok_or(BadChunk)?;
        let _ = write!(out, "{size:x}\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        body = body.get(size + 2..).ok_or(BadChunk)?;
    }
}

/// A Host value (RFC 9112 §3.2, RFC 3986 §3.2.2): `reg-name` or IPv4 or `[IPv6]`, then
/// an optional `:port`. No user info, no whitespace, nothing empty.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (&rest[..end], &rest[end + 1..])
    } else {
        let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let host = &value[..colon];
        let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
        if host.is_empty() || !host.iter().all(reg_name) {
            return false;
        }
        (host, &value[colon..])
    };
    debug_assert!(!host.is_empty());
    match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        Chunked::default().scan(input)
    }

    /// Feeding a message one byte at a time finds the same end as feeding it whole.
    fn scan_bytewise(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut c = Chunked::default();
        let mut used = 0;
        for b in input {
            let (n, done) = c.scan(std::slice::from_ref(b))?;
            used += n;
            if done {
                return Ok((used, true));
            }
        }
        Ok((used, false))
    }

    #[test]
    fn chunked_framing() {
        let msg = b"4\r\nWiki\r\n5;name=v\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        let next = b"GET / HTTP/1.1\r\n";
        let mut input = msg.to_vec();
        input.extend_from_slice(next);
        assert_eq!(scan_all(&input), Ok((msg.len(), true)));
        assert_eq!(scan_bytewise(&input), Ok((msg.len(), true)));
        assert_eq!(scan_all(b"0\r\n\r\n"), Ok((5, true)));
        assert_eq!(scan_all(b"a\r\n0123"), Ok((7, false)), "incomplete");
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiX\r\n",
            b"4\nWiki\r\n",
            b"0\r\n\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nTrailer: x\n\r\n",
        ] {
            assert_eq!(
                scan_all(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(scan_bytewise(bad), Err(BadChunk));
        }
    }

    #[test]
    fn size_lines_as_hyper_reads_them() {
        // Whitespace after the size is fine; anything but `;` or CR after it is not.
        assert_eq!(scan_all(b"3 \t\r\nabc\r\n0\r\n\r\n"), Ok((15, true)));
        assert_eq!(scan_all(b"3 ;x\r\nabc\r\n0\r\n\r\n"), Ok((16, true)));
        assert_eq!(scan_all(b"3 x\r\nabc\r\n"), Err(BadChunk));
        // Leading zeros are fine; a size past u64 is not.
        assert_eq!(
            scan_all(b"00000000000000000003\r\nabc\r\n0\r\n\r\n"),
            Ok((32, true))
        );
        assert_eq!(scan_all(b"ffffffffffffffff\r\n"), Ok((18, false)));
        assert_eq!(scan_all(b"10000000000000000\r\n"), Err(BadChunk));
    }

    #[test]
    fn chunked_bodies_are_reemitted_canonically() {
        let mut out = Vec::new();
        let body = b"03 \t;x=\"y\"\r\nabc\r\nA\r\n0123456789\r\n000\r\nX-Sum: 13\r\nX-T: 2\r\n\r\n";
        assert_eq!(scan_all(body), Ok((body.len(), true)));
        canonical_chunked(body, &mut out).expect("valid");
        assert_eq!(out, b"3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n");
        out.clear();
        canonical_chunked(b"0\r\n\r\n", &mut out).expect("empty body");
        assert_eq!(out, b"0\r\n\r\n");
        // A trailer hyper would refuse is refused here too.
        for bad in [&b"0\r\nno colon\r\n\r\n"[..], b"0\r\nX: \x01\r\n\r\n"] {
            assert_eq!(scan_all(bad), Ok((bad.len(), true)));
            assert_eq!(canonical_chunked(bad, &mut out), Err(BadChunk));
        }
    }

    #[test]
    fn host_values() {
        for good in [
            "h",
            "hub.example.org",
            "hub.example.org:8000",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8000",
            "[::ffff:10.0.0.1]",
            "xn--bcher-kva.de",
            "a_b~c",
            "h:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "a b",
            "user@h",
            "h:80x",
            "h:123456",
            "[::1",
            "[]",
            "[zz]",
            "[::1]x",
            "h/p",
            "h?q",
            "h#f",
            "h\t",
            "\u{e9}.de",
            "h:80:80",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
