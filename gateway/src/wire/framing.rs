//! Where an HTTP/1 request body ends: after `Content-Length` bytes, or after the last chunk and
//! trailers of a chunked body, parsed strictly as it streams, so that a malformed chunk is
//! refused and the next pipelined request is never read as this one's. See docs/security.md.

/// How a request's body is delimited, from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
}

/// Why a chunked body was refused (→ 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("a chunk size line is empty")]
    EmptySize,
    #[error("a chunk size is not a hexadecimal number")]
    BadSize,
    #[error("a chunk size has more than 16 hex digits")]
    SizeOverflow,
    #[error("a chunk size line is longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("a chunk line does not end with CRLF")]
    BadLineEnd,
    #[error("a chunk's data is not followed by CRLF")]
    BadDataEnd,
    #[error("the chunked body's trailer section is larger than {MAX_TRAILERS} bytes")]
    LargeTrailers,
}

/// The longest chunk size line, extensions included.
pub const MAX_LINE: usize = 4096;
/// The most trailer bytes after the last chunk (Pingora discards trailers).
pub const MAX_TRAILERS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a size line.
    Digits {
        size: u64,
        digits: u8,
        line: usize,
    },
    /// After the digits: optional whitespace, then `;` extensions or the line's CR.
    AfterDigits {
        size: u64,
        line: usize,
        ext: bool,
    },
    /// The size line's CR was read: an LF must follow.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailers {
        total: usize,
        line: usize,
        cr: bool,
    },
}

/// The part of a request body not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyFraming {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    /// Every byte belongs to this request.
    Unbounded,
    Done,
}

impl BodyFraming {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Chunked(Chunk::Digits {
                size: 0,
                digits: 0,
                line: 0,
            }),
        };
        Self { state }
    }

    /// A connection that switched protocols (`101`): every byte that follows is the tunnel's.
    pub fn unbounded() -> Self {
        Self {
            state: State::Unbounded,
        }
    }

    /// Whether every byte of the body was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes `bytes`, the next bytes on the connection: how many of them belong to this body
    /// (the rest belong to the next request), or why the body is malformed.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, FramingError> {
        let mut used = 0;
        while used < bytes.len() {
            match &mut self.state {
                State::Done => break,
                State::Unbounded => used = bytes.len(),
                State::Length(remaining) => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - used);
                    used += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                }
                State::Chunked(Chunk::Data(remaining)) => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - used);
                    used += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Chunked(Chunk::DataCr);
                    }
                }
                State::Chunked(chunk) => {
                    let next = step(*chunk, bytes[used])?;
                    used += 1;
                    self.state = next.map_or(State::Done, State::Chunked);
                }
            }
        }
        Ok(used)
    }
}

