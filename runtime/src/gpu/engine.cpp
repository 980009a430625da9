#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "common.h"
#include "model.h"
#include "pack.h"

#ifdef HCI_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace hci::gpu {

namespace {

constexpr int kGemvMaxRows = 16;             // rows up to which matrix products use the GEMV
constexpr int kGemvFloatRows = 2;            // float weights: GEMV up to this many rows (cuBLAS above)
constexpr int64_t kWorkspaceBytes = 32 << 20;  // cuBLAS workspace
constexpr int64_t kDeqScratchBytes = 16 << 20; // packed-GEMM scratch slice (stays in L2)

int64_t charge(int64_t b) { return DeviceAllocator::charge(b); }

struct SynthSpec {
  const char* name;
  Shape shape;
};

const SynthSpec kSynth[] = {
    {"llama-2-7b", {32, 4096, 32, 32, 128, 11008, 32000, 4096, false, 10000.0, 1e-5}},
    {"llama-2-13b", {40, 5120, 40, 40, 128, 13824, 32000, 4096, false, 10000.0, 1e-5}},
    {"llama-3-8b", {32, 4096, 32, 8, 128, 14336, 128256, 8192, false, 500000.0, 1e-5}},
    {"test", {2, 512, 8, 4, 64, 1408, 1000, 1024, false, 10000.0, 1e-5}},
};

void put_f16(uint8_t* dst, const float* src, int64_t n, DType t) {
  uint16_t* o = reinterpret_cast<uint16_t*>(dst);
  if (t == DType::BF16)
    for (int64_t i = 0; i < n; ++i) o[i] = host_f32_to_bf16(src[i]);
  else
    for (int64_t i = 0; i < n; ++i) o[i] = host_f32_to_f16(src[i]);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

// d_out and d_in of kind k.
void kind_dims(const Shape& s, int k, int& d_out, int& d_in) {
  switch (k) {
    case HCI_LINEAR_Q: d_out = s.qd(); d_in = s.d_model; break;
    case HCI_LINEAR_K:
    case HCI_LINEAR_V: d_out = s.kvd(); d_in = s.d_model; break;
    case HCI_LINEAR_O: d_out = s.d_model; d_in = s.qd(); break;
    case HCI_LINEAR_GATE:
    case HCI_LINEAR_UP: d_out = s.d_ff; d_in = s.d_model; break;
    default: d_out = s.d_model; d_in = s.d_ff; break;
  }
}

// Output column of kind k inside its group's buffer.
int kind_col(const Shape& s, int k) {
  switch (k) {
    case HCI_LINEAR_K: return s.qd();
    case HCI_LINEAR_V: return s.qd() + s.kvd();
    case HCI_LINEAR_UP: return s.d_ff;
    default: return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Construction

std::unique_ptr<GpuModel> GpuModel::from_model(const Model& m, const hci_gpu_params& p) {
  const ModelConfig& c = m.cfg;
  Shape s;
  s.n_layers = c.n_layers;
  s.d_model = c.d_model;
  s.n_heads = c.n_heads;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_dim;
  s.d_ff = c.d_ff;
  s.vocab = c.vocab_size;
  s.max_positions = c.max_positions;
  s.tied = c.tied_embeddings;
  s.rope_theta = c.rope_theta;
  s.eps = c.rms_norm_eps;
  if (p.weights < HCI_GPU_WEIGHTS_CURRENT || p.weights > HCI_GPU_WEIGHTS_ORIGINAL)
    fail(HCI_ERR_INVALID_ARGUMENT, "weights must be CURRENT (0), PACKED (1) or ORIGINAL (2)");
  const bool packed = p.weights == HCI_GPU_WEIGHTS_PACKED;
  const bool comp = p.placement != HCI_GPU_PLACE_NONE && p.weights != HCI_GPU_WEIGHTS_ORIGINAL;
  const bool host = p.placement == HCI_GPU_PLACE_CPU_SYNC || p.placement == HCI_GPU_PLACE_CPU_ASYNC;
  const bool device_factors =
      p.placement == HCI_GPU_PLACE_GPU || (host && p.prefill_comp == HCI_GPU_PREFILL_COMP_GPU);
  std::vector<LinearFormat> formats(size_t(m.n_linears()));
  bool any_quant = false;
  for (int i = 0; i < m.n_linears(); ++i) {
    const Linear& lin = m.linear(i);
    LinearFormat& f = formats[size_t(i)];
    if (lin.bits) any_quant = true;
    if (packed && lin.bits) {
      if (!lin.g_idx.empty())
        fail(HCI_ERR_UNSUPPORTED, "PACKED GPU weights: " + linear_name(i) +
                                      " has an act-order column permutation (g_idx); use "
                                      "CURRENT weights for such models");
      PackedShape ps{lin.d_out, lin.d_in, lin.bits, lin.group_size};
      const char* why = packed_shape_problem(ps);
      if (*why)
        fail(HCI_ERR_UNSUPPORTED, "PACKED GPU weights: " + linear_name(i) + " (" +
                                      std::to_string(lin.d_out) + " x " +
                                      std::to_string(lin.d_in) + ", group " +
                                      std::to_string(lin.group_size) + "): " + why);
      f.bits = lin.bits;
      f.group = lin.group_size;
    }
    if (comp && lin.bits && lin.rank > 0) {
      if (device_factors) f.rank = lin.rank;
      if (host) f.host_rank = lin.rank;
    }
  }
  if (packed && !any_quant)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "PACKED GPU weights need a quantized model (hci_model_quantize first)");
  std::unique_ptr<GpuModel> g(new GpuModel());
  g->init(s, formats, p, packed);
  PartitionScope in_partition(g->partition());
  g->fill_from_model(m, p.weights, comp && device_factors);
  HCI_CUDA(cudaDeviceSynchronize());  // uploads on the legacy stream are done before any use
  if (host) g->setup_host_comp(&m, 0);
  return g;
}

std::unique_ptr<GpuModel> GpuModel::synthetic(const std::string& name_in,
                                              const hci_gpu_synth_params& sp,
                                              const hci_gpu_params& p) {
  std::string name = name_in;
  if (name.rfind("synthetic:", 0) == 0) name = name.substr(10);
  const SynthSpec* spec = nullptr;
  for (const SynthSpec& s : kSynth)
    if (name == s.name) spec = &s;
  if (!spec)
    fail(HCI_ERR_INVALID_ARGUMENT, "unknown synthetic model '" + name_in +
                                       "' (known: llama-2-7b, llama-2-13b, llama-3-8b, test)");
  const Shape& s = spec->shape;
  if (sp.bits != 0 && sp.bits != 2 && sp.bits != 3 && sp.bits != 4 && sp.bits != 8)
    fail(HCI_ERR_INVALID_ARGUMENT, "synthetic bits must be 0, 2, 3, 4 or 8");
  if (sp.rank < 0 || sp.reserved != 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "synthetic rank must be >= 0 (and reserved 0)");
  if (sp.rank > 0 && sp.bits == 0 && p.placement != HCI_GPU_PLACE_NONE)
    fail(HCI_ERR_INVALID_ARGUMENT, "synthetic compensation factors need a packed backbone "
                                   "(bits 2, 3, 4 or 8): they compensate quantization error");
  const bool host = p.placement == HCI_GPU_PLACE_CPU_SYNC || p.placement == HCI_GPU_PLACE_CPU_ASYNC;
  const bool device_factors =
      p.placement == HCI_GPU_PLACE_GPU || (host && p.prefill_comp == HCI_GPU_PREFILL_COMP_GPU);
  std::vector<LinearFormat> formats(size_t(s.n_layers) * kKinds);
  if (sp.bits) {
    for (int i = 0; i < int(formats.size()); ++i) {
      int d_out, d_in;
      kind_dims(s, i % kKinds, d_out, d_in);
      const int group = sp.group_size == -1 ? d_in : sp.group_size;
      PackedShape ps{d_out, d_in, sp.bits, group};
      const char* why = packed_shape_problem(ps);
      if (*why) fail(HCI_ERR_INVALID_ARGUMENT, std::string("synthetic packed weights: ") + why);
      formats[size_t(i)] = LinearFormat{sp.bits, group, device_factors ? sp.rank : 0,
                                        host ? sp.rank : 0};
    }
  }
  std::unique_ptr<GpuModel> g(new GpuModel());
  g->init(s, formats, p, sp.bits != 0);
  PartitionScope in_partition(g->partition());
  g->fill_synthetic(sp.seed, sp.bits);
  HCI_CUDA(cudaDeviceSynchronize());
  if (host && sp.bits && sp.rank > 0) g->setup_host_comp(nullptr, sp.seed);
  return g;
}

void GpuModel::init(const Shape& shape, const std::vector<LinearFormat>& formats,
                    const hci_gpu_params& p, bool packed) {
  sh_ = shape;
  p_ = p;
  formats_ = formats;
  device_ = p.device;
  require_device(device_);
  HCI_CUDA(cudaSetDevice(device_));
  if (p.sm_limit < 0)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "hci_gpu_params.sm_limit must be 0 (every SM) or a partition size, not " +
             std::to_string(p.sm_limit));
  if (p.sm_limit > 0) partition_ = std::make_unique<SmPartition>(device_, p.sm_limit);
  PartitionScope in_partition(partition_.get());
  {
    int major = 0;
    HCI_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_));
    // Programmatic dependent launch (Hopper and later): each kernel lets the next one start its
    // prologue (weight loads, hand-off polling) during its own tail. On by default (measured on an
    // H100, Llama-2-7B batch 1: W4 +5.4%, fp16 +1.5%, cpu-async rank 16 +19%); the tuning switch
    // HCINFER_PDL=0 turns it off.
    const char* pdl = std::getenv("HCINFER_PDL");
    set_pdl(major >= 9 && !(pdl && pdl[0] == '0'));
    int sms = 0;
    HCI_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_));
    sm_count_ = partition_ ? partition_->sms() : sms;
    set_sm_count(sm_count_);  // persistent kernels size their grids by it
    // batch-1 packed GEMV kernel: 0 tensor-core, 1 SIMT, 2 streaming, "2:N" streaming with
    // configuration N, 3 the lean 4-bit kernel (else streaming), 4 the lean kernel's tensor-core
    // scheme, 5 that for rows longer than one step only; unset = library default (3)
    const char* simt = std::getenv("HCINFER_QGEMV_SIMT");
    const bool k_ok = simt && simt[0] >= '0' && simt[0] <= '5';
    const bool c_ok = k_ok && simt[1] == ':' && simt[2] >= '0' && simt[2] <= '9';
    set_qgemv_nb1_kernel(k_ok ? simt[0] - '0' : -1, c_ok ? simt[2] - '0' : -1);
    // Decode fusions (measured on an H200, Llama-2-7B shapes): attention with RoPE and the KV
    // store, and the packed gate/up GEMV with its SiLU epilogue, are on; the float gate/up + SiLU
    // kernel and the RMSNorm epilogue of the residual GEMVs were slower (the epilogue's
    // device-wide fence and last-block norm cost more than the kernel launch they save), so they
    // are off unless HCINFER_FUSE_NORM=1 / HCINFER_FUSE_SILU=1. HCINFER_FUSE=0 turns all off.
    const char* fuse = std::getenv("HCINFER_FUSE");
    const char* fuse_norm = std::getenv("HCINFER_FUSE_NORM");
    const char* fuse_silu = std::getenv("HCINFER_FUSE_SILU");
    const bool any = !(fuse && fuse[0] == '0');
    fuse_attn_ = fuse_gate_up_ = any;
    fuse_norm_ = any && fuse_norm && fuse_norm[0] == '1';
    fuse_float_silu_ = any && fuse_silu && fuse_silu[0] == '1';
    // CPU compensation: decode imports fused with the norm / gating after them and the next
    // export (comp_import_then); HCINFER_FUSE_COMP=0 runs them as separate kernels.
    const char* fuse_comp = std::getenv("HCINFER_FUSE_COMP");
    fuse_comp_ = any && !(fuse_comp && fuse_comp[0] == '0');
    // Batch-1 decode: the packed GEMVs after an RMSNorm (q/k/v, gate/up) apply it in their
    // prologue instead of a separate one-block norm kernel; HCINFER_NORM_IN=0 turns it off.
    const char* norm_in = std::getenv("HCINFER_NORM_IN");
    norm_in_ = any && !(norm_in && norm_in[0] == '0');
    const char* prof = std::getenv("HCINFER_PROFILE");
    profile_ = prof && prof[0] == '1';
    // Batch-1 step diagnostics and tuning (README of results/decode-profile): the kernel
    // timeline in bench (HCINFER_KERNEL_STAMPS=1); the lean 4-bit GEMV triggers its dependents at
    // its start, so their launch is not on the critical path (HCINFER_Q4_EARLY=0: after its
    // loop; H200 W4 decode 572 -> 602 tok/s), except next to CPU hand-offs (run_block).
    const char* stamps = std::getenv("HCINFER_KERNEL_STAMPS");
    kernel_stamps_ = stamps && stamps[0] == '1';
    const char* early = std::getenv("HCINFER_Q4_EARLY");
    q4_early_ = !(early && early[0] == '0');
    q4_early_always_ = early && early[0] == '2';  // also next to hand-offs (for A/Bs)
    // Rows longer than one step of the lean GEMV (down) split into tasks per step
    // (HCINFER_Q4_KSPLIT=0: whole rows per warp).
    const char* ksplit = std::getenv("HCINFER_Q4_KSPLIT");
    q4_ksplit_ = !(ksplit && ksplit[0] == '0');
    attn_split_fixed_ = std::getenv("HCINFER_ATTN_SPLIT") != nullptr;
  }
  if (p.controller_slowdown_pct < -1 || p.controller_slowdown_pct > 1000)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "hci_gpu_params.controller_slowdown_pct must be -1 (every point on), 0 (default 3) or "
         "1..1000, not " + std::to_string(p.controller_slowdown_pct));
  if (p.placement < HCI_GPU_PLACE_NONE || p.placement > HCI_GPU_PLACE_CPU_ASYNC)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "placement must be NONE (0), GPU (1), CPU_SYNC (2) or CPU_ASYNC (3), not " +
             std::to_string(p.placement));
  if (p.factor_dtype < HCI_GPU_FACTOR_F32 || p.factor_dtype > HCI_GPU_FACTOR_F16)
    fail(HCI_ERR_INVALID_ARGUMENT, "factor_dtype must be F32 (0), BF16 (1) or F16 (2)");
  if (p.prefill_comp != HCI_GPU_PREFILL_COMP_CPU && p.prefill_comp != HCI_GPU_PREFILL_COMP_GPU)
    fail(HCI_ERR_INVALID_ARGUMENT, "prefill_comp must be CPU (0) or GPU (1)");
  if (p.cpu_threads < 0 || p.cpu_threads > 256)
    fail(HCI_ERR_INVALID_ARGUMENT, "cpu_threads must be 0..256");
  if (p.rank_controller && p.placement != HCI_GPU_PLACE_CPU_ASYNC)
    fail(HCI_ERR_INVALID_ARGUMENT, "rank_controller needs placement CPU_ASYNC: only there does "
                                   "the CPU's work hide under the GPU's");
  placement_ = p.placement;
  if (p.dtype != HCI_GPU_F16 && p.dtype != HCI_GPU_BF16)
    fail(HCI_ERR_INVALID_ARGUMENT, "dtype must be F16 or BF16");
  if (p.kv_dtype != HCI_GPU_F16 && p.kv_dtype != HCI_GPU_F32)
    fail(HCI_ERR_INVALID_ARGUMENT, "kv_dtype must be F16 or F32");
  dt_ = DType(p.dtype);
  kv_ = DType(p.kv_dtype);
  if (packed && dt_ != DType::F16)
    fail(HCI_ERR_INVALID_ARGUMENT, "packed weights need dtype F16 (activations are fp16)");
  if (p.max_batch < 1 || p.max_batch > 16)
    fail(HCI_ERR_INVALID_ARGUMENT, "max_batch must be 1..16");
  max_batch_ = p.max_batch;
  if (p.n_ctx < 0) fail(HCI_ERR_INVALID_ARGUMENT, "n_ctx must be >= 0");
  n_ctx_ = p.n_ctx ? p.n_ctx : std::min(sh_.max_positions, 4096);
  if (p.prefill_chunk < 0) fail(HCI_ERR_INVALID_ARGUMENT, "prefill_chunk must be >= 0");
  rows_ = std::max(p.prefill_chunk ? p.prefill_chunk : 512, max_batch_);
  logit_rows_ = std::max(max_batch_, std::min(rows_, 64));
  if (p.memory_budget < 0) fail(HCI_ERR_INVALID_ARGUMENT, "memory_budget must be >= 0");
  if (sh_.head_dim != 32 && sh_.head_dim != 64 && sh_.head_dim != 128)
    fail(HCI_ERR_UNSUPPORTED, "GPU forward supports head_dim 32, 64 or 128, not " +
                                  std::to_string(sh_.head_dim));
  if (sh_.n_heads % sh_.n_kv_heads)
    fail(HCI_ERR_UNSUPPORTED, "n_heads must be a multiple of n_kv_heads");
  if (sh_.d_model % 32 || sh_.d_ff % 32 || sh_.qd() % 32)
    fail(HCI_ERR_UNSUPPORTED, "GPU forward needs hidden, head and MLP sizes that are multiples "
                              "of 32");
