//! Winograd F(m×m, 3×3) for stride-1 3×3 convolutions: the forward pass, the input
//! gradient and the filter gradient, as host functions the compiled step calls through
//! `qatc_winograd`, each thread on its own share of output tiles. Two algorithms
//! ([`Variant`]): F(2×2, 3×3), with 16 multiplications per 2×2 tile and channel pair
//! instead of 36 (2.25× fewer), and F(4×4, 3×3), with 36 per 4×4 tile instead of 144 (4×).
//!
//! In one dimension, on the points 0, 1, −1 and ∞, a correlation of a 4-sample input tile
//! `d` with a 3-tap filter `g` giving 2 outputs is
//!
//! ```text
//! y = Aᵀ [(G g) ⊙ (Bᵀ d)]        Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//!                                G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//!                                Aᵀ = [1 1 1 0; 0 1 −1 −1]
//! ```
//!
//! and its dual, the filter's gradient from the outputs' gradient `e` (the same trilinear
//! form differentiated in `g`), is F(3, 2): `dg = Gᵀ [(A e) ⊙ (Bᵀ d)]`. Two dimensions nest
//! them: `U = G g Gᵀ`, `V = Bᵀ d B`, `Y = Aᵀ (Σ_c U ⊙ V) A`. The input gradient is the
//! forward algorithm on `dy`, with the filter flipped and its channel axes swapped.
//! F(4×4, 3×3) is the same on 6-sample tiles and the points 0, ±1, ±2 and ∞ (its matrices
//! are on [`F4`]). Each algorithm is its five one-dimensional transforms ([`Alg`]); the
//! two-dimensional tiles, the blocking and the kernels are written once over them.
//!
//! Work goes in blocks of tiles sized to stay in cache: a block's input tiles are
//! transformed into `V[tiles][(m+2)²][c_in]`, multiplied position by position with
//! `U[(m+2)²][c_in][c_out]` (one small GEMM per position: a register-blocked AVX-512 kernel
//! where the CPU has it, plain loops elsewhere) and transformed back. Transforms work on 16
//! channels at a time. Nothing here allocates after a thread's first call (a per-thread
//! scratch).

use crate::cpu::Avx512;
use crate::jit::host::{scratch, share};

/// Channels a transform handles at once (one AVX-512 vector).
const L: usize = 16;

/// The geometry of one stride-1 3×3 correlation `x[n,h,w,c_in] → y[n,oh,ow,c_out]`:
/// output `(oy, ox)` reads input rows `oy − pad_t ..= oy − pad_t + 2` (zero outside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiles {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c_in: usize,
    pub oh: usize,
    pub ow: usize,
    pub c_out: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub variant: Variant,
}

impl Tiles {
    fn rows(&self) -> usize {
        self.oh.div_ceil(self.variant.edge())
    }
    fn cols(&self) -> usize {
        self.ow.div_ceil(self.variant.edge())
    }
    /// Output tiles (`m×m` each).
    pub fn count(&self) -> usize {
        self.n * self.rows() * self.cols()
    }
    /// Tiles per block: the block's transformed tiles (`(m+2)²·(c_in + c_out)` floats
    /// each) within about 256 KiB.
    fn block(&self) -> usize {
        (65536 / (self.variant.positions() * (self.c_in + self.c_out))).clamp(8, 256) / 8 * 8
    }
    /// The direct convolution's multiply-adds times 2 (what profiles count).
    pub fn direct_flops(&self) -> usize {
        2 * self.n * self.oh * self.ow * self.c_out * 9 * self.c_in
    }
    /// `(b, ty, tx)` of tile `i`.
    fn tile(&self, i: usize) -> (usize, usize, usize) {
        let (r, c) = (self.rows(), self.cols());
        (i / (r * c), i / c % r, i % c)
    }
}

// ---- 16-channel transforms --------------------------------------------------------------

/// 16 channels of a transform: a plain array (any CPU) or an AVX-512 register. The
/// transforms are written once, over this.
pub(crate) trait Vec16: Copy {
    /// Whether [`small_gemm`] may use the AVX-512 kernel alongside.
    const AVX512: bool;
    /// `w ≤ 16` floats from `p` (zeros in the other lanes).
    unsafe fn load(p: *const f32, w: usize) -> Self;
    /// The first `w` lanes to `p`.
    unsafe fn store(self, p: *mut f32, w: usize);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn neg(self) -> Self;
    /// `self · k + o`.
    unsafe fn fma(self, k: f32, o: Self) -> Self;
    unsafe fn zero() -> Self;
}

impl Vec16 for [f32; L] {
    const AVX512: bool = false;
    #[inline(always)]
    unsafe fn load(p: *const f32, w: usize) -> Self {
        let mut v = [0.0; L];
        for (l, x) in v.iter_mut().take(w).enumerate() {
            *x = *p.add(l);
        }
        v
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, w: usize) {
        for (l, x) in self.iter().take(w).enumerate() {
            *p.add(l) = *x;
        }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        std::array::from_fn(|l| self[l] + o[l])
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        std::array::from_fn(|l| self[l] - o[l])
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        std::array::from_fn(|l| -self[l])
    }
    #[inline(always)]
    unsafe fn fma(self, k: f32, o: Self) -> Self {
        std::array::from_fn(|l| self[l] * k + o[l])
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        [0.0; L]
    }
}

// ---- the two algorithms -----------------------------------------------------------------

