//! Helpers for unit tests.

/// `count` pseudo-random byte strings up to `max_len` long (xorshift64, so
/// every run sees the same inputs): for parsers of hostile input.
pub fn random_inputs(mut seed: u64, max_len: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..count).map(move |_| {
        let len = (seed % max_len) as usize;
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    })
}
