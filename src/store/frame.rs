//! The framing of a value that is a JSON header followed by raw bytes (an outbox message, a
//! held plan): `u32 LE header length | JSON header | bytes`. A header and bytes enter; one
//! buffer leaves, and back. No I/O.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `header` as JSON, then `bytes`, with the header's length in front.
pub fn frame(header: &impl Serialize, bytes: &[u8]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(header)?;
    let Ok(len) = u32::try_from(json.len()) else {
        bail!("a header of {} bytes is too long to frame", json.len());
    };
    let mut out = Vec::with_capacity(4 + json.len() + bytes.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(bytes);
    Ok(out)
}

/// The header and the bytes of a framed value; an error when it is damaged.
pub fn unframe<H: DeserializeOwned>(framed: &[u8]) -> Result<(H, &[u8])> {
    let Some(len) = framed.get(..4) else {
        bail!("the value is too short for its header length");
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(json) = framed.get(4..4usize.saturating_add(len)) else {
        bail!("the value is shorter than its header");
    };
    let header = serde_json::from_slice(json).context("the header is not valid JSON")?;
    Ok((header, &framed[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let framed = frame(&vec!["a".to_string()], b"body").unwrap();
        let (h, body): (Vec<String>, &[u8]) = unframe(&framed).unwrap();
        assert_eq!((h, body), (vec!["a".to_string()], &b"body"[..]));
        assert!(unframe::<Vec<String>>(&framed[..3]).is_err());
        assert!(unframe::<Vec<String>>(&framed[..6]).is_err());
        assert!(unframe::<Vec<String>>(&[255, 255, 255, 255, b'[']).is_err());
    }
}