/// Which Winograd algorithm a convolution uses: F(m×m, 3×3) computes an `m×m` output tile
/// from an `(m+2)×(m+2)` input window with `(m+2)²` multiplications per channel pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// F(2×2, 3×3): 16 products per 4 outputs (2.25× fewer than direct), exact to a few
    /// ulps (its transforms have coefficients 0, ±½ and ±1).
    F2,
    /// F(4×4, 3×3): 36 products per 16 outputs (4× fewer), and 2.25 transformed values per
    /// output instead of 4; its transforms scale by up to 8, so a few more ulps of error.
    F4,
}

impl Variant {
    /// Both variants.
    pub const ALL: [Variant; 2] = [Variant::F2, Variant::F4];
    /// The output tile's edge `m`.
    pub fn edge(self) -> usize {
        match self {
            Variant::F2 => F2::M,
            Variant::F4 => F4::M,
        }
    }
    /// Transformed positions per tile, `(m+2)²`.
    pub fn positions(self) -> usize {
        (self.edge() + 2).pow(2)
    }
    /// The variant whose tile edge is `m`.
    pub fn from_edge(m: usize) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.edge() == m)
    }
}

/// One algorithm's one-dimensional transforms, which the two-dimensional ones nest
/// (`A = M + 2` values; arrays are sized for the largest, the rest unused).
trait Alg {
    /// Output tile edge.
    const M: usize;
    /// Input window edge, `M + 2`.
    const A: usize;
    /// `Bᵀ d` of an input column.
    unsafe fn input_1d<V: Vec16>(d: [V; 6]) -> [V; 6];
    /// `Aᵀ m`: `M` outputs from the `A` products' sums.
    unsafe fn output_1d<V: Vec16>(m: [V; 6]) -> [V; 4];
    /// `A e`: the transform of `M` output gradients.
    unsafe fn gradient_1d<V: Vec16>(e: [V; 4]) -> [V; 6];
    /// `G g`: a 3-tap filter's `A` transformed values.
    fn filter_1d(g: [f32; 3]) -> [f32; 6];
    /// `Gᵀ m`: the 3 filter taps' gradients from `A` transformed values.
    fn filter_grad_1d(m: [f32; 6]) -> [f32; 3];
}

/// F(2×2, 3×3) on the points 0, 1, −1, ∞ (see the module docs for its matrices).
struct F2;

impl Alg for F2 {
    const M: usize = 2;
    const A: usize = 4;
    #[inline(always)]
    unsafe fn input_1d<V: Vec16>(d: [V; 6]) -> [V; 6] {
        let z = V::zero();
        [
            d[0].sub(d[2]),
            d[1].add(d[2]),
            d[2].sub(d[1]),
            d[1].sub(d[3]),
            z,
            z,
        ]
    }
    #[inline(always)]
    unsafe fn output_1d<V: Vec16>(m: [V; 6]) -> [V; 4] {
        let z = V::zero();
        [m[0].add(m[1]).add(m[2]), m[1].sub(m[2]).sub(m[3]), z, z]
    }
    #[inline(always)]
    unsafe fn gradient_1d<V: Vec16>(e: [V; 4]) -> [V; 6] {
        let z = V::zero();
        [e[0], e[0].add(e[1]), e[0].sub(e[1]), e[1].neg(), z, z]
    }
    fn filter_1d(g: [f32; 3]) -> [f32; 6] {
        [
            g[0],
            0.5 * (g[0] + g[1] + g[2]),
            0.5 * (g[0] - g[1] + g[2]),
            g[2],
            0.0,
            0.0,
        ]
    }
    fn filter_grad_1d(m: [f32; 6]) -> [f32; 3] {
        [
            m[0] + 0.5 * (m[1] + m[2]),
            0.5 * (m[1] - m[2]),
            0.5 * (m[1] + m[2]) + m[3],
        ]
    }
}

/// F(4×4, 3×3) on the points 0, 1, −1, 2, −2, ∞:
///
/// ```text
/// Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
/// G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]
/// Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
/// ```
struct F4;

impl Alg for F4 {
    const M: usize = 4;
    const A: usize = 6;
    #[inline(always)]
    unsafe fn input_1d<V: Vec16>(d: [V; 6]) -> [V; 6] {
        let a = d[2].fma(-4.0, d[4]); // d4 − 4 d2
        let b = d[1].fma(-4.0, d[3]); // d3 − 4 d1
        let c = d[4].sub(d[2]);
        let e = d[3].sub(d[1]);
        [
            d[0].sub(d[2]).fma(4.0, c),
            a.add(b),
            a.sub(b),
            e.fma(2.0, c),
            e.fma(-2.0, c),
            d[1].sub(d[3]).fma(4.0, d[5].sub(d[3])),
        ]
    }
    #[inline(always)]
    unsafe fn output_1d<V: Vec16>(m: [V; 6]) -> [V; 4] {
        let (s12, d12) = (m[1].add(m[2]), m[1].sub(m[2]));
        let (s34, d34) = (m[3].add(m[4]), m[3].sub(m[4]));
        [
            m[0].add(s12).add(s34),
            d34.fma(2.0, d12),
            s34.fma(4.0, s12),
            d34.fma(8.0, d12).add(m[5]),
        ]
    }
    #[inline(always)]
    unsafe fn gradient_1d<V: Vec16>(e: [V; 4]) -> [V; 6] {
        let (even, odd) = (e[0].add(e[2]), e[1].add(e[3]));
        let even4 = e[2].fma(4.0, e[0]); // e0 + 4 e2
        let odd4 = e[3].fma(4.0, e[1]); // e1 + 4 e3
        [
            e[0],
            even.add(odd),
            even.sub(odd),
            odd4.fma(2.0, even4),
            odd4.fma(-2.0, even4),
            e[3],
        ]
    }
    fn filter_1d(g: [f32; 3]) -> [f32; 6] {
        let (s, d) = (g[0] + g[2], g[1]);
        let q = g[0] * (1.0 / 24.0) + g[2] * (1.0 / 6.0);
        [
            g[0] * 0.25,
            (s + d) * (-1.0 / 6.0),
            (s - d) * (-1.0 / 6.0),
            q + d * (1.0 / 12.0),
            q - d * (1.0 / 12.0),
            g[2],
        ]
    }
    fn filter_grad_1d(m: [f32; 6]) -> [f32; 3] {
        let (s12, d12) = (m[1] + m[2], m[2] - m[1]);
        let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] * 0.25 - s12 * (1.0 / 6.0) + s34 * (1.0 / 24.0),
            d12 * (1.0 / 6.0) + d34 * (1.0 / 12.0),
            (s34 - s12) * (1.0 / 6.0) + m[5],
        ]
    }
}

