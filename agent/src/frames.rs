//! The framing of an interactive `gantry exec` (`-i`): once the agent's
//! endpoint has upgraded the request's connection, each side sends frames
//! of one kind byte, a big-endian 32-bit length and that many bytes. The
//! client sends what it reads on standard input and then says it is
//! closed; the agent sends the command's output, then its exit code, or
//! why it could not run it. The agent (agent/src/endpoint.rs) and the
//! client (src/agent_client.rs) share this module.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The value of the `Upgrade` header that asks for this protocol.
pub const PROTOCOL: &str = "gantry-exec";

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → agent: bytes for the command's standard input.
    Stdin = 0,
    /// Client → agent: standard input is closed.
    StdinClosed = 1,
    /// Agent → client: the command's output.
    Output = 2,
    /// Agent → client: its exit code, in decimal; the last frame.
    Exit = 3,
    /// Agent → client: why it could not run; the last frame.
    Error = 4,
}

impl Kind {
    fn of(byte: u8) -> Option<Self> {
        [
            Self::Stdin,
            Self::StdinClosed,
            Self::Output,
            Self::Exit,
            Self::Error,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

/// Larger frames are refused rather than buffered.
pub const MAX_FRAME: usize = 1 << 20;

/// Write one frame and flush it.
///
/// # Errors
/// The connection's, or a payload above [`MAX_FRAME`].
pub async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    kind: Kind,
    payload: &[u8],
) -> std::io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(kind as u8);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Read one frame; `None` at a clean end of the connection.
///
/// # Errors
/// The connection's, an unknown kind, or a frame above [`MAX_FRAME`].
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(Kind, Vec<u8>)>> {
    let mut header = [0_u8; 5];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let kind = Kind::of(header[0]).ok_or_else(|| invalid(format!("frame kind {}", header[0])))?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length > MAX_FRAME {
        return Err(invalid(format!("a frame of {length} bytes")));
    }
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_come_back_as_written_and_garbage_is_refused() {
        let mut wire = Vec::new();
        write(&mut wire, Kind::Stdin, b"hello\n")
            .await
            .expect("written");
        write(&mut wire, Kind::StdinClosed, b"")
            .await
            .expect("written");
        let mut reader = wire.as_slice();
        assert_eq!(
            read(&mut reader).await.expect("a frame"),
            Some((Kind::Stdin, b"hello\n".to_vec()))
        );
        assert_eq!(
            read(&mut reader).await.expect("a frame"),
            Some((Kind::StdinClosed, Vec::new()))
        );
        assert_eq!(read(&mut reader).await.expect("the end"), None);
        let unknown = [9_u8, 0, 0, 0, 0];
        assert!(read(&mut unknown.as_slice()).await.is_err());
        let huge = [2_u8, 0xff, 0xff, 0xff, 0xff];
        assert!(read(&mut huge.as_slice()).await.is_err());
    }
}