#ifdef HCI_HAVE_CUBLAS
  use_cublas_ = p.gemm != HCI_GPU_GEMM_OWN;
#else
  if (p.gemm == HCI_GPU_GEMM_CUBLAS)
    fail(HCI_ERR_UNSUPPORTED, "this library was built without cuBLAS (gemm = CUBLAS)");
  use_cublas_ = false;
#endif
  if (p.gemm < 0 || p.gemm > 2) fail(HCI_ERR_INVALID_ARGUMENT, "gemm must be 0, 1 or 2");
  use_graphs_ = p.use_graphs != 0;

  // Layouts: one arena per block.
  const int64_t T = dtype_size(dt_);
  layouts_.assign(size_t(sh_.n_layers), BlockLayout());
  bool first = true;
  bits_ = 0;
  group_ = 0;
  for (int l = 0; l < sh_.n_layers; ++l) {
    BlockLayout& B = layouts_[size_t(l)];
    int64_t off = 0;
    auto take = [&](int64_t bytes) {
      const int64_t o = off;
      off = align_up(off + bytes, 256);
      return o;
    };
    B.attn_norm_off = take(int64_t(sh_.d_model) * 4);
    B.mlp_norm_off = take(int64_t(sh_.d_model) * 4);
    for (int g = 0; g < 4; ++g) {
      for (int k = kGroupKinds[g][0]; k < kGroupKinds[g][1]; ++k) {
        const LinearFormat& f = formats_[size_t(l * kKinds + k)];
        if (f.bits) any_packed_ = true;
        {
          int d_o, d_i;
          kind_dims(sh_, k, d_o, d_i);
          const int g = f.bits == 0 ? 0 : (f.group == d_i ? -1 : f.group);  // -1 = per row
          if (first) {
            bits_ = f.bits;
            group_ = g;
            first = false;
          } else {
            if (bits_ != f.bits) bits_ = -1;
            if (group_ != g) group_ = -2;
          }
        }
        int d_out, d_in;
        kind_dims(sh_, k, d_out, d_in);
        max_din_ = std::max(max_din_, d_in);
        std::vector<LinOp>& ops = B.ops[g];
        const int col = kind_col(sh_, k);
        if (!ops.empty() && ops.back().bits == f.bits && ops.back().group == f.group &&
            ops.back().out_col + ops.back().d_out == col) {
          ops.back().d_out += d_out;
          ops.back().kinds.push_back(k);
        } else {
          LinOp op;
          op.d_out = d_out;
          op.d_in = d_in;
          op.out_col = col;
          op.bits = f.bits;
          op.group = f.group;
          op.kinds.push_back(k);
          ops.push_back(op);
        }
      }
      for (LinOp& op : B.ops[g]) {
        if (op.bits == 0) {
          op.w_off = take(int64_t(op.d_out) * op.d_in * T);
        } else {
          PackedShape ps{op.d_out, op.d_in, op.bits, op.group};
          op.w_off = take(ps.lo_bytes());
          if (op.bits == 3) op.hi_off = take(ps.hi_bytes());
          op.sz_off = take(ps.sz_bytes());
        }
        int row = 0;
        for (int k : op.kinds) {
          int d_out, d_in;
          kind_dims(sh_, k, d_out, d_in);
          const LinearFormat& f = formats_[size_t(l * kKinds + k)];
          if (f.rank > 0) {
            CompSpec c;
            c.d_out = d_out;
            c.out_col = row;
            c.rank = f.rank;
            c.rank_pad = int(align_up(f.rank, 32));
            c.a_off = take(int64_t(c.rank_pad) * d_in * T);
            c.b_off = take(int64_t(d_out) * c.rank_pad * T);
            max_rank_pad_ = std::max(max_rank_pad_, c.rank_pad);
            gpu_comp_bytes_ += int64_t(c.rank_pad) * (d_in + d_out) * T;
            any_comp_ = true;
            op.comps.push_back(c);
          }
          row += d_out;
        }
      }
    }
    B.bytes = off;
  }
  if (any_packed_) {
    deq_rows_ = int(std::max<int64_t>(64, kDeqScratchBytes / (int64_t(max_din_) * 2)) / 64 * 64);
  }
  plan_and_allocate();
  build_rope_table();
}