/// Row `i`, column `j` of an `A×A` tile stored row-major.
#[inline(always)]
fn at<W: Alg>(i: usize, j: usize) -> usize {
    i * W::A + j
}

/// `Bᵀ d B` of an `A×A` input window (`d[i*A + j]`).
#[inline(always)]
unsafe fn input_tile<V: Vec16, W: Alg>(d: &[V; 36]) -> [V; 36] {
    let mut t = [V::zero(); 36];
    for j in 0..W::A {
        let col = W::input_1d(std::array::from_fn(|i| {
            if i < W::A {
                d[at::<W>(i, j)]
            } else {
                V::zero()
            }
        }));
        for i in 0..W::A {
            t[at::<W>(i, j)] = col[i];
        }
    }
    let mut v = [V::zero(); 36];
    for i in 0..W::A {
        let row = W::input_1d(std::array::from_fn(|j| {
            if j < W::A {
                t[at::<W>(i, j)]
            } else {
                V::zero()
            }
        }));
        v[at::<W>(i, 0)..at::<W>(i, W::A)].copy_from_slice(&row[..W::A]);
    }
    v
}

/// `Aᵀ m A`: an `M×M` output tile (`y[a*M + b]`) from the products' sums.
#[inline(always)]
unsafe fn output_tile<V: Vec16, W: Alg>(m: &[V; 36]) -> [V; 16] {
    let mut s = [V::zero(); 24];
    for j in 0..W::A {
        let col = W::output_1d(std::array::from_fn(|i| {
            if i < W::A {
                m[at::<W>(i, j)]
            } else {
                V::zero()
            }
        }));
        for a in 0..W::M {
            s[a * W::A + j] = col[a];
        }
    }
    let mut y = [V::zero(); 16];
    for a in 0..W::M {
        let row = W::output_1d(std::array::from_fn(|j| {
            if j < W::A {
                s[a * W::A + j]
            } else {
                V::zero()
            }
        }));
        y[a * W::M..(a + 1) * W::M].copy_from_slice(&row[..W::M]);
    }
    y
}

/// `A e Aᵀ`: the `A×A` transform of an `M×M` output-gradient tile (`e[a*M + b]`).
#[inline(always)]
unsafe fn gradient_tile<V: Vec16, W: Alg>(e: &[V; 16]) -> [V; 36] {
    let mut r = [V::zero(); 24];
    for b in 0..W::M {
        let col = W::gradient_1d(std::array::from_fn(|a| {
            if a < W::M {
                e[a * W::M + b]
            } else {
                V::zero()
            }
        }));
        for i in 0..W::A {
            r[i * W::M + b] = col[i];
        }
    }
    let mut v = [V::zero(); 36];
    for i in 0..W::A {
        let row = W::gradient_1d(std::array::from_fn(|b| {
            if b < W::M {
                r[i * W::M + b]
            } else {
                V::zero()
            }
        }));
        v[at::<W>(i, 0)..at::<W>(i, W::A)].copy_from_slice(&row[..W::A]);
    }
    v
}

/// `G g Gᵀ`: a 3×3 filter's `A×A` transform (`u[i*A + j]`).
fn filter_2d<W: Alg>(g: [[f32; 3]; 3]) -> [f32; 36] {
    let rows = g.map(W::filter_1d);
    let mut u = [0.0; 36];
    for j in 0..W::A {
        let col = W::filter_1d([rows[0][j], rows[1][j], rows[2][j]]);
        for i in 0..W::A {
            u[at::<W>(i, j)] = col[i];
        }
    }
    u
}

/// `Gᵀ m G`: the 3×3 filter gradient from its `A×A` transform (`m[i*A + j]`).
fn filter_grad_2d<W: Alg>(m: &[f32; 36]) -> [[f32; 3]; 3] {
    let rows: [[f32; 3]; 6] = std::array::from_fn(|i| {
        W::filter_grad_1d(std::array::from_fn(|j| {
            if i < W::A && j < W::A {
                m[at::<W>(i, j)]
            } else {
                0.0
            }
        }))
    });
    let cols: [[f32; 3]; 3] = std::array::from_fn(|kx| {
        W::filter_grad_1d(std::array::from_fn(|i| {
            if i < W::A {
                rows[i][kx]
            } else {
                0.0
            }
        }))
    });
    std::array::from_fn(|ky| std::array::from_fn(|kx| cols[kx][ky]))
}

