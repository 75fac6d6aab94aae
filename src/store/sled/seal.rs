//! How the sled store keeps a bucket blob: *sealed*, the tag byte `SEALED_LZ4` then the packed
//! bucket (see `model::packed`) compressed as one LZ4 block with its length in front
//! (`lz4_flex`; a third of the size for the benchmark's users). sled keeps every node it has
//! read or written in memory for the rest of an import (its LRU evicts only after many accesses
//! to the same shard), so the stored size of a bucket is what an import holds per bucket;
//! compressing it is what keeps a million-user re-import under its memory target.
//! [`unseal_bucket`] checks the tag and the block, so a damaged value is an error.
//!
//! Bytes enter and leave; nothing here touches sled.

use anyhow::{bail, Result};

/// First byte of a sealed bucket: an LZ4 block with its size prepended follows.
const SEALED_LZ4: u8 = 1;

/// The stored form of a bucket blob (see the module doc).
pub(crate) fn seal_bucket(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + lz4_flex::block::get_maximum_output_size(blob.len()));
    out.push(SEALED_LZ4);
    out.extend_from_slice(&lz4_flex::compress_prepend_size(blob));
    out
}

/// The bucket blob of a stored value.
pub(crate) fn unseal_bucket(stored: &[u8]) -> Result<Vec<u8>> {
    match stored.split_first() {
        Some((&SEALED_LZ4, rest)) if rest.len() >= 4 => {
            let (len, block) = rest.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            // LZ4 expands at most about 255 times; a larger claim is damage, not a reason to
            // allocate gigabytes.
            if len > block.len().saturating_mul(255) + 16 {
                bail!("the stored bucket is damaged (impossible length {len})");
            }
            match lz4_flex::decompress(block, len) {
                Ok(out) if out.len() == len => Ok(out),
                Ok(out) => bail!(
                    "the stored bucket is damaged ({} bytes instead of {len})",
                    out.len()
                ),
                Err(e) => bail!("the stored bucket is damaged: {e}"),
            }
        }
        _ => bail!("the stored bucket is damaged (unknown format tag)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::bucket_push;

    #[test]
    fn sealed_bucket_round_trip_and_damage() {
        let mut b = Vec::new();
        for i in 0..500 {
            bucket_push(
                &mut b,
                format!("{i:07}").as_bytes(),
                b"First;Last;user@example.com",
            );
        }
        let sealed = seal_bucket(&b);
        assert!(
            sealed.len() < b.len() / 2,
            "{} vs {}",
            sealed.len(),
            b.len()
        );
        assert_eq!(unseal_bucket(&sealed).ok(), Some(b.clone()));
        // Damaged: unknown tag, truncated block, a claimed length far beyond the data.
        assert!(unseal_bucket(&[]).is_err());
        assert!(unseal_bucket(&b).is_err());
        assert!(unseal_bucket(&sealed[..sealed.len() / 2]).is_err());
        let mut huge = sealed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unseal_bucket(&huge).is_err());
    }
}
