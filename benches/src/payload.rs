//! Deterministic event payloads.
//!
//! Every workload appends the same events to annal and to its baseline: payload `seq` is
//! `pool[seq % pool.len()]`, so a reader can check what it got back without keeping a copy
//! of the whole log. The bytes are pseudo-random (xorshift), not zeros, so no layer below
//! can make them cheaper than real events.

/// Size of one event payload in every workload, as the issue specifies.
pub const EVENT_BYTES: usize = 256;

/// Events per `append` call in the bulk workloads.
pub const BULK_BATCH_EVENTS: usize = 1_000;

/// A pool of `count` payloads of `len` bytes, the same for the same `seed`.
pub fn pool(count: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = XorShift::new(seed);
    (0..count)
        .map(|_| {
            let mut p = vec![0u8; len];
            for chunk in p.chunks_mut(8) {
                let word = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            p
        })
        .collect()
}

/// The payload of event `seq` in a log filled from `pool`.
pub fn expected(pool: &[Vec<u8>], seq: u64) -> &[u8] {
    &pool[(seq % pool.len() as u64) as usize]
}

/// A small deterministic generator (xorshift64*): payload bytes and random read positions.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (zero is replaced, as xorshift would stay at zero).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`); the tiny modulo bias does not matter for positions.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `count` random seqs in `0..events`, the same for the same seed: the read positions of
/// the random-read workload, shared by annal and its baseline.
pub fn random_seqs(count: usize, events: u64, seed: u64) -> Vec<u64> {
    let mut rng = XorShift::new(seed);
    (0..count).map(|_| rng.below(events)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_deterministic_and_varied() {
        let a = pool(4, EVENT_BYTES, 7);
        let b = pool(4, EVENT_BYTES, 7);
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert!(a.iter().all(|p| p.len() == EVENT_BYTES));
        assert_eq!(expected(&a, 5), &a[1][..]);
    }

    #[test]
    fn random_seqs_stay_in_range() {
        let s = random_seqs(1_000, 37, 1);
        assert!(s.iter().all(|&x| x < 37));
        assert!(s.iter().any(|&x| x != s[0]));
    }
}