void GpuModel::plan_and_allocate() {
  const int64_t T = dtype_size(dt_), KV = dtype_size(kv_);
  const int64_t R = rows_, d = sh_.d_model, V = sh_.vocab, L = sh_.n_layers;
  const int64_t qd = sh_.qd(), kvd = sh_.kvd(), dff = sh_.d_ff;
  struct Item {
    const char* what;
    int64_t bytes;
    DeviceBuffer* buf;
  };
  const int64_t kv_bytes = L * max_batch_ * int64_t(n_ctx_) * kvd * KV;
  std::vector<Item> items = {
      {"embedding", V * d * T, &embed_},
      {"final norm", d * 4, &final_norm_},
      {"RoPE table", int64_t(n_ctx_) * (sh_.head_dim / 2) * 8, &rope_},
      {"K cache", kv_bytes, &kc_},
      {"V cache", kv_bytes, &vc_},
      {"residual stream", R * d * 4, &x_},
      {"normed activations", R * d * T, &xn_},
      {"attention output", R * qd * T, &att_},
      {"q/k/v", R * (qd + 2 * kvd) * 4, &qkv_},
      {"gate/up", R * 2 * dff * 4, &gu_},
      {"MLP hidden", R * dff * T, &h_},
      {"logits", int64_t(logit_rows_) * V * 4, &logits_},
      {"token and position ids", (4 * R + 2 * max_batch_ + 32) * 4, &ints_},
      {"per-token NLL", R * 4, &nll_},
  };
  if (!sh_.tied) items.push_back({"output head", V * d * T, &lm_head_own_});
  if (any_comp_) {
    items.push_back({"compensation scratch (fp32)", R * max_rank_pad_ * 4, &ct32_});
    items.push_back({"compensation scratch", R * max_rank_pad_ * T, &ctT_});
  }
  if (any_packed_)
    items.push_back({"dequantization scratch", int64_t(deq_rows_) * max_din_ * 2, &deq_});
  if (use_cublas_) items.push_back({"cuBLAS workspace", kWorkspaceBytes, &workspace_});

  int64_t fixed = 0, kv_total = 0, act_total = 0, weights_fixed = 0;
  for (const Item& it : items) {
    fixed += charge(it.bytes);
    if (it.buf == &kc_ || it.buf == &vc_)
      kv_total += charge(it.bytes);
    else if (it.buf == &embed_ || it.buf == &lm_head_own_ || it.buf == &final_norm_)
      weights_fixed += charge(it.bytes);
    else
      act_total += charge(it.bytes);
  }
  int64_t blocks_total = 0, max_block = 0;
  weight_bytes_ = weights_fixed;
  for (const BlockLayout& B : layouts_) {
    blocks_total += charge(B.bytes);
    max_block = std::max(max_block, charge(B.bytes));
    weight_bytes_ += B.bytes;
  }
  weight_read_bytes_ = weight_bytes_ - V * d * T * (sh_.tied ? 0 : 1) + d * T;  // one embed row
  // CPU placements decode without the device factors (they serve prefill only)
  if (placement_ == HCI_GPU_PLACE_CPU_SYNC || placement_ == HCI_GPU_PLACE_CPU_ASYNC)
    weight_read_bytes_ -= gpu_comp_bytes_;
  const int64_t need_all = fixed + blocks_total;
  const int64_t cap = p_.memory_budget;
  auto breakdown = [&](int64_t blocks) {
    return "weights " + gib(weights_fixed + blocks) + ", KV cache " + gib(kv_total) +
           ", activations and scratch " + gib(act_total);
  };
  size_t free_b = 0, total_b = 0;
  HCI_CUDA(cudaMemGetInfo(&free_b, &total_b));
  n_resident_ = sh_.n_layers;
  n_off_ = 0;
  n_slots_ = 0;
  if (cap > 0 && need_all > cap) {
    if (!p_.offload)
      fail(HCI_ERR_OUT_OF_MEMORY, "GPU memory budget too small: the model needs " +
                                      gib(need_all) + " on the device (" +
                                      breakdown(blocks_total) + ") but the cap is " + gib(cap) +
                                      " (offloading is off)");
    const int slots = std::min(2, sh_.n_layers);
    const int64_t min_need = fixed + slots * max_block;
    if (min_need > cap)
      fail(HCI_ERR_OUT_OF_MEMORY,
           "GPU memory budget too small: the model needs " + gib(need_all) + " on the device (" +
               breakdown(blocks_total) + "), and even streaming every block from host memory "
               "needs " + gib(min_need) + " (everything but the blocks " + gib(fixed) +
               " plus " + std::to_string(slots) + " staging buffers of " + gib(max_block) +
               "), but the cap is " + gib(cap));
    int k = 0;
    int64_t used = fixed;
    while (k < sh_.n_layers) {
      const int off_if = sh_.n_layers - (k + 1);
      const int64_t s = std::min(2, off_if) * max_block;
      if (used + charge(layouts_[size_t(k)].bytes) + s > cap) break;
      used += charge(layouts_[size_t(k)].bytes);
      ++k;
    }
    n_resident_ = k;
    n_off_ = sh_.n_layers - k;
    n_slots_ = std::min(2, n_off_);
    slot_bytes_ = max_block;
    need_ = used + n_slots_ * max_block;
  } else {
    need_ = need_all;
  }
  if (int64_t(free_b) < need_)
    fail(HCI_ERR_OUT_OF_MEMORY, "the GPU model needs " + gib(need_) + " of device memory (" +
                                    breakdown(blocks_total) + ") but the device has " +
                                    gib(int64_t(free_b)) + " free of " + gib(int64_t(total_b)));
  streamed_bytes_ = 0;
  for (int l = n_resident_; l < sh_.n_layers; ++l) streamed_bytes_ += layouts_[size_t(l)].bytes;

  // Allocate (nothing was allocated before this point).
  alloc_ = std::make_unique<DeviceAllocator>(cap);
  for (const Item& it : items) *it.buf = DeviceBuffer(*alloc_, it.bytes, it.what);
  for (int l = 0; l < n_resident_; ++l)
    arenas_.emplace_back(*alloc_, layouts_[size_t(l)].bytes,
                         "block " + std::to_string(l) + " weights");
  for (int i = 0; i < n_slots_; ++i)
    slots_.emplace_back(*alloc_, slot_bytes_, "staging buffer for streamed blocks");
  for (int l = n_resident_; l < sh_.n_layers; ++l)
    host_arenas_.emplace_back(layouts_[size_t(l)].bytes);

  int* ints = ints_.as<int>();
  tok_d_ = ints;
  seq_d_ = ints + R;
  pos_d_ = ints + 2 * R;
  tgt_d_ = ints + 3 * R;
  seq_len_d_ = ints + 4 * R;
  counter_d_ = reinterpret_cast<unsigned*>(ints + 4 * R + 2 * max_batch_);
  HCI_CUDA(cudaMemset(ints, 0, size_t(ints_.bytes())));
  seq_len_.assign(size_t(max_batch_), 0);

  auto new_stream = [&] {
    if (partition_) return partition_->create_stream();
    cudaStream_t s = nullptr;
    HCI_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  };
  stream_ = new_stream();
  if (n_off_ > 0) {
    copy_stream_ = new_stream();
    for (int i = 0; i < n_slots_; ++i) {
      cudaEvent_t a, b;
      HCI_CUDA(cudaEventCreateWithFlags(&a, cudaEventDisableTiming));
      HCI_CUDA(cudaEventCreateWithFlags(&b, cudaEventDisableTiming));
      ready_.push_back(a);
      slot_free_.push_back(b);
    }
    for (int par = 0; par < 2; ++par)
      for (int j = 0; j < n_off_; ++j) {
        cudaEvent_t a, b;
        HCI_CUDA(cudaEventCreate(&a));
        HCI_CUDA(cudaEventCreate(&b));
        t0_[par].push_back(a);
        t1_[par].push_back(b);
      }
  }
#ifdef HCI_HAVE_CUBLAS
  if (use_cublas_) {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
      fail(HCI_ERR_INTERNAL, "cublasCreate failed");
    cublas_ = h;
    cublasSetStream(h, stream_);
    if (cublasSetWorkspace(h, workspace_.get(), size_t(workspace_.bytes())) !=
        CUBLAS_STATUS_SUCCESS)
      fail(HCI_ERR_INTERNAL, "cublasSetWorkspace failed");
  }
#endif
}

void GpuModel::build_rope_table() {
  const int half = sh_.head_dim / 2;
  std::vector<float> cs(size_t(n_ctx_) * half * 2);
  std::vector<float> inv(static_cast<size_t>(half));
  for (int f = 0; f < half; ++f)
    inv[size_t(f)] = float(1.0 / std::pow(sh_.rope_theta, double(2 * f) / sh_.head_dim));
  for (int pos = 0; pos < n_ctx_; ++pos)
    for (int f = 0; f < half; ++f) {
      const double ang = double(pos) * double(inv[size_t(f)]);
      cs[(size_t(pos) * half + f) * 2] = float(std::cos(ang));
      cs[(size_t(pos) * half + f) * 2 + 1] = float(std::sin(ang));
    }
  HCI_CUDA(cudaMemcpy(rope_.get(), cs.data(), cs.size() * 4, cudaMemcpyHostToDevice));
}