/// `V[j][p][c]` of tile `i`, the `j`-th of its block (`Bᵀ d B` of its `A×A` input window).
#[inline(always)]
unsafe fn transform_input<V: Vec16, W: Alg>(
    t: &Tiles,
    x: *const f32,
    zeros: *const f32,
    i: usize,
    v: *mut f32,
) {
    let (b, ty, tx) = t.tile(i);
    let c = t.c_in;
    let a = W::A as isize;
    let y0 = (W::M * ty) as isize - t.pad_t as isize;
    let x0 = (W::M * tx) as isize - t.pad_l as isize;
    let inside = y0 >= 0 && x0 >= 0 && y0 + a <= t.h as isize && x0 + a <= t.w as isize;
    let row = |r: isize| x.add(((b * t.h) as isize + r) as usize * t.w * c);
    let mut c0 = 0;
    while c0 < c {
        let w = (c - c0).min(L);
        let mut d = [V::zero(); 36];
        if inside {
            // A rows of A neighbouring pixels
            for r in 0..W::A {
                let p = row(y0 + r as isize).add(x0 as usize * c + c0);
                for q in 0..W::A {
                    d[at::<W>(r, q)] = V::load(p.add(q * c), w);
                }
            }
        } else {
            for r in 0..W::A {
                let yy = y0 + r as isize;
                for q in 0..W::A {
                    let xx = x0 + q as isize;
                    let ok = yy >= 0 && xx >= 0 && yy < t.h as isize && xx < t.w as isize;
                    let p = if ok {
                        row(yy).add(xx as usize * c)
                    } else {
                        zeros
                    };
                    d[at::<W>(r, q)] = V::load(p.add(c0), w);
                }
            }
        }
        let out = input_tile::<V, W>(&d);
        for (p, lanes) in out.iter().take(W::A * W::A).enumerate() {
            lanes.store(v.add(p * c + c0), w);
        }
        c0 += L;
    }
}

/// Tile `i`'s `M×M` outputs from its `M[p][c]` (`Aᵀ m A`).
#[inline(always)]
unsafe fn transform_output<V: Vec16, W: Alg>(t: &Tiles, m: *const f32, i: usize, y: *mut f32) {
    let (b, ty, tx) = t.tile(i);
    let c = t.c_out;
    let rows = (t.oh - W::M * ty).min(W::M);
    let cols = (t.ow - W::M * tx).min(W::M);
    let mut c0 = 0;
    while c0 < c {
        let w = (c - c0).min(L);
        let mut d = [V::zero(); 36];
        for (p, dp) in d.iter_mut().take(W::A * W::A).enumerate() {
            *dp = V::load(m.add(p * c + c0), w);
        }
        let out = output_tile::<V, W>(&d);
        for a in 0..rows {
            for bb in 0..cols {
                let px = (b * t.oh + W::M * ty + a) * t.ow + W::M * tx + bb;
                out[a * W::M + bb].store(y.add(px * c + c0), w);
            }
        }
        c0 += L;
    }
}

/// `E[j][p][c]` of the output-gradient tile `i` (`A e Aᵀ` of its `M×M` window).
#[inline(always)]
unsafe fn transform_gradient<V: Vec16, W: Alg>(
    t: &Tiles,
    dy: *const f32,
    zeros: *const f32,
    i: usize,
    e: *mut f32,
) {
    let (b, ty, tx) = t.tile(i);
    let c = t.c_out;
    let mut src = [zeros; 16];
    for (p, sp) in src.iter_mut().take(W::M * W::M).enumerate() {
        let (oy, ox) = (W::M * ty + p / W::M, W::M * tx + p % W::M);
        if oy < t.oh && ox < t.ow {
            *sp = dy.add(((b * t.oh + oy) * t.ow + ox) * c);
        }
    }
    let mut c0 = 0;
    while c0 < c {
        let w = (c - c0).min(L);
        let mut d = [V::zero(); 16];
        for (p, dp) in d.iter_mut().take(W::M * W::M).enumerate() {
            *dp = V::load(src[p].add(c0), w);
        }
        let out = gradient_tile::<V, W>(&d);
        for (p, lanes) in out.iter().take(W::A * W::A).enumerate() {
            lanes.store(e.add(p * c + c0), w);
        }
        c0 += L;
    }
}

// ---- the per-position GEMMs ------------------------------------------------------------