/// One byte of a chunked body outside chunk data; `None` once the body ended.
fn step(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, FramingError> {
    let next = match chunk {
        Chunk::Digits { size, digits, line } => {
            if line + 1 > MAX_LINE {
                return Err(FramingError::LongLine);
            }
            match (byte as char).to_digit(16) {
                Some(digit) => {
                    if digits == 16 {
                        return Err(FramingError::SizeOverflow);
                    }
                    Chunk::Digits {
                        size: size << 4 | u64::from(digit),
                        digits: digits + 1,
                        line: line + 1,
                    }
                }
                None if digits == 0 => {
                    return Err(if byte == b'\r' || byte == b'\n' {
                        FramingError::EmptySize
                    } else {
                        FramingError::BadSize
                    })
                }
                None => return after_digits(size, line, false, byte),
            }
        }
        Chunk::AfterDigits { size, line, ext } => {
            if line + 1 > MAX_LINE {
                return Err(FramingError::LongLine);
            }
            return after_digits(size, line, ext, byte);
        }
        Chunk::SizeLf { size } => {
            if byte != b'\n' {
                return Err(FramingError::BadLineEnd);
            }
            if size == 0 {
                Chunk::Trailers {
                    total: 0,
                    line: 0,
                    cr: false,
                }
            } else {
                Chunk::Data(size)
            }
        }
        // Consumed in bulk by `advance`, never byte by byte.
        Chunk::Data(_) => return Err(FramingError::BadDataEnd),
        Chunk::DataCr => {
            if byte != b'\r' {
                return Err(FramingError::BadDataEnd);
            }
            Chunk::DataLf
        }
        Chunk::DataLf => {
            if byte != b'\n' {
                return Err(FramingError::BadDataEnd);
            }
            Chunk::Digits {
                size: 0,
                digits: 0,
                line: 0,
            }
        }
        Chunk::Trailers { total, line, cr } => {
            if total + 1 > MAX_TRAILERS {
                return Err(FramingError::LargeTrailers);
            }
            match (cr, byte) {
                (false, b'\r') => Chunk::Trailers {
                    total: total + 1,
                    line,
                    cr: true,
                },
                // An empty line ends the trailer section, and the body.
                (true, b'\n') if line == 0 => return Ok(None),
                (true, b'\n') => Chunk::Trailers {
                    total: total + 1,
                    line: 0,
                    cr: false,
                },
                (true, _) | (false, b'\n') => return Err(FramingError::BadLineEnd),
                (false, 0..=0x08 | 0x0a..=0x1f | 0x7f) => return Err(FramingError::BadLineEnd),
                (false, _) => Chunk::Trailers {
                    total: total + 1,
                    line: line + 1,
                    cr: false,
                },
            }
        }
    };
    Ok(Some(next))
}

/// A byte after the size digits: whitespace before `;`, the extensions, or the line's end.
fn after_digits(
    size: u64,
    line: usize,
    ext: bool,
    byte: u8,
) -> Result<Option<Chunk>, FramingError> {
    let line = line + 1;
    match byte {
        b'\r' => Ok(Some(Chunk::SizeLf { size })),
        b'\n' => Err(FramingError::BadLineEnd),
        b';' => Ok(Some(Chunk::AfterDigits {
            size,
            line,
            ext: true,
        })),
        b' ' | b'\t' => Ok(Some(Chunk::AfterDigits { size, line, ext })),
        0..=0x1f | 0x7f => Err(FramingError::BadLineEnd),
        _ if ext => Ok(Some(Chunk::AfterDigits { size, line, ext })),
        _ => Err(FramingError::BadSize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(body: &[u8]) -> Result<usize, FramingError> {
        let mut framing = BodyFraming::new(Framing::Chunked);
        let used = framing.advance(body)?;
        assert!(framing.is_done(), "{:?}", String::from_utf8_lossy(body));
        Ok(used)
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        assert_eq!(chunked(b"5\r\nhello\r\n0\r\n\r\nGET /"), Ok(15));
        assert_eq!(chunked(b"5;a=b \r\nhello\r\n0\r\nx-t: 1\r\n\r\n"), Ok(28));
        assert_eq!(chunked(b"A\r\n0123456789\r\n00\r\n\r\n"), Ok(21));
        // Byte by byte, as a slow client sends it.
        let body = b"3\r\nabc\r\n0\r\n\r\nnext";
        let mut framing = BodyFraming::new(Framing::Chunked);
        let used: usize = body
            .iter()
            .map(|b| framing.advance(std::slice::from_ref(b)).expect("valid"))
            .sum();
        assert_eq!(used, body.len() - 4);
    }

    #[test]
    fn malformed_chunk_sizes_are_refused() {
        let refused = |body: &[u8]| {
            let mut framing = BodyFraming::new(Framing::Chunked);
            framing.advance(body).expect_err("refused")
        };
        assert_eq!(refused(b"\r\nhello\r\n"), FramingError::EmptySize);
        assert_eq!(refused(b"-1\r\n"), FramingError::BadSize);
        assert_eq!(refused(b"0x5\r\n"), FramingError::BadSize);
        assert_eq!(refused(b"5 5\r\n"), FramingError::BadSize);
        assert_eq!(
            refused(b"fffffffffffffffff\r\n"),
            FramingError::SizeOverflow
        );
        assert_eq!(refused(&[b'1'; 100]), FramingError::SizeOverflow);
        assert_eq!(refused(b"5\nhello"), FramingError::BadLineEnd);
        assert_eq!(refused(b"5\r\nhelloXY"), FramingError::BadDataEnd);
        // An empty line where the last chunk should be is not the end of the body.
        assert_eq!(refused(b"5\r\nhello\r\n\r\n"), FramingError::EmptySize);
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE));
        assert_eq!(refused(&long), FramingError::LongLine);
    }

    #[test]
    fn a_length_body_ends_after_its_bytes() {
        let mut framing = BodyFraming::new(Framing::Length(3));
        assert_eq!(framing.advance(b"ab"), Ok(2));
        assert!(!framing.is_done());
        assert_eq!(framing.advance(b"cGET"), Ok(1));
        assert!(framing.is_done());
        assert!(BodyFraming::new(Framing::None).is_done());
    }

    #[test]
    fn an_upgraded_connection_is_never_fenced() {
        let mut framing = BodyFraming::unbounded();
        assert_eq!(framing.advance(b"\x81\x05hello"), Ok(7));
        assert!(!framing.is_done());
    }
}
