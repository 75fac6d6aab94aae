//! The SFTP wire loop: reads request packets from a byte stream (an SSH channel, or stdin/stdout
//! for `roster sftp-server`), hands them to an [`SftpSession`], and writes the replies.
//!
//! It owns framing, so it can keep a session in sync when a client misbehaves: a packet larger
//! than [`MAX_PACKET`] is read past and answered with an error; one that cannot be decoded gets a
//! `BAD_MESSAGE` status with its request id. WRITE and READ are decoded here without copying the
//! data (the upload hot path); everything else goes through russh-sftp's packet types. Replies are
//! batched and flushed when no more requests are waiting.
//!
//! Reading and answering run side by side: requests are read into a queue of at most
//! [`QUEUE_BYTES`] while replies are written. A reply can wait for the client's window, and the
//! client's WINDOW_ADJUST only gets through if the channel keeps being read: russh stops reading
//! the whole connection while one channel's queue is full. Only a client that keeps sending
//! without reading its replies fills this queue; reading then stops (back-pressure) until the
//! client reads, or the server's idle timeout ends the connection.

use super::requests::{SftpSession, MAX_PACKET};
use bytes::Bytes;
use russh_sftp::protocol::{Packet, StatusCode};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

const SSH_FXP_OPEN: u8 = 3;
const SSH_FXP_READ: u8 = 5;
const SSH_FXP_WRITE: u8 = 6;
const SSH_FXP_SETSTAT: u8 = 9;
const SSH_FXP_FSETSTAT: u8 = 10;
const SSH_FXP_EXTENDED: u8 = 200;
const SSH_FXP_STATUS: u8 = 101;
const SSH_FXP_DATA: u8 = 103;
/// The OPEN pflag that asks for the file to be truncated.
const SSH_FXF_TRUNC: u32 = 0x10;
/// Flush replies once this much is waiting, even if more requests are queued.
const FLUSH_AT: usize = 512 * 1024;
/// Request bytes read and not yet answered, at most (a few of the largest packets).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// What each queued request counts for besides its body, so that a flood of tiny requests is
/// bounded too.
const FRAME_OVERHEAD: u32 = 64;

/// One request as read off the stream.
enum Frame {
    /// A packet's body: type, request id, fields.
    Packet(Vec<u8>),
    /// Too short to carry a type and a request id (skipped).
    TooShort,
    /// Larger than [`MAX_PACKET`]: read past; only its request id is kept.
    TooLong { id: u32, len: u32 },
}

/// The share of [`QUEUE_BYTES`] a packet of `len` bytes takes while it waits.
fn cost(len: u32) -> u32 {
    let body = if (5..=MAX_PACKET).contains(&len) {
        len
    } else {
        0
    };
    body + FRAME_OVERHEAD
}

/// Serves SFTP until the client closes its side; then ends the session (unfinished uploads stay
/// unannounced).
pub async fn serve<R, W>(reader: R, writer: W, mut session: SftpSession) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let room = Semaphore::new(QUEUE_BYTES);
    let (queue, requests) = mpsc::unbounded_channel();
    let (answered, read) = {
        let reading = read_requests(reader, queue, &room);
        let answering = answer(requests, writer, &mut session, &room);
        tokio::pin!(reading, answering);
        let mut read = None;
        // Answering goes on after reading ended (the queue drains); reading is dropped when
        // answering fails.
        let answered = loop {
            tokio::select! {
                r = &mut reading, if read.is_none() => read = Some(r),
                a = &mut answering => break a,
            }
        };
        (answered, read.unwrap_or(Ok(())))
    };
    session.end();
    match answered.and(read) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        other => other,
    }
}

/// Reads requests into `queue` until the stream ends, waiting for room in the queue first.
async fn read_requests<R: AsyncRead + Unpin>(
    reader: R,
    queue: UnboundedSender<(Frame, u32)>,
    room: &Semaphore,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    loop {
        let len = match reader.read_u32().await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        // Back-pressure: wait until answered requests make room (the semaphore is never closed).
        let taken = cost(len);
        if let Ok(permits) = room.acquire_many(taken).await {
            permits.forget();
        }
        let frame = read_frame(&mut reader, len).await?;
        if queue.send((frame, taken)).is_err() {
            return Ok(());
        }
    }
}

/// Reads the body of one packet of `len` bytes.
async fn read_frame<R: AsyncBufRead + Unpin>(reader: &mut R, len: u32) -> std::io::Result<Frame> {
    if len < 5 {
        let mut skip = vec![0u8; len as usize];
        reader.read_exact(&mut skip).await?;
        return Ok(Frame::TooShort);
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
        return Ok(Frame::TooLong { id, len });
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).await?;
    Ok(Frame::Packet(body))
}