void GpuModel::fill_from_model(const Model& m, int weights_mode, bool comp) {
  const int64_t T = dtype_size(dt_);
  const int d = sh_.d_model;
  std::vector<uint8_t> img;
  for (int l = 0; l < sh_.n_layers; ++l) {
    const BlockLayout& B = layouts_[size_t(l)];
    const bool resident = l < n_resident_;
    uint8_t* dst;
    if (resident) {
      img.assign(size_t(B.bytes), 0);
      dst = img.data();
    } else {
      dst = host_arenas_[size_t(l - n_resident_)].data();
      std::memset(dst, 0, size_t(B.bytes));
    }
    const Block& blk = m.blocks[size_t(l)];
    std::memcpy(dst + B.attn_norm_off, blk.attn_norm.data(), size_t(d) * 4);
    std::memcpy(dst + B.mlp_norm_off, blk.mlp_norm.data(), size_t(d) * 4);
    for (int g = 0; g < 4; ++g)
      for (const LinOp& op : B.ops[g]) {
        int row = 0;
        for (int k : op.kinds) {
          const Linear& lin = blk.lin[size_t(k)];
          if (op.bits == 0) {
            const float* w = weights_mode == HCI_GPU_WEIGHTS_ORIGINAL ? lin.w.data() : lin.weight();
            if (weights_mode == HCI_GPU_WEIGHTS_PACKED && !lin.bits) w = lin.w.data();
            put_f16(dst + op.w_off + int64_t(row) * op.d_in * T, w, int64_t(lin.d_out) * lin.d_in,
                    dt_);
          } else {
            PackedShape ps{lin.d_out, lin.d_in, lin.bits, lin.group_size};
            PackedShape full{op.d_out, op.d_in, op.bits, op.group};
            pack_codes(ps, lin.codes.data(), dst + op.w_off + int64_t(row) * full.lo_row_bytes(),
                       op.bits == 3 ? dst + op.hi_off + int64_t(row) * full.hi_row_bytes()
                                    : nullptr);
            pack_scales(ps, lin.scales.data(), lin.zeros.data(),
                        reinterpret_cast<uint16_t*>(dst + op.sz_off +
                                                    int64_t(row) * full.n_groups() * 4));
          }
          row += lin.d_out;
        }
        if (comp)
          for (const CompSpec& c : op.comps) {
            const Linear& lin = blk.lin[size_t(op.kinds[0])];
            // find the kind whose rows start at c.out_col
            const Linear* src = &lin;
            int r0 = 0;
            for (int k : op.kinds) {
              if (r0 == c.out_col) {
                src = &blk.lin[size_t(k)];
                break;
              }
              r0 += blk.lin[size_t(k)].d_out;
            }
            // A [rank_pad, d_in]: first `rank` rows of A; B [d_out, rank_pad] from B[:, :rank].
            put_f16(dst + c.a_off, src->A.data(), int64_t(c.rank) * src->d_in, dt_);
            std::vector<float> b(size_t(c.d_out) * c.rank_pad, 0.f);
            for (int r = 0; r < c.d_out; ++r)
              for (int j = 0; j < c.rank; ++j)
                b[size_t(r) * c.rank_pad + j] = src->B[size_t(r) * src->max_rank + j];
            put_f16(dst + c.b_off, b.data(), int64_t(b.size()), dt_);
          }
      }
    if (resident)
      HCI_CUDA(cudaMemcpy(arenas_[size_t(l)].get(), img.data(), img.size(), cudaMemcpyHostToDevice));
  }
  std::vector<uint8_t> tab(size_t(sh_.vocab) * d * T);
  put_f16(tab.data(), m.embed.data(), int64_t(sh_.vocab) * d, dt_);
  HCI_CUDA(cudaMemcpy(embed_.get(), tab.data(), tab.size(), cudaMemcpyHostToDevice));
  if (!sh_.tied) {
    put_f16(tab.data(), m.lm_head_own.data(), int64_t(sh_.vocab) * d, dt_);
    HCI_CUDA(cudaMemcpy(lm_head_own_.get(), tab.data(), tab.size(), cudaMemcpyHostToDevice));
  }
  HCI_CUDA(cudaMemcpy(final_norm_.get(), m.final_norm.data(), size_t(d) * 4,
                      cudaMemcpyHostToDevice));
}

void GpuModel::fill_synthetic(uint64_t seed, int bits) {
  const int d = sh_.d_model;
  const float stddev = 0.02f;
  cudaStream_t s = stream_;
  for (int l = 0; l < sh_.n_layers; ++l) {
    const BlockLayout& B = layouts_[size_t(l)];
    const bool resident = l < n_resident_;
    uint8_t* base = static_cast<uint8_t*>(resident ? arenas_[size_t(l)].get() : slots_[0].get());
    fill_const(reinterpret_cast<float*>(base + B.attn_norm_off), d, 1.0f, s);
    fill_const(reinterpret_cast<float*>(base + B.mlp_norm_off), d, 1.0f, s);
    for (int g = 0; g < 4; ++g)
      for (size_t oi = 0; oi < B.ops[g].size(); ++oi) {
        const LinOp& op = B.ops[g][oi];
        const uint64_t id = uint64_t(l + 1) * 64 + uint64_t(g) * 8 + oi;
        if (op.bits == 0) {
          fill_normal(dt_, base + op.w_off, int64_t(op.d_out) * op.d_in, seed, id, stddev, s);
        } else {
          PackedShape ps{op.d_out, op.d_in, op.bits, op.group};
          fill_words(reinterpret_cast<uint32_t*>(base + op.w_off), ps.lo_bytes() / 4, seed, id, s);
          if (op.bits == 3)
            fill_words(reinterpret_cast<uint32_t*>(base + op.hi_off), ps.hi_bytes() / 4, seed,
                       id + 1000000, s);
          const float qmax = float((1 << bits) - 1);
          fill_scales(reinterpret_cast<uint32_t*>(base + op.sz_off),
                      int64_t(op.d_out) * ps.n_groups(), seed, id + 2000000,
                      stddev * std::sqrt(12.0f) / qmax, std::round(qmax / 2), s);
        }
        // device compensation factors: A rows past the rank are zero (the padding to a
        // multiple of 32 is read but adds nothing), so B's padding columns do not matter
        for (size_t ci = 0; ci < op.comps.size(); ++ci) {
          const CompSpec& c = op.comps[ci];
          fill_normal(dt_, base + c.a_off, int64_t(c.rank) * op.d_in, seed, id + 3000000 + ci,
                      stddev, s);
          HCI_CUDA(cudaMemsetAsync(base + c.a_off + int64_t(c.rank) * op.d_in * dtype_size(dt_), 0,
                                   size_t(int64_t(c.rank_pad - c.rank) * op.d_in * dtype_size(dt_)),
                                   s));
          fill_normal(dt_, base + c.b_off, int64_t(c.d_out) * c.rank_pad, seed,
                      id + 4000000 + ci, stddev, s);
        }
      }
    if (!resident) {
      HCI_CUDA(cudaMemcpyAsync(host_arenas_[size_t(l - n_resident_)].data(), base,
                               size_t(B.bytes), cudaMemcpyDeviceToHost, s));
      HCI_CUDA(cudaStreamSynchronize(s));
    }
  }
  fill_normal(dt_, embed_.get(), int64_t(sh_.vocab) * d, seed, 1, stddev, s);
  if (!sh_.tied) fill_normal(dt_, lm_head_own_.get(), int64_t(sh_.vocab) * d, seed, 2, stddev, s);
  fill_const(final_norm_.as<float>(), d, 1.0f, s);
  HCI_CUDA(cudaStreamSynchronize(s));
}

GpuModel::~GpuModel() {
  PartitionScope in_partition(partition_.get());
  if (stream_) cudaStreamSynchronize(stream_);  // the server answers any hand-off still queued
  if (copy_stream_) cudaStreamSynchronize(copy_stream_);
  server_.reset();
  if (chan_host_) cudaFreeHost(chan_host_);
  for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g);
  for (cudaEvent_t e : ready_) cudaEventDestroy(e);
  for (cudaEvent_t e : slot_free_) cudaEventDestroy(e);
  for (int par = 0; par < 2; ++par) {
    for (cudaEvent_t e : t0_[par]) cudaEventDestroy(e);
    for (cudaEvent_t e : t1_[par]) cudaEventDestroy(e);
  }
#ifdef HCI_HAVE_CUBLAS
  if (cublas_) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
#endif
  if (copy_stream_) cudaStreamDestroy(copy_stream_);
  if (stream_) cudaStreamDestroy(stream_);
}

// ---------------------------------------------------------------------------------------------
// Forward

void GpuModel::ensure_copies(int64_t upto) {
  while (copies_ < upto) {
    const int64_t c = copies_;
    const int j = int(c % n_off_);
    const int slot = int(c % n_slots_);
    const int par = int((c / n_off_) % 2);
    HCI_CUDA(cudaStreamWaitEvent(copy_stream_, slot_free_[size_t(slot)], 0));
    HCI_CUDA(cudaEventRecord(t0_[par][size_t(j)], copy_stream_));
    HCI_CUDA(cudaMemcpyAsync(slots_[size_t(slot)].get(), host_arenas_[size_t(j)].data(),
                             size_t(layouts_[size_t(n_resident_ + j)].bytes),
                             cudaMemcpyHostToDevice, copy_stream_));
    HCI_CUDA(cudaEventRecord(t1_[par][size_t(j)], copy_stream_));
    HCI_CUDA(cudaEventRecord(ready_[size_t(slot)], copy_stream_));
    ++copies_;
  }
}

const uint8_t* GpuModel::block_begin(int l) {
  if (l < n_resident_) return arenas_[size_t(l)].as<uint8_t>();
  const int64_t u = uses_;
  ensure_copies(u + n_slots_);
  const int slot = int(u % n_slots_);
  HCI_CUDA(cudaStreamWaitEvent(stream_, ready_[size_t(slot)], 0));
  return slots_[size_t(slot)].as<uint8_t>();
}

void GpuModel::block_end(int l) {
  if (l < n_resident_) return;
  const int64_t u = uses_;
  HCI_CUDA(cudaEventRecord(slot_free_[size_t(u % n_slots_)], stream_));
  ++uses_;
  ensure_copies(uses_ + n_slots_);
}

