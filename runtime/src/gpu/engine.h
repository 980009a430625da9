// The GPU engine: a LLaMA-style dense model's weights, KV cache and buffers on one device, its
// forward pass (prefill and CUDA-graph decode), the memory plan and budget, and the
// full-precision offload path that streams blocks from pinned host memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "allocator.h"
#include "hcinfer_gpu.h"
#include "hetero/comp_server.h"
#include "kernels.h"
#include "sm_partition.h"

namespace hci {
struct Model;
}

namespace hci::gpu {

// Shapes of the model being run.
struct Shape {
  int n_layers = 0, d_model = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, d_ff = 0, vocab = 0;
  int max_positions = 0;
  bool tied = false;
  double rope_theta = 10000.0, eps = 1e-6;
  int qd() const { return n_heads * head_dim; }
  int kvd() const { return n_kv_heads * head_dim; }
};

// Linears per block, in hci_linear_kind order (q, k, v, o, gate, up, down), and the kinds of each
// input group [begin, end): 0 q/k/v (attention input), 1 o, 2 gate/up (MLP input), 3 down.
constexpr int kKinds = 7;
constexpr int kGroupKinds[4][2] = {{0, 3}, {3, 4}, {4, 6}, {6, 7}};
// d_out and d_in of kind k.
void kind_dims(const Shape& s, int k, int& d_out, int& d_in);
// Output column of kind k inside its group's buffer (k at qd, v at qd + kvd, up at d_ff).
int kind_col(const Shape& s, int k);

// A low-rank correction y[:, out_col : out_col + d_out] += B (A x) inside an op; A [rank_pad, d_in]
// and B [d_out, rank_pad] in the model dtype, zero-padded to rank_pad (a multiple of 32).
struct CompSpec {
  int d_out = 0, out_col = 0, rank = 0, rank_pad = 0;
  int64_t a_off = 0, b_off = 0;
};

// One matrix product of a block: rows [out_col, out_col + d_out) of the op's output buffer from
// the op's input. q/k/v (and gate/up) are fused into one op when they share their format.
struct LinOp {
  int d_out = 0, d_in = 0, out_col = 0;
  int bits = 0, group = 0;                     // bits 0: float weights of the model dtype
  int64_t w_off = 0, hi_off = 0, sz_off = 0;   // arena offsets: weights or lo plane; hi; sz
  std::vector<int> kinds;                      // hci_linear_kind of the fused linears, in order
  std::vector<CompSpec> comps;
};

// Where each tensor of one block lives inside its arena (one contiguous buffer per block, so an
// offloaded block moves with a single copy).
struct BlockLayout {
  int64_t attn_norm_off = 0, mlp_norm_off = 0;
  std::vector<LinOp> ops[4];  // 0: q,k,v  1: o  2: gate,up  3: down
  int64_t bytes = 0;          // arena size
};

// Format of one linear (layer, kind) as the planner sees it.
struct LinearFormat {
  int bits = 0, group = 0, rank = 0;  // rank: of the factors in device memory
  int host_rank = 0;                  // rank of the factors in host memory (CPU placements)
};

class GpuModel {
 public:
  // Uploads an hci::Model (caller holds its shared lock).
  static std::unique_ptr<GpuModel> from_model(const Model& m, const hci_gpu_params& p);
  // A synthetic model with random weights made on the device.
  static std::unique_ptr<GpuModel> synthetic(const std::string& name,
                                             const hci_gpu_synth_params& sp,
                                             const hci_gpu_params& p);
  ~GpuModel();

