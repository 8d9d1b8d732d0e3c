//! Cranelift building blocks shared by every lowering and kernel: addresses of virtual
//! tensors (by their planned [`Loc`]), loops with carried values, thread ranges,
//! type-generic float arithmetic (the same code builds a scalar `f32` tail and an `f32x4`
//! body), explicit FMA, a vectorized `exp`, and calls to the host helpers.

use super::runtime::{CTX_ARENA, CTX_INPUTS, CTX_STATE, CTX_TID};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{
    BlockArg, ConstantData, FuncRef, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::FunctionBuilder;

/// Where a virtual tensor lives while the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// No storage (a vt nothing reads or writes).
    None,
    /// At this byte offset of the arena (temporaries).
    Arena(usize),
    /// At this byte offset of the state memory (params, optimizer slots, observers).
    State(usize),
    /// The caller's input buffer in this slot of the input table.
    Input(usize),
}

/// Vector lanes of the JIT's SIMD type (Cranelift vectors are 128-bit).
pub const LANES: usize = 4;

/// Host helpers imported into the function.
#[derive(Clone, Copy)]
pub struct Helpers {
    pub barrier: FuncRef,
    pub gemm: FuncRef,
    pub nudge: FuncRef,
    pub logf: FuncRef,
    pub all_reduce: FuncRef,
    pub winograd: FuncRef,
    pub direct: FuncRef,
    /// Present when compiling with profiling.
    pub prof: Option<FuncRef>,
}

/// The state of code generation for one function.
pub struct Cg<'a, 'f> {
    pub b: &'a mut FunctionBuilder<'f>,
    ctx: Value,
    pub threads: usize,
    pub use_fma: bool,
    /// Whether the current instruction is split over threads.
    pub par: bool,
    locs: &'a [Loc],
    /// Element count of every vt.
    pub numels: &'a [usize],
    pub helpers: Helpers,
}

/// Flags of data accesses: never trapping, possibly unaligned.
pub fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn ctx_flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

impl<'a, 'f> Cg<'a, 'f> {
    pub fn new(
        b: &'a mut FunctionBuilder<'f>,
        ctx: Value,
        threads: usize,
        use_fma: bool,
        locs: &'a [Loc],
        numels: &'a [usize],
        helpers: Helpers,
    ) -> Self {
        Cg {
            b,
            ctx,
            threads,
            use_fma,
            par: false,
            locs,
            numels,
            helpers,
        }
    }

    // ---- constants and addresses ---------------------------------------------------------

    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn tid(&mut self) -> Value {
        self.b.ins().load(I64, ctx_flags(), self.ctx, CTX_TID)
    }

    pub fn ctx(&self) -> Value {
        self.ctx
    }

    /// Address of element `elem` of `vt`.
    pub fn ptr(&mut self, vt: usize, elem: usize) -> Value {
        let (base_field, off) = match self.locs[vt] {
            Loc::Arena(o) => (CTX_ARENA, o),
            Loc::State(o) => (CTX_STATE, o),
            Loc::Input(slot) => {
                let table = self.b.ins().load(I64, ctx_flags(), self.ctx, CTX_INPUTS);
                let p = self
                    .b
                    .ins()
                    .load(I64, ctx_flags(), table, (slot * 8) as i32);
                return self.b.ins().iadd_imm_s(p, (elem * 4) as i64);
            }
            Loc::None => panic!("vt {vt} has no storage (planner bug)"),
        };
        let base = self.b.ins().load(I64, ctx_flags(), self.ctx, base_field);
        self.b.ins().iadd_imm_s(base, (off + elem * 4) as i64)
    }

    /// `ptr + idx*4` for an i64 element index.
    pub fn elem_addr(&mut self, ptr: Value, idx: Value) -> Value {
        let off = self.b.ins().ishl_imm_s(idx, 2);
        self.b.ins().iadd(ptr, off)
    }

