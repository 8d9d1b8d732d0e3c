//! Filter-gradient GEMMs: `dst[m, n] (+)= Σ_p a[p, i] · b[p, j]`, the product `aᵀ·b` of
//! two tall matrices (`p` runs over the pixels of a batch) into a small one. Every
//! convolution's filter gradient has this shape (`a` the output gradient, `b` the input
//! patches), and the JIT splits its reduction over threads.
//!
//! The host GEMM packs both operands for a general product and reaches 60–80 GFLOP/s on
//! these shapes (`m` = 16–64 output channels, `n` = up to a few hundred patch elements).
//! Here `a` and `b` are read in place, a block of rows at a time (it stays in L1/L2). Each
//! 8 × 32 tile of `dst` (16 × 16 when `dst` is at most 16 wide) accumulates in 16 AVX-512
//! registers: per row of the block, two vector loads of `b` and eight broadcasts of `a`
//! feed 16 FMAs.

use crate::cpu::Avx512;

/// Rows of `a` and `b` taken together: the tile sweeps over them from L1/L2.
const BLOCK: usize = 128;

/// Whether [`gemm_tn`] takes the product `lhs[m, k] · rhs[k, n]` of this shape and layout:
/// `lhs` stored transposed (unit row stride: `a = lhsᵀ`, each of its `k` rows `m`
/// contiguous floats), `rhs` with unit column stride (`b`, rows of `n`), a small result and
/// a long reduction.
pub fn applies(m: usize, n: usize, k: usize, lhs_rs: isize, rhs_cs: isize) -> bool {
    lhs_rs == 1 && rhs_cs == 1 && m <= 128 && n <= 1024 && k >= 256 && m * n >= 64
}

