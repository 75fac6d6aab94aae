//! Which bucket a user key belongs to, and the FNV-1a hash it is computed with.
//!
//! A tenant's users are partitioned into [`BUCKETS`] buckets by [`bucket_of`] their normalised
//! key. The import engine plans one bucket at a time and the store reads and writes whole
//! buckets, so this is the one place that decides the partition: the embedded store keeps one
//! packed blob per bucket, the PostgreSQL store keeps the bucket number as a column of each user
//! row. Pure: no I/O.

/// Number of buckets a tenant's users are spread over.
pub const BUCKETS: usize = 1024;

/// FNV-1a 64-bit offset basis (the hash of no bytes).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, continued from `h` over `data` (for streaming hashers).
#[inline]
pub fn fnv64_extend(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV-1a, 64 bit: a stable hash for bucket placement and in-memory indexes.
#[inline]
pub fn fnv64(data: &[u8]) -> u64 {
    fnv64_extend(FNV_OFFSET, data)
}

/// The bucket of a normalised key.
#[inline]
pub fn bucket_of(key: &[u8]) -> u16 {
    ((fnv64(key) >> 20) % BUCKETS as u64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(fnv64(b""), FNV_OFFSET);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64_extend(fnv64(b"ab"), b"c"), fnv64(b"abc"));
        assert!((bucket_of(b"ana@demo.example") as usize) < BUCKETS);
    }
}
