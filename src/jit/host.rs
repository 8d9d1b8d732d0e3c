//! What the host kernels the compiled step calls (`winograd`, `direct`) share: a thread's
//! share of the work, a per-thread scratch, AVX-512 lane masks, and, for their tests,
//! random operands and the error measure against f64 sums.

use std::cell::RefCell;

/// This thread's share `[lo, hi)` of `0..n` (equal chunks, the last one short).
pub(crate) fn share(n: usize, tid: usize, threads: usize) -> (usize, usize) {
    let chunk = n.div_ceil(threads.max(1));
    ((tid * chunk).min(n), ((tid + 1) * chunk).min(n))
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// This thread's scratch of at least `len` floats, valid until the next call on this
/// thread: a kernel takes it once per call. Nothing is allocated once it has grown.
pub(crate) fn scratch(len: usize) -> *mut f32 {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        s.as_mut_ptr()
    })
}

/// The mask of the first `min(w, 16)` lanes of an AVX-512 vector of floats.
#[inline(always)]
pub(crate) fn lanes16(w: usize) -> u16 {
    if w >= 16 {
        0xffff
    } else {
        ((1u32 << w) - 1) as u16
    }
}

#[cfg(test)]
pub(crate) mod testing {
    /// `n` floats uniform in `[-1, 1)` from `seed` (xorshift).
    pub(crate) fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The largest error of `got` against `want`, relative to the largest `|want|`.
    pub(crate) fn max_rel(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        got.iter()
            .zip(want)
            .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()))
            / scale
    }
}