void GpuModel::matmul(DType t, const void* W, int d_out, int d_in, const void* x, int ldx, int n,
                      float* y, int ldy, bool acc) {
  // The SIMT GEMV streams weights at the bandwidth limit for 1-2 rows; from 3 rows on its fp32
  // FMAs dominate and the tensor-core GEMM (cuBLAS) is faster.
  if (n <= (use_cublas_ ? kGemvFloatRows : kGemvMaxRows)) {
    gemv(t, W, d_out, d_in, x, ldx, n, y, ldy, acc, stream_);
    return;
  }
#ifdef HCI_HAVE_CUBLAS
  if (use_cublas_) {
    const float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    const cudaDataType ct = t == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
    const cublasStatus_t st = cublasGemmEx(
        static_cast<cublasHandle_t>(cublas_), CUBLAS_OP_T, CUBLAS_OP_N, d_out, n, d_in, &alpha, W,
        ct, d_in, x, ct, ldx, &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      fail(HCI_ERR_INTERNAL, "cublasGemmEx failed with status " + std::to_string(int(st)));
    return;
  }
#endif
  gemm_own(t, W, d_out, d_in, x, ldx, n, y, ldy, acc, stream_);
}

namespace {
PackedView packed_view(const LinOp& op, const uint8_t* base) {
  return gpu::packed_view(PackedShape{op.d_out, op.d_in, op.bits, op.group}, base + op.w_off,
                          base + op.hi_off, reinterpret_cast<const uint32_t*>(base + op.sz_off));
}
}  // namespace

bool GpuModel::norm_in_ok(const BlockLayout& B, const uint8_t* base, int g, int n,
                          int point) const {
  // the norm's output must exist as a tensor where the CPU (a compensation point) or the device
  // factors (GPU placement) read it
  if (!norm_in_ || !decode_active_ || n != 1 || point >= 0 || B.ops[size_t(g)].empty())
    return false;
  for (const LinOp& op : B.ops[size_t(g)]) {
    if (op.bits == 0 || (gpu_comp_now_ && !op.comps.empty())) return false;
    if (!packed_norm_in_supported(packed_view(op, base), n)) return false;
  }
  return true;
}

bool GpuModel::run_op(const LinOp& op, const uint8_t* base, const void* in, int ld_in, int n,
                      float* out, int ld_out, bool acc, const NormEpilogue* norm,
                      const NormIn* norm_in) {
  float* y = out + op.out_col;
  const bool comps = gpu_comp_now_ && !op.comps.empty();
  // Decode rows: the op's low-rank branches in two kernels of our own (t = A·x for all of them,
  // then y += B·t). Into an accumulated output (the residual after o and down) they go first, so
  // the backbone product still ends with the fused RMSNorm of the final rows.
  LowRankSet lr;
  bool own_lowrank = false;
  if (comps && decode_active_ && dt_ != DType::F32 && op.comps.size() <= 4) {
    int64_t total = 0;  // t [n, Σ rank_pad] must fit the scratch ct32_ [rows, max rank_pad]
    for (const CompSpec& c : op.comps) {
      lr.a[lr.n] = base + c.a_off;
      lr.b[lr.n] = base + c.b_off;
      lr.rank_pad[lr.n] = c.rank_pad;
      lr.d_out[lr.n] = c.d_out;
      lr.out_col[lr.n] = c.out_col;
      total += c.rank_pad;
      ++lr.n;
    }
    own_lowrank = total * n <= int64_t(rows_) * max_rank_pad_ &&
                  lowrank_decode_supported(lr, op.d_in, n);
  }
  auto run_lowrank = [&] {
    lowrank_project(dt_, lr, op.d_in, in, ld_in, n, ct32_.as<float>(), stream_);
    lowrank_expand(dt_, lr, ct32_.as<float>(), n, y, ld_out, stream_);
  };
  const bool lowrank_first = own_lowrank && acc;
  if (lowrank_first) run_lowrank();
  if ((comps && !lowrank_first) || op.out_col != 0) norm = nullptr;  // it must see the final rows
  bool normed = false;
  if (op.bits == 0) {
    if (norm && n <= (use_cublas_ ? kGemvFloatRows : kGemvMaxRows)) {
      gemv(dt_, base + op.w_off, op.d_out, op.d_in, in, ld_in, n, y, ld_out, acc, stream_, norm);
      normed = true;
    } else {
      matmul(dt_, base + op.w_off, op.d_out, op.d_in, in, ld_in, n, y, ld_out, acc);
    }
  } else {
    const PackedView v = packed_view(op, base);
    if (norm_in) {  // (norm_in_ok checked the kernel; it also fails loudly otherwise)
      qgemv(v, in, ld_in, n, y, ld_out, acc, stream_, norm, norm_in);
      normed = norm != nullptr;
    } else if (norm && n <= kGemvMaxRows && packed_norm_epilogue_supported(v, n)) {
      qgemv(v, in, ld_in, n, y, ld_out, acc, stream_, norm);
      normed = true;
    } else if (n <= kGemvMaxRows && (packed_gemv_supported(v, n) || !use_cublas_)) {
      qgemv(v, in, ld_in, n, y, ld_out, acc, stream_);
    } else {
      for (int r0 = 0; r0 < op.d_out; r0 += deq_rows_) {
        const int rows = std::min(deq_rows_, op.d_out - r0);
        dequant(v, r0, rows, deq_.get(), stream_);
        matmul(DType::F16, deq_.get(), rows, op.d_in, in, ld_in, n, y + r0, ld_out, acc);
      }
    }
  }
  if (!comps || lowrank_first) return normed;
  if (own_lowrank) {
    run_lowrank();
    return normed;
  }
  for (const CompSpec& c : op.comps) {
    matmul(dt_, base + c.a_off, c.rank_pad, op.d_in, in, ld_in, n, ct32_.as<float>(), c.rank_pad,
           false);
    to_dtype(dt_, ct32_.as<float>(), int64_t(n) * c.rank_pad, ctT_.get(), stream_);
    matmul(dt_, base + c.b_off, c.d_out, c.rank_pad, ctT_.get(), c.rank_pad, n, y + c.out_col,
           ld_out, true);
  }
  return normed;
}

bool GpuModel::gate_up_fused(const BlockLayout& B, const uint8_t* base, int n,
                             const NormIn* norm_in) {
  // (callers skip it when the CPU compensates gate/up: the correction comes before SiLU)
  // One fused gate/up op without compensation: the decode kernels apply SiLU gating in their
  // epilogue and write the MLP hidden state directly.
  if (!fuse_gate_up_ || n > kGemvMaxRows || B.ops[2].size() != 1) return false;
  const LinOp& op = B.ops[2][0];
  if ((gpu_comp_now_ && !op.comps.empty()) || op.kinds.size() != 2) return false;
  const int dff = sh_.d_ff, d = sh_.d_model;
  if (op.bits == 0) {
    if (!fuse_float_silu_ || (use_cublas_ && n > kGemvFloatRows)) return false;
    gemv_silu(dt_, base + op.w_off, dff, d, xn_.get(), d, n, h_.get(), dff, stream_);
    return true;
  }
  const PackedView v = packed_view(op, base);
  return qgemv_silu(v, dff, xn_.get(), d, n, h_.get(), dff, stream_, norm_in);
}

void GpuModel::run_block(int l, const uint8_t* base, int n) {
  const BlockLayout& B = layouts_[size_t(l)];
  const int d = sh_.d_model, qd = sh_.qd(), kvd = sh_.kvd(), dff = sh_.d_ff;
  const int ldqkv = qd + 2 * kvd;
  const float eps = float(sh_.eps);
  const int64_t layer_kv = int64_t(max_batch_) * n_ctx_ * kvd * dtype_size(kv_);
  uint8_t* kc = kc_.as<uint8_t>() + l * layer_kv;
  uint8_t* vc = vc_.as<uint8_t>() + l * layer_kv;
  float* x = x_.as<float>();
  // Decode steps (one row per sequence, resident weights): the residual GEMVs (o, down) end with
  // the next RMSNorm, and attention does RoPE and the KV store itself.
  const bool fuse = decode_active_ && fuse_norm_ && n_off_ == 0;
  // CPU compensation points of this block's four input groups (-1: none this pass). A point's
  // correction must land before the group's outputs are used, so it blocks the fusions that
  // consume them inside the product (the RMSNorm epilogue, gate/up + SiLU).
  int pt[4] = {-1, -1, -1, -1};
  for (int g = 0; g < 4; ++g) pt[g] = point_at(l, g);
  // The lean GEMV's early PDL trigger for group g's product: not next to a hand-off (a point on
  // its own group, whose import follows it, or on the next group, whose export follows it): there
  // it cost cpu-async rank 8 299.5 -> 273.0 tok/s and cpu-sync 197.4 -> 190.1 (H200, same call),
  // while the bare backbone gained 589.7 -> 605.3. (Captured into the graph with the launch.)
  const int pt_after = l + 1 < sh_.n_layers ? point_at(l + 1, 0) : -1;
  auto early_for = [&](int g) {
    const int next = g < 3 ? pt[g + 1] : pt_after;
    set_qgemv4_early_trigger(q4_early_always_ || (q4_early_ && pt[g] < 0 && next < 0));
    set_qgemv4_ksplit(q4_ksplit_);
  };
  // Decode with CPU compensation: a point's import kernel also hands the next point its input
  // (comp_import_then): after o and down the corrected residual rows, raw (the CPU applies the
  // RMSNorm before q/k/v and gate/up itself, and the next product normalizes on its own, as
  // without hand-offs), after gate/up the SiLU-gated rows it computes.
  const bool then = fuse_comp_ && host_comp_now_ && decode_active_ && n <= 16;
  auto then_add = [&](int next) {
    CompThen th;
    th.op = kThenAdd;
    th.d = d;
    th.next = next;
    return th;
  };
  // The norms before q/k/v (group 0) and gate/up (group 2): in the GEMVs' prologue where they all
  // can (returns the NormIn to pass them), else a norm kernel writing xn_ (returns nullptr).
  NormIn nin_attn, nin_mlp;
  auto norm_before = [&](int g, int64_t gamma_off, NormIn& nin) -> const NormIn* {
    const float* gamma = reinterpret_cast<const float*>(base + gamma_off);
    // a point whose residual rows an import already handed over needs no normed tensor
    if (norm_in_ok(B, base, g, n, pt[g] >= 0 && exported_ == pt[g] ? -1 : pt[g])) {
      nin.x = x;
      nin.gamma = gamma;
      nin.eps = eps;
      return &nin;
    }
    rmsnorm(dt_, x, d, gamma, n, d, eps, xn_.get(), d, stream_);
    return nullptr;
  };
  const NormIn* qkv_norm_in = xn_ready_ ? nullptr : norm_before(0, B.attn_norm_off, nin_attn);
  xn_ready_ = false;
  mark(kProfNorm);
  NormEpilogue ne;
  ne.counter = counter_d_;
  ne.eps = eps;
  ne.out = xn_.get();
  if (pt[0] >= 0) begin_point(pt[0], xn_.get(), d, d, n);
  early_for(0);
  for (const LinOp& op : B.ops[0])
    run_op(op, base, xn_.get(), d, n, qkv_.as<float>(), ldqkv, false, nullptr, qkv_norm_in);
  if (pt[0] >= 0) end_point(pt[0], qkv_.as<float>(), ldqkv, n);
  mark(kProfQkv);
  if (decode_active_ && fuse_attn_) {
    attention_decode(kv_, dt_, qkv_.as<float>(), ldqkv, n, sh_.n_heads, sh_.n_kv_heads,
                     sh_.head_dim, rope_.as<float2>(), seq_d_, pos_d_, kc, vc, n_ctx_, att_.get(),
                     qd, stream_, attn_split_);
    mark(kProfAttn);
  } else {
    rope_store(kv_, qkv_.as<float>(), ldqkv, n, sh_.n_heads, sh_.n_kv_heads, sh_.head_dim,
               rope_.as<float2>(), seq_d_, pos_d_, kc, vc, n_ctx_, stream_);
    mark(kProfRope);
    attention(kv_, dt_, qkv_.as<float>(), ldqkv, n, sh_.n_heads, sh_.n_kv_heads, sh_.head_dim, kc,
              vc, n_ctx_, seq_d_, pos_d_, att_.get(), qd, stream_);
    mark(kProfAttn);
  }
  bool normed = false;
  ne.gamma = reinterpret_cast<const float*>(base + B.mlp_norm_off);
  if (pt[1] >= 0) begin_point(pt[1], att_.get(), qd, qd, n);
  early_for(1);
  for (const LinOp& op : B.ops[1])
    normed = run_op(op, base, att_.get(), qd, n, x, d, true,
                    fuse && pt[1] < 0 && B.ops[1].size() == 1 ? &ne : nullptr);
  if (pt[1] >= 0) {
    if (then) {
      end_point_then(pt[1], x, d, n, then_add(pt[2]));
    } else {
      end_point(pt[1], x, d, n);
    }
  }
  mark(kProfO);
  const NormIn* mlp_norm_in = normed ? nullptr : norm_before(2, B.mlp_norm_off, nin_mlp);
  mark(kProfNorm);
  if (pt[2] >= 0) begin_point(pt[2], xn_.get(), d, d, n);
  early_for(2);
  if (pt[2] >= 0 || !gate_up_fused(B, base, n, mlp_norm_in)) {
    for (const LinOp& op : B.ops[2])
      run_op(op, base, xn_.get(), d, n, gu_.as<float>(), 2 * dff, false, nullptr, mlp_norm_in);
    if (pt[2] >= 0 && then) {
      CompThen th;
      th.op = kThenSilu;
      th.d = dff;
      th.dst = h_.get();
      th.ld_dst = dff;
      th.next = pt[3];
      end_point_then(pt[2], gu_.as<float>(), 2 * dff, n, th);
      mark(kProfGateUp);
    } else {
      if (pt[2] >= 0) end_point(pt[2], gu_.as<float>(), 2 * dff, n);
      mark(kProfGateUp);
      silu_mul(dt_, gu_.as<float>(), 2 * dff, dff, n, h_.get(), dff, stream_);
      mark(kProfSilu);
    }
  } else {
    mark(kProfGateUp);
  }
  // the norm after down: the next block's attention norm, or the final norm
  if (fuse)
    ne.gamma = l + 1 < sh_.n_layers
                   ? reinterpret_cast<const float*>(arenas_[size_t(l + 1)].as<uint8_t>() +
                                                    layouts_[size_t(l + 1)].attn_norm_off)
                   : final_norm_.as<float>();
  normed = false;
  if (pt[3] >= 0) begin_point(pt[3], h_.get(), dff, dff, n);
  early_for(3);
  for (const LinOp& op : B.ops[3])
    normed = run_op(op, base, h_.get(), dff, n, x, d, true,
                    fuse && pt[3] < 0 && B.ops[3].size() == 1 ? &ne : nullptr);
  if (pt[3] >= 0) {
    // the corrected residual, handed over raw as the next block's q/k/v input (the server applies
    // that block's attention norm; the GPU's own norm runs in the next GEMV or before the head)
    const bool last = l + 1 == sh_.n_layers;
    if (then) {
      end_point_then(pt[3], x, d, n, then_add(last ? -1 : point_at(l + 1, 0)));
    } else {
      end_point(pt[3], x, d, n);
    }
  }
  xn_ready_ = normed;
  mark(kProfDown);
}

void GpuModel::print_kernel_timeline(int nb, int prompt_len) {
  if (!kernel_stamps_compiled()) {
    std::fprintf(stderr, "kernel timeline: this build records no kernel stamps (configure with "
                         "-DHCI_KERNEL_STAMPS=ON)\n");
    return;
  }
  for (int b = 0; b < nb; ++b) seq_len_[size_t(b)] = prompt_len;
  HCI_CUDA(cudaMemcpyAsync(seq_len_d_, seq_len_.data(), size_t(nb) * 4, cudaMemcpyHostToDevice,
                           stream_));
  constexpr unsigned kCap = 1u << 16;
  DeviceBuffer buf(*alloc_, int64_t(kCap) * int64_t(sizeof(KernelStamp)), "kernel stamps");
  HCI_CUDA(cudaMemsetAsync(buf.get(), 0, size_t(buf.bytes()), stream_));
  sync();
  bind_kernel_stamps(buf.as<KernelStamp>(), kCap);
  try {
    launch_decode(nb, true, prompt_len + 1);
    sync();
  } catch (...) {
    bind_kernel_stamps(nullptr, 0);
    throw;
  }
  bind_kernel_stamps(nullptr, 0);
  std::vector<KernelStamp> host(kCap);
  HCI_CUDA(cudaMemcpy(host.data(), buf.get(), host.size() * sizeof(KernelStamp),
                      cudaMemcpyDeviceToHost));
  for (int b = 0; b < nb; ++b) seq_len_[size_t(b)] = prompt_len + 1;
  const std::string r = kernel_timeline_report(host.data(), host.size(), bits_, group_);
  std::fprintf(stderr, "%s", r.c_str());
}

void GpuModel::run_layers(int n) {
  // Which compensation this pass applies: the device factors (GPU placement, or prefill of a CPU
  // placement with prefill_comp GPU), or the CPU's through the channel.
  const bool prefill = n > kGemvMaxRows;
  host_comp_now_ = server_ && !(prefill && p_.prefill_comp == HCI_GPU_PREFILL_COMP_GPU);
  gpu_comp_now_ = placement_ == HCI_GPU_PLACE_GPU || (server_ && !host_comp_now_);
  if (server_) check_server();
  exported_ = -1;
  if (host_comp_now_) comp_pass_begin(chan_, stream_);
  embed(dt_, embed_.get(), sh_.d_model, tok_d_, n, x_.as<float>(), stream_);
  mark(kProfOther);
  for (int l = 0; l < sh_.n_layers; ++l) {
    const uint8_t* base = block_begin(l);
    run_block(l, base, n);
    block_end(l);
  }
  if (host_comp_now_) comp_pass_end(chan_, decode_active_, stream_);
}

void GpuModel::lm_head(const void* xn, int n, float* logits) {
  const void* w = sh_.tied ? embed_.get() : lm_head_own_.get();
  matmul(dt_, w, sh_.vocab, sh_.d_model, xn, sh_.d_model, n, logits, sh_.vocab, false);
}

void GpuModel::decode_step(int nb) {
  mark(kProfOther);
  decode_begin(nb, seq_len_d_, seq_d_, pos_d_, stream_);
  decode_active_ = true;
  xn_ready_ = false;
  struct Off {
    GpuModel* g;
    ~Off() {
      g->decode_active_ = false;
      g->xn_ready_ = false;
    }
  } off{this};
  run_layers(nb);
  if (!xn_ready_)
    rmsnorm(dt_, x_.as<float>(), sh_.d_model, final_norm_.as<float>(), nb, sh_.d_model,
            float(sh_.eps), xn_.get(), sh_.d_model, stream_);
  mark(kProfNorm);
  lm_head(xn_.get(), nb, logits_.as<float>());
  mark(kProfHead);
  argmax_rows(logits_.as<float>(), sh_.vocab, nb, tok_d_, stream_);
  decode_end(nb, seq_len_d_, stream_);
  mark(kProfOther);
}

void GpuModel::mark(int cat) {
  if (!prof_) return;
  cudaEvent_t e;
  HCI_CUDA(cudaEventCreate(&e));
  HCI_CUDA(cudaEventRecord(e, stream_));
  prof_->emplace_back(cat, e);
}

std::string GpuModel::profile_step(int nb) {
  static const char* names[kProfCats] = {"other", "rmsnorm", "qkv", "rope+kv", "attention",
                                         "o_proj", "gate_up", "silu", "down", "lm_head"};
  std::vector<std::pair<int, cudaEvent_t>> ev;
  prof_ = &ev;
  try {
    decode_step(nb);  // eager, with an event after every stage (breaks PDL overlap)
  } catch (...) {
    prof_ = nullptr;
    throw;
  }
  prof_ = nullptr;
  sync();
  double ms[kProfCats] = {0}, total = 0;
  for (size_t i = 1; i < ev.size(); ++i) {
    float t = 0;
    HCI_CUDA(cudaEventElapsedTime(&t, ev[i - 1].second, ev[i].second));
    ms[ev[i].first] += t;
    total += t;
  }
  for (auto& [c, e] : ev) cudaEventDestroy(e);
  std::string out = "profile of one eager decode step (batch " + std::to_string(nb) + "): total " +
                    std::to_string(total) + " ms;";
  for (int c = 0; c < kProfCats; ++c)
    if (ms[c] > 0) out += std::string(" ") + names[c] + " " + std::to_string(ms[c]);
  return out;
}

int GpuModel::point_at(int l, int g) const {
  if (!host_comp_now_) return -1;
  const int p = point_of_[size_t(l * 4 + g)];
  // decode passes hand over only the points the rank controller keeps on
  if (p >= 0 && decode_active_ && !point_on_.empty() && !point_on_[size_t(p)]) return -1;
  return p;
}

void GpuModel::refresh_points() {
  if (!server_) return;
  const uint64_t v = server_->active_points(point_on_);
  if (v == points_version_) return;
  // Older sets' graphs go (after the launched steps finish); the new set's, the all-off set's
  // and the last set's with points on (the controller returns to it after measuring the
  // backbone alone) stay.
  bool synced = false;
  const uint64_t last = last_set_version_;
  if (v != 0) last_set_version_ = v;
  for (auto it = graphs_.begin(); it != graphs_.end();) {
    const uint64_t gv = std::get<0>(it->first);
    if (gv == 0 || gv == v || gv == last) {
      ++it;
      continue;
    }
    if (!synced) sync();
    synced = true;
    cudaGraphExecDestroy(it->second);
    it = graphs_.erase(it);
  }
  points_version_ = v;
}

// A head's positions over two blocks (a cluster) from 1024 positions on, batch 1, where the
// multiprocessors hold four blocks per head: H100 W4 Llama-2-7B, same call, one against two
// blocks: prompt 128 543.7 / 525.9 tok/s, 1024 438.3 / 454.3, 3000 310.2 / 361.3, 6000 210.2 /
// 274.5; Llama-3-8B at 1024 396.9 / 412.7; 16 SMs at 128 140.1 / 130.7; batch 4 at 1024 1159.5 /
// 1090.0. HCINFER_ATTN_SPLIT fixes it for every step (the process-wide setting).
int GpuModel::attention_split_for(int nb, int max_len) const {
  if (attn_split_fixed_) return attention_split();
  return nb == 1 && max_len >= 1024 && sm_count_ >= 4 * sh_.n_heads &&
                 attention_split_supported()
             ? 2
             : 1;
}

void GpuModel::launch_decode(int nb, bool use_graph, int max_len) {
  refresh_points();
  attn_split_ = attention_split_for(nb, max_len);
  if (!use_graph || n_off_ > 0) {
    decode_step(nb);
    return;
  }
  const std::tuple<uint64_t, int, int> key(points_version_, nb, attn_split_);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    const auto t_capture = std::chrono::steady_clock::now();
    cudaGraph_t g = nullptr;
    HCI_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      decode_step(nb);
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    HCI_CUDA(cudaStreamEndCapture(stream_, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) cuda_fail(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    it = graphs_.emplace(key, exec).first;
    if (std::getenv("HCINFER_CONTROLLER_LOG"))
      std::fprintf(stderr, "decode graph captured in %.2f ms (point set %llu)\n",
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                             t_capture)
                       .count(),
                   (unsigned long long)points_version_);
  }
  HCI_CUDA(cudaGraphLaunch(it->second, stream_));
}

void GpuModel::sync() { HCI_CUDA(cudaStreamSynchronize(stream_)); }

void GpuModel::set_seq_len(int seq, int len) {
  seq_len_[size_t(seq)] = len;
  HCI_CUDA(cudaMemcpyAsync(seq_len_d_ + seq, &seq_len_[size_t(seq)], 4, cudaMemcpyHostToDevice,
                           stream_));
  sync();  // the host value must outlive the copy
}

void GpuModel::upload_rows(const int32_t* tokens, int n, int seq, int pos0,
                           const int32_t* targets) {
  std::vector<int32_t> h(size_t(4) * rows_, 0);
  for (int i = 0; i < n; ++i) {
    h[size_t(i)] = tokens[i];
    h[size_t(rows_ + i)] = seq;
    h[size_t(2 * rows_ + i)] = pos0 + i;
    h[size_t(3 * rows_ + i)] = targets ? targets[i] : -1;
  }
  // From pageable memory: returns once the data is staged, so `h` may go.
  HCI_CUDA(cudaMemcpyAsync(tok_d_, h.data(), h.size() * 4, cudaMemcpyHostToDevice, stream_));
}

// ---------------------------------------------------------------------------------------------
// Public operations

void GpuModel::reset(int seq) {
  if (seq < -1 || seq >= max_batch_)
    fail(HCI_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(seq) + " out of range [0, " +
                                       std::to_string(max_batch_) + ")");
  if (seq == -1) {
    for (int i = 0; i < max_batch_; ++i) seq_len_[size_t(i)] = 0;
    HCI_CUDA(cudaMemcpyAsync(seq_len_d_, seq_len_.data(), size_t(max_batch_) * 4,
                             cudaMemcpyHostToDevice, stream_));
    sync();
  } else {
    set_seq_len(seq, 0);
  }
}

int GpuModel::n_past(int seq) const {
  if (seq < 0 || seq >= max_batch_) return -1;
  return seq_len_[size_t(seq)];
}

void GpuModel::prefill(int seq, const int32_t* tokens, int n, float* logits_out) {
  if (seq < 0 || seq >= max_batch_)
    fail(HCI_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(seq) + " out of range");
  if (n <= 0) fail(HCI_ERR_INVALID_ARGUMENT, "prefill needs at least one token");
  const int past = seq_len_[size_t(seq)];
  if (past + n > n_ctx_)
    fail(HCI_ERR_INVALID_ARGUMENT, "KV cache full: " + std::to_string(past) + " + " +
                                       std::to_string(n) + " tokens exceed n_ctx " +
                                       std::to_string(n_ctx_));
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= sh_.vocab)
      fail(HCI_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " at position " +
                                         std::to_string(i) + " is outside the vocabulary [0, " +
                                         std::to_string(sh_.vocab) + ")");
  for (int i0 = 0; i0 < n; i0 += rows_) {
    const int rows = std::min(rows_, n - i0);
    upload_rows(tokens + i0, rows, seq, past + i0, nullptr);
    run_layers(rows);
    if (i0 + rows == n) {
      const int last = rows - 1;
      rmsnorm(dt_, x_.as<float>() + int64_t(last) * sh_.d_model, sh_.d_model,
              final_norm_.as<float>(), 1, sh_.d_model, float(sh_.eps), xn_.get(), sh_.d_model,
              stream_);
      lm_head(xn_.get(), 1, logits_.as<float>());
    }
  }
  set_seq_len(seq, past + n);
  if (logits_out) {
    HCI_CUDA(cudaMemcpyAsync(logits_out, logits_.get(), size_t(sh_.vocab) * 4,
                             cudaMemcpyDeviceToHost, stream_));
    sync();
  }
}