/// `c[r, j] (+)= Σ_k a[r·a_rs + k·a_ks] · b[k·b_ks + j]` for `r < rows`, `j < n`,
/// `k < depth` (`b` and `c` contiguous along `j`). `avx512`: [`Vec16::AVX512`] of the
/// caller's vectors, true only in code behind an [`Avx512`] token.
#[inline(always)]
unsafe fn small_gemm(
    avx512: bool,
    (rows, n, depth): (usize, usize, usize),
    (a, a_rs, a_ks): (*const f32, usize, usize),
    (b, b_ks): (*const f32, usize),
    (c, c_rs): (*mut f32, usize),
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        return avx512::gemm(
            (rows, n, depth),
            (a, a_rs, a_ks),
            (b, b_ks),
            (c, c_rs),
            accumulate,
        );
    }
    let _ = avx512;
    for r in 0..rows {
        let cr = c.add(r * c_rs);
        if !accumulate {
            for j in 0..n {
                *cr.add(j) = 0.0;
            }
        }
        for k in 0..depth {
            let av = *a.add(r * a_rs + k * a_ks);
            let bk = b.add(k * b_ks);
            for j in 0..n {
                *cr.add(j) += av * *bk.add(j);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::jit::host::lanes16 as mask;
    use std::arch::x86_64::*;

    impl crate::jit::winograd::Vec16 for __m512 {
        const AVX512: bool = true;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32, w: usize) -> Self {
            _mm512_maskz_loadu_ps(mask(w), p)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(self, p: *mut f32, w: usize) {
            _mm512_mask_storeu_ps(p, mask(w), self)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(self, o: Self) -> Self {
            _mm512_add_ps(self, o)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn sub(self, o: Self) -> Self {
            _mm512_sub_ps(self, o)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn neg(self) -> Self {
            _mm512_sub_ps(_mm512_setzero_ps(), self)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn fma(self, k: f32, o: Self) -> Self {
            _mm512_fmadd_ps(self, _mm512_set1_ps(k), o)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
    }

    /// See [`crate::jit::winograd::small_gemm`]: blocks of 8 rows × 32 or 16 columns in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        (rows, n, depth): (usize, usize, usize),
        (a, a_rs, a_ks): (*const f32, usize, usize),
        (b, b_ks): (*const f32, usize),
        (c, c_rs): (*mut f32, usize),
        acc: bool,
    ) {
        let mut j = 0;
        while j < n {
            let left = n - j;
            let masks = [mask(left), mask(left.saturating_sub(16))];
            let (bj, cj) = (b.add(j), c.add(j));
            let mut r = 0;
            if left > 16 {
                while r + 8 <= rows {
                    block::<8, 2>(
                        depth,
                        a.add(r * a_rs),
                        a_rs,
                        a_ks,
                        bj,
                        b_ks,
                        cj.add(r * c_rs),
                        c_rs,
                        masks,
                        acc,
                    );
                    r += 8;
                }
                while r < rows {
                    block::<1, 2>(
                        depth,
                        a.add(r * a_rs),
                        a_rs,
                        a_ks,
                        bj,
                        b_ks,
                        cj.add(r * c_rs),
                        c_rs,
                        masks,
                        acc,
                    );
                    r += 1;
                }
                j += 32;
            } else {
                while r + 8 <= rows {
                    block::<8, 1>(
                        depth,
                        a.add(r * a_rs),
                        a_rs,
                        a_ks,
                        bj,
                        b_ks,
                        cj.add(r * c_rs),
                        c_rs,
                        masks,
                        acc,
                    );
                    r += 8;
                }
                while r < rows {
                    block::<1, 1>(
                        depth,
                        a.add(r * a_rs),
                        a_rs,
                        a_ks,
                        bj,
                        b_ks,
                        cj.add(r * c_rs),
                        c_rs,
                        masks,
                        acc,
                    );
                    r += 1;
                }
                j += 16;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn block<const R: usize, const NC: usize>(
        depth: usize,
        a: *const f32,
        a_rs: usize,
        a_ks: usize,
        b: *const f32,
        b_ks: usize,
        c: *mut f32,
        c_rs: usize,
        masks: [__mmask16; 2],
        acc: bool,
    ) {
        let mut s = [[_mm512_setzero_ps(); NC]; R];
        if acc {
            for (r, row) in s.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[v], c.add(r * c_rs + 16 * v));
                }
            }
        }
        for k in 0..depth {
            let bk = b.add(k * b_ks);
            let bv: [__m512; NC] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], bk.add(16 * v)));
            let ak = a.add(k * a_ks);
            for (r, row) in s.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ak.add(r * a_rs));
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_fmadd_ps(av, bv[v], *x);
                }
            }
        }
        for (r, row) in s.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(r * c_rs + 16 * v), masks[v], *x);
            }
        }
    }
}

// ---- the stages the compiled step calls -------------------------------------------------

/// What one `qatc_winograd` call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `U[(m+2)²][c_in][c_out]` from the kernel `k[c_out][3][3][c_in]` (the forward pass).
    Filter,
    /// `U` of the input gradient's convolution (`c_in`: the forward's output channels)
    /// from the forward kernel `k[c_in][3][3][c_out]`, flipped.
    FilterFlipped,
    /// `y = x ⋆ U`.
    Conv,
    /// This thread's partial `M[(m+2)²][c_in][c_out]` of the filter gradient from `x` and
    /// `dy`.
    GradFilterPartial,
    /// `dk[c_out][3][3][c_in] = Gᵀ (Σ partials) G` (thread 0; `threads`: the partials, which
    /// it sums into the first).
    GradFilterFinish,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Filter,
        Stage::FilterFlipped,
        Stage::Conv,
        Stage::GradFilterPartial,
        Stage::GradFilterFinish,
    ];
    pub fn code(self) -> u64 {
        match self {
            Stage::Filter => 0,
            Stage::FilterFlipped => 1,
            Stage::Conv => 2,
            Stage::GradFilterPartial => 3,
            Stage::GradFilterFinish => 4,
        }
    }
    fn from_code(c: u64) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.code() == c)
    }
}

/// Floats of the transformed filter (and of one filter-gradient partial).
pub fn transformed_len(t: &Tiles) -> usize {
    t.variant.positions() * t.c_in * t.c_out
}

/// Runs `stage` on thread `tid`'s share (see [`Stage`] for the operands `a`, `b`, `c`).
///
/// # Safety
/// The pointers must hold the tensors the stage reads and writes for geometry `t`.
pub unsafe fn run(
    stage: Stage,
    t: &Tiles,
    ops: (*const f32, *const f32, *mut f32),
    tid: usize,
    threads: usize,
    simd: Option<Avx512>,
) {
    match t.variant {
        Variant::F2 => run_alg::<F2>(stage, t, ops, tid, threads, simd),
        Variant::F4 => run_alg::<F4>(stage, t, ops, tid, threads, simd),
    }
}

