//! From the planned program to native code: the program is cut into segments of about
//! equal size, each emitted as its own Cranelift function, the functions compiled on
//! several threads at once, then linked in one JIT module behind a step function that calls
//! them in order.
//!
//! Cranelift compiles one function on one thread, and its register allocator takes most of
//! the compile time of a large step. Segments let both cores work, and keep each function
//! small enough for the allocator. Values do not cross segments: every instruction reads and
//! writes memory, and a barrier is still placed where the previous instruction (perhaps in
//! the previous segment) needs one (`codegen::emit_range`).

use super::cg::{Cg, Helpers};
use super::codegen::{self, Emitted};
use super::lir::{Inst, Program};
use super::plan::Plan;
use super::runtime::{self, StepFn};
use crate::error::{Error, Result};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::types::{F32, I64};
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, Signature, Type, UserFuncName, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module, ModuleReloc};
use std::ops::Range;

/// Instructions are grouped into segments of about this much work for the compiler
/// (expression nodes of a loop, a fixed amount for a call).
const SEGMENT_COST: usize = 1500;

/// The linked code: the module owns the memory `step` points into.
pub struct Linked {
    pub module: JITModule,
    pub step: StepFn,
    pub code_bytes: usize,
    pub segments: usize,
}

/// What to compile, and how.
pub struct Target<'a> {
    pub prog: &'a Program,
    pub plan: &'a Plan,
    pub graph_name: &'a str,
    pub threads: usize,
    pub use_fma: bool,
    pub profile: bool,
    /// `QATC_JIT_DUMP`: write the CLIF, the listing and the machine code here.
    pub dump: Option<(&'a std::path::Path, &'a str)>,
}

/// The compiler's work for an instruction: loops grow with their expression (unrolled per
/// vector chunk), calls and kernels are small.
fn cost(inst: &Inst) -> usize {
    match inst {
        Inst::Loop(l) => 20 + 4 * l.nodes.len() + 8 * l.reds.len(),
        Inst::Gemm(_) | Inst::Kernel(_) => 20,
    }
}

/// Consecutive ranges of instructions of about [`SEGMENT_COST`] each.
fn segments(prog: &Program) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, inst) in prog.insts.iter().enumerate() {
        acc += cost(inst);
        if acc >= SEGMENT_COST {
            out.push(start..i + 1);
            (start, acc) = (i + 1, 0);
        }
    }
    if start < prog.insts.len() || out.is_empty() {
        out.push(start..prog.insts.len());
    }
    out
}

/// The host symbols the compiled code calls ([`runtime::symbols`]), declared in the module.
struct Imports {
    barrier: FuncId,
    gemm: FuncId,
    nudge: FuncId,
    logf: FuncId,
    all_reduce: FuncId,
    winograd: FuncId,
    direct: FuncId,
    prof: FuncId,
}

impl Imports {
    fn declare(
        module: &mut JITModule,
        sig: impl Fn(&[Type], Option<Type>) -> Signature,
    ) -> Result<Imports> {
        let mut import = |name: &str, params: &[Type], ret: Option<Type>| {
            module
                .declare_function(name, Linkage::Import, &sig(params, ret))
                .map_err(jit_err)
        };
        Ok(Imports {
            barrier: import("qatc_barrier", &[I64], None)?,
            gemm: import("qatc_gemm", &[I64; 13], None)?,
            nudge: import("qatc_nudge", &[I64; 6], None)?,
            logf: import("qatc_logf", &[F32], Some(F32))?,
            all_reduce: import("qatc_all_reduce", &[I64; 5], None)?,
            winograd: import("qatc_winograd", &[I64; 15], None)?,
            direct: import("qatc_direct", &[I64; 9], None)?,
            prof: import("qatc_prof", &[I64, I64], None)?,
        })
    }

    /// References to them from `func` (the profiler's only when profiling).
    fn helpers(&self, module: &mut JITModule, func: &mut Function, profile: bool) -> Helpers {
        let mut r = |id| module.declare_func_in_func(id, func);
        Helpers {
            barrier: r(self.barrier),
            gemm: r(self.gemm),
            nudge: r(self.nudge),
            logf: r(self.logf),
            all_reduce: r(self.all_reduce),
            winograd: r(self.winograd),
            direct: r(self.direct),
            prof: profile.then(|| r(self.prof)),
        }
    }
}

fn jit_err(e: cranelift_module::ModuleError) -> Error {
    Error::Jit(format!("{e:?}"))
}