  void reset(int seq);  // -1 = all
  int n_past(int seq) const;
  void prefill(int seq, const int32_t* tokens, int n, float* logits_out);
  void decode(const int32_t* tokens, int nb, float* logits_out);
  void generate_greedy(const int32_t* prompt, int n_prompt, int n_new, int eos, int32_t* out,
                       int32_t* n_out);
  void eval_nll(const int32_t* tokens, int64_t n_tokens, int seq_len, int max_windows,
                hci_eval_result* out, int64_t* progress, const int32_t* cancel);
  void bench(const hci_gpu_bench_params& p, hci_gpu_bench_result* out);
  void info(hci_gpu_model_info* out) const;
  // Heterogeneous compensation (hcinfer_gpu.h).
  void comp_stats(hci_gpu_comp_stats* out);
  void reset_comp_stats();
  void comp_ranks(int32_t* full, int32_t* last, double* mean, int n);
  void set_comp_ranks(const int32_t* ranks, int n);

  // The SM partition of hci_gpu_params.sm_limit (nullptr: every SM); callers push it around calls
  // that launch work (gpu_api.cpp's Use).
  SmPartition* partition() const { return partition_.get(); }
  int sm_count() const { return sm_count_; }  // SMs the kernels run on

 private:
  std::unique_ptr<SmPartition> partition_;  // (declared first: destroyed after every buffer)
  int sm_count_ = 0;

 public:
  std::mutex mu;  // serializes calls on this model
  // First core of the pinned compensation workers (-1: none or not pinned).
  int worker_first_core() const { return worker_first_core_; }
  int worker_threads() const { return worker_threads_; }
  bool isolate_workers() const { return isolate_workers_; }

 private:
  enum ProfCat {
    kProfOther, kProfNorm, kProfQkv, kProfRope, kProfAttn, kProfO, kProfGateUp, kProfSilu,
    kProfDown, kProfHead, kProfCats
  };
  void mark(int cat);                // profiling marker (no-op unless profiling)
  std::string profile_step(int nb);  // one eager decode step with markers: times per stage
  GpuModel() = default;
  void init(const Shape& shape, const std::vector<LinearFormat>& formats,
            const hci_gpu_params& p, bool packed_float16);
  void plan_and_allocate();
  void fill_from_model(const Model& m, int weights_mode, bool comp);
  void fill_synthetic(uint64_t seed, int bits);
  // CPU placements: points per (layer, input group), the mapped channel and the server, with
  // factors from the model (m) or seeded random ones (m == nullptr).
  void setup_host_comp(const Model* m, uint64_t seed);
  // RMSNorm weights of block l before attention (attn) or the MLP, on the host (a point's CPU norm)
  std::vector<float> norm_weights(const Model* m, int l, bool attn);
  void begin_point(int pt, const void* in, int ld_in, int d_in, int n);
  void end_point(int pt, float* out, int ld_out, int n);
  // end_point, then `then` (kernels.h CompThen); its `next` point counts as exported.
  void end_point_then(int pt, float* out, int ld_out, int n, const CompThen& then);
  void check_server();
  void build_rope_table();

  // Forward pieces (enqueue on stream_).
  const uint8_t* block_begin(int layer);
  void block_end(int layer);
  void ensure_copies(int64_t upto);
  void run_block(int layer, const uint8_t* base, int n);
  bool gate_up_fused(const BlockLayout& B, const uint8_t* base, int n,
                     const NormIn* norm_in = nullptr);
  // True when every op of input group g can take its RMSNorm in its prologue (NormIn) this pass.
  bool norm_in_ok(const BlockLayout& B, const uint8_t* base, int g, int n, int point) const;
  // Returns true when `norm` (a NormEpilogue for the residual stream) was applied. With norm_in,
  // `in` is ignored and the op normalizes the residual itself.
  bool run_op(const LinOp& op, const uint8_t* base, const void* in, int ld_in, int n, float* out,
              int ld_out, bool acc, const NormEpilogue* norm = nullptr,
              const NormIn* norm_in = nullptr);
  void matmul(DType t, const void* W, int d_out, int d_in, const void* x, int ldx, int n,
              float* y, int ldy, bool acc);
  void run_layers(int n);  // embed + blocks for n rows already described in the int buffers
  void lm_head(const void* xn, int n, float* logits);
  void decode_step(int nb);  // the graph body
  // One decode step of nb rows whose longest attends over max_len positions (its own included):
  // eager or as the CUDA graph of (point set, nb, attention split).
  void launch_decode(int nb, bool use_graph, int max_len);
  // Blocks per head of decode attention for a step of nb rows over up to max_len positions.
  int attention_split_for(int nb, int max_len) const;
  void upload_rows(const int32_t* tokens, int n, int seq, int pos0, const int32_t* targets);
  void sync();
  void set_seq_len(int seq, int len);
  void read_pcie(int64_t pass, double* ms);