/// [`run`] with algorithm `W` (`t.variant`'s).
unsafe fn run_alg<W: Alg>(
    stage: Stage,
    t: &Tiles,
    (a, b, c): (*const f32, *const f32, *mut f32),
    tid: usize,
    threads: usize,
    simd: Option<Avx512>,
) {
    match stage {
        Stage::Filter => filter::<W>(t, a, c, false, tid, threads),
        Stage::FilterFlipped => filter::<W>(t, a, c, true, tid, threads),
        Stage::Conv => {
            let tiles = share(t.count(), tid, threads);
            match simd {
                Some(z) => conv_fast::<W>(z, t, a, b, c, tiles),
                None => conv_body::<[f32; L], W>(t, a, b, c, tiles),
            }
        }
        Stage::GradFilterPartial => {
            let tiles = share(t.count(), tid, threads);
            let acc = c.add(tid * transformed_len(t));
            match simd {
                Some(z) => grad_filter_fast::<W>(z, t, a, b, acc, tiles),
                None => grad_filter_body::<[f32; L], W>(t, a, b, acc, tiles),
            }
        }
        Stage::GradFilterFinish => grad_filter_finish::<W>(t, a as *mut f32, c, threads),
    }
}

/// Transforms output channels `share(c_out)` of the filter.
unsafe fn filter<W: Alg>(
    t: &Tiles,
    k: *const f32,
    u: *mut f32,
    flipped: bool,
    tid: usize,
    threads: usize,
) {
    // A run of output channels is transformed into a local block first, so each of the
    // (m+2)² positions is written as one contiguous run: written one by one, the
    // positions' stores are `c_in·c_out` floats apart, the same cache sets when that is a
    // multiple of 1024.
    const RUN: usize = 16;
    let (ci, co) = (t.c_in, t.c_out);
    let pos = W::A * W::A;
    let (lo, hi) = share(co, tid, threads);
    let mut tiles = [[0.0f32; 36]; RUN];
    for i in 0..ci {
        let mut o0 = lo;
        while o0 < hi {
            let run = (hi - o0).min(RUN);
            for (r, tile) in tiles.iter_mut().take(run).enumerate() {
                let o = o0 + r;
                let g = |ky: usize, kx: usize| {
                    if flipped {
                        *k.add(((i * 3 + 2 - ky) * 3 + 2 - kx) * co + o)
                    } else {
                        *k.add(((o * 3 + ky) * 3 + kx) * ci + i)
                    }
                };
                let taps = std::array::from_fn(|ky| std::array::from_fn(|kx| g(ky, kx)));
                *tile = filter_2d::<W>(taps);
            }
            for p in 0..pos {
                let dst = u.add((p * ci + i) * co + o0);
                for (r, tile) in tiles.iter().take(run).enumerate() {
                    *dst.add(r) = tile[p];
                }
            }
            o0 += run;
        }
    }
}

/// [`conv_body`] on AVX-512 registers (the token proves the CPU has them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_fast<W: Alg>(
    _: Avx512,
    t: &Tiles,
    x: *const f32,
    u: *const f32,
    y: *mut f32,
    share: (usize, usize),
) {
    conv_body::<std::arch::x86_64::__m512, W>(t, x, u, y, share)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn conv_fast<W: Alg>(
    z: Avx512,
    _: &Tiles,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: (usize, usize),
) {
    z.never()
}

/// `y = x ⋆ U` on tiles `lo..hi`.
#[inline(always)]
unsafe fn conv_body<V: Vec16, W: Alg>(
    t: &Tiles,
    x: *const f32,
    u: *const f32,
    y: *mut f32,
    (lo, hi): (usize, usize),
) {
    let pos = W::A * W::A;
    let blk = t.block();
    let (ci, co) = (t.c_in, t.c_out);
    let v = scratch(pos * blk * (ci + co) + ci);
    let m = v.add(pos * blk * ci);
    let zeros = m.add(pos * blk * co);
    std::slice::from_raw_parts_mut(zeros, ci).fill(0.0);
    let mut t0 = lo;
    while t0 < hi {
        let nb = (hi - t0).min(blk);
        for j in 0..nb {
            transform_input::<V, W>(t, x, zeros, t0 + j, v.add(j * pos * ci));
        }
        for p in 0..pos {
            small_gemm(
                V::AVX512,
                (nb, co, ci),
                (v.add(p * ci), pos * ci, 1),
                (u.add(p * ci * co), co),
                (m.add(p * co), pos * co),
                false,
            );
        }
        for j in 0..nb {
            transform_output::<V, W>(t, m.add(j * pos * co), t0 + j, y);
        }
        t0 += nb;
    }
}

/// [`grad_filter_body`] on AVX-512 registers (the token proves the CPU has them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_filter_fast<W: Alg>(
    _: Avx512,
    t: &Tiles,
    x: *const f32,
    dy: *const f32,
    acc: *mut f32,
    share: (usize, usize),
) {
    grad_filter_body::<std::arch::x86_64::__m512, W>(t, x, dy, acc, share)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn grad_filter_fast<W: Alg>(
    z: Avx512,
    _: &Tiles,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: (usize, usize),
) {
    z.never()
}

/// `acc = Σ over tiles lo..hi of V ⊙ E`, as `[(m+2)²][c_in][c_out]`.
#[inline(always)]
unsafe fn grad_filter_body<V: Vec16, W: Alg>(
    t: &Tiles,
    x: *const f32,
    dy: *const f32,
    acc: *mut f32,
    (lo, hi): (usize, usize),
) {
    let pos = W::A * W::A;
    let blk = t.block();
    let (ci, co) = (t.c_in, t.c_out);
    std::slice::from_raw_parts_mut(acc, transformed_len(t)).fill(0.0);
    let v = scratch(pos * blk * (ci + co) + ci.max(co));
    let e = v.add(pos * blk * ci);
    let zeros = e.add(pos * blk * co);
    std::slice::from_raw_parts_mut(zeros, ci.max(co)).fill(0.0);
    let mut t0 = lo;
    while t0 < hi {
        let nb = (hi - t0).min(blk);
        for j in 0..nb {
            transform_input::<V, W>(t, x, zeros, t0 + j, v.add(j * pos * ci));
            transform_gradient::<V, W>(t, dy, zeros, t0 + j, e.add(j * pos * co));
        }
        for p in 0..pos {
            small_gemm(
                V::AVX512,
                (ci, co, nb),
                (v.add(p * ci), 1, pos * ci),
                (e.add(p * co), pos * co),
                (acc.add(p * ci * co), co),
                true,
            );
        }
        t0 += nb;
    }
}

/// `dk = Gᵀ (Σ_parts M) G`, in the kernel's `[c_out][3][3][c_in]` layout.
unsafe fn grad_filter_finish<W: Alg>(t: &Tiles, part: *mut f32, dk: *mut f32, parts: usize) {
    let (ci, co) = (t.c_in, t.c_out);
    let len = transformed_len(t);
    // the partials summed into the first, in order
    let first = std::slice::from_raw_parts_mut(part, len);
    for q in 1..parts {
        let other = std::slice::from_raw_parts(part.add(q * len), len);
        for (a, b) in first.iter_mut().zip(other) {
            *a += *b;
        }
    }
    // M[p][i][o] is contiguous along o: read in runs of output channels, one contiguous
    // run per position (see `filter` for why not position by position)
    const RUN: usize = 16;
    let pos = W::A * W::A;
    let mut tiles = [[0.0f32; 36]; RUN];
    for i in 0..ci {
        let mut o0 = 0;
        while o0 < co {
            let run = (co - o0).min(RUN);
            for p in 0..pos {
                let src = &first[(p * ci + i) * co + o0..][..run];
                for (tile, v) in tiles.iter_mut().zip(src) {
                    tile[p] = *v;
                }
            }
            for (r, m) in tiles.iter().take(run).enumerate() {
                let o = o0 + r;
                for (ky, row) in filter_grad_2d::<W>(m).into_iter().enumerate() {
                    for (kx, v) in row.into_iter().enumerate() {
                        *dk.add(((o * 3 + ky) * 3 + kx) * ci + i) = v;
                    }
                }
            }
            o0 += run;
        }
    }
}

/// The entry point compiled code calls: `stage` (a [`Stage::code`]) on thread `tid` of
/// `threads`, for the geometry in the next ten arguments (`m`: the output tile's edge,
/// [`Variant::edge`]).
///
/// # Safety
/// As [`run`]; an unknown stage code or tile edge does nothing.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qatc_winograd(
    stage: u64,
    m: u64,
    n: usize,
    h: usize,
    w: usize,
    c_in: usize,
    oh: usize,
    ow: usize,
    c_out: usize,
    pads: u64,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    tid: u64,
    threads: u64,
) {
    let (Some(s), Some(variant)) = (Stage::from_code(stage), Variant::from_edge(m as usize)) else {
        return;
    };
    let t = Tiles {
        n,
        h,
        w,
        c_in,
        oh,
        ow,
        c_out,
        pad_t: (pads >> 32) as usize,
        pad_l: (pads & 0xffff_ffff) as usize,
        variant,
    };
    run(
        s,
        &t,
        (a, b, c),
        tid as usize,
        threads as usize,
        Avx512::detect(),
    );
}

