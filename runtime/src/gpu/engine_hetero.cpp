// GpuModel's heterogeneous compensation (CPU placements): the compensation points of each block,
// the mapped pinned channel, the CPU server and the hooks the forward pass calls around a
// point's backbone product. Protocol (tagged words, no flags or fences): src/hetero/handoff.h,
// src/hetero/comp_server.h.
//
// Per point (one input group of one block) in a pass:
//   cpu-async:  export x, HEAD | backbone product(s) of the group | take y, add
//   cpu-sync:   export x, HEAD | wait DONE | backbone product(s) | take y, add
// In decode steps the import after o, gate/up and down also hands the next point its input
// (comp_import_then): the corrected residual rows raw (the server applies the RMSNorm before
// q/k/v and gate/up itself) or the SiLU-gated rows, so those points cost one kernel of their
// own. cpu-sync serializes the CPU's work with the GPU's through the same channel (the GPU idles
// while the CPU computes), and cpu-async overlaps them. Everything is stream work, so both run
// inside the captured decode graph.
#include <cstdlib>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <thread>

#include "common.h"
#include "engine.h"
#include "model.h"

namespace hci::gpu {

namespace {
int64_t align64(int64_t b) { return (b + 63) / 64 * 64; }
}  // namespace

std::vector<float> GpuModel::norm_weights(const Model* m, int l, bool attn) {
  const int d = sh_.d_model;
  std::vector<float> g(static_cast<size_t>(d));
  if (m) {
    const Block& b = m->blocks[size_t(l)];
    const std::vector<float>& src = attn ? b.attn_norm : b.mlp_norm;
    std::copy(src.begin(), src.begin() + d, g.begin());
    return g;
  }
  // synthetic weights: generated where the block lives (device arena or pinned host copy)
  const BlockLayout& B = layouts_[size_t(l)];
  const int64_t off = attn ? B.attn_norm_off : B.mlp_norm_off;
  sync();
  if (l < n_resident_)
    HCI_CUDA(cudaMemcpy(g.data(), arenas_[size_t(l)].as<uint8_t>() + off, size_t(d) * 4,
                        cudaMemcpyDeviceToHost));
  else
    std::memcpy(g.data(), host_arenas_[size_t(l - n_resident_)].data() + off, size_t(d) * 4);
  return g;
}

void GpuModel::setup_host_comp(const Model* m, uint64_t seed) {
  const int L = sh_.n_layers;
  const FactorType ft = p_.factor_dtype == HCI_GPU_FACTOR_F32   ? FactorType::F32
                        : p_.factor_dtype == HCI_GPU_FACTOR_F16 ? FactorType::F16
                                                                : FactorType::BF16;
  // Worker threads and cores: by default the cores from cpu_first_core on but the last two, which
  // stay free for the rest of the process and the OS. Measured on the H100 host (16 vCPUs, W4 7B
  // cpu-async r16): with a worker on every core up to the last, other threads preempted a
  // spinning worker 0.3–1.7 times per decode step, each time stalling a parallel section for a
  // scheduler time slice (milliseconds), and tokens/s halved from one run to the next.
  const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  int first = p_.cpu_first_core;
  if (first >= hw) first = -1;  // no such core: do not pin
  int threads = p_.cpu_threads;
  // Decode passes use the first kDefaultDecodeThreads of the default workers (CompServerConfig::
  // decode_threads says why); an explicit cpu_threads is used for every pass.
  // (H100 host, W4 7B cpu-async rank 8, tagged-word protocol, one call: 4 workers 305 tok/s
  // with 0.8 worker preemptions per step, 6 workers 338, 8 workers 334, 10-12 fewer again.)
  // Passes whose points average over 1 MiB of factors use all the workers (CompServer::serve).
  constexpr int kDefaultDecodeThreads = 6;
  int decode_threads = 0;
  if (threads == 0) {
    const int avail = hw - std::max(first, 0);
    threads = std::clamp(avail > 4 ? avail - 2 : avail, 1, 32);
    decode_threads = std::min(threads, kDefaultDecodeThreads);
  }
  if (first >= 0 && first + threads > hw) first = -1;

  std::vector<ServedPoint> points;
  point_of_.assign(size_t(L) * 4, -1);
  point_import_.clear();
  point_din_.clear();
  WorkerPool fill_pool(threads);
  for (int l = 0; l < L; ++l)
    for (int g = 0; g < 4; ++g) {
      std::vector<int> d_outs, ranks, linears;
      CompImport imp;
      int d_in = 0;
      for (int k = kGroupKinds[g][0]; k < kGroupKinds[g][1]; ++k) {
        const int r = formats_[size_t(l * kKinds + k)].host_rank;
        if (r <= 0) continue;
        int d_out;
        kind_dims(sh_, k, d_out, d_in);
        const int col = kind_col(sh_, k);
        d_outs.push_back(d_out);
        ranks.push_back(r);
        linears.push_back(l * kKinds + k);
        imp.col[imp.n] = col;
        imp.d_out[imp.n] = d_out;
        ++imp.n;
      }
      if (d_outs.empty()) continue;
      ServedPoint sp;
      sp.cp = std::make_unique<CompPoint>(d_in, d_outs, ranks, ft);
      sp.linear = linears;
      if (m) {
        for (int j = 0; j < int(linears.size()); ++j) {
          const Linear& lin = m->blocks[size_t(l)].lin[size_t(linears[size_t(j)] % kKinds)];
          const int r = ranks[size_t(j)];
          // A [rank, d_in] is a prefix of A [max_rank, d_in]; B[:, :rank] is strided.
          std::vector<float> b(size_t(lin.d_out) * size_t(r));
          for (int i = 0; i < lin.d_out; ++i)
            for (int k = 0; k < r; ++k)
              b[size_t(i) * r + k] = lin.B[size_t(i) * lin.max_rank + k];
          sp.cp->set_factors(j, lin.A.data(), b.data());
        }
      } else {
        sp.cp->fill_random(seed * 1000003 + uint64_t(l * 4 + g), 0.02f, fill_pool);
      }
      // q/k/v and gate/up follow an RMSNorm: in decode the GPU hands over the residual rows
      // before it (kNormFlag) and the server applies it, rounding to the activation type
      if (g == 0 || g == 2) {
        sp.norm_gamma = norm_weights(m, l, g == 0);
        sp.norm_eps = float(sh_.eps);
        sp.norm_round = dt_ == DType::F16    ? ServedPoint::Round::F16
                        : dt_ == DType::BF16 ? ServedPoint::Round::BF16
                                             : ServedPoint::Round::None;
      }
      point_of_[size_t(l * 4 + g)] = int(points.size());
      point_import_.push_back(imp);
      point_din_.push_back(d_in);
      points.push_back(std::move(sp));
    }
  n_points_ = int(points.size());
  if (n_points_ == 0) return;  // nothing is compensated

  // The channel: header, GPU waits, X [rows, max d_in], Y [rows, max width] (tagged words),
  // mapped pinned.
  int max_din = 0, max_width = 0;
  for (int q = 0; q < n_points_; ++q) {
    max_din = std::max(max_din, point_din_[size_t(q)]);
    int w = 0;
    for (int j = 0; j < point_import_[size_t(q)].n; ++j) w += point_import_[size_t(q)].d_out[j];
    max_width = std::max(max_width, w);
  }
  const int64_t hdr_b = align64(sizeof(ChannelHeader));
  const int64_t wait_b = align64(int64_t(n_points_) * 4);  // wait_ns; window_ns, turn_ns alike
  const int64_t x_b = align64(int64_t(rows_) * max_din * 8);
  const int64_t y_b = align64(int64_t(rows_) * max_width * 8);
  chan_bytes_ = hdr_b + 3 * wait_b + x_b + y_b;
  HCI_CUDA(cudaHostAlloc(&chan_host_, size_t(chan_bytes_), cudaHostAllocMapped | cudaHostAllocPortable));
  std::memset(chan_host_, 0, size_t(chan_bytes_));
  uint8_t* h = static_cast<uint8_t*>(chan_host_);
  void* dev = nullptr;
  HCI_CUDA(cudaHostGetDevicePointer(&dev, chan_host_, 0));
  uint8_t* d = static_cast<uint8_t*>(dev);
  ChannelHeader* hdr = new (h) ChannelHeader();
  Channel ch;
  ch.hdr = hdr;
  ch.wait_ns = reinterpret_cast<const uint32_t*>(h + hdr_b);
  ch.window_ns = reinterpret_cast<const uint32_t*>(h + hdr_b + wait_b);
  ch.turn_ns = reinterpret_cast<const uint32_t*>(h + hdr_b + 2 * wait_b);
  ch.x = reinterpret_cast<const uint64_t*>(h + hdr_b + 3 * wait_b);
  ch.y = reinterpret_cast<uint64_t*>(h + hdr_b + 3 * wait_b + x_b);
  auto dev_of = [&](const void* hp) {
    return d + (static_cast<const uint8_t*>(hp) - h);
  };
  chan_.head = reinterpret_cast<unsigned long long*>(dev_of(&hdr->head[0]));
  chan_.done = reinterpret_cast<uint32_t*>(dev_of(&hdr->done));
  chan_.wait_ns = reinterpret_cast<uint32_t*>(dev_of(ch.wait_ns));
  chan_.window_ns = reinterpret_cast<uint32_t*>(dev_of(ch.window_ns));
  chan_.turn_ns = reinterpret_cast<uint32_t*>(dev_of(ch.turn_ns));
  x_at_ = DeviceBuffer(*alloc_, int64_t(n_points_) * 8, "hand-off stamps");
  HCI_CUDA(cudaMemset(x_at_.get(), 0, size_t(x_at_.bytes())));
  chan_.x_at = x_at_.as<unsigned long long>();
  chan_.x = reinterpret_cast<unsigned long long*>(dev_of(ch.x));
  chan_.y = reinterpret_cast<unsigned long long*>(dev_of(ch.y));
  // device word (zeroed with ints_): the pass counter
  int* ints = ints_.as<int>();
  chan_.pass = reinterpret_cast<uint32_t*>(ints + 4 * rows_ + 2 * max_batch_ + 2);
  const char* tr = std::getenv("HCINFER_HANDOFF_TRACE");
  if (tr && tr[0] == '1') {
    trace_ = DeviceBuffer(*alloc_, int64_t(n_points_) * kTraceSlots * 8, "hand-off trace");
    HCI_CUDA(cudaMemset(trace_.get(), 0, size_t(trace_.bytes())));
    chan_.trace = trace_.as<unsigned long long>();
  }
  static_assert(sizeof(PassStampDev) == sizeof(PassStamp) && kPassStampsDev == kPassStamps &&
                    offsetof(PassStamp, decode) == offsetof(PassStampDev, decode),
                "PassStamp layout");
  chan_.passes = reinterpret_cast<uint32_t*>(dev_of(&hdr->passes));
  chan_.stamps = reinterpret_cast<PassStampDev*>(dev_of(&hdr->stamps[0]));

  CompServerConfig cfg;
  cfg.threads = threads;
  cfg.decode_threads = decode_threads;
  cfg.first_core = first;
  worker_first_core_ = first;
  worker_threads_ = threads;
  // Other threads of the process (the host program's, the CUDA driver's) are moved off the
  // workers' cores: measured on the H100 host, a Deno process preempted spinning workers
  // 1.2-1.7 times per decode step in about half of its model instances (tokens/s halved), where
  // a C program with fewer threads stayed at 0.14-0.20. HCINFER_ISOLATE_WORKERS=0 turns it off.
  const char* iso = std::getenv("HCINFER_ISOLATE_WORKERS");
  cfg.isolate = first >= 0 && !(iso && iso[0] == '0');
  isolate_workers_ = cfg.isolate;
  cfg.controller = p_.rank_controller != 0;
  cfg.slowdown = p_.controller_slowdown_pct < 0    ? -1.0
                 : p_.controller_slowdown_pct == 0 ? CompServerConfig{}.slowdown
                                                   : p_.controller_slowdown_pct / 100.0;
  cfg.rows_max = rows_;
  cfg.level = best_simd_level();
  server_ = std::make_unique<CompServer>(std::move(points), ch, cfg);
}

void GpuModel::begin_point(int pt, const void* in, int ld_in, int d_in, int n) {
  if (exported_ != pt)  // (else the previous point's fused import handed x over)
    comp_export(dt_, in, ld_in, d_in, n, !decode_active_, chan_, n_points_, pt, stream_);
  exported_ = -1;
  if (placement_ == HCI_GPU_PLACE_CPU_SYNC)  // wait here, before the backbone product
    comp_import(nullptr, 0, n, point_import_[size_t(pt)], chan_, n_points_, pt, true, false,
                stream_);
}

void GpuModel::end_point(int pt, float* out, int ld_out, int n) {
  comp_import(out, ld_out, n, point_import_[size_t(pt)], chan_, n_points_, pt,
              placement_ == HCI_GPU_PLACE_CPU_ASYNC, true, stream_);
}

void GpuModel::end_point_then(int pt, float* out, int ld_out, int n, const CompThen& then) {
  comp_import_then(dt_, out, ld_out, n, point_import_[size_t(pt)], then, chan_, n_points_, pt,
                   placement_ == HCI_GPU_PLACE_CPU_ASYNC, stream_);
  exported_ = then.next;
}

void GpuModel::print_handoff_trace() {
  if (!chan_.trace) return;
  sync();
  std::vector<unsigned long long> t(size_t(n_points_) * kTraceSlots);
  HCI_CUDA(cudaMemcpy(t.data(), chan_.trace, t.size() * 8, cudaMemcpyDeviceToHost));
  const char* names[4] = {"q/k/v", "o", "gate/up", "down"};
  for (int g = 0; g < 4; ++g) {
    // means over the layers' points of this group, in microseconds
    double early = 0, wait = 0, ready = 0, op = 0, end = 0;
    int cnt = 0;
    unsigned long long kind = 0;
    for (int l = 0; l < sh_.n_layers; ++l) {
      const int p = point_of_[size_t(l * 4 + g)];
      if (p < 0) continue;
      const unsigned long long* s = &t[size_t(p) * kTraceSlots];
      if (s[kTraceKind] == 0 || s[kTraceProd] == 0) continue;
      kind = s[kTraceKind];
      const double both = double(std::max(s[kTraceDone], s[kTraceProd]));
      early += (double(s[kTraceProd]) - double(s[kTraceEntry])) / 1e3;
      wait += std::max(0.0, double(s[kTraceDone]) - double(s[kTraceProd])) / 1e3;
      ready += (double(s[kTraceReady]) - both) / 1e3;
      end += (double(s[kTraceEnd]) - both) / 1e3;
      if (s[kTraceOp]) op += (double(s[kTraceOp]) - double(s[kTraceReady])) / 1e3;
      ++cnt;
    }
    if (cnt == 0) continue;
    std::fprintf(stderr,
                 "hand-off trace %-7s (%d points, kind %llu): import resident %.2f us before the "
                 "product ended; GPU wait %.2f; after product+y: past the wait %.2f, op (add, "
                 "next input handed over) %.2f, recording block done %.2f us\n",
                 names[g], cnt, kind, early / cnt, wait / cnt, ready / cnt, op / cnt, end / cnt);
  }
}

void GpuModel::check_server() {
  const std::string e = server_->error();
  if (!e.empty())
    fail(HCI_ERR_INTERNAL, "CPU compensation channel out of step (free this GPU model): " + e);
}

void GpuModel::comp_stats(hci_gpu_comp_stats* o) {
  std::memset(o, 0, sizeof *o);
  o->placement = placement_;
  if (!server_) return;
  const CompServerStats st = server_->stats();
  o->n_points = n_points_;
  o->cpu_threads = server_->threads();
  o->rank_controller = server_->controller() ? 1 : 0;
  o->steps = st.steps;
  o->cpu_busy_ms = st.cpu_busy_ns / 1e6;
  o->gpu_wait_ms = st.gpu_wait_ns / 1e6;
  o->bytes_to_host = st.bytes_to_host;
  o->bytes_to_device = st.bytes_to_device;
  o->factor_bytes_read = st.factor_bytes_read;
  o->factor_bytes_host = server_->factor_bytes();
  o->rank_fraction = st.steps ? st.rank_fraction_sum / double(st.steps) : 0.0;
  o->prefill_rows = st.prefill_rows;
  o->prefill_cpu_ms = st.prefill_cpu_ns / 1e6;
  o->cpu_preemptions = st.preemptions;
}

void GpuModel::reset_comp_stats() {
  if (server_) server_->reset_stats();
}

void GpuModel::comp_ranks(int32_t* full, int32_t* last, double* mean, int n) {
  const int want = sh_.n_layers * kKinds;
  if (n != want)
    fail(HCI_ERR_INVALID_ARGUMENT, "ranks: n must be n_layers * 7 = " + std::to_string(want));
  if (server_) {
    server_->ranks(full, last, mean, n);
    return;
  }
  for (int i = 0; i < n; ++i) {
    const int r = placement_ == HCI_GPU_PLACE_GPU ? formats_[size_t(i)].rank : 0;
    if (full) full[i] = r;
    if (last) last[i] = r;
    if (mean) mean[i] = r;
  }
}

void GpuModel::set_comp_ranks(const int32_t* ranks, int n) {
  const int want = sh_.n_layers * kKinds;
  if (n != want)
    fail(HCI_ERR_INVALID_ARGUMENT, "ranks: n must be n_layers * 7 = " + std::to_string(want));
  if (!server_)
    fail(HCI_ERR_UNSUPPORTED, "set_comp_ranks needs a CPU placement with compensated linears");
  server_->set_ranks(ranks, n);
}

CallerAffinity::CallerAffinity(const GpuModel& g) {
  const int first = g.worker_first_core();
  if (first <= 0) return;
  static_assert(sizeof(cpu_set_t) <= sizeof(old_), "cpu_set_t does not fit");
  cpu_set_t* old = reinterpret_cast<cpu_set_t*>(old_);
  if (pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), old) != 0) return;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  for (int c = 0; c < first; ++c)
    if (CPU_ISSET(c, old)) CPU_SET(c, &mine);
  // A caller allowed only on worker cores (pinned there by someone else) goes to the cores
  // below them all the same: spinning beside a worker, the two would take turns in scheduler
  // slices of milliseconds, each a GPU wait.
  if (CPU_COUNT(&mine) == 0)
    for (int c = 0; c < first && c < CPU_SETSIZE; ++c) CPU_SET(c, &mine);
  set_ = pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &mine) == 0;
  if (set_ && g.isolate_workers()) {  // back to the old cores, but the workers' stay excluded
    cpu_set_t back = *old;
    for (int c = first; c < first + g.worker_threads() && c < CPU_SETSIZE; ++c) CPU_CLR(c, &back);
    if (CPU_COUNT(&back) > 0) *old = back;
  }
}

CallerAffinity::~CallerAffinity() {
  if (set_) pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), reinterpret_cast<cpu_set_t*>(old_));
}

}  // namespace hci::gpu