    pub fn fconst(&mut self, ty: Type, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if ty == F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    pub fn splat(&mut self, ty: Type, s: Value) -> Value {
        if ty == F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    pub fn load(&mut self, ty: Type, ptr: Value, byte_off: i64) -> Value {
        self.b.ins().load(ty, data_flags(), ptr, byte_off as i32)
    }

    pub fn store(&mut self, v: Value, ptr: Value, byte_off: i64) {
        self.b.ins().store(data_flags(), v, ptr, byte_off as i32);
    }

    // ---- float arithmetic, generic over F32 and F32X4 ------------------------------------

    pub fn ty(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    pub fn fadd(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    pub fn fsub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    pub fn fmul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    pub fn fdiv(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }

    /// `a*b + c`, fused when FMA is enabled.
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.use_fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// A comparison mask (i32x4 lanes of all ones/zeros for vectors, i8 for scalars).
    pub fn fcmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    /// `mask ? a : b`
    pub fn select(&mut self, mask: Value, a: Value, b: Value) -> Value {
        let ty = self.ty(a);
        if ty.is_vector() {
            let m = self.b.ins().bitcast(ty, MemFlagsData::new(), mask);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(mask, a, b)
        }
    }

    pub fn mask_and(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }

    pub fn mask_or(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }

    /// Logical not of a mask: all bits for vector masks, the low bit for scalar `i8` flags
    /// (which are 0 or 1, so `bnot` would make both truthy).
    pub fn mask_not(&mut self, m: Value) -> Value {
        if self.ty(m).is_vector() {
            self.b.ins().bnot(m)
        } else {
            self.b.ins().bxor_imm_s(m, 1)
        }
    }

    /// `a < b ? a : b`: one `minps` for vectors (Cranelift's `fmin` has IEEE NaN/±0
    /// semantics and costs a sequence).
    pub fn fmin(&mut self, a: Value, b: Value) -> Value {
        let m = self.fcmp(FloatCC::LessThan, a, b);
        self.select(m, a, b)
    }

    /// `b < a ? a : b`: one `maxps` for vectors.
    pub fn fmax(&mut self, a: Value, b: Value) -> Value {
        let m = self.fcmp(FloatCC::LessThan, b, a);
        self.select(m, a, b)
    }

    /// Horizontal reduction of a vector to a scalar with `f` (lanes in order 0..4).
    pub fn hreduce(&mut self, v: Value, f: impl Fn(&mut Self, Value, Value) -> Value) -> Value {
        if !self.ty(v).is_vector() {
            return v;
        }
        let mut acc = self.b.ins().extractlane(v, 0u8);
        for l in 1..LANES as u8 {
            let x = self.b.ins().extractlane(v, l);
            acc = f(self, acc, x);
        }
        acc
    }

    /// `e^x` (Cephes `expf`: range reduction by `ln 2`, a degree-5 polynomial, the exponent
    /// set directly), within 2 ulp of `f32::exp` on `[-87, 88]`; inputs are clamped there.
    pub fn exp(&mut self, x: Value) -> Value {
        let ty = self.ty(x);
        let ity = if ty.is_vector() { I32X4 } else { I32 };
        let hi = self.fconst(ty, 88.376_26);
        let lo = self.fconst(ty, -87.336_55);
        let x = self.fmin(x, hi);
        let x = self.fmax(x, lo);
        let log2e = self.fconst(ty, std::f32::consts::LOG2_E);
        let half = self.fconst(ty, 0.5);
        let t = self.fma(x, log2e, half);
        let n = self.b.ins().floor(t);
        let c1 = self.fconst(ty, -0.693_359_4);
        let c2 = self.fconst(ty, 2.121_944_4e-4);
        let r = self.fma(n, c1, x);
        let r = self.fma(n, c2, r);
        let z = self.fmul(r, r);
        let mut p = self.fconst(ty, 1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            let cv = self.fconst(ty, c);
            p = self.fma(p, r, cv);
        }
        let p = self.fma(p, z, r);
        let one = self.fconst(ty, 1.0);
        let p = self.fadd(p, one);
        // 2^n: n + (1.5*2^23 + 127) puts n+127 in the low mantissa bits.
        let magic = self.fconst(ty, 12_583_039.0);
        let biased = self.fadd(n, magic);
        let bits = self.b.ins().bitcast(ity, MemFlagsData::new(), biased);
        let bits = self.b.ins().ishl_imm_s(bits, 23);
        let pow2 = self.b.ins().bitcast(ty, MemFlagsData::new(), bits);
        self.fmul(p, pow2)
    }

    // ---- control flow ----------------------------------------------------------------

    fn args(vals: &[Value]) -> Vec<BlockArg> {
        vals.iter().map(|&v| v.into()).collect()
    }

    /// `for i in (lo..hi).step_by(step)` with loop-carried values; returns their final
    /// values. The test is at the bottom (one branch per iteration).
    pub fn for_range(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        init: &[Value],
        body: impl FnOnce(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let types: Vec<Type> = init.iter().map(|&v| self.ty(v)).collect();
        let body_blk = self.b.create_block();
        let exit_blk = self.b.create_block();
        let i = self.b.append_block_param(body_blk, I64);
        let carried: Vec<Value> = types
            .iter()
            .map(|&t| self.b.append_block_param(body_blk, t))
            .collect();
        let results: Vec<Value> = types
            .iter()
            .map(|&t| self.b.append_block_param(exit_blk, t))
            .collect();
        let c = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        let mut entry_args = vec![lo];
        entry_args.extend_from_slice(init);
        self.b.ins().brif(
            c,
            body_blk,
            &Self::args(&entry_args),
            exit_blk,
            &Self::args(init),
        );
        self.b.switch_to_block(body_blk);
        let out = body(self, i, &carried);
        debug_assert_eq!(out.len(), init.len());
        let next = self.b.ins().iadd_imm_s(i, step);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        let mut back = vec![next];
        back.extend_from_slice(&out);
        self.b
            .ins()
            .brif(c, body_blk, &Self::args(&back), exit_blk, &Self::args(&out));
        self.b.switch_to_block(exit_blk);
        results
    }

    /// A loop over a static range.
    pub fn for_static(
        &mut self,
        lo: usize,
        hi: usize,
        step: usize,
        init: &[Value],
        body: impl FnOnce(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        if lo >= hi {
            return init.to_vec();
        }
        let l = self.iconst(lo as i64);
        let h = self.iconst(hi as i64);
        self.for_range(l, h, step as i64, init, body)
    }

    /// Runs `body` only when `cond` (an i8) is true.
    pub fn if_then(&mut self, cond: Value, body: impl FnOnce(&mut Self)) {
        let then_blk = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, then_blk, &[], done, &[]);
        self.b.switch_to_block(then_blk);
        body(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
    }

    /// Runs `body` on thread 0 only.
    pub fn on_thread0(&mut self, body: impl FnOnce(&mut Self)) {
        if self.threads == 1 {
            body(self);
            return;
        }
        let tid = self.tid();
        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, tid, 0);
        self.if_then(is0, body);
    }

    /// This thread's id and the thread count of the instruction being emitted (`None` and 1
    /// when it runs on thread 0 alone).
    pub fn this_thread(&mut self) -> (Option<Value>, usize) {
        if self.par {
            (Some(self.tid()), self.threads)
        } else {
            (None, 1)
        }
    }

    /// Per-thread partials combined by one thread: `each` on every thread of the instruction
    /// (its id and the thread count, as [`Cg::this_thread`]), then, after a barrier when the
    /// instruction is split, `finish` on thread 0 with the thread count.
    pub fn partials_then_thread0(
        &mut self,
        each: impl FnOnce(&mut Self, Option<Value>, usize),
        finish: impl FnOnce(&mut Self, usize),
    ) {
        let (tid, threads) = self.this_thread();
        each(self, tid, threads);
        if self.par {
            self.barrier();
        }
        self.on_thread0(|cg| finish(cg, threads));
    }

    /// This thread's share `[lo, hi)` of `0..n`, in multiples of `granule` (the last
    /// share takes the remainder).
    pub fn thread_range(&mut self, n: usize, granule: usize) -> (Value, Value) {
        let t = self.threads;
        if t == 1 || !self.par {
            return (self.iconst(0), self.iconst(n as i64));
        }
        let granule = granule.max(1);
        let chunk = n.div_ceil(granule).div_ceil(t) * granule;
        let tid = self.tid();
        let lo = self.b.ins().imul_imm_s(tid, chunk as i64);
        let nn = self.iconst(n as i64);
        let lo = self.b.ins().umin(lo, nn);
        let hi = self.b.ins().iadd_imm_s(lo, chunk as i64);
        let hi = self.b.ins().umin(hi, nn);
        (lo, hi)
    }

    pub fn barrier(&mut self) {
        if self.threads > 1 {
            let f = self.helpers.barrier;
            let ctx = self.ctx;
            self.b.ins().call(f, &[ctx]);
        }
    }

    pub fn call(&mut self, f: FuncRef, args: &[Value]) -> Vec<Value> {
        let inst = self.b.ins().call(f, args);
        self.b.inst_results(inst).to_vec()
    }

    /// Fills `n` floats at `ptr` with `v` (vector body, scalar tail).
    pub fn fill(&mut self, ptr: Value, n: usize, v: f32) {
        let nv = n / LANES * LANES;
        if nv > 0 {
            let val = self.fconst(F32X4, v);
            self.for_static(0, nv, LANES, &[], |cg, i, _| {
                let a = cg.elem_addr(ptr, i);
                cg.store(val, a, 0);
                vec![]
            });
        }
        if nv < n {
            let val = self.fconst(F32, v);
            for j in nv..n {
                self.store(val, ptr, (j * 4) as i64);
            }
        }
    }

    /// An i32x4 vector constant.
    pub fn i32x4_const(&mut self, lanes: [i32; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|v| v.to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(I32X4, c)
    }
}