  // Configuration
  Shape sh_;
  hci_gpu_params p_{};
  DType dt_ = DType::F16;  // float weights and matrix inputs
  DType kv_ = DType::F16;
  int n_ctx_ = 0, max_batch_ = 1, rows_ = 512, logit_rows_ = 64;
  int bits_ = 0, group_ = 0;  // common bits (-1 mixed) and group (-1 per row, -2 mixed)
  bool any_packed_ = false, any_comp_ = false, use_cublas_ = false, use_graphs_ = true;
  int max_rank_pad_ = 0, deq_rows_ = 0, max_din_ = 0;
  std::vector<LinearFormat> formats_;  // [n_layers * 7]
  std::vector<BlockLayout> layouts_;

  // Plan
  int n_resident_ = 0, n_off_ = 0, n_slots_ = 0;
  int64_t need_ = 0, slot_bytes_ = 0, weight_bytes_ = 0, weight_read_bytes_ = 0,
          streamed_bytes_ = 0;

  // Device state
  std::unique_ptr<DeviceAllocator> alloc_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr, copy_stream_ = nullptr;
  void* cublas_ = nullptr;
  DeviceBuffer embed_, lm_head_own_, final_norm_, rope_, kc_, vc_, x_, xn_, att_, qkv_, gu_, h_,
      ct32_, ctT_, logits_, ints_, nll_, deq_, workspace_;
  DeviceBuffer x_at_;   // [points] GPU clock at each point's hand-off (CompChannelDev::x_at)
  DeviceBuffer trace_;  // HCINFER_HANDOFF_TRACE=1: [points, kTraceSlots] import stamps
  // HCINFER_HANDOFF_TRACE=1: the last decode pass's import timings per input group, to stderr
  void print_handoff_trace();
  // HCINFER_KERNEL_STAMPS=1: one more graph decode step from the end of the prompts with the
  // kernel stamps bound, its timeline (kernel_timeline.h) to stderr
  void print_kernel_timeline(int nb, int prompt_len);
  std::vector<DeviceBuffer> arenas_;  // resident blocks
  std::vector<DeviceBuffer> slots_;   // staging for streamed blocks
  std::vector<PinnedBuffer> host_arenas_;  // offloaded blocks
  int* tok_d_ = nullptr;
  int* seq_d_ = nullptr;
  int* pos_d_ = nullptr;
  int* tgt_d_ = nullptr;
  int* seq_len_d_ = nullptr;
  std::vector<int> seq_len_;

  // Offload streaming state
  int64_t copies_ = 0, uses_ = 0;
  std::vector<cudaEvent_t> ready_, slot_free_;
  std::vector<cudaEvent_t> t0_[2], t1_[2];  // per offloaded block, by pass parity

