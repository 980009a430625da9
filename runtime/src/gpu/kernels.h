// Host launchers of the CUDA kernels (kernels.cu, gemv.cu, gemm.cu). All launch asynchronously on
// `s` and check the launch (not the execution). Matrices are row-major; "ld" is a row stride in
// elements. Float weights and matrix-product inputs are fp16 or bf16 (DType), products accumulate
// in fp32 and write fp32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernel_timeline.h"
#include "pack.h"

namespace hci::gpu {

enum class DType : int { F16 = 0, BF16 = 1, F32 = 2 };
inline int dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
const char* dtype_name(DType t);

// ---- decode GEMV (1..16 rows of x) -------------------------------------------------------------

// Optional epilogue of a residual GEMV (y = the residual stream x, rows of width d_out): once every
// block has written its rows, the last one writes out[b*d_out + j] = dtype(gamma[j] * x[b, j] *
// rsqrt(mean(x_b^2) + eps)), the RMSNorm the next matrix product needs (one kernel less per
// norm in the decode step). `counter` must be 0 before the launch; the kernel leaves it 0.
struct NormEpilogue {
  unsigned* counter = nullptr;
  const float* gamma = nullptr;
  float eps = 0.f;
  void* out = nullptr;
};

// The RMSNorm of a GEMV's input applied in its prologue (batch-1 streaming packed kernel): the
// input row is fp16(gamma * x * rsqrt(mean(x²) + eps)) of the fp32 residual x [d_in], computed by
// every block while its first weight loads are in flight, in place of a separate norm kernel.
struct NormIn {
  const float* x = nullptr;      // [d_in] fp32 residual
  const float* gamma = nullptr;  // [d_in]; nullptr: no norm, the GEMV's fp16 input is used
  float eps = 0.f;
};

// The lean 4-bit GEMV triggers its dependents (PDL) at its start (default) or after its main loop,
// for the launches that follow from this thread (the engine sets it per forward pass).
void set_qgemv4_early_trigger(bool on);
// The lean 4-bit GEMV splits rows longer than one step (d_in > 4096) into one task per step,
// combined in shared memory (default on; per thread, for the launches that follow).
void set_qgemv4_ksplit(bool on);

// Whether this build records kernel stamps (CMake option HCI_KERNEL_STAMPS).
bool kernel_stamps_compiled();
// Bind (nullptr: unbind) the stamp buffer of the instrumented kernels of gemv.cu and kernels.cu.
void bind_kernel_stamps(KernelStamp* buf, unsigned cap);
// The host launch counter whose value the next instrumented launch records as its tag.
int next_stamp_tag();

// y[b*ldy + r] (+)= sum_k W[r*d_in + k] * x[b*ldx + k] for b < nb (1..16), r < d_out.
// W, x: dtype t (16-byte aligned rows; d_in and ldx multiples of 8).
void gemv(DType t, const void* W, int d_out, int d_in, const void* x, int ldx, int nb, float* y,
          int ldy, bool accumulate, cudaStream_t s, const NormEpilogue* norm = nullptr);

// Low-rank branches y += B·(A·x) sharing one input (GPU placement, decode rows): up to 4 (q/k/v,
// gate/up). A_c [rank_pad_c, d_in], B_c [d_out_c, rank_pad_c], dtype of the float weights.
struct LowRankSet {
  int n = 0;
  const void* a[4] = {nullptr, nullptr, nullptr, nullptr};
  const void* b[4] = {nullptr, nullptr, nullptr, nullptr};
  int rank_pad[4] = {0, 0, 0, 0};  // multiples of 8
  int d_out[4] = {0, 0, 0, 0};
  int out_col[4] = {0, 0, 0, 0};   // where branch c adds into y's rows
};
constexpr int kLowRankSmemBytes = 48 * 1024;  // t [nb, Σ rank_pad] floats staged per block
// Whether the two kernels below take this set (1..16 rows, t within shared memory).
bool lowrank_decode_supported(const LowRankSet& s, int d_in, int nb);
// t [nb, Σ_c rank_pad_c] float = A_c · x[b] per branch (branch c at column Σ_{c'<c} rank_pad_c').
void lowrank_project(DType t, const LowRankSet& s, int d_in, const void* x, int ldx, int nb,
                     float* tbuf, cudaStream_t st);
// y[b, out_col_c + i] += B_c[i, :] · t[b, branch c].
void lowrank_expand(DType t, const LowRankSet& s, const float* tbuf, int nb, float* y, int ldy,
                    cudaStream_t st);

// A packed quantized matrix on the device (layout: pack.h).
struct PackedView {
  const uint8_t* lo = nullptr;   // [d_out, lo_row_bytes]
  const uint8_t* hi = nullptr;   // [d_out, hi_row_bytes] (3-bit only)
  const uint32_t* sz = nullptr;  // [d_out, d_in / group] fp16 pairs (scale, zero)
  int d_out = 0, d_in = 0, bits = 0, group = 0;
  int64_t lo_row_bytes = 0, hi_row_bytes = 0;
};

// The view of a packed matrix of shape s whose parts are at lo, hi (3-bit only) and sz.
inline PackedView packed_view(const PackedShape& s, const uint8_t* lo, const uint8_t* hi,
                              const uint32_t* sz) {
  PackedView v;
  v.lo = lo;
  v.hi = s.bits == 3 ? hi : nullptr;
  v.sz = sz;
  v.d_out = s.d_out;
  v.d_in = s.d_in;
  v.bits = s.bits;
  v.group = s.group;
  v.lo_row_bytes = s.lo_row_bytes();
  v.hi_row_bytes = s.hi_row_bytes();
  return v;
}

// y[b*ldy + r] (+)= sum_k (code - zero) * scale * x[b*ldx + k]; x fp16.
void qgemv(const PackedView& w, const void* x, int ldx, int nb, float* y, int ldy,
           bool accumulate, cudaStream_t s, const NormEpilogue* norm = nullptr,
           const NormIn* norm_in = nullptr);
// True when qgemv / qgemv_silu accept a NormIn for this matrix at nb rows (the batch-1 streaming
// kernel runs it).
bool packed_norm_in_supported(const PackedView& w, int nb);
// True when qgemv can apply a NormEpilogue (the tensor-core or the batch-1 streaming kernel runs
// this matrix).
bool packed_norm_epilogue_supported(const PackedView& w, int nb);

// True when qgemv runs this matrix at nb rows without falling back to slow paths: the tensor-core
// kernel (4/8-bit, d_in a multiple of 128; any nb up to 16), the streaming kernel (nb == 1, any
// bit width, d_in <= 23552), or the SIMT kernel for nb <= 2.
bool packed_gemv_supported(const PackedView& w, int nb);

// Fused gate/up decode step with the SiLU gating epilogue: W (packed [2*dff, d_in], gate rows
// then up rows) times x gives h[b*ldh + j] = fp16(silu(gate_j) * up_j). Returns false (doing
// nothing) when neither the tensor-core kernel nor (nb == 1) the streaming kernel applies.
bool qgemv_silu(const PackedView& w, int dff, const void* x, int ldx, int nb, void* h, int ldh,
                cudaStream_t s, const NormIn* norm_in = nullptr);

// The same for float weights W [2*dff, d_in] of dtype t: h[b*ldh + j] = t(silu(g_j) * u_j).
void gemv_silu(DType t, const void* W, int dff, int d_in, const void* x, int ldx, int nb, void* h,
               int ldh, cudaStream_t s);

// out[(r - row0) * d_in + k] = fp16((code - zero) * scale) for rows row0..row0+rows-1.
void dequant(const PackedView& w, int row0, int rows, void* out, cudaStream_t s);

// Kernel variants for tuning and tests: 0 = default. Float GEMV variants 1..4 = (rows per warp,
// unroll) (1,4) (2,2) (2,4) (4,2) for nb == 1; packed variants 1..4 = the SIMT kernel with (1,2)
// (2,2) (4,1) (2,4) for nb == 1, 5 = the SIMT kernel for every nb (a nonzero packed variant turns
// the tensor-core kernel off), 6..10 = the streaming kernel's configurations 0..4 for nb == 1.
// Process-wide; not for concurrent use.
void set_gemv_variants(int float_variant, int packed_variant);
// nb == 1 packed GEMVs with the SIMT kernel instead of the default one (tuning; off = default,
// the streaming kernel).
void set_qgemv_simt_nb1(bool on);
// The kernel of nb == 1 packed GEMVs (tuning): 0 = tensor-core (4/8-bit), 1 = SIMT, 2 = streaming
// (x in shared memory, every bit width, d_in <= 23552), 3 = the lean 4-bit kernel (groups of
// 128..4096, else 2), 4 = the lean kernel with its dot products on the tensor cores (d_in a
// multiple of 128, else 3), 5 = 4 for rows longer than 4096 and 3 otherwise, anything else = the
// library default (3);
// config: the streaming kernel's configuration 0..4 (packed variants 6..10), -1 = default.
void set_qgemv_nb1_kernel(int kernel, int config = -1);
// Multiprocessors of the device (sizes the tensor-core kernel's K split; default 132).
void set_sm_count(int n);

// Programmatic dependent launch (launch.cuh) for every kernel launched after the call; on by
// default when the first GPU model is created on an sm_90+ device. Process-wide.
void set_pdl(bool on);
// Decode attention blocks so far that found their row's sequence or position changed across their
// PDL wait (an early read was stale; tests check that the kernel still used the right ones).
unsigned attention_stale_reads();
bool pdl_enabled();

// ---- prefill GEMM --------------------------------------------------------------------------------

// y[i*ldy + r] (+)= sum_k x[i*ldx + k] * W[r*d_in + k], i < m, r < d_out: the library's own
// tensor-core (WMMA) kernel; d_in must be a multiple of 32.
void gemm_own(DType t, const void* W, int d_out, int d_in, const void* x, int ldx, int m,
              float* y, int ldy, bool accumulate, cudaStream_t s);

// ---- elementwise and attention ---------------------------------------------------------------

// x[i*d + j] = float(table[tokens[i]*d + j]).
void embed(DType t, const void* table, int d, const int* tokens, int n, float* x, cudaStream_t s);
// out[i*ldo + j] = out_t(g[j] * (x[i*ldx + j] * rsqrt(mean(x_i^2) + eps))).
void rmsnorm(DType out_t, const float* x, int ldx, const float* g, int n, int d, float eps,
             void* out, int ldo, cudaStream_t s);
// Rotates q (columns [0, n_heads*hd)) in place and k (the next n_kv*hd columns) of qkv rows with
// the rotate_half pairing and table cs[pos * hd/2 + f] = (cos, sin); writes k and v (the last
// n_kv*hd columns) into the cache rows (row_seq[i], row_pos[i]) of kc / vc, each
// [n_seqs, n_ctx, n_kv*hd] of dtype kv.
void rope_store(DType kv, float* qkv, int ldq, int n, int n_heads, int n_kv, int hd,
                const float2* cs, const int* row_seq, const int* row_pos, void* kc, void* vc,
                int n_ctx, cudaStream_t s);
// Causal attention of each row's query heads against its sequence's cache positions
// 0..row_pos[i]; out[i*ldo + h*hd + d] of dtype out_t. hd must be 32, 64 or 128.
void attention(DType kv, DType out_t, const float* qkv, int ldq, int n, int n_heads, int n_kv,
               int hd, const void* kc, const void* vc, int n_ctx, const int* row_seq,
               const int* row_pos, void* out, int ldo, cudaStream_t s);
// Decode attention with RoPE and the KV-cache store fused: row i (one new token of sequence
// row_seq[i] at position row_pos[i]; rows are distinct sequences) rotates its q heads and its
// new k head with cs, writes the new k and v into the cache, and attends over cache positions
// 0..pos-1 plus the new key (taken from registers, so no other block's write is awaited).
// split: blocks per (head, row) for up to 8192 cache positions (1, 2, 4 or 8; 0: the
// process-wide setting, attention_split()); below sm_90 always 1.
void attention_decode(DType kv, DType out_t, const float* qkv, int ldq, int n, int n_heads,
                      int n_kv, int hd, const float2* cs, const int* row_seq, const int* row_pos,
                      void* kc, void* vc, int n_ctx, void* out, int ldo, cudaStream_t s,
                      int split = 0);
// Blocks per (head, row) of decode attention up to 8192 cache positions: 1, or a cluster of 2, 4
// or 8 blocks over contiguous ranges of positions (sm_90+). The process-wide default for launches
// that name none (tests, tuning): 1, or HCINFER_ATTN_SPLIT (ignored below sm_90). The engine picks
// its own per decode step (GpuModel::attention_split_for).
void set_attention_split(int c);
int attention_split();
// Whether the device supports the split (clusters: sm_90+).
bool attention_split_supported();
// Decode attention loads its first round of cached keys and values before its PDL wait, from the
// row's position as read then, and again after the wait where that read was stale (tuning and
// tests; on by default, HCINFER_ATTN_KV_EARLY=0 turns it off). Process-wide.
void set_attention_kv_early(bool on);
int attention_kv_early();
// h[i*ldh + j] = out_t(silu(gu[i*ldgu + j]) * gu[i*ldgu + dff + j]).
void silu_mul(DType out_t, const float* gu, int ldgu, int dff, int n, void* h, int ldh,
              cudaStream_t s);
// out[i] = t(x[i]).
void to_dtype(DType t, const float* x, int64_t n, void* out, cudaStream_t s);
// nll[i] = logsumexp(logits_i) - logits_i[targets[i]] (0 where targets[i] < 0).
void nll_rows(const float* logits, int V, const int* targets, int n, float* nll, cudaStream_t s);
// out[i] = argmax of row i (lowest index on ties).
void argmax_rows(const float* logits, int V, int n, int* out, cudaStream_t s);
// row_seq[i] = i, row_pos[i] = seq_len[i] for i < nb.
void decode_begin(int nb, const int* seq_len, int* row_seq, int* row_pos, cudaStream_t s);
// seq_len[i] += 1 for i < nb.
void decode_end(int nb, int* seq_len, cudaStream_t s);

// ---- CPU compensation hand-off (comp_kernels.cu; protocol: hetero/handoff.h, comp_server.h) ---

// Device-side view of the channel: pointers into mapped pinned host memory (x, y, head, done,
// wait_ns, passes, stamps) and device memory (pass, trace).
// hetero/comp_server.h PassStamp as the device writes it, in a ring of kPassStamps (engine_hetero.cpp
// checks the layout and the ring size).
constexpr int kPassStampsDev = 8;
struct PassStampDev {
  unsigned long long t_begin, t_end;
  uint32_t decode, pad;
};

struct CompChannelDev {
  // mapped host memory, tagged words (hetero/handoff.h): value | seq << 32
  unsigned long long* x = nullptr;     // [rows, d_in] activations handed to the CPU
  unsigned long long* y = nullptr;     // y_0 | y_1 | ..., y_j [rows, d_out_j]: corrections
  unsigned long long* head = nullptr;  // [2] HEAD: (point, seq), (rows | flags, seq)
  uint32_t* done = nullptr;        // DONE (written by the CPU after all of Y; timing and cpu-sync)
  uint32_t* wait_ns = nullptr;     // [P] GPU spin before each point's correction was there
  // [P] host: the point's window, GPU ns from its input handed over (x_at) to its backbone
  // product's end: how long the CPU had before the GPU needed the correction (rank controller)
  uint32_t* window_ns = nullptr;
  // [P] host: the turnaround the GPU saw, x handed over to the correction found, where its first
  // look missed the correction (0: it was there at the first look)
  uint32_t* turn_ns = nullptr;
  unsigned long long* x_at = nullptr;  // [P] device: GPU clock when point p's X was all written
  uint32_t* pass = nullptr;        // device: forward passes that used the channel so far
  uint32_t* passes = nullptr;      // host: passes ended (hetero/comp_server.h ChannelHeader)
  PassStampDev* stamps = nullptr;  // host [8]: GPU clock at each pass's begin and end
  // HCINFER_HANDOFF_TRACE=1: device [P, 8] GPU clock stamps of each point's import (kTrace*),
  // overwritten every pass (points a pass did not hand over keep older stamps); nullptr: off
  unsigned long long* trace = nullptr;
};
// Stamps of the hand-off trace per point, from the import's recording block (the last columns):
// kernel entry, its y and the product both there, the product's end, past griddepcontrol.wait,
// the add / SiLU and the hand-over of the next input done, the end, the kernel kind (1 import,
// 2 import + residual hand-over, 3 import + SiLU).
enum { kTraceEntry, kTraceDone, kTraceProd, kTraceReady, kTraceOp, kTraceEnd, kTraceKind,
       kTraceSlots };

// Where a point's corrections go: layer j adds into columns [col[j], col[j] + d_out[j]).
struct CompImport {
  int n = 0;
  int col[4] = {0, 0, 0, 0};
  int d_out[4] = {0, 0, 0, 0};
};

// Hands in [n, ld_in] (dtype t) to the CPU as point p of P: X = float(in) and HEAD (point,
// rows | the prefill flag), as tagged words.
void comp_export(DType t, const void* in, int ld_in, int d_in, int n, bool prefill,
                 const CompChannelDev& ch, int P, int p, cudaStream_t s);
// With `add`, takes point p's correction (each word once it carries p's tag) and adds
// out[row, col_j + c] += y_j[row, c]; without, waits for the CPU's DONE of point p (cpu-sync,
// before the product). With `record_wait`, stores the GPU's wait in wait_ns[p].
void comp_import(float* out, int ld_out, int n, const CompImport& d, const CompChannelDev& ch,
                 int P, int p, bool record_wait, bool add, cudaStream_t s);
// What the decode step does right after a point's correction is added (comp_import_then): the
// fusion the corrected product could not apply, and the export of the next point's input.
constexpr int kThenAdd = 1;   // the corrected residual rows [n, d], handed over raw (kNormFlag)
constexpr int kThenSilu = 2;  // SiLU gating of the corrected gate | up rows [n, 2·d] into dst
struct CompThen {
  int op = 0;                    // kThenAdd or kThenSilu
  int d = 0;                     // row width (kThenAdd) or d_ff (kThenSilu)
  void* dst = nullptr;           // [n, ld_dst] dtype t: the gated hidden rows (kThenSilu)
  int ld_dst = 0;
  int next = -1;                 // point (> p, same pass) handed its input here; -1: none
};
// comp_import(add) of point p into out [n, ld_out], then `then`.
void comp_import_then(DType t, float* out, int ld_out, int n, const CompImport& d,
                      const CompThen& then, const CompChannelDev& ch, int P, int p,
                      bool record_wait, cudaStream_t s);
// Stamps the GPU clock at the begin of a forward pass that uses the channel (stamps[pass % 8]).
void comp_pass_begin(const CompChannelDev& ch, cudaStream_t s);
// Stamps the end (and whether it was a decode pass), publishes passes = pass + 1 (system-scope
// release after the stamp), then pass += 1.
void comp_pass_end(const CompChannelDev& ch, bool decode, cudaStream_t s);

// ---- synthetic weights and measurement -------------------------------------------------------

// p[i] ~ approximately N(0, stddev²) (Irwin-Hall of 4 uniforms), a function of (seed, id, i).
void fill_normal(DType t, void* p, int64_t n, uint64_t seed, uint64_t id, float stddev,
                 cudaStream_t s);
// Uniform random 32-bit words (random packed codes).
void fill_words(uint32_t* p, int64_t n_words, uint64_t seed, uint64_t id, cudaStream_t s);
// fp16 pairs (scale * u, zero), u uniform in [0.9, 1.1).
void fill_scales(uint32_t* sz, int64_t n, uint64_t seed, uint64_t id, float scale, float zero,
                 cudaStream_t s);
void fill_const(float* p, int64_t n, float v, cudaStream_t s);
// Reads `bytes` (multiple of 16) with 16-byte loads; writes one float per block into sink
// [read_stream_blocks()].
void read_stream(const void* p, int64_t bytes, float* sink, cudaStream_t s);
int read_stream_blocks();

}  // namespace hci::gpu
