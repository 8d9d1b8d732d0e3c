//! What this CPU can do, as values: a token exists only if the instructions it names were
//! detected at run time, so code that needs them takes the token instead of re-checking (or
//! trusting) the machine. The int8 evaluator's fast kernels and the JIT's Winograd
//! convolutions use it; everything else runs the portable build.

/// Proof that this CPU has AVX-512 F, BW, DQ and VL (on other architectures it cannot be
/// made at all).
#[derive(Clone, Copy, Debug)]
pub struct Avx512(Proof);

#[cfg(target_arch = "x86_64")]
type Proof = ();
#[cfg(not(target_arch = "x86_64"))]
type Proof = std::convert::Infallible;

impl Avx512 {
    /// The token, if the CPU has the instructions (detected once, then cached by std).
    pub fn detect() -> Option<Avx512> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Some(Avx512(()));
            }
        }
        None
    }

    /// Runs `f` compiled for these instructions: `f` is inlined into a function built with
    /// AVX-512 enabled, so the compiler vectorizes its loops with 512-bit registers. Integer
    /// results are the baseline build's; only the instructions differ.
    #[inline]
    pub fn vectorized<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the token proves the CPU has every feature the function enables.
            unsafe { with_avx512(f) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self.0 {}
        }
    }

    /// On other architectures the token cannot exist, so code holding one is unreachable.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn never(self) -> ! {
        match self.0 {}
    }

    /// Whether the CPU also has AVX-512 VNNI (8-bit dot products).
    pub fn has_vnni(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self.0 {}
        }
    }
}

/// # Safety
/// The CPU must have AVX-512 F, BW, DQ and VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