/// `dst[i·dst_rs + j·dst_cs] (+)= Σ_p a[i + p·a_ps] · b[p·b_ps + j]` for `i < m`, `j < n`,
/// `p < k` (added to `dst` when `accumulate`).
///
/// # Safety
/// The three matrices must hold every element the strides reach.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_tn(
    cpu: Avx512,
    (m, n, k): (usize, usize, usize),
    (a, a_ps): (*const f32, isize),
    (b, b_ps): (*const f32, isize),
    (dst, dst_rs, dst_cs): (*mut f32, isize, isize),
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = cpu;
        x86::gemm_tn(
            (m, n, k),
            (a, a_ps),
            (b, b_ps),
            (dst, dst_rs, dst_cs),
            accumulate,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, a, a_ps, b, b_ps, dst, dst_rs, dst_cs, accumulate);
        cpu.never()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    // the file's own module by its full path (the architecture test reads `super::` in a
    // file as the parent directory's module)
    use crate::jit::gemm_tn::BLOCK;
    use std::arch::x86_64::*;

    /// See `gemm_tn::gemm_tn`. Tiles of 8 rows × 32 columns, or 16 × 16 when the
    /// destination is at most 16 wide (16 accumulators either way).
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn gemm_tn(
        (m, n, k): (usize, usize, usize),
        (a, a_ps): (*const f32, isize),
        (b, b_ps): (*const f32, isize),
        (dst, dst_rs, dst_cs): (*mut f32, isize, isize),
        accumulate: bool,
    ) {
        // the sums over the blocks of rows: straight into a row-major destination that is
        // accumulated into (the JIT's split-K partials), else into [m][n] scratch
        let direct = accumulate && dst_cs == 1 && dst_rs > 0;
        let mut scratch = if direct {
            Vec::new()
        } else {
            vec![0.0f32; m * n]
        };
        let (s, s_rs) = if direct {
            (dst, dst_rs as usize)
        } else {
            (scratch.as_mut_ptr(), n)
        };
        let narrow = n <= 16;
        let (rows_per_tile, cols_per_tile) = if narrow { (16, 16) } else { (8, 32) };
        let mut p0 = 0;
        while p0 < k {
            let rows = BLOCK.min(k - p0);
            let (ab, bb) = (a.offset(p0 as isize * a_ps), b.offset(p0 as isize * b_ps));
            for j0 in (0..n).step_by(cols_per_tile) {
                let lanes = |from: usize| -> __mmask16 {
                    let left = n.saturating_sub(j0 + from).min(16);
                    if left == 16 {
                        0xFFFF
                    } else {
                        ((1u32 << left) - 1) as __mmask16
                    }
                };
                let masks = [lanes(0), lanes(16)];
                for i0 in (0..m).step_by(rows_per_tile) {
                    let r = rows_per_tile.min(m - i0);
                    let block = Block {
                        rows,
                        a: ab.add(i0),
                        a_ps,
                        b: bb.add(j0),
                        b_ps,
                        s: s.add(i0 * s_rs + j0),
                        s_rs,
                    };
                    if narrow {
                        tile::<16, 1>(r, &block, masks);
                    } else {
                        tile::<8, 2>(r, &block, masks);
                    }
                }
            }
            p0 += rows;
        }
        if direct {
            return;
        }
        for i in 0..m {
            for j in 0..n {
                let d = dst.offset(i as isize * dst_rs + j as isize * dst_cs);
                let v = *s.add(i * n + j);
                *d = if accumulate { *d + v } else { v };
            }
        }
    }

    /// One tile's operands over a block of `rows` rows: `a` at its first row, `b` at its
    /// first column, the sums `s` at the tile's corner (row stride `s_rs`).
    struct Block {
        rows: usize,
        a: *const f32,
        a_ps: isize,
        b: *const f32,
        b_ps: isize,
        s: *mut f32,
        s_rs: usize,
    }

    /// `s[i][0..16·V] += Σ_p a[i + p·a_ps] · b[p·b_ps + 0..16·V]` for the tile's first `r`
    /// of `R` rows; vector `v` of the columns masked by `masks[v]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(r: usize, t: &Block, masks: [__mmask16; 2]) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..t.rows {
            let bp = t.b.offset(p as isize * t.b_ps);
            let bv: [__m512; V] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v)));
            let ap = t.a.offset(p as isize * t.a_ps);
            // a fixed trip count keeps the accumulators in registers; rows past `r` are
            // not read
            for (i, acc) in acc.iter_mut().enumerate() {
                if i < r {
                    let x = _mm512_set1_ps(*ap.add(i));
                    for v in 0..V {
                        acc[v] = _mm512_fmadd_ps(x, bv[v], acc[v]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(r) {
            let row = t.s.add(i * t.s_rs);
            for (v, &sum) in acc.iter().enumerate() {
                let at = row.add(16 * v);
                let total = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], at), sum);
                _mm512_mask_storeu_ps(at, masks[v], total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Against a plain f64 sum, on edge shapes (partial tiles in both directions, a partial
    /// last block), both destination layouts, with and without accumulating.
    #[test]
    fn matches_the_plain_sum() {
        let Some(cpu) = Avx512::detect() else {
            eprintln!("no AVX-512 here: nothing to compare");
            return;
        };
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(m, n, k) in &[
            (16, 27, 300),
            (32, 144, 1000),
            (5, 7, 257),
            (64, 288, 513),
            (9, 33, 256),
            (64, 16, 400),
            (20, 12, 300),
        ] {
            let a: Vec<f32> = (0..k * m).map(|_| r.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.random_range(-1.0..1.0)).collect();
            for (accumulate, transposed) in [(false, false), (true, false), (false, true)] {
                let init: Vec<f32> = (0..m * n).map(|_| r.random_range(-1.0..1.0)).collect();
                let mut d = init.clone();
                let (rs, cs) = if transposed {
                    (1, m as isize)
                } else {
                    (n as isize, 1)
                };
                unsafe {
                    gemm_tn(
                        cpu,
                        (m, n, k),
                        (a.as_ptr(), m as isize),
                        (b.as_ptr(), n as isize),
                        (d.as_mut_ptr(), rs, cs),
                        accumulate,
                    )
                };
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (0.0f64, 0.0f64);
                        for p in 0..k {
                            let t = a[p * m + i] as f64 * b[p * n + j] as f64;
                            want += t;
                            mag += t.abs();
                        }
                        let at = (i as isize * rs + j as isize * cs) as usize;
                        if accumulate {
                            want += init[at] as f64;
                        }
                        let got = d[at] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (mag + 1.0),
                            "({m}, {n}, {k}) [{i}, {j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