  // Heterogeneous compensation
  int placement_ = HCI_GPU_PLACE_NONE;
  bool gpu_comp_now_ = false;      // this pass adds the device factors
  bool host_comp_now_ = false;     // this pass hands the points to the CPU
  int64_t gpu_comp_bytes_ = 0;     // device factor bytes inside the block arenas
  int n_points_ = 0;
  std::vector<int> point_of_;                // [n_layers * 4] point of (layer, group), -1 none
  std::vector<char> point_on_;               // [points] handed over in decode (rank controller)
  uint64_t points_version_ = 0;              // CompServer::active_points version of point_on_
  uint64_t last_set_version_ = 0;            // the last nonzero one
  // the point of (layer, group) this pass hands to the CPU, -1 none
  int point_at(int l, int g) const;
  // takes the controller's current point set; drops captured decode graphs when it changed
  void refresh_points();
  std::vector<CompImport> point_import_;     // per point: where its corrections go
  std::vector<int> point_din_;               // per point: input width
  std::unique_ptr<CompServer> server_;
  void* chan_host_ = nullptr;                // mapped pinned block holding the channel
  int64_t chan_bytes_ = 0;
  int worker_first_core_ = -1;
  int worker_threads_ = 0;
  bool isolate_workers_ = false;
  CompChannelDev chan_{};
  int exported_ = -1;  // point whose input a fused import already handed to the CPU (-1: none)

  // decode graphs by (point-set version, batch, attention split); kept: the current set's, the
  // all-off set's
  // (version 0, for the controller's backbone measurements) and the last set with points on (it
  // returns after such a measurement), see refresh_points
  std::map<std::tuple<uint64_t, int, int>, cudaGraphExec_t> graphs_;  // (points, nb, split)
  int attn_split_ = 1;  // decode attention's blocks per head in the step being issued
  bool attn_split_fixed_ = false;  // HCINFER_ATTN_SPLIT set: attention_split() for every step
  bool fuse_gate_up_ = true;  // HCINFER_FUSE=0 turns the decode fusions off: gate/up + SiLU,
  bool fuse_norm_ = true;     // RMSNorm epilogues of the residual GEMVs,
  bool fuse_attn_ = true;     // RoPE + KV store inside decode attention
  bool fuse_float_silu_ = false;  // float gate/up GEMV with the SiLU epilogue
  bool fuse_comp_ = true;     // CPU compensation imports fused with what follows them
  bool norm_in_ = true;       // batch-1 packed GEMVs normalize their input (NormIn), no norm kernel
  bool decode_active_ = false, xn_ready_ = false;
  unsigned* counter_d_ = nullptr;
  bool kernel_stamps_ = false;  // HCINFER_KERNEL_STAMPS=1: bench prints a kernel timeline
  bool q4_early_ = true;        // HCINFER_Q4_EARLY (0: off): the lean GEMV's early PDL trigger
  bool q4_early_always_ = false;  // HCINFER_Q4_EARLY=2: also next to CPU hand-offs
  bool q4_ksplit_ = true;       // HCINFER_Q4_KSPLIT (0: off): the lean GEMV's tasks per step
  bool profile_ = false;      // HCINFER_PROFILE=1: bench prints a per-stage breakdown to stderr
  std::vector<std::pair<int, cudaEvent_t>>* prof_ = nullptr;
};

// For the duration of a call, keeps the calling thread on the cores below the model's pinned
// compensation workers (restoring its affinity after): a thread spinning in a CUDA
// synchronization on a worker's core would share it in scheduler time slices, milliseconds per
// hand-off. No-op without pinned workers.
class CallerAffinity {
 public:
  explicit CallerAffinity(const GpuModel& g);
  ~CallerAffinity();
  CallerAffinity(const CallerAffinity&) = delete;
  CallerAffinity& operator=(const CallerAffinity&) = delete;

 private:
  bool set_ = false;
  alignas(8) unsigned char old_[128];  // a cpu_set_t (sched.h is not included here)
};

// Fills hci_gpu_device_info for `device` (the CUDA build).
void device_info(int device, hci_gpu_device_info* out);
// Bandwidth measurement.
// sm_limit > 0: on a partition of at least that many SMs (SmPartition).
void measure_bandwidth(int device, int64_t bytes, int repeats, hci_gpu_bandwidth* out,
                       int sm_limit = 0);
// Throws HCI_ERR_UNSUPPORTED when `device` is not usable.
void require_device(int device);
// The build description ("CUDA 13.0, sm_80 sm_90, cuBLAS").
const char* build_string();

}  // namespace hci::gpu
