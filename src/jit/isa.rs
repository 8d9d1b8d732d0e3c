//! The target: Cranelift's native x86-64/aarch64 ISA with the host's CPU features and
//! `opt_level=speed`, plus the feature facts the lowering needs (FMA above all: Cranelift
//! only emits `vfmadd` for an explicit `fma` instruction when the ISA flag is on, and
//! otherwise turns `fma` into a libcall per lane, so the JIT asks before emitting one).

use crate::error::{Error, Result};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};

/// CPU features the JIT's code generation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Fused multiply-add (`vfmadd*ps`): one rounding per `a*b+c`.
    pub fma: bool,
    /// SSE4.1: `roundps` (vector floor) and `pmulld` (i32x4 multiply). Without it Cranelift
    /// falls back to per-lane libcalls, which is correct but slow.
    pub sse41: bool,
    /// AVX2: used by the host GEMM (the `gemm` crate dispatches on it at run time); the JIT's
    /// own vectors are 128-bit.
    pub avx2: bool,
}

impl Features {
    /// The features of the machine we run on.
    pub fn host() -> Features {
        #[cfg(target_arch = "x86_64")]
        {
            Features {
                fma: std::is_x86_feature_detected!("fma"),
                sse41: std::is_x86_feature_detected!("sse4.1"),
                avx2: std::is_x86_feature_detected!("avx2"),
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            // NEON always has fused multiply-add and vector rounding.
            Features {
                fma: true,
                sse41: true,
                avx2: false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Features {
                fma: false,
                sse41: false,
                avx2: false,
            }
        }
    }
}

/// The host ISA with native feature flags and `opt_level=speed`.
pub fn host_isa() -> Result<OwnedTargetIsa> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| Error::Jit(format!("cranelift flag {k}={v}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    // The JIT module resolves symbols by absolute address; no PIC, no colocated libcalls.
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    // Our code never recurses or allocates large frames; the probe-free prologue is fine.
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    )?;
    let isa_builder = cranelift_native::builder()
        .map_err(|m| Error::Jit(format!("this CPU is not supported by Cranelift: {m}")))?;
    isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| Error::Jit(format!("cannot build the native ISA: {e}")))
}