void GpuModel::decode(const int32_t* tokens, int nb, float* logits_out) {
  if (nb < 1 || nb > max_batch_)
    fail(HCI_ERR_INVALID_ARGUMENT, "decode: n_seqs must be 1.." + std::to_string(max_batch_));
  for (int i = 0; i < nb; ++i) {
    if (tokens[i] < 0 || tokens[i] >= sh_.vocab)
      fail(HCI_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " of sequence " +
                                         std::to_string(i) + " is outside the vocabulary");
    if (seq_len_[size_t(i)] + 1 > n_ctx_)
      fail(HCI_ERR_INVALID_ARGUMENT, "KV cache of sequence " + std::to_string(i) + " is full (" +
                                         std::to_string(n_ctx_) + " tokens)");
  }
  HCI_CUDA(cudaMemcpyAsync(tok_d_, tokens, size_t(nb) * 4, cudaMemcpyHostToDevice, stream_));
  int longest = 0;
  for (int i = 0; i < nb; ++i) longest = std::max(longest, seq_len_[size_t(i)] + 1);
  launch_decode(nb, use_graphs_, longest);
  if (logits_out)
    HCI_CUDA(cudaMemcpyAsync(logits_out, logits_.get(), size_t(nb) * sh_.vocab * 4,
                             cudaMemcpyDeviceToHost, stream_));
  sync();
  for (int i = 0; i < nb; ++i) ++seq_len_[size_t(i)];
}

