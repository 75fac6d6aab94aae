//! The SFTP wire loop: reads request packets from a byte stream (an SSH channel, or stdin/stdout
//! for `roster sftp-server`), hands them to an [`SftpSession`], and writes the replies.
//!
//! It owns framing, so it can keep a session in sync when a client misbehaves: a packet larger
//! than [`MAX_PACKET`] is read past and answered with an error; one that cannot be decoded gets a
//! `BAD_MESSAGE` status with its request id. WRITE and READ are decoded here without copying the
//! data (the upload hot path); everything else goes through russh-sftp's packet types. Replies are
//! batched and flushed when no more requests are waiting in the input buffer.

use super::requests::{SftpSession, MAX_PACKET};
use bytes::Bytes;
use russh_sftp::protocol::{Packet, StatusCode};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

const SSH_FXP_READ: u8 = 5;
const SSH_FXP_WRITE: u8 = 6;
const SSH_FXP_STATUS: u8 = 101;
const SSH_FXP_DATA: u8 = 103;
/// Flush replies once this much is waiting, even if more requests are queued.
const FLUSH_AT: usize = 512 * 1024;

/// Serves SFTP until the client closes its side; then ends the session (unfinished uploads stay
/// unannounced).
pub async fn serve<R, W>(reader: R, mut writer: W, mut session: SftpSession) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::with_capacity(1024 * 1024, reader);
    let mut body: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(FLUSH_AT + 300 * 1024);
    let result = loop {
        let len = match reader.read_u32().await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Err(e) = read_one(&mut reader, len, &mut body, &mut out, &mut session).await {
            break Err(e);
        }
        if out.len() >= FLUSH_AT || reader.buffer().is_empty() {
            if let Err(e) = writer.write_all(&out).await {
                break Err(e);
            }
            out.clear();
            if let Err(e) = writer.flush().await {
                break Err(e);
            }
        }
    };
    if !out.is_empty() {
        let _ = writer.write_all(&out).await;
        let _ = writer.flush().await;
    }
    session.end();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        other => other,
    }
}