/// Answers queued requests in order until the queue is empty and reading has ended. Replies are
/// written when [`FLUSH_AT`] bytes wait or no request does.
///
/// Requests are plain blocking file system calls, and some take long (a copy-data of up to
/// `max_upload_bytes`, an fsync, a truncate, an OPEN with TRUNC): those ([`may_take_long`]) are
/// answered off the runtime's workers ([`off_the_workers`]), so that one tenant's sessions
/// cannot hold every worker while other tenants, the admin listener and the intake wait. The
/// rest (a READ or WRITE of at most 1 MiB in the page cache, a STAT, an OPEN without TRUNC) are
/// answered in place.
async fn answer<W: AsyncWrite + Unpin>(
    mut requests: UnboundedReceiver<(Frame, u32)>,
    mut writer: W,
    session: &mut SftpSession,
    room: &Semaphore,
) -> std::io::Result<()> {
    let mut out: Vec<u8> = Vec::with_capacity(FLUSH_AT + 300 * 1024);
    loop {
        let (frame, taken) = match requests.try_recv() {
            Ok(queued) => queued,
            Err(TryRecvError::Empty) => {
                send(&mut writer, &mut out).await?;
                match requests.recv().await {
                    Some(queued) => queued,
                    None => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        if may_take_long(&frame) {
            off_the_workers(|| answer_one(frame, &mut out, session));
        } else {
            answer_one(frame, &mut out, session);
        }
        room.add_permits(taken as usize);
        if out.len() >= FLUSH_AT {
            send(&mut writer, &mut out).await?;
        }
    }
    send(&mut writer, &mut out).await
}

/// True for the requests whose work can be long whatever their size on the wire: SETSTAT and
/// FSETSTAT (a truncate of a large file), OPEN with TRUNC (the same truncate) and the extensions
/// (`copy-data` of up to `max_upload_bytes`, `fsync`).
fn may_take_long(frame: &Frame) -> bool {
    let Frame::Packet(body) = frame else {
        return false;
    };
    match body.first().copied() {
        Some(SSH_FXP_SETSTAT | SSH_FXP_FSETSTAT | SSH_FXP_EXTENDED) => true,
        Some(SSH_FXP_OPEN) => opens_truncating(body),
        _ => false,
    }
}

/// True for an OPEN body (type, id, string filename, uint32 pflags, attrs) whose pflags ask for
/// TRUNC; false for one too short to say (it is refused as undecodable anyway).
fn opens_truncating(body: &[u8]) -> bool {
    let Some(name_len) = be_u32(body, 5) else {
        return false;
    };
    let flags_at = 9usize.saturating_add(name_len as usize);
    be_u32(body, flags_at).is_some_and(|flags| flags & SSH_FXF_TRUNC != 0)
}

/// Runs `work` without holding one of the runtime's workers: on a multi-threaded runtime the
/// worker first hands its other tasks to another thread (`block_in_place`); on a one-thread
/// runtime (some tests) it just runs.
pub(super) fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Writes and flushes `out` (if anything waits), then empties it.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    writer.write_all(out).await?;
    out.clear();
    writer.flush().await
}

/// Appends the reply to one request to `out`.
fn answer_one(frame: Frame, out: &mut Vec<u8>, session: &mut SftpSession) {
    let body = match frame {
        // Answered with id 0: it has none.
        Frame::TooShort => {
            return push_status(
                out,
                0,
                StatusCode::BadMessage,
                "The request is too short to be an SFTP packet",
            )
        }
        Frame::TooLong { id, len } => {
            tracing::warn!(
                tenant = session.tenant(),
                len,
                "oversized SFTP packet skipped"
            );
            return push_status(
                out,
                id,
                StatusCode::Failure,
                &format!(
                    "The request of {len} bytes is larger than the {} bytes this server accepts; use smaller blocks",
                    MAX_PACKET
                ),
            );
        }
        Frame::Packet(body) => body,
    };
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
            let mut bytes = Bytes::from(body);
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
    use crate::sftp::handles::HandleBudget;
    use crate::sftp::requests::{SessionContext, MAX_HANDLES, MAX_READ};
    use crate::sftp::{InProgress, Jail, NoUploadSink};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn session(root: &std::path::Path) -> SftpSession {
        SftpSession::new(SessionContext {
            handles: HandleBudget::default().for_tenant("t", MAX_HANDLES),
            tenant: "t".into(),
            jail: Jail::new(root, false).unwrap(),
            max_upload_bytes: 1 << 20,
            min_free_bytes: 0,
            usage: crate::sftp::usage::TenantUsage::unlimited(),
            sink: Arc::new(NoUploadSink),
            in_progress: InProgress::none(),
        })
    }

    /// The length-prefixed packets in `bytes`.
    fn packets(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            out.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        out
    }

    /// One request packet: `kind`, `id`, then `fields`.
    fn request(kind: u8, id: u32, fields: &[u8]) -> Vec<u8> {
        let mut p = ((5 + fields.len()) as u32).to_be_bytes().to_vec();
        p.push(kind);
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(fields);
        p
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_read_while_a_reply_waits_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![7u8; 1024 * 1024]).unwrap();
        let (mut client, server_in) = tokio::io::duplex(64 * 1024);
        // Replies pass one byte at a time until the test reads them all.
        let (server_out, mut replies) = tokio::io::duplex(1);
        let serving = tokio::spawn(serve(server_in, server_out, session(dir.path())));

        // OPEN "big" for reading (pflags READ, no attributes); the reply is HANDLE.
        let mut open = string(b"big");
        open.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        client.write_all(&request(3, 0, &open)).await.unwrap();
        let len = replies.read_u32().await.unwrap();
        let mut reply = vec![0u8; len as usize];
        replies.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[0], 102, "HANDLE");
        let handle = &reply[9..];

        // Four READs of 255 KiB: their replies are more than a batch, so writing them waits
        // for the test to read. Then 200 requests of 64 KiB of an unknown type (12.8 MiB),
        // each answered with a short status.
        let mut stream = Vec::new();
        for (i, id) in (1..=4u32).enumerate() {
            let mut read = string(handle);
            read.extend_from_slice(&(i as u64 * u64::from(MAX_READ)).to_be_bytes());
            read.extend_from_slice(&MAX_READ.to_be_bytes());
            stream.extend(request(SSH_FXP_READ, id, &read));
        }
        for id in 5..205u32 {
            stream.extend(request(250, id, &vec![0u8; 64 * 1024 - 5]));
        }
        // Send until the server stops reading (nothing taken for 5 s).
        let mut taken = 0;
        while taken < stream.len() {
            let write = client.write(&stream[taken..]);
            match tokio::time::timeout(Duration::from_secs(5), write).await {
                Ok(n) => taken += n.unwrap(),
                Err(_) => break,
            }
        }
        // It went on reading while replies waited, and stopped near the bound (what the stream
        // buffers hold comes on top).
        assert!(taken >= QUEUE_BYTES, "stopped reading after {taken} bytes");
        assert!(
            taken <= QUEUE_BYTES + 1024 * 1024,
            "read {taken} bytes, far past the bound"
        );
        // Reading the replies lets everything through; each request got one, in order.
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            replies.read_to_end(&mut all).await.unwrap();
            all
        });
        client.write_all(&stream[taken..]).await.unwrap();
        drop(client);
        serving.await.unwrap().unwrap();
        let all = reading.await.unwrap();
        let answered: Vec<(u8, u32)> = packets(&all)
            .iter()
            .map(|p| (p[0], u32::from_be_bytes([p[1], p[2], p[3], p[4]])))
            .collect();
        let expected: Vec<(u8, u32)> = (1..=4)
            .map(|id| (SSH_FXP_DATA, id))
            .chain((5..205).map(|id| (SSH_FXP_STATUS, id)))
            .collect();
        assert_eq!(answered, expected);
    }

    #[test]
    fn an_open_with_trunc_is_answered_off_the_workers() {
        let body = |flags: u32| {
            let mut fields = string(b"users.csv");
            fields.extend_from_slice(&flags.to_be_bytes());
            fields.extend_from_slice(&0u32.to_be_bytes());
            request(SSH_FXP_OPEN, 7, &fields)[4..].to_vec()
        };
        let open = |flags: u32| Frame::Packet(body(flags));
        // WRITE|CREATE|TRUNC (what every upload sends) may truncate a large file.
        assert!(may_take_long(&open(0x02 | 0x08 | SSH_FXF_TRUNC)));
        assert!(!may_take_long(&open(0x02 | 0x08)));
        assert!(!may_take_long(&open(0x01)));
        // A body cut short before its flags is answered in place (and refused).
        let whole = body(SSH_FXF_TRUNC);
        let cut = Frame::Packet(whole[..whole.len() - 8].to_vec());
        assert!(!may_take_long(&cut));
        assert!(may_take_long(&Frame::Packet(vec![
            SSH_FXP_SETSTAT,
            0,
            0,
            0,
            1
        ])));
        assert!(!may_take_long(&Frame::TooShort));
    }

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