void GpuModel::generate_greedy(const int32_t* prompt, int n_prompt, int n_new, int eos,
                               int32_t* out, int32_t* n_out) {
  *n_out = 0;
  reset(0);
  if (n_new == 0) return;
  if (n_prompt + n_new - 1 > n_ctx_)
    fail(HCI_ERR_INVALID_ARGUMENT, "prompt and new tokens exceed n_ctx " + std::to_string(n_ctx_));
  prefill(0, prompt, n_prompt, nullptr);
  argmax_rows(logits_.as<float>(), sh_.vocab, 1, tok_d_, stream_);
  for (int i = 0; i < n_new; ++i) {
    int32_t t = 0;
    HCI_CUDA(cudaMemcpyAsync(&t, tok_d_, 4, cudaMemcpyDeviceToHost, stream_));
    sync();
    out[i] = t;
    *n_out = i + 1;
    if (t == eos || i + 1 == n_new) break;
    launch_decode(1, use_graphs_, seq_len_[0] + 1);  // reads tok_d_[0], writes the next argmax
    ++seq_len_[0];
  }
  sync();
}

void GpuModel::eval_nll(const int32_t* tokens, int64_t n_tokens, int seq_len, int max_windows,
                        hci_eval_result* out, int64_t* progress, const int32_t* cancel) {
  if (seq_len < 2) fail(HCI_ERR_INVALID_ARGUMENT, "eval: seq_len must be at least 2");
  if (seq_len > n_ctx_)
    fail(HCI_ERR_INVALID_ARGUMENT, "eval: seq_len " + std::to_string(seq_len) +
                                       " exceeds the GPU model's n_ctx " + std::to_string(n_ctx_));
  if (max_windows < 0) fail(HCI_ERR_INVALID_ARGUMENT, "eval: max_windows must be >= 0");
  int64_t windows = n_tokens / seq_len;
  if (max_windows > 0 && windows > max_windows) windows = max_windows;
  if (windows == 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "eval: " + std::to_string(n_tokens) +
                                       " tokens do not fill one window of " +
                                       std::to_string(seq_len));
  for (int64_t i = 0; i < windows * seq_len; ++i)
    if (tokens[i] < 0 || tokens[i] >= sh_.vocab)
      fail(HCI_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " at position " +
                                         std::to_string(i) + " is outside the vocabulary");
  const auto t_start = std::chrono::steady_clock::now();
  const int d = sh_.d_model, V = sh_.vocab;
  double total = 0;
  std::vector<float> nll(static_cast<size_t>(rows_));
  std::vector<int32_t> tgt(static_cast<size_t>(rows_));
  for (int64_t w = 0; w < windows; ++w) {
    if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED))
      fail(HCI_ERR_CANCELLED, "evaluation cancelled");
    const int32_t* t = tokens + w * seq_len;
    reset(0);
    double s = 0;
    for (int i0 = 0; i0 < seq_len; i0 += rows_) {
      const int rows = std::min(rows_, seq_len - i0);
      for (int i = 0; i < rows; ++i) tgt[size_t(i)] = i0 + i + 1 < seq_len ? t[i0 + i + 1] : -1;
      upload_rows(t + i0, rows, 0, i0, tgt.data());
      run_layers(rows);
      rmsnorm(dt_, x_.as<float>(), d, final_norm_.as<float>(), rows, d, float(sh_.eps), xn_.get(),
              d, stream_);
      for (int r0 = 0; r0 < rows; r0 += logit_rows_) {
        const int rr = std::min(logit_rows_, rows - r0);
        lm_head(static_cast<const uint8_t*>(xn_.get()) + int64_t(r0) * d * dtype_size(dt_), rr,
                logits_.as<float>());
        nll_rows(logits_.as<float>(), V, tgt_d_ + r0, rr, nll_.as<float>() + r0, stream_);
      }
      HCI_CUDA(cudaMemcpyAsync(nll.data(), nll_.get(), size_t(rows) * 4, cudaMemcpyDeviceToHost,
                               stream_));
      sync();
      for (int i = 0; i < rows; ++i) s += double(nll[size_t(i)]);
    }
    if (!std::isfinite(s))
      fail(HCI_ERR_NUMERIC, "eval: non-finite NLL in window " + std::to_string(w));
    total += s;
    if (progress) __atomic_add_fetch(progress, 1, __ATOMIC_RELAXED);
  }
  reset(0);
  out->nll_sum = total;
  out->n_windows = windows;
  out->n_predicted = windows * (seq_len - 1);
  out->seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
}