/// Reads the body of one packet of `len` bytes and appends the reply to `out`.
async fn read_one<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    len: u32,
    body: &mut Vec<u8>,
    out: &mut Vec<u8>,
    session: &mut SftpSession,
) -> std::io::Result<()> {
    if len < 5 {
        // Too short to carry a type and a request id: skip it, answer with id 0.
        let mut skip = vec![0u8; len as usize];
        reader.read_exact(&mut skip).await?;
        push_status(
            out,
            0,
            StatusCode::BadMessage,
            "The request is too short to be an SFTP packet",
        );
        return Ok(());
    }
    if len > MAX_PACKET {
        let mut head = [0u8; 5];
        reader.read_exact(&mut head).await?;
        let id = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let rest = u64::from(len) - 5;
        let skipped =
            tokio::io::copy(&mut (&mut *reader).take(rest), &mut tokio::io::sink()).await?;
        if skipped != rest {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        tracing::warn!(
            tenant = session.tenant(),
            len,
            "oversized SFTP packet skipped"
        );
        push_status(
            out,
            id,
            StatusCode::Failure,
            &format!(
                "The request of {len} bytes is larger than the {} bytes this server accepts; use smaller blocks",
                MAX_PACKET
            ),
        );
        return Ok(());
    }
    body.resize(len as usize, 0);
    reader.read_exact(body).await?;
    let kind = body[0];
    let id = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    match kind {
        SSH_FXP_WRITE => match parse_write(&body[5..]) {
            Some((handle, offset, data)) => {
                let handle = String::from_utf8_lossy(handle);
                let reply = session.write(id, &handle, offset, data);
                push_reply(out, id, reply);
            }
            None => push_status(
                out,
                id,
                StatusCode::BadMessage,
                "The WRITE request is malformed",
            ),
        },
        SSH_FXP_READ => match parse_read(&body[5..]) {
            Some((handle, offset, want)) => {
                let handle = String::from_utf8_lossy(handle).into_owned();
                // DATA header now, length patched after the read lands in place.
                let start = out.len();
                out.extend_from_slice(&[0, 0, 0, 0, SSH_FXP_DATA]);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
                match session.read_into(id, &handle, offset, want, out) {
                    Ok(()) => {
                        let data_len = (out.len() - start - 13) as u32;
                        out[start + 9..start + 13].copy_from_slice(&data_len.to_be_bytes());
                        let packet_len = (out.len() - start - 4) as u32;
                        out[start..start + 4].copy_from_slice(&packet_len.to_be_bytes());
                    }
                    Err((code, msg)) => {
                        out.truncate(start);
                        push_status(out, id, code, &msg);
                    }
                }
            }
            None => push_status(
                out,
                id,
                StatusCode::BadMessage,
                "The READ request is malformed",
            ),
        },
        _ => {
            let mut bytes = Bytes::copy_from_slice(body);
            match Packet::try_from(&mut bytes) {
                Ok(packet) => {
                    let reply = session.handle(packet);
                    push_packet(out, reply);
                }
                Err(e) => {
                    tracing::debug!(kind, "undecodable SFTP request: {e}");
                    push_status(
                        out,
                        id,
                        StatusCode::BadMessage,
                        "The request could not be decoded (is every path valid UTF-8?)",
                    );
                }
            }
        }
    }
    Ok(())
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let hi = be_u32(b, at)?;
    let lo = be_u32(b, at + 4)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// WRITE body after the id: string handle, uint64 offset, string data.
fn parse_write(b: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let hlen = be_u32(b, 0)? as usize;
    let handle = b.get(4..4 + hlen)?;
    let offset = be_u64(b, 4 + hlen)?;
    let dlen = be_u32(b, 12 + hlen)? as usize;
    let data = b.get(16 + hlen..16 + hlen + dlen)?;
    Some((handle, offset, data))
}

/// READ body after the id: string handle, uint64 offset, uint32 length.
fn parse_read(b: &[u8]) -> Option<(&[u8], u64, u32)> {
    let hlen = be_u32(b, 0)? as usize;
    let handle = b.get(4..4 + hlen)?;
    let offset = be_u64(b, 4 + hlen)?;
    let len = be_u32(b, 12 + hlen)?;
    Some((handle, offset, len))
}

fn push_reply(out: &mut Vec<u8>, id: u32, reply: Result<Packet, super::requests::Failure>) {
    match reply {
        Ok(p) => push_packet(out, p),
        Err((code, msg)) => push_status(out, id, code, &msg),
    }
}

fn push_status(out: &mut Vec<u8>, id: u32, code: StatusCode, msg: &str) {
    let msg = msg.as_bytes();
    let len = 1 + 4 + 4 + 4 + msg.len() + 4 + 2;
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(SSH_FXP_STATUS);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(code as u32).to_be_bytes());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(b"en");
}

fn push_packet(out: &mut Vec<u8>, packet: Packet) {
    let id = match &packet {
        Packet::Status(s) => s.id,
        _ => 0,
    };
    match Bytes::try_from(packet) {
        Ok(b) => out.extend_from_slice(&b),
        Err(e) => {
            tracing::error!("cannot encode an SFTP reply: {e}");
            push_status(
                out,
                id,
                StatusCode::Failure,
                "The server could not encode its reply",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_read_bodies_parse() {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_be_bytes());
        b.push(b'7');
        b.extend_from_slice(&10u64.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(b"abc");
        assert_eq!(parse_write(&b), Some((&b"7"[..], 10, &b"abc"[..])));
        assert_eq!(parse_write(&b[..b.len() - 1]), None);
        assert_eq!(parse_read(&b[..17]), Some((&b"7"[..], 10, 3)));
        assert_eq!(parse_read(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
