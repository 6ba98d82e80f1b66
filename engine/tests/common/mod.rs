//! Helpers shared by the integration tests (each test file that needs them declares
//! `mod common;`).
#![allow(dead_code)] // Each test file uses a different part.

/// A small deterministic generator (xorshift64*).
///
/// Fixtures built from it are the same on every run, and several tests were written against
/// the shapes it produces for their seeds: keep the algorithm as it is.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (slightly biased; fine for fixtures).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