/// The CLIF of function `id` with signature `sig` (its one parameter the context
/// pointer): `body` emits it into the entry block, then it returns.
fn function(
    module: &mut JITModule,
    fbc: &mut FunctionBuilderContext,
    id: FuncId,
    sig: Signature,
    body: impl FnOnce(&mut JITModule, &mut FunctionBuilder, Value) -> Result<()>,
) -> Result<Context> {
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut b = FunctionBuilder::new(&mut ctx.func, fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let ctxp = b.block_params(entry)[0];
    body(module, &mut b, ctxp)?;
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    Ok(ctx)
}

/// Emits, compiles and links the program.
pub fn link(t: &Target) -> Result<Linked> {
    let isa = super::isa::host_isa()?;
    let mut jb = JITBuilder::with_isa(isa.clone(), default_libcall_names());
    for (name, ptr) in runtime::symbols() {
        jb.symbol(name, ptr);
    }
    let mut module = JITModule::new(jb);
    let call_conv = module.isa().default_call_conv();
    let sig = |params: &[Type], ret: Option<Type>| {
        let mut s = Signature::new(call_conv);
        s.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        s.returns.extend(ret.map(AbiParam::new));
        s
    };
    let imports = Imports::declare(&mut module, sig)?;
    let ranges = segments(t.prog);
    let mut seg_ids: Vec<FuncId> = Vec::with_capacity(ranges.len());
    for i in 0..ranges.len() {
        let id = module
            .declare_function(&format!("qatc_seg{i}"), Linkage::Local, &sig(&[I64], None))
            .map_err(jit_err)?;
        seg_ids.push(id);
    }
    let step_id = module
        .declare_function("qatc_step", Linkage::Local, &sig(&[I64], None))
        .map_err(jit_err)?;

    // ---- emit every segment's CLIF (serially: the module hands out the references) -------
    let numels: Vec<usize> = t.prog.vts.iter().map(|v| v.numel).collect();
    let mut fbc = FunctionBuilderContext::new();
    let mut contexts: Vec<Context> = Vec::with_capacity(ranges.len() + 1);
    let mut emitted = Emitted::default();
    for (range, &id) in ranges.iter().zip(&seg_ids) {
        let ctx = function(
            &mut module,
            &mut fbc,
            id,
            sig(&[I64], None),
            |module, b, ctxp| {
                let helpers = imports.helpers(module, b.func, t.profile);
                let mut cg = Cg::new(
                    b,
                    ctxp,
                    t.threads,
                    t.use_fma,
                    &t.plan.locs,
                    &numels,
                    helpers,
                );
                emitted = codegen::emit_range(&mut cg, t.prog, t.plan, range.clone(), emitted)?;
                Ok(())
            },
        )?;
        contexts.push(ctx);
    }
    // the step: every segment in order
    let step = function(
        &mut module,
        &mut fbc,
        step_id,
        sig(&[I64], None),
        |module, b, ctxp| {
            for &id in &seg_ids {
                let f = module.declare_func_in_func(id, b.func);
                b.ins().call(f, &[ctxp]);
            }
            Ok(())
        },
    )?;
    contexts.push(step);
    if let Some((dir, listing)) = t.dump {
        let _ = std::fs::create_dir_all(dir);
        let clif: String = contexts
            .iter()
            .map(|c| c.func.display().to_string())
            .collect();
        let _ = std::fs::write(dir.join(format!("{}.clif", t.graph_name)), clif);
        let _ = std::fs::write(dir.join(format!("{}.lir", t.graph_name)), listing);
        contexts.iter_mut().for_each(|c| c.set_disasm(true));
    }

    // ---- compile on every core -------------------------------------------------------------
    let ids: Vec<FuncId> = seg_ids.iter().copied().chain([step_id]).collect();
    let workers = t.threads.max(1).min(contexts.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Context>>> = contexts
        .into_iter()
        .map(|c| std::sync::Mutex::new(Some(c)))
        .collect();
    type Compiled = (Vec<u8>, u64, Vec<ModuleReloc>, Option<String>);
    let results: Vec<std::sync::Mutex<Option<std::result::Result<Compiled, String>>>> = (0..slots
        .len())
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let isa_ref: &dyn cranelift_codegen::isa::TargetIsa = &*isa;
    let graph_name = t.graph_name;
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= slots.len() {
                    break;
                }
                let mut ctx = slots[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .expect("each function is compiled once");
                let out = match ctx.compile(isa_ref, &mut ControlPlane::default()) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!(
                        "Cranelift rejected the generated code for graph `{}`: {}",
                        graph_name,
                        cranelift_codegen::print_errors::pretty_error(e.func, e.inner)
                    )),
                };
                let out = out.map(|()| {
                    let code = ctx.compiled_code().expect("compiled just now");
                    let relocs = code
                        .buffer
                        .relocs()
                        .iter()
                        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, ids[i]))
                        .collect();
                    (
                        code.code_buffer().to_vec(),
                        code.buffer.alignment as u64,
                        relocs,
                        code.vcode.clone(),
                    )
                });
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
            });
        }
    });

    // ---- link --------------------------------------------------------------------------------
    let mut code_bytes = 0;
    let mut asm = String::new();
    for (i, r) in results.into_iter().enumerate() {
        let r = r
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .expect("every function was compiled");
        let (bytes, align, relocs, vcode) = r.map_err(Error::Jit)?;
        code_bytes += bytes.len();
        asm.push_str(vcode.as_deref().unwrap_or(""));
        module
            .define_function_bytes(ids[i], align, &bytes, &relocs)
            .map_err(jit_err)?;
    }
    if let Some((dir, _)) = t.dump {
        let _ = std::fs::write(dir.join(format!("{}.asm", t.graph_name)), asm);
    }
    module.finalize_definitions().map_err(jit_err)?;
    let code = module.get_finalized_function(step_id);
    // SAFETY: the function was declared with exactly this signature.
    let step: StepFn = unsafe { std::mem::transmute::<*const u8, StepFn>(code) };
    Ok(Linked {
        module,
        step,
        code_bytes,
        segments: ranges.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_program_in_order() {
        let mut prog = Program::default();
        assert_eq!(segments(&prog), vec![0..0]);
        for i in 0..100 {
            let l = super::super::lir::Loop::new(format!("l{i}"), &[4]);
            prog.insts.push(Inst::Loop(l));
        }
        let s = segments(&prog);
        assert!(s.len() > 1, "{s:?}");
        assert_eq!(s[0].start, 0);
        assert_eq!(s.last().unwrap().end, 100);
        assert!(s.windows(2).all(|w| w[0].end == w[1].start));
    }
}