void GpuModel::read_pcie(int64_t pass, double* ms) {
  *ms = 0;
  const int par = int(pass % 2);
  for (int j = 0; j < n_off_; ++j) {
    float e = 0;
    HCI_CUDA(cudaEventElapsedTime(&e, t0_[par][size_t(j)], t1_[par][size_t(j)]));
    *ms += e;
  }
}

void GpuModel::bench(const hci_gpu_bench_params& p, hci_gpu_bench_result* out) {
  if (p.batch < 1 || p.batch > max_batch_)
    fail(HCI_ERR_INVALID_ARGUMENT, "bench: batch must be 1.." + std::to_string(max_batch_) +
                                       " (the model's max_batch)");
  if (p.prompt_len < 1 || p.new_tokens < 1 || p.repeats < 1 || p.warmup < 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "bench: prompt_len, new_tokens, repeats must be >= 1");
  if (p.prompt_len + p.new_tokens > n_ctx_)
    fail(HCI_ERR_INVALID_ARGUMENT, "bench: prompt_len + new_tokens = " +
                                       std::to_string(p.prompt_len + p.new_tokens) +
                                       " exceeds n_ctx " + std::to_string(n_ctx_));
  const int B = p.batch;
  std::mt19937_64 rng(p.seed);
  std::vector<std::vector<int32_t>> prompts(size_t(B), std::vector<int32_t>(size_t(p.prompt_len)));
  for (auto& pr : prompts)
    for (auto& t : pr) t = int32_t(rng() % uint64_t(sh_.vocab));
  std::vector<int32_t> seed_tokens(static_cast<size_t>(B));
  cudaEvent_t e0, e1, e2, e3;
  HCI_CUDA(cudaEventCreate(&e0));
  HCI_CUDA(cudaEventCreate(&e1));
  HCI_CUDA(cudaEventCreate(&e2));
  HCI_CUDA(cudaEventCreate(&e3));
  std::vector<double> prefill_ms, decode_ms, pcie_ms;
  const bool graph = p.use_graph != 0 && n_off_ == 0;
  const bool controlled = server_ && server_->controller();
  cudaEvent_t ahead[2] = {nullptr, nullptr};
  if (controlled)
    for (cudaEvent_t& a : ahead) HCI_CUDA(cudaEventCreateWithFlags(&a, cudaEventDisableTiming));
  try {
    for (int rep = 0; rep < p.warmup + p.repeats; ++rep) {
      const bool timed = rep >= p.warmup;
      if (rep == p.warmup) reset_comp_stats();  // statistics cover the timed repeats
      reset(-1);
      HCI_CUDA(cudaEventRecord(e0, stream_));
      for (int b = 0; b < B; ++b) {
        const int32_t* pr = prompts[size_t(b)].data();
        for (int i0 = 0; i0 < p.prompt_len; i0 += rows_) {
          const int rows = std::min(rows_, p.prompt_len - i0);
          upload_rows(pr + i0, rows, b, i0, nullptr);
          run_layers(rows);
        }
      }
      HCI_CUDA(cudaEventRecord(e1, stream_));
      sync();
      for (int b = 0; b < B; ++b) seq_len_[size_t(b)] = p.prompt_len;
      HCI_CUDA(cudaMemcpyAsync(seq_len_d_, seq_len_.data(), size_t(B) * 4,
                               cudaMemcpyHostToDevice, stream_));
      for (int b = 0; b < B; ++b) seed_tokens[size_t(b)] = prompts[size_t(b)].back();
      HCI_CUDA(cudaMemcpyAsync(tok_d_, seed_tokens.data(), size_t(B) * 4,
                               cudaMemcpyHostToDevice, stream_));
      double pcie = 0;
      HCI_CUDA(cudaEventRecord(e2, stream_));
      for (int t = 0; t < p.new_tokens; ++t) {
        const int64_t pass = n_off_ ? uses_ / n_off_ : 0;
        // With the rank controller the host stays at most two steps ahead, so a change of its
        // point set reaches the GPU within two steps (the steps queued before it still run).
        if (controlled && t >= 2) HCI_CUDA(cudaEventSynchronize(ahead[t % 2]));
        launch_decode(B, graph, p.prompt_len + t + 1);
        if (controlled) HCI_CUDA(cudaEventRecord(ahead[t % 2], stream_));
        if (n_off_) {
          sync();
          double ms = 0;
          read_pcie(pass, &ms);
          pcie += ms;
        }
      }
      HCI_CUDA(cudaEventRecord(e3, stream_));
      sync();
      for (int b = 0; b < B; ++b) seq_len_[size_t(b)] += p.new_tokens;
      if (timed) {
        float a = 0, c = 0;
        HCI_CUDA(cudaEventElapsedTime(&a, e0, e1));
        HCI_CUDA(cudaEventElapsedTime(&c, e2, e3));
        prefill_ms.push_back(a);
        decode_ms.push_back(c);
        pcie_ms.push_back(pcie / p.new_tokens);
      }
    }
  } catch (...) {
    for (cudaEvent_t e : {e0, e1, e2, e3, ahead[0], ahead[1]})
      if (e) cudaEventDestroy(e);
    throw;
  }
  for (cudaEvent_t e : {e0, e1, e2, e3, ahead[0], ahead[1]})
    if (e) cudaEventDestroy(e);
  print_handoff_trace();
  if (kernel_stamps_ && graph) print_kernel_timeline(B, p.prompt_len);
  if (profile_ && n_off_ == 0) {
    // from the end of the prompts again (the cache is full after the timed steps)
    for (int b = 0; b < B; ++b) seq_len_[size_t(b)] = p.prompt_len;
    HCI_CUDA(cudaMemcpyAsync(seq_len_d_, seq_len_.data(), size_t(B) * 4, cudaMemcpyHostToDevice,
                             stream_));
    const std::string line = profile_step(B);
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  reset(-1);
  const double dm = median(decode_ms), pm = median(prefill_ms);
  std::memset(out, 0, sizeof *out);
  out->decode_ms_per_step = dm / p.new_tokens;
  out->decode_tokens_per_s = dm > 0 ? double(B) * p.new_tokens / (dm / 1000.0) : 0;
  out->decode_ms_per_step_min = *std::min_element(decode_ms.begin(), decode_ms.end()) / p.new_tokens;
  out->decode_ms_per_step_max = *std::max_element(decode_ms.begin(), decode_ms.end()) / p.new_tokens;
  out->prefill_ms = pm;
  out->prefill_tokens_per_s = pm > 0 ? double(B) * p.prompt_len / (pm / 1000.0) : 0;
  out->pcie_ms_per_step = median(pcie_ms);
  out->weight_bytes_per_step = weight_read_bytes_ + int64_t(B - 1) * sh_.d_model * dtype_size(dt_);
  // positions read per step: sum over sequences of (prompt + t + 1), averaged over t
  const double mean_pos = p.prompt_len + (p.new_tokens + 1) / 2.0;
  out->kv_bytes_per_step = int64_t(double(B) * mean_pos * 2.0 * sh_.kvd() * dtype_size(kv_) *
                                   sh_.n_layers);
  out->streamed_bytes_per_step = streamed_bytes_;
  out->peak_device_bytes = alloc_->peak();
  out->graph_used = graph ? 1 : 0;
  out->steps = p.new_tokens;
}

void GpuModel::info(hci_gpu_model_info* o) const {
  std::memset(o, 0, sizeof *o);
  o->n_layers = sh_.n_layers;
  o->d_model = sh_.d_model;
  o->n_heads = sh_.n_heads;
  o->n_kv_heads = sh_.n_kv_heads;
  o->head_dim = sh_.head_dim;
  o->d_ff = sh_.d_ff;
  o->vocab_size = sh_.vocab;
  o->n_ctx = n_ctx_;
  o->max_batch = max_batch_;
  o->bits = bits_;
  o->group_size = bits_ > 0 ? group_ : 0;  // -1 per row, -2 mixed
  o->dtype = int32_t(dt_);
  o->kv_dtype = int32_t(kv_);
  o->resident_layers = n_resident_;
  o->offloaded_layers = n_off_;
  o->gemm = use_cublas_ ? HCI_GPU_GEMM_CUBLAS : HCI_GPU_GEMM_OWN;
  o->weight_bytes = weight_bytes_;
  o->weight_bytes_per_token = weight_read_bytes_;
  o->streamed_bytes_per_step = streamed_bytes_;
  o->device_bytes_needed = need_;
  o->memory_budget = p_.memory_budget;
  o->device_bytes_in_use = alloc_ ? alloc_->used() : 0;
  o->device_bytes_peak = alloc_ ? alloc_->peak() : 0;
  int64_t pinned = 0;
  for (const PinnedBuffer& b : host_arenas_) pinned += b.bytes();
  o->pinned_host_bytes = pinned + chan_bytes_;
  o->sm_count = sm_count_;
  o->reserved = 0;
}

}  // namespace hci::gpu