/// The `pads` argument of [`qatc_winograd`].
pub fn pack_pads(t: &Tiles) -> u64 {
    ((t.pad_t as u64) << 32) | t.pad_l as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::host::testing::{max_rel, rand};

    /// Direct `y[b,oy,ox,o] = Σ x[b, oy+ky−pt, ox+kx−pl, i] · k[o,ky,kx,i]` in f64.
    fn direct(t: &Tiles, x: &[f32], k: &[f32]) -> Vec<f64> {
        let mut y = vec![0.0; t.n * t.oh * t.ow * t.c_out];
        for b in 0..t.n {
            for oy in 0..t.oh {
                for ox in 0..t.ow {
                    for o in 0..t.c_out {
                        let mut s = 0.0f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (
                                    oy as isize + ky as isize - t.pad_t as isize,
                                    ox as isize + kx as isize - t.pad_l as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= t.h as isize || ix >= t.w as isize {
                                    continue;
                                }
                                for i in 0..t.c_in {
                                    let xv = x[((b * t.h + iy as usize) * t.w + ix as usize)
                                        * t.c_in
                                        + i];
                                    s += xv as f64 * k[((o * 3 + ky) * 3 + kx) * t.c_in + i] as f64;
                                }
                            }
                        }
                        y[((b * t.oh + oy) * t.ow + ox) * t.c_out + o] = s;
                    }
                }
            }
        }
        y
    }

    /// Every test shape in both variants.
    fn shapes() -> Vec<Tiles> {
        let t = |n, h, w, c_in, c_out, pad: usize| Tiles {
            n,
            h,
            w,
            c_in,
            oh: h + 2 * pad - 2,
            ow: w + 2 * pad - 2,
            c_out,
            pad_t: pad,
            pad_l: pad,
            variant: Variant::F2,
        };
        let base = [
            t(2, 8, 8, 16, 16, 1),
            t(1, 7, 5, 3, 16, 1),
            t(3, 9, 6, 20, 40, 0),
            t(2, 5, 7, 33, 3, 2),
            t(1, 32, 32, 64, 64, 1),
            t(2, 11, 10, 16, 24, 1),
        ];
        Variant::ALL
            .into_iter()
            .flat_map(|variant| base.map(|t| Tiles { variant, ..t }))
            .collect()
    }

    fn conv(t: &Tiles, x: &[f32], k: &[f32], threads: usize, simd: Option<Avx512>) -> Vec<f32> {
        let mut u = vec![0.0; transformed_len(t)];
        let mut y = vec![f32::NAN; t.n * t.oh * t.ow * t.c_out];
        unsafe {
            for tid in 0..threads {
                run(
                    Stage::Filter,
                    t,
                    (k.as_ptr(), std::ptr::null(), u.as_mut_ptr()),
                    tid,
                    threads,
                    simd,
                );
            }
            for tid in 0..threads {
                run(
                    Stage::Conv,
                    t,
                    (x.as_ptr(), u.as_ptr(), y.as_mut_ptr()),
                    tid,
                    threads,
                    simd,
                );
            }
        }
        y
    }

    #[test]
    fn forward_matches_the_direct_convolution() {
        for (s, t) in shapes().iter().enumerate() {
            let x = rand(t.n * t.h * t.w * t.c_in, s as u64);
            let k = rand(t.c_out * 9 * t.c_in, 100 + s as u64);
            let want = direct(t, &x, &k);
            for simd in [None, Avx512::detect()] {
                for threads in [1, 2, 3] {
                    let got = conv(t, &x, &k, threads, simd);
                    let e = max_rel(&got, &want);
                    assert!(e < 1e-5, "{t:?} threads {threads} simd {simd:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn input_gradient_is_the_flipped_convolution_of_dy() {
        for (s, t) in shapes().iter().enumerate() {
            let dy = rand(t.n * t.oh * t.ow * t.c_out, 200 + s as u64);
            let k = rand(t.c_out * 9 * t.c_in, 300 + s as u64);
            // reference: dx[b,iy,ix,i] = Σ dy[b,oy,ox,o] k[o,ky,kx,i] where iy = oy+ky−pt
            let mut want = vec![0.0f64; t.n * t.h * t.w * t.c_in];
            for b in 0..t.n {
                for oy in 0..t.oh {
                    for ox in 0..t.ow {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (
                                    oy as isize + ky as isize - t.pad_t as isize,
                                    ox as isize + kx as isize - t.pad_l as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= t.h as isize || ix >= t.w as isize {
                                    continue;
                                }
                                for o in 0..t.c_out {
                                    let d = dy[((b * t.oh + oy) * t.ow + ox) * t.c_out + o] as f64;
                                    for i in 0..t.c_in {
                                        want[((b * t.h + iy as usize) * t.w + ix as usize)
                                            * t.c_in
                                            + i] +=
                                            d * k[((o * 3 + ky) * 3 + kx) * t.c_in + i] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let g = Tiles {
                n: t.n,
                h: t.oh,
                w: t.ow,
                c_in: t.c_out,
                oh: t.h,
                ow: t.w,
                c_out: t.c_in,
                pad_t: 2 - t.pad_t,
                pad_l: 2 - t.pad_l,
                variant: t.variant,
            };
            for simd in [None, Avx512::detect()] {
                let mut u = vec![0.0; transformed_len(&g)];
                let mut dx = vec![f32::NAN; want.len()];
                unsafe {
                    run(
                        Stage::FilterFlipped,
                        &g,
                        (k.as_ptr(), std::ptr::null(), u.as_mut_ptr()),
                        0,
                        1,
                        simd,
                    );
                    for tid in 0..2 {
                        run(
                            Stage::Conv,
                            &g,
                            (dy.as_ptr(), u.as_ptr(), dx.as_mut_ptr()),
                            tid,
                            2,
                            simd,
                        );
                    }
                }
                let e = max_rel(&dx, &want);
                assert!(e < 1e-5, "{t:?} simd {simd:?}: {e}");
            }
        }
    }

    #[test]
    fn filter_gradient_matches_the_direct_sum() {
        for (s, t) in shapes().iter().enumerate() {
            let x = rand(t.n * t.h * t.w * t.c_in, 400 + s as u64);
            let dy = rand(t.n * t.oh * t.ow * t.c_out, 500 + s as u64);
            let mut want = vec![0.0f64; t.c_out * 9 * t.c_in];
            for b in 0..t.n {
                for oy in 0..t.oh {
                    for ox in 0..t.ow {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (
                                    oy as isize + ky as isize - t.pad_t as isize,
                                    ox as isize + kx as isize - t.pad_l as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= t.h as isize || ix >= t.w as isize {
                                    continue;
                                }
                                for o in 0..t.c_out {
                                    let d = dy[((b * t.oh + oy) * t.ow + ox) * t.c_out + o] as f64;
                                    for i in 0..t.c_in {
                                        want[((o * 3 + ky) * 3 + kx) * t.c_in + i] +=
                                            d * x[((b * t.h + iy as usize) * t.w + ix as usize)
                                                * t.c_in
                                                + i]
                                                as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for simd in [None, Avx512::detect()] {
                for threads in [1, 2, 3] {
                    let mut part = vec![f32::NAN; threads * transformed_len(t)];
                    let mut dk = vec![f32::NAN; want.len()];
                    unsafe {
                        for tid in 0..threads {
                            run(
                                Stage::GradFilterPartial,
                                t,
                                (x.as_ptr(), dy.as_ptr(), part.as_mut_ptr()),
                                tid,
                                threads,
                                simd,
                            );
                        }
                        run(
                            Stage::GradFilterFinish,
                            t,
                            (part.as_ptr(), std::ptr::null(), dk.as_mut_ptr()),
                            0,
                            threads,
                            simd,
                        );
                    }
                    let e = max_rel(&dk, &want);
                    assert!(e < 1e-5, "{t:?} threads {threads} simd {simd:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn stage_codes_and_tile_edges_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_code(s.code()), Some(s));
        }
        assert_eq!(Stage::from_code(99), None);
        for v in Variant::ALL {
            assert_eq!(Variant::from_edge(v.edge()), Some(v));
        }
        assert_eq!(Variant::from_edge(3), None);
    }
}
