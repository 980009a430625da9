// GPU kernels against CPU references on fresh random data (outputs poisoned first, so every
// element must be written): float and packed GEMV for batch 1..16 and every kernel variant,
// packing round trips, the dequantizer (bit-exact), the own tensor-core GEMM, RMSNorm, RoPE with
// the KV-cache store, attention (prefill and multi-sequence decode, fp16 and fp32 cache), SiLU
// gating, NLL and argmax, the allocator cap. Exits 77 (ctest: skipped) without a usable GPU.
//
// `test_gpu_kernels --bench` instead times the decode GEMVs on Llama-2-7B shapes (every variant)
// against the measured HBM bandwidth and prints a table.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <chrono>
#include <vector>

#include "allocator.h"
#include "check.h"
#include "common.h"
#include "cpu_ops.h"
#include "engine.h"
#include "kernels.h"
#include "pack.h"

using namespace hci::gpu;

namespace {

std::mt19937 rng(1234);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Rounds to the dtype and returns the 16-bit patterns; `v` becomes the rounded values.
std::vector<uint16_t> round16(std::vector<float>& v, DType t) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    o[i] = t == DType::BF16 ? host_f32_to_bf16(v[i]) : host_f32_to_f16(v[i]);
    v[i] = t == DType::BF16 ? host_bf16_to_f32(o[i]) : host_f16_to_f32(o[i]);
  }
  return o;
}

DeviceAllocator& A() {
  static DeviceAllocator a;
  return a;
}

template <typename T>
DeviceBuffer up(const std::vector<T>& v) {
  DeviceBuffer b(A(), int64_t(v.size() * sizeof(T)), "test");
  HCI_CUDA(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

template <typename T>
std::vector<T> down(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  HCI_CUDA(cudaDeviceSynchronize());
  HCI_CUDA(cudaMemcpy(v.data(), b.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

DeviceBuffer poisoned(size_t n_floats) {
  std::vector<float> p(n_floats, std::nanf(""));
  return up(p);
}

template <typename V>
double rel_err(const std::vector<float>& got, const V& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return 1e30;
    const double r = double(ref[i]);
    num += (got[i] - r) * (got[i] - r);
    den += r * r;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST(float_gemv_matches_reference) {
  for (DType t : {DType::F16, DType::BF16})
    for (auto [d_out, d_in] : {std::pair{300, 1032}, {4096, 4096}, {37, 64}})
      for (int nb : {1, 2, 3, 5, 8, 13, 16})
        for (int variant : {0, 1, 2, 3, 4}) {
          if (variant && (nb != 1 || d_out != 300)) continue;
          set_gemv_variants(variant, 0);
          auto w = randn(size_t(d_out) * d_in, 0.05f), x = randn(size_t(nb) * d_in);
          auto wb = round16(w, t), xb = round16(x, t);
          auto y0 = randn(size_t(nb) * d_out);
          std::vector<double> ref(size_t(nb) * d_out);
          ref_gemv(w.data(), d_out, d_in, x.data(), nb, ref.data());
          DeviceBuffer W = up(wb), X = up(xb), Y = poisoned(ref.size()), Y2 = up(y0);
          gemv(t, W.get(), d_out, d_in, X.get(), d_in, nb, Y.as<float>(), d_out, false, nullptr);
          gemv(t, W.get(), d_out, d_in, X.get(), d_in, nb, Y2.as<float>(), d_out, true, nullptr);
          const double e = rel_err(down<float>(Y, ref.size()), ref);
          for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
          const double e2 = rel_err(down<float>(Y2, ref.size()), ref);
          if (!(e < 1e-5 && e2 < 1e-5))
            std::printf("  %s %dx%d nb %d variant %d: rel err %.2e / acc %.2e\n", dtype_name(t),
                        d_out, d_in, nb, variant, e, e2);
          CHECK(e < 1e-5);
          CHECK(e2 < 1e-5);
        }
  set_gemv_variants(0, 0);
}

// GPU placement's decode low-rank kernels against a float64 reference: three branches sharing an
// input (q/k/v-like, ranks 16/32/128) and single ones (ranks 16 and 512), t = A·x then y += B·t
// into columns of y that the backbone had already written (the add must keep them).
TEST(lowrank_matches_reference) {
  for (DType t : {DType::F16, DType::BF16})
    for (int nb : {1, 3, 16})
      for (int variant : {0, 1, 2}) {
        // one branch of rank 16; three of ranks 16/32/128; one of rank 512 (rows longer than
        // one pass of the expand kernel's threads)
        const int branches = variant == 1 ? 3 : 1;
        const int d_in = 1032, ldx = 1040;
        int rp[3] = {16, 32, 128}, dout[3] = {96, 40, 40};
        if (variant == 2) rp[0] = 512;
        LowRankSet s;
        std::vector<DeviceBuffer> bufs;
        std::vector<std::vector<float>> Af, Bf;
        int width = 0;
        for (int c = 0; c < branches; ++c) {
          auto a = randn(size_t(rp[c]) * d_in, 0.05f), b = randn(size_t(dout[c]) * rp[c], 0.05f);
          bufs.push_back(up(round16(a, t)));
          bufs.push_back(up(round16(b, t)));
          Af.push_back(a);
          Bf.push_back(b);
          s.a[c] = bufs[bufs.size() - 2].get();
          s.b[c] = bufs.back().get();
          s.rank_pad[c] = rp[c];
          s.d_out[c] = dout[c];
          s.out_col[c] = width;
          width += dout[c];
        }
        s.n = branches;
        CHECK(lowrank_decode_supported(s, d_in, nb));
        const int ldy = width + 8;
        auto x = randn(size_t(nb) * ldx);
        auto xb = round16(x, t);
        auto y0 = randn(size_t(nb) * ldy);
        std::vector<double> ref(y0.begin(), y0.end());
        int R = 0;
        for (int c = 0; c < branches; ++c) R += rp[c];
        for (int b = 0; b < nb; ++b)
          for (int c = 0; c < branches; ++c) {
            std::vector<double> tt(size_t(rp[c]), 0.0);
            for (int r = 0; r < rp[c]; ++r)
              for (int k = 0; k < d_in; ++k)
                tt[size_t(r)] += double(Af[size_t(c)][size_t(r) * d_in + k]) * x[size_t(b) * ldx + k];
            for (int i = 0; i < dout[c]; ++i) {
              double acc = 0;
              for (int r = 0; r < rp[c]; ++r)
                acc += double(Bf[size_t(c)][size_t(i) * rp[c] + r]) * tt[size_t(r)];
              ref[size_t(b) * ldy + s.out_col[c] + i] += acc;
            }
          }
        DeviceBuffer X = up(xb), Y = up(y0), T = poisoned(size_t(nb) * R);
        lowrank_project(t, s, d_in, X.get(), ldx, nb, T.as<float>(), nullptr);
        lowrank_expand(t, s, T.as<float>(), nb, Y.as<float>(), ldy, nullptr);
        const double e = rel_err(down<float>(Y, ref.size()), ref);
        if (!(e < 1e-5))
          std::printf("  %s nb %d variant %d: rel err %.2e\n", dtype_name(t), nb, variant, e);
        CHECK(e < 1e-5);
      }
  LowRankSet big;
  big.n = 1;
  big.rank_pad[0] = 1024;
  big.d_out[0] = 8;
  CHECK(!lowrank_decode_supported(big, 64, 16));  // t would not fit shared memory
}

// The fused decode imports (comp_import_then) against a CPU reference, with the CPU's correction
// already in Y as tagged words: the add, then the hand-over of the corrected residual (raw, with
// kNormFlag) or the SiLU gating, and with `next` the next point's X words and HEAD, all tagged with
// the next point's sequence number. Then the protocol itself: an import kernel must not take a
// stale word (the tag of an earlier hand-off) but wait until the host writes this one's.
TEST(import_then_matches_cpu) {
  struct Words {  // the mapped host words of the channel
    unsigned long long head[2];
    uint32_t done, wait_ns[2], passes;
    PassStampDev stamps[8];
  };
  Words* w = nullptr;
  unsigned long long *X = nullptr, *Yh = nullptr;
  const int max_n = 3, max_d = 5000;
  HCI_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&w), sizeof(Words), cudaHostAllocMapped));
  HCI_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&X), size_t(max_n) * max_d * 8,
                         cudaHostAllocMapped));
  HCI_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&Yh), size_t(max_n) * 2 * max_d * 8,
                         cudaHostAllocMapped));
  DeviceBuffer ints = up(std::vector<int32_t>(16, 0));
  auto dev = [](void* h) {
    void* d = nullptr;
    HCI_CUDA(cudaHostGetDevicePointer(&d, h, 0));
    return d;
  };
  auto tagged = [](float v, uint32_t seq) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    return static_cast<unsigned long long>(seq) << 32 | b;
  };
  auto value = [](unsigned long long wd) {
    const uint32_t b = uint32_t(wd);
    float v;
    std::memcpy(&v, &b, 4);
    return v;
  };
  Words* wd = static_cast<Words*>(dev(w));
  CompChannelDev ch;
  ch.x = static_cast<unsigned long long*>(dev(X));
  ch.y = static_cast<unsigned long long*>(dev(Yh));
  ch.head = wd->head;
  ch.done = &wd->done;
  ch.wait_ns = wd->wait_ns;
  ch.passes = &wd->passes;
  ch.stamps = wd->stamps;
  ch.pass = reinterpret_cast<uint32_t*>(ints.as<int32_t>());  // pass 0: point p's seq is p + 1
  for (int op : {kThenAdd, kThenSilu})
    for (int d : {512, 4096, 5000})
      for (int n : {1, 3})
        for (int next : {-1, 1}) {
          const int width = op == kThenAdd ? d : 2 * d;
          std::memset(w, 0, sizeof(Words));
          std::memset(X, 0, size_t(max_n) * max_d * 8);
          auto out = randn(size_t(n) * width), y = randn(size_t(n) * width, 0.1f);
          for (size_t i = 0; i < y.size(); ++i) Yh[i] = tagged(y[i], 1);  // point 0's correction
          DeviceBuffer O = up(out), D = up(std::vector<uint16_t>(size_t(n) * d));
          CompImport imp;
          imp.n = 1;
          imp.d_out[0] = width;
          CompThen th;
          th.op = op;
          th.d = d;
          th.dst = D.get();
          th.ld_dst = d;
          th.next = next;
          comp_import_then(DType::F16, O.as<float>(), width, n, imp, th, ch, 2, 0, true, nullptr);
          HCI_CUDA(cudaDeviceSynchronize());
          const auto got_out = down<float>(O, size_t(n) * width);
          const auto dst = down<uint16_t>(D, size_t(n) * d);
          double worst = 0;
          int bad_x = 0;
          for (int r = 0; r < n; ++r)
            for (int c = 0; c < d; ++c) {
              const size_t i = size_t(r) * width + c;
              const double g = double(out[i]) + y[i];
              double got, ref;
              if (op == kThenAdd) {
                ref = g;
                got = got_out[i];
              } else {
                const double u = double(out[i + d]) + y[i + d];
                ref = g / (1 + std::exp(-g)) * u;
                got = host_f16_to_f32(dst[size_t(r) * d + c]);
              }
              worst = std::max(worst, std::fabs(got - ref) / (1.0 + std::fabs(ref)));
              const unsigned long long xw = X[size_t(r) * d + c];
              if (next == 1) bad_x += (xw >> 32) != 2u || value(xw) != float(got);
              else bad_x += xw != 0;
            }
          if (!(worst < 2e-3) || bad_x)
            std::printf("  op %d d %d n %d next %d: worst %.2e, bad X words %d\n", op, d, n,
                        next, worst, bad_x);
          CHECK(worst < (op == kThenAdd ? 1e-6 : 2e-3));
          CHECK(bad_x == 0);
          if (next == 1) {
            CHECK(w->head[0] == (2ull << 32 | 1u));
            CHECK(w->head[1] == (2ull << 32 | (uint32_t(n) | (op == kThenAdd ? 0x40000000u : 0u))));
          } else {
            CHECK(w->head[0] == 0 && w->head[1] == 0);
          }
        }
  // A stale correction (tag 0) is not taken: the kernel is still waiting 20 ms later and the
  // output untouched; once the host writes point 0's words it completes with them.
  {
    const int d = 4096, n = 1;
    auto out = randn(size_t(d)), y = randn(size_t(d), 0.1f);
    for (int i = 0; i < d; ++i) Yh[i] = tagged(123.0f, 0);
    DeviceBuffer O = up(out);
    CompImport imp;
    imp.n = 1;
    imp.d_out[0] = d;
    cudaStream_t st;
    HCI_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    comp_import(O.as<float>(), d, n, imp, ch, 2, 0, true, true, st);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(cudaStreamQuery(st) == cudaErrorNotReady);
    for (int i = 0; i < d; ++i) Yh[i] = tagged(y[size_t(i)], 1);
    HCI_CUDA(cudaStreamSynchronize(st));
    HCI_CUDA(cudaStreamDestroy(st));
    const auto got = down<float>(O, size_t(d));
    double worst = 0;
    for (int i = 0; i < d; ++i)
      worst = std::max(worst, std::fabs(double(got[size_t(i)]) - (double(out[size_t(i)]) + y[size_t(i)])));
    CHECK(worst < 1e-5);
  }
  cudaFreeHost(w);
  cudaFreeHost(X);
  cudaFreeHost(Yh);
}

TEST(packing_round_trips) {
  for (int bits : {2, 3, 4, 8}) {
    PackedShape s{5, 192, bits, 64};
    std::vector<uint8_t> codes(size_t(s.d_out) * s.d_in), back(codes.size());
    for (auto& c : codes) c = uint8_t(rng() % (1u << bits));
    std::vector<uint8_t> lo(size_t(s.lo_bytes())), hi(size_t(std::max<int64_t>(1, s.hi_bytes())));
    pack_codes(s, codes.data(), lo.data(), hi.data());
    unpack_codes(s, lo.data(), hi.data(), back.data());
    CHECK(codes == back);
  }
  CHECK(std::string(packed_shape_problem(PackedShape{4, 96, 4, 32})).find("64") !=
        std::string::npos);
  CHECK(std::string(packed_shape_problem(PackedShape{4, 128, 5, 32})).find("bits") !=
        std::string::npos);
}

namespace {
struct QData {
  PackedShape s;
  std::vector<uint8_t> codes, lo, hi;
  std::vector<float> scales, zeros;
  std::vector<uint16_t> sz;
  DeviceBuffer dlo, dhi, dsz;
  PackedView view() const {
    return packed_view(s, dlo.as<uint8_t>(), dhi.as<uint8_t>(), dsz.as<uint32_t>());
  }
};

QData make_q(int d_out, int d_in, int bits, int group) {
  QData q;
  q.s = PackedShape{d_out, d_in, bits, group};
  if (*packed_shape_problem(q.s)) throw std::runtime_error(packed_shape_problem(q.s));
  const int qmax = (1 << bits) - 1;
  q.codes.resize(size_t(d_out) * d_in);
  for (auto& c : q.codes) c = uint8_t(rng() % uint32_t(qmax + 1));
  const size_t ng = size_t(d_out) * q.s.n_groups();
  q.scales.resize(ng);
  q.zeros.resize(ng);
  std::uniform_real_distribution<float> u(0.002f, 0.05f);
  for (size_t i = 0; i < ng; ++i) {
    q.scales[i] = host_f16_to_f32(host_f32_to_f16(u(rng)));
    q.zeros[i] = float(rng() % uint32_t(qmax + 1));
  }
  q.lo.resize(size_t(q.s.lo_bytes()));
  q.hi.resize(size_t(std::max<int64_t>(16, q.s.hi_bytes())));
  pack_codes(q.s, q.codes.data(), q.lo.data(), q.hi.data());
  q.sz.resize(2 * ng);
  pack_scales(q.s, q.scales.data(), q.zeros.data(), q.sz.data());
  q.dlo = up(q.lo);
  q.dhi = up(q.hi);
  q.dsz = up(q.sz);
  return q;
}
}  // namespace

namespace {
// Batch-1 packed kernel choice by test index: 0 tensor-core, 1 SIMT, 2..6 the streaming kernel
// in configuration 0..4, 7 the lean 4-bit kernel (the streaming one where it does not apply), 8
// the lean kernel's tensor-core scheme, 9 that scheme for rows longer than 4096 only.
void set_kernel_choice(int kernel) {
  if (kernel == 7) return set_qgemv_nb1_kernel(3);
  if (kernel == 8) return set_qgemv_nb1_kernel(4);
  if (kernel == 9) return set_qgemv_nb1_kernel(5);
  set_qgemv_nb1_kernel(std::min(kernel, 2), kernel >= 2 ? kernel - 2 : -1);
}
}  // namespace

TEST(packed_gemv_matches_reference) {
  double worst = 0;
  // variants 6 and 7 (the streaming batch-1 kernel) also on a long row (several K slices per
  // warp, partial last slice, odd row count) and on more row pairs than the grid has warps
  for (int bits : {2, 3, 4, 8})
    for (int group : {32, 64, 128, -1})
      for (auto [d_out, d_in] : {std::pair{130, 512}, {257, 1152}, {37, 4608}, {20000, 256}})
        for (int nb : {1, 2, 3, 8, 16})
          for (int variant : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
            if (d_in == 4608 || d_out == 20000) {
              if (nb != 1 || (variant != 0 && variant < 6)) continue;
            } else if (variant >= 6 ? nb != 1 : (variant && variant != 5 && (nb != 1 || d_out != 130))) {
              continue;
            }
            set_gemv_variants(0, variant);
            QData q = make_q(d_out, d_in, bits, group == -1 ? d_in : group);
            auto x = randn(size_t(nb) * d_in);
            auto xb = round16(x, DType::F16);
            std::vector<double> ref(size_t(nb) * d_out);
            ref_qgemv(q.s, q.codes.data(), q.scales.data(), q.zeros.data(), x.data(), nb,
                      ref.data());
            DeviceBuffer X = up(xb), Y = poisoned(ref.size());
            qgemv(q.view(), X.get(), d_in, nb, Y.as<float>(), d_out, false, nullptr);
            const double e = rel_err(down<float>(Y, ref.size()), ref);
            worst = std::max(worst, e);
            if (!(e < 2e-3))
              std::printf("  W%d g%d %dx%d nb %d variant %d: rel err %.2e\n", bits, group, d_out,
                          d_in, nb, variant, e);
            CHECK(e < 2e-3);
          }
  set_gemv_variants(0, 0);
  std::printf("  worst packed GEMV rel err %.2e (fp16 partial sums of 8 codes)\n", worst);
  // accumulate mode (group 128: the lean 4-bit kernel takes groups of 128..4096)
  QData q = make_q(64, 256, 4, 128);
  auto x = randn(256);
  auto xb = round16(x, DType::F16);
  auto y0 = randn(64);
  std::vector<double> ref(64);
  ref_qgemv(q.s, q.codes.data(), q.scales.data(), q.zeros.data(), x.data(), 1, ref.data());
  for (int i = 0; i < 64; ++i) ref[size_t(i)] += y0[size_t(i)];
  for (int kernel : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
    set_kernel_choice(kernel);
    DeviceBuffer X = up(xb), Y = up(y0);
    qgemv(q.view(), X.get(), 256, 1, Y.as<float>(), 64, true, nullptr);
    CHECK(rel_err(down<float>(Y, 64), ref) < 2e-3);
  }
  set_qgemv_nb1_kernel(-1);
}

TEST(silu_epilogues_match_reference) {
  const int dff = 200, d_in = 384;
  for (int nb : {1, 2, 5, 16}) {
    auto x = randn(size_t(nb) * d_in);
    auto xb = round16(x, DType::F16);
    auto expect = [&](const std::vector<double>& gu) {
      std::vector<double> h(size_t(nb) * dff);
      for (int b = 0; b < nb; ++b)
        for (int j = 0; j < dff; ++j) {
          const double g = gu[size_t(b) * 2 * dff + j], u = gu[size_t(b) * 2 * dff + dff + j];
          h[size_t(b) * dff + j] = g / (1 + std::exp(-g)) * u;
        }
      return h;
    };
    auto got16 = [&](const DeviceBuffer& H) {
      auto hb = down<uint16_t>(H, size_t(nb) * dff);
      std::vector<float> h(hb.size());
      for (size_t i = 0; i < h.size(); ++i) h[i] = host_f16_to_f32(hb[i]);
      return h;
    };
    // float weights
    auto w = randn(size_t(2 * dff) * d_in, 0.05f);
    auto wb = round16(w, DType::F16);
    std::vector<double> gu(size_t(nb) * 2 * dff);
    ref_gemv(w.data(), 2 * dff, d_in, x.data(), nb, gu.data());
    DeviceBuffer W = up(wb), X = up(xb), H(A(), int64_t(nb) * dff * 2, "h");
    gemv_silu(DType::F16, W.get(), dff, d_in, X.get(), d_in, nb, H.get(), dff, nullptr);
    const double e1 = rel_err(got16(H), expect(gu));
    // packed (tensor-core kernel), 4 and 8 bits, folded and unfolded scales; batch 1 also the
    // streaming kernel, every bit width
    double e2 = 0;
    // 2..6 streaming, configuration 0..4; 7 lean W4; 8 tensor-core W4 (batch 1)
    for (int kernel : {0, 2, 3, 4, 5, 6, 7, 8, 9})
      for (int bits : {2, 3, 4, 8})
        for (int group : {64, 128}) {
          if (kernel >= 2 ? nb != 1 : (bits == 2 || bits == 3)) continue;
          set_kernel_choice(kernel);
          QData q = make_q(2 * dff, d_in, bits, group);
          ref_qgemv(q.s, q.codes.data(), q.scales.data(), q.zeros.data(), x.data(), nb, gu.data());
          DeviceBuffer H2 = up(std::vector<uint16_t>(size_t(nb) * dff, 0x7E00));  // fp16 NaN
          CHECK(qgemv_silu(q.view(), dff, X.get(), d_in, nb, H2.get(), dff, nullptr));
          e2 = std::max(e2, rel_err(got16(H2), expect(gu)));
        }
    set_qgemv_nb1_kernel(-1);
    if (!(e1 < 2e-3 && e2 < 3e-3)) std::printf("  silu nb %d: float %.2e packed %.2e\n", nb, e1, e2);
    CHECK(e1 < 2e-3);
    CHECK(e2 < 3e-3);
  }
}

TEST(dequant_is_exact) {
  for (int bits : {2, 3, 4, 8})
    for (int group : {32, 128}) {
      QData q = make_q(70, 256, bits, group);
      const int row0 = 3, rows = 60;
      DeviceBuffer O(A(), int64_t(rows) * 256 * 2, "test");
      dequant(q.view(), row0, rows, O.get(), nullptr);
      auto got = down<uint16_t>(O, size_t(rows) * 256);
      int bad = 0;
      for (int r = 0; r < rows; ++r)
        for (int k = 0; k < 256; ++k) {
          const size_t gi = size_t(row0 + r) * (256 / group) + size_t(k / group);
          const float w = (float(q.codes[size_t(row0 + r) * 256 + k]) - q.zeros[gi]) * q.scales[gi];
          if (got[size_t(r) * 256 + k] != host_f32_to_f16(w)) ++bad;
        }
      if (bad) std::printf("  dequant W%d g%d: %d mismatches\n", bits, group, bad);
      CHECK(bad == 0);
    }
}

TEST(own_gemm_matches_reference) {
  for (DType t : {DType::F16, DType::BF16})
    for (auto [m, n, k] : {std::tuple{17, 64, 64}, {100, 130, 256}, {64, 1000, 96}}) {
      auto w = randn(size_t(n) * k, 0.05f), x = randn(size_t(m) * k);
      auto wb = round16(w, t), xb = round16(x, t);
      std::vector<double> ref(size_t(m) * n);
      ref_gemv(w.data(), n, k, x.data(), m, ref.data());
      auto y0 = randn(ref.size());
      DeviceBuffer W = up(wb), X = up(xb), Y = poisoned(ref.size()), Y2 = up(y0);
      gemm_own(t, W.get(), n, k, X.get(), k, m, Y.as<float>(), n, false, nullptr);
      gemm_own(t, W.get(), n, k, X.get(), k, m, Y2.as<float>(), n, true, nullptr);
      const double e = rel_err(down<float>(Y, ref.size()), ref);
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
      const double e2 = rel_err(down<float>(Y2, ref.size()), ref);
      if (!(e < 1e-5 && e2 < 1e-5))
        std::printf("  gemm %s %dx%dx%d: %.2e %.2e\n", dtype_name(t), m, n, k, e, e2);
      CHECK(e < 1e-5);
      CHECK(e2 < 1e-5);
    }
}

TEST(rmsnorm_silu_match_cpu) {
  const int n = 3;
  // 4096: the row held in registers; 4098 (not a multiple of 4) and 20000 (too long): the loop
  for (int d : {4096, 4098, 20000}) {
    auto x = randn(size_t(n) * d), g = randn(size_t(d), 0.5f);
    std::vector<float> ref(x.size());
    hci::rmsnorm(x.data(), g.data(), ref.data(), n, d, 1e-5);
    DeviceBuffer X = up(x), G = up(g), O = poisoned(x.size());
    rmsnorm(DType::F32, X.as<float>(), d, G.as<float>(), n, d, 1e-5f, O.get(), d, nullptr);
    CHECK(rel_err(down<float>(O, x.size()), ref) < 1e-6);
  }
  const int ff = 1000;
  auto gu = randn(size_t(n) * 2 * ff);
  std::vector<float> gate(size_t(n) * ff), upv(size_t(n) * ff);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < ff; ++j) {
      gate[size_t(i) * ff + j] = gu[size_t(i) * 2 * ff + j];
      upv[size_t(i) * ff + j] = gu[size_t(i) * 2 * ff + ff + j];
    }
  hci::silu_mul(gate.data(), upv.data(), int64_t(gate.size()));
  DeviceBuffer GU = up(gu), H(A(), int64_t(n) * ff * 2, "test");
  silu_mul(DType::F16, GU.as<float>(), 2 * ff, ff, n, H.get(), ff, nullptr);
  auto hb = down<uint16_t>(H, size_t(n) * ff);
  std::vector<float> h(hb.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = host_f16_to_f32(hb[i]);
  CHECK(rel_err(h, gate) < 1e-3);
}

TEST(rope_store_and_attention_match_cpu) {
  for (DType kvt : {DType::F32, DType::F16})
    for (auto [H, KVH, hd] : {std::tuple{4, 2, 64}, {2, 2, 128}, {8, 2, 32}}) {
      const int n_ctx = 80, pos0 = 37, n = 9, qd = H * hd, kvd = KVH * hd, ld = qd + 2 * kvd;
      const double theta = 10000.0;
      // rope table as the engine builds it
      std::vector<float> cs(size_t(n_ctx) * hd);
      for (int p = 0; p < n_ctx; ++p)
        for (int f = 0; f < hd / 2; ++f) {
          const float inv = float(1.0 / std::pow(theta, double(2 * f) / hd));
          cs[(size_t(p) * hd / 2 + f) * 2] = float(std::cos(double(p) * inv));
          cs[(size_t(p) * hd / 2 + f) * 2 + 1] = float(std::sin(double(p) * inv));
        }
      // CPU: cache rows for positions 0..pos0+n-1 of sequence 1 (of 2)
      const int L = pos0 + n;
      auto all = randn(size_t(L) * ld);
      std::vector<float> kc(size_t(L) * kvd), vc(size_t(L) * kvd), q(size_t(n) * qd);
      for (int i = 0; i < L; ++i) {
        std::copy_n(&all[size_t(i) * ld + qd], kvd, &kc[size_t(i) * kvd]);
        std::copy_n(&all[size_t(i) * ld + qd + kvd], kvd, &vc[size_t(i) * kvd]);
      }
      for (int i = 0; i < n; ++i) std::copy_n(&all[size_t(pos0 + i) * ld], qd, &q[size_t(i) * qd]);
      hci::rope(kc.data(), L, KVH, hd, 0, theta);
      hci::rope(q.data(), n, H, hd, pos0, theta);
      if (kvt == DType::F16) {  // the GPU cache holds fp16: compare against the rounded cache
        round16(kc, DType::F16);
        round16(vc, DType::F16);
      }
      std::vector<float> ref(size_t(n) * qd), scores(size_t(n) * L);
      hci::attention(q.data(), kc.data(), vc.data(), ref.data(), scores.data(), n, pos0, H, KVH,
                     hd);
      // GPU: store all L rows of sequence 1 (first the past in one call, then the new rows)
      const int64_t cache_elems = int64_t(2) * n_ctx * kvd;
      DeviceBuffer QKV = up(all), CS = up(cs);
      DeviceBuffer KC(A(), cache_elems * dtype_size(kvt), "k"), VC(A(), cache_elems * dtype_size(kvt), "v");
      std::vector<int> seq(static_cast<size_t>(L), 1), pos(static_cast<size_t>(L));
      for (int i = 0; i < L; ++i) pos[size_t(i)] = i;
      DeviceBuffer SEQ = up(seq), POS = up(pos);
      rope_store(kvt, QKV.as<float>(), ld, L, H, KVH, hd, CS.as<float2>(), SEQ.as<int>(),
                 POS.as<int>(), KC.get(), VC.get(), n_ctx, nullptr);
      DeviceBuffer OUT(A(), int64_t(n) * qd * 2, "out");
      attention(kvt, DType::F16, QKV.as<float>() + int64_t(pos0) * ld, ld, n, H, KVH, hd, KC.get(),
                VC.get(), n_ctx, SEQ.as<int>() + pos0, POS.as<int>() + pos0, OUT.get(), qd,
                nullptr);
      auto ob = down<uint16_t>(OUT, size_t(n) * qd);
      std::vector<float> o(ob.size());
      for (size_t i = 0; i < o.size(); ++i) o[i] = host_f16_to_f32(ob[i]);
      const double e = rel_err(o, ref);
      // rotated q written back in place
      auto qkv_back = down<float>(QKV, all.size());
      std::vector<float> qg(q.size());
      for (int i = 0; i < n; ++i)
        std::copy_n(&qkv_back[size_t(pos0 + i) * ld], qd, &qg[size_t(i) * qd]);
      const double eq = rel_err(qg, q);
      if (!(e < 2e-3 && eq < 1e-6))
        std::printf("  attention kv %s H%d KV%d hd%d: out %.2e, rope %.2e\n", dtype_name(kvt), H,
                    KVH, hd, e, eq);
      CHECK(e < 2e-3);
      CHECK(eq < 1e-6);
    }
}

int device_major() {
  int dev = 0, major = 0;
  HCI_CUDA(cudaGetDevice(&dev));
  HCI_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major;
}

TEST(decode_attention_matches_cpu) {
  // n_ctx 640: the shared-memory kernel over several rounds of keys (600) and the new key alone
  // (0); 2048: 1500 positions (12 rounds of keys); 8200: beyond its limit, the online-softmax
  // kernel
  for (int n_ctx : {640, 2048, 8200})
  for (DType kvt : {DType::F32, DType::F16})
    for (auto [H, KVH, hd] : {std::tuple{4, 2, 64}, {2, 2, 128}, {8, 2, 32}}) {
      const int qd = H * hd, kvd = KVH * hd, ld = qd + 2 * kvd;
      // two sequences, one new token each
      const int pos[2] = {n_ctx == 2048 ? 1500 : 600, n_ctx > 1000 ? 77 : 0};
      std::vector<float> cs(size_t(n_ctx) * hd);
      for (int p = 0; p < n_ctx; ++p)
        for (int f = 0; f < hd / 2; ++f) {
          const float inv = float(1.0 / std::pow(10000.0, double(2 * f) / hd));
          cs[(size_t(p) * hd / 2 + f) * 2] = float(std::cos(double(p) * inv));
          cs[(size_t(p) * hd / 2 + f) * 2 + 1] = float(std::sin(double(p) * inv));
        }
      const int64_t cache_elems = int64_t(2) * n_ctx * kvd;
      DeviceBuffer CS = up(cs), KC(A(), cache_elems * dtype_size(kvt), "k"),
                   VC(A(), cache_elems * dtype_size(kvt), "v");
      double worst = 0;
      std::vector<std::vector<float>> rows(2), refs(2);
      for (int sq = 0; sq < 2; ++sq) {
        const int L = pos[sq] + 1;
        auto all = randn(size_t(L) * ld);
        // fill the cache for positions < pos with the prefill kernel
        std::vector<int> seqv(static_cast<size_t>(L), sq), posv(static_cast<size_t>(L));
        for (int i = 0; i < L; ++i) posv[size_t(i)] = i;
        DeviceBuffer QKV = up(all), SEQ = up(seqv), POS = up(posv);
        rope_store(kvt, QKV.as<float>(), ld, L - 1, H, KVH, hd, CS.as<float2>(), SEQ.as<int>(),
                   POS.as<int>(), KC.get(), VC.get(), n_ctx, nullptr);
        // CPU reference over all L positions
        std::vector<float> kc(size_t(L) * kvd), vc(size_t(L) * kvd), q(all.begin() + (L - 1) * ld,
                                                                       all.begin() + (L - 1) * ld + qd);
        for (int i = 0; i < L; ++i) {
          std::copy_n(&all[size_t(i) * ld + qd], kvd, &kc[size_t(i) * kvd]);
          std::copy_n(&all[size_t(i) * ld + qd + kvd], kvd, &vc[size_t(i) * kvd]);
        }
        hci::rope(kc.data(), L, KVH, hd, 0, 10000.0);
        hci::rope(q.data(), 1, H, hd, L - 1, 10000.0);
        if (kvt == DType::F16) {  // cached (not the new) rows are fp16 on the GPU
          std::vector<float> kold(kc.begin(), kc.end() - kvd), vold(vc.begin(), vc.end() - kvd);
          round16(kold, DType::F16);
          round16(vold, DType::F16);
          std::copy(kold.begin(), kold.end(), kc.begin());
          std::copy(vold.begin(), vold.end(), vc.begin());
        }
        refs[size_t(sq)].resize(size_t(qd));
        std::vector<float> scores(static_cast<size_t>(L));
        hci::attention(q.data(), kc.data(), vc.data(), refs[size_t(sq)].data(), scores.data(), 1,
                       L - 1, H, KVH, hd);
        rows[size_t(sq)].assign(all.begin() + (L - 1) * ld, all.begin() + L * ld);
      }
      std::vector<float> both(rows[0]);
      both.insert(both.end(), rows[1].begin(), rows[1].end());
      std::vector<int> rs = {0, 1}, rp = {pos[0], pos[1]};
      DeviceBuffer Q2 = up(both), RS = up(rs), RP = up(rp), OUT(A(), int64_t(2) * qd * 2, "o");
      // the larger relative error of the two fp16 output rows against their references
      auto worst_of_rows = [&](const DeviceBuffer& out) {
        const auto ob = down<uint16_t>(out, size_t(2) * qd);
        double w = 0;
        for (int sq = 0; sq < 2; ++sq) {
          std::vector<float> o(static_cast<size_t>(qd));
          for (int t = 0; t < qd; ++t) o[size_t(t)] = host_f16_to_f32(ob[size_t(sq) * qd + t]);
          w = std::max(w, rel_err(o, refs[size_t(sq)]));
        }
        return w;
      };
      // every split of a head's positions over a cluster of blocks (sm_90+; the positions 0 and
      // 77 leave blocks of the cluster without any), each against the reference
      const int split_default = attention_split();
      const bool early_default = attention_kv_early() != 0;
      for (int variant = 0; variant < 5; ++variant) {
        const int split = variant < 4 ? 1 << variant : 1;  // 1, 2, 4, 8; then 1 with kv_early
        if (split > 1 && device_major() < 9) continue;  // clusters need sm_90
        set_attention_split(split);
        set_attention_kv_early(variant == 4 ? !early_default : early_default);
        HCI_CUDA(cudaMemset(OUT.get(), 0, size_t(2) * qd * 2));
        attention_decode(kvt, DType::F16, Q2.as<float>(), ld, 2, H, KVH, hd, CS.as<float2>(),
                         RS.as<int>(), RP.as<int>(), KC.get(), VC.get(), n_ctx, OUT.get(), qd,
                         nullptr);
        const double w = worst_of_rows(OUT);
        if (!(w < 2e-3))
          std::printf("  decode attention n_ctx %d kv %s H%d KV%d hd%d split %d: %.2e\n", n_ctx,
                      dtype_name(kvt), H, KVH, hd, split, w);
        worst = std::max(worst, w);
      }
      set_attention_split(split_default);
      set_attention_kv_early(early_default);
      CHECK(worst < 2e-3);
      if (n_ctx == 8200 || H != 4) continue;
      // The kernel reads the rows' sequence and position before its PDL wait (to warm L2 with
      // their cache rows and, with kv_early, to load the first keys and values) and again after
      // it. Made stale on purpose: the positions are written by decode_begin, which waits behind
      // a long read while the attention's blocks, launched early (PDL), read what was there
      // before: sequences swapped, positions too large, positions one short. Every run (one
      // block and four per head, first loads before and after the wait) must give the reference.
      const bool pdl_was = pdl_enabled();
      set_pdl(true);
      cudaStream_t str;
      HCI_CUDA(cudaStreamCreateWithFlags(&str, cudaStreamNonBlocking));
      const int64_t big = int64_t(256) << 20;
      DeviceBuffer BIG(A(), big, "big"), SINK(A(), int64_t(read_stream_blocks()) * 4, "sink");
      HCI_CUDA(cudaMemset(BIG.get(), 0, size_t(big)));
      const unsigned stale_before = attention_stale_reads();
      std::vector<int> seq_len = {pos[0], pos[1]};
      DeviceBuffer SL = up(seq_len);
      const std::vector<std::vector<int>> stale_rows = {
          {1, 0, n_ctx - 1, n_ctx - 1}, {0, 1, n_ctx - 1, 3}, {0, 1, std::max(0, pos[0] - 1), 0}};
      int blocks_run = 0;
      for (int variant = 0; variant < 4; ++variant) {
        const int split = variant < 2 ? 1 : 4;
        if (split > 1 && device_major() < 9) continue;
        set_attention_split(split);
        set_attention_kv_early(variant % 2 == 1);
        for (const auto& st : stale_rows) {
          blocks_run += 2 * H * split;
          std::vector<int> rs0 = {st[0], st[1]}, rp0 = {st[2], st[3]};
          DeviceBuffer RS2 = up(rs0), RP2 = up(rp0), OUT2(A(), int64_t(2) * qd * 2, "o");
          // (a pageable upload may still be in flight when cudaMemcpy returns, and `str` does
          // not wait for the legacy stream: without this the stale values could land last)
          HCI_CUDA(cudaDeviceSynchronize());
          read_stream(BIG.get(), big, SINK.as<float>(), str);
          decode_begin(2, SL.as<int>(), RS2.as<int>(), RP2.as<int>(), str);
          attention_decode(kvt, DType::F16, Q2.as<float>(), ld, 2, H, KVH, hd, CS.as<float2>(),
                           RS2.as<int>(), RP2.as<int>(), KC.get(), VC.get(), n_ctx, OUT2.get(), qd,
                           str);
          HCI_CUDA(cudaStreamSynchronize(str));
          const double w2 = worst_of_rows(OUT2);
          if (!(w2 < 2e-3))
            std::printf("  decode attention after stale rows (%d %d %d %d), n_ctx %d kv %s, "
                        "split %d, kv_early %d: %.2e\n", st[0], st[1], st[2], st[3], n_ctx,
                        dtype_name(kvt), split, variant % 2, w2);
          CHECK(w2 < 2e-3);
        }
      }
      set_attention_split(split_default);
      set_attention_kv_early(early_default);
      set_pdl(pdl_was);
      // PDL launched the attention early at least once (else this tested nothing stale)
      const unsigned stale = attention_stale_reads() - stale_before;
      std::printf("  decode attention n_ctx %d kv %s: %u of %d blocks read stale rows early\n",
                  n_ctx, dtype_name(kvt), stale, blocks_run);
      CHECK(stale > 0);
      HCI_CUDA(cudaStreamDestroy(str));
    }
}

TEST(norm_epilogues_match_cpu) {
  DeviceBuffer CNT(A(), 16, "counter");
  HCI_CUDA(cudaMemset(CNT.get(), 0, 16));
  const int d = 512, d_in = 384;
  for (int nb : {1, 3, 16}) {
    auto x = randn(size_t(nb) * d_in), g = randn(size_t(d), 0.5f), y0 = randn(size_t(nb) * d);
    auto xb = round16(x, DType::F16);
    auto expect = [&](const std::vector<double>& prod) {
      std::vector<float> y(y0), n(y.size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = float(y0[i] + prod[i]);
      hci::rmsnorm(y.data(), g.data(), n.data(), nb, d, 1e-5);
      return n;
    };
    auto normed = [&](const DeviceBuffer& O) {
      auto ob = down<uint16_t>(O, size_t(nb) * d);
      std::vector<float> o(ob.size());
      for (size_t i = 0; i < o.size(); ++i) o[i] = host_f16_to_f32(ob[i]);
      return o;
    };
    DeviceBuffer X = up(xb), G = up(g);
    NormEpilogue ne;
    ne.counter = CNT.as<unsigned>();
    ne.gamma = G.as<float>();
    ne.eps = 1e-5f;
    // float weights
    auto w = randn(size_t(d) * d_in, 0.05f);
    auto wb = round16(w, DType::F16);
    std::vector<double> prod(size_t(nb) * d);
    ref_gemv(w.data(), d, d_in, x.data(), nb, prod.data());
    DeviceBuffer W = up(wb), Y = up(y0), O(A(), int64_t(nb) * d * 2, "o");
    ne.out = O.get();
    gemv(DType::F16, W.get(), d, d_in, X.get(), d_in, nb, Y.as<float>(), d, true, nullptr, &ne);
    const double e1 = rel_err(normed(O), expect(prod));
    // packed (tensor-core kernel; batch 1 also the streaming kernel)
    QData q = make_q(d, d_in, 4, 128);
    ref_qgemv(q.s, q.codes.data(), q.scales.data(), q.zeros.data(), x.data(), nb, prod.data());
    double e2 = 0;
    // 2..6 streaming, configuration 0..4; 7 lean W4; 8 tensor-core W4 (batch 1)
    for (int kernel : {0, 2, 3, 4, 5, 6, 7, 8, 9}) {
      if (kernel >= 2 && nb != 1) continue;
      set_kernel_choice(kernel);
      DeviceBuffer Y2 = up(y0), O2(A(), int64_t(nb) * d * 2, "o");
      ne.out = O2.get();
      CHECK(packed_norm_epilogue_supported(q.view(), nb));
      qgemv(q.view(), X.get(), d_in, nb, Y2.as<float>(), d, true, nullptr, &ne);
      e2 = std::max(e2, rel_err(normed(O2), expect(prod)));
    }
    set_qgemv_nb1_kernel(-1);
    unsigned cnt = 1;
    HCI_CUDA(cudaMemcpy(&cnt, CNT.get(), 4, cudaMemcpyDeviceToHost));
    if (!(e1 < 2e-3 && e2 < 2e-3 && cnt == 0))
      std::printf("  norm epilogue nb %d: float %.2e packed %.2e counter %u\n", nb, e1, e2, cnt);
    CHECK(e1 < 2e-3);
    CHECK(e2 < 2e-3);
    CHECK(cnt == 0);
  }
}

TEST(prologue_norm_matches_cpu) {
  // The batch-1 streaming kernel normalizing its own input (NormIn) against the CPU: RMSNorm of
  // the fp32 residual in float64, rounded to fp16 (as the separate norm kernel would store it),
  // times the dequantized weights; plain and SiLU-gated, every bit width and configuration.
  for (int bits : {2, 3, 4, 8})
    for (int d_in : {512, 4096}) {
      const int d = 96;
      auto r = randn(size_t(d_in), 3.0f), g = randn(size_t(d_in), 0.5f);
      r[7] = 80.f;  // an outlier dimension, as in real residual streams
      double ss = 0;
      for (float v : r) ss += double(v) * v;
      const double inv = 1.0 / std::sqrt(ss / d_in + 1e-5);
      std::vector<float> xn(r.size());
      for (size_t i = 0; i < r.size(); ++i) xn[i] = float(double(g[i]) * (double(r[i]) * inv));
      round16(xn, DType::F16);  // rounds in place
      QData q = make_q(2 * d, d_in, bits, 128);  // (the lean 4-bit kernel: groups >= 128)
      std::vector<double> prod(size_t(2 * d));
      ref_qgemv(q.s, q.codes.data(), q.scales.data(), q.zeros.data(), xn.data(), 1, prod.data());
      std::vector<float> gated(static_cast<size_t>(d));
      for (int j = 0; j < d; ++j) {
        const double a = prod[size_t(j)], b = prod[size_t(d + j)];
        gated[size_t(j)] = float(a / (1.0 + std::exp(-a)) * b);
      }
      DeviceBuffer R = up(r), G = up(g);
      NormIn nin;
      nin.x = R.as<float>();
      nin.gamma = G.as<float>();
      nin.eps = 1e-5f;
      double e = 0, es = 0;
      // 5: the lean 4-bit kernel where it applies, 6: its tensor-core scheme, 7: that on d_in > 4096
      for (int config = 0; config < 8; ++config) {
        set_qgemv_nb1_kernel(config < 5 ? 2 : config - 2, config < 5 ? config : -1);
        CHECK(packed_norm_in_supported(q.view(), 1));
        DeviceBuffer Y = poisoned(size_t(2 * d)), H = poisoned(size_t(d));
        qgemv(q.view(), nullptr, d_in, 1, Y.as<float>(), 2 * d, false, nullptr, nullptr, &nin);
        e = std::max(e, rel_err(down<float>(Y, size_t(2 * d)), prod));
        CHECK(qgemv_silu(q.view(), d, nullptr, d_in, 1, H.get(), d, nullptr, &nin));
        auto hb = down<uint16_t>(H, size_t(d));
        std::vector<float> h(hb.size());
        for (size_t i = 0; i < h.size(); ++i) h[i] = host_f16_to_f32(hb[i]);
        es = std::max(es, rel_err(h, gated));
      }
      set_qgemv_nb1_kernel(-1);
      CHECK(!packed_norm_in_supported(q.view(), 2));
      if (!(e < 2e-3 && es < 3e-3))
        std::printf("  prologue norm W%d d_in %d: %.2e, gated %.2e\n", bits, d_in, e, es);
      CHECK(e < 2e-3);
      CHECK(es < 3e-3);
    }
}

namespace {
// A batch-1 W4 product's random inputs and float64 expectations: residual r, the norm's gamma g
// (x = fp16(g * rmsnorm(r)), as the separate norm kernel would store it: xb its fp16 bits), y0 to
// accumulate into; prod = W x, acc = y0 + prod, gated = silu(prod[j]) * prod[d_out / 2 + j].
// outlier != 0: r[3] = outlier (an outlier dimension, as in real residual streams).
struct W4Case {
  QData q;
  std::vector<float> r, g, y0, gated;
  std::vector<uint16_t> xb;
  std::vector<double> prod, acc;
};

W4Case w4_case(int d_out, int d_in, int group, float r_scale, float outlier = 0.f) {
  W4Case c;
  c.q = make_q(d_out, d_in, 4, group);
  c.r = randn(size_t(d_in), r_scale);
  c.g = randn(size_t(d_in), 0.5f);
  c.y0 = randn(size_t(d_out));
  if (outlier != 0.f) c.r[3] = outlier;
  double ss = 0;
  for (float v : c.r) ss += double(v) * v;
  const double inv = 1.0 / std::sqrt(ss / d_in + 1e-5);
  std::vector<float> xn(c.r.size());
  for (size_t i = 0; i < c.r.size(); ++i) xn[i] = float(double(c.g[i]) * (double(c.r[i]) * inv));
  c.xb = round16(xn, DType::F16);  // (rounds xn in place)
  c.prod.resize(size_t(d_out));
  c.acc.resize(size_t(d_out));
  ref_qgemv(c.q.s, c.q.codes.data(), c.q.scales.data(), c.q.zeros.data(), xn.data(), 1,
            c.prod.data());
  for (int i = 0; i < d_out; ++i) c.acc[size_t(i)] = c.prod[size_t(i)] + c.y0[size_t(i)];
  const int dff = d_out / 2;
  c.gated.assign(size_t(dff), 0.f);
  for (int j = 0; j < dff; ++j) {
    const double a = c.prod[size_t(j)], b = c.prod[size_t(dff + j)];
    c.gated[size_t(j)] = float(a / (1.0 + std::exp(-a)) * b);
  }
  return c;
}
}  // namespace

TEST(lean_w4_step_tasks_match_reference) {
  // The lean 4-bit kernel on rows longer than one step (32 x 4 vectors of 32 codes = 4096), with
  // the steps as separate tasks (KSPLIT, default) and as whole rows per warp: Llama-2-7B's down
  // shape (3 steps, the last partial), a 13B-like d_in 5120 (a quarter-full second step) and a
  // grid of a few blocks (37 rows); plain with accumulate, with the prologue norm, SiLU-gated.
  double worst = 0;
  for (auto [d_out, d_in] : {std::pair{4096, 11008}, {300, 5120}, {38, 4608}}) {
    const W4Case c = w4_case(d_out, d_in, 128, 2.0f);
    const QData& q = c.q;
    const auto &y0 = c.y0, &gated = c.gated;
    const auto &prod = c.prod, &acc = c.acc;
    const int dff = d_out / 2;
    DeviceBuffer X = up(c.xb), R = up(c.r), G = up(c.g);
    NormIn nin;
    nin.x = R.as<float>();
    nin.gamma = G.as<float>();
    nin.eps = 1e-5f;
    for (int mode : {3, 4}) {  // 4: the tensor-core (MMA) scheme of the same kernel
    set_qgemv_nb1_kernel(mode);
    std::vector<float> by_split[2];
    for (int split : {0, 1}) {
      set_qgemv4_ksplit(split != 0);
      DeviceBuffer Y = up(y0), Yn = poisoned(size_t(d_out)), H = poisoned(size_t(dff));
      qgemv(q.view(), X.get(), d_in, 1, Y.as<float>(), d_out, true, nullptr);
      qgemv(q.view(), nullptr, d_in, 1, Yn.as<float>(), d_out, false, nullptr, nullptr, &nin);
      CHECK(qgemv_silu(q.view(), dff, nullptr, d_in, 1, H.get(), dff, nullptr, &nin));
      auto hb = down<uint16_t>(H, size_t(dff));
      std::vector<float> h(hb.size());
      for (size_t i = 0; i < h.size(); ++i) h[i] = host_f16_to_f32(hb[i]);
      by_split[split] = down<float>(Yn, size_t(d_out));
      const double e = rel_err(down<float>(Y, size_t(d_out)), acc),
                   en = rel_err(by_split[split], prod), eg = rel_err(h, gated);
      worst = std::max({worst, e, en});
      if (!(e < 2e-3 && en < 2e-3 && eg < 3e-3))
        std::printf("  lean W4 (mode %d) %dx%d split %d: accumulate %.2e, norm %.2e, gated %.2e\n",
                    mode, d_out, d_in, split, e, en, eg);
      CHECK(e < 2e-3);
      CHECK(en < 2e-3);
      CHECK(eg < 3e-3);
    }
    // the two schedules add the same per-lane partial sums in different orders only
    std::vector<double> whole(by_split[0].begin(), by_split[0].end());
    CHECK(rel_err(by_split[1], whole) < 1e-5);
    }
  }
  set_qgemv4_ksplit(true);
  set_qgemv_nb1_kernel(-1);
  std::printf("  worst lean W4 rel err on multi-step rows %.2e\n", worst);
}

TEST(tensor_core_w4_gemv_matches_reference) {
  // The lean 4-bit kernel's tensor-core scheme (qgemv4_mma.cuh) against the float64 reference:
  // row pairs with an odd last row (37 rows; SiLU pairs 65 and 150), segments of 128 columns with
  // a partial last step (d_in 384, 1152, 11008 = 2.7 steps of 4096), groups of 128, 256 and a
  // whole row, plain, accumulating, with the prologue norm, SiLU-gated and with the norm
  // epilogue; on the whole GPU and on 16 and 3 multiprocessors (persistent grids of fewer
  // blocks: more units per warp, more KSPLIT tasks per block). Its fp32 accumulation keeps plain products within 1e-4 of the
  // reference where the SIMT kernel's fp16 partial sums reach ~1e-3 (packed_gemv_matches...).
  int sms = 0;
  HCI_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  DeviceBuffer CNT(A(), 16, "counter");
  HCI_CUDA(cudaMemset(CNT.get(), 0, 16));
  double worst = 0;
  {
  set_qgemv_nb1_kernel(4);
  for (int sm : {sms, 16, 3}) {
    set_sm_count(sm);
    for (auto [d_out, d_in, group] : {std::tuple{130, 384, 128}, {37, 1152, 128}, {300, 2048, 256},
                                      {64, 4096, 4096}, {22016, 4096, 128}, {4096, 11008, 128}}) {
      if (sm != sms && d_out < 4096) continue;
      const W4Case c = w4_case(d_out, d_in, group, 2.0f, 60.f);
      const QData& q = c.q;
      const auto &y0 = c.y0, &gated = c.gated;
      const auto &prod = c.prod, &acc = c.acc;
      const int dff = d_out / 2;
      std::vector<float> normed(acc.begin(), acc.end()), nref(acc.size());
      hci::rmsnorm(normed.data(), c.g.data(), nref.data(), 1, d_out, 1e-5);
      DeviceBuffer X = up(c.xb), R = up(c.r), G = up(c.g);
      NormIn nin;
      nin.x = R.as<float>();
      nin.gamma = G.as<float>();
      nin.eps = 1e-5f;
      DeviceBuffer Y = poisoned(size_t(d_out)), Ya = up(y0), Yn = poisoned(size_t(d_out));
      DeviceBuffer H = poisoned(size_t(dff));
      qgemv(q.view(), X.get(), d_in, 1, Y.as<float>(), d_out, false, nullptr);
      qgemv(q.view(), nullptr, d_in, 1, Yn.as<float>(), d_out, false, nullptr, nullptr, &nin);
      if (d_out % 2 == 0)  // (gate rows, then as many up rows)
        CHECK(qgemv_silu(q.view(), dff, nullptr, d_in, 1, H.get(), dff, nullptr, &nin));
      const double e = rel_err(down<float>(Y, size_t(d_out)), prod);
      const double en = rel_err(down<float>(Yn, size_t(d_out)), prod);
      auto hb = down<uint16_t>(H, size_t(dff));
      std::vector<float> h(hb.size());
      for (size_t i = 0; i < h.size(); ++i) h[i] = host_f16_to_f32(hb[i]);
      const double eg = d_out % 2 == 0 ? rel_err(h, gated) : 0.0;
      // accumulate, then the norm epilogue (gamma of d_out values: the first d_out of c.g)
      double ea = 0, ee = 0;
      if (d_out <= d_in) {
        NormEpilogue ne;
        ne.counter = CNT.as<unsigned>();
        ne.gamma = G.as<float>();
        ne.eps = 1e-5f;
        DeviceBuffer O(A(), int64_t(d_out) * 2, "o");
        ne.out = O.get();
        qgemv(q.view(), X.get(), d_in, 1, Ya.as<float>(), d_out, true, nullptr, &ne);
        ea = rel_err(down<float>(Ya, size_t(d_out)), acc);
        auto ob = down<uint16_t>(O, size_t(d_out));
        std::vector<float> o(ob.size());
        for (size_t i = 0; i < o.size(); ++i) o[i] = host_f16_to_f32(ob[i]);
        ee = rel_err(o, nref);
      }
      worst = std::max({worst, e, ea});
      if (!(e < 1e-4 && en < 1e-3 && ea < 1e-4 && eg < 2e-3 && ee < 2e-3))
        std::printf("  tensor-core W4 %dx%d g%d on %d SMs: plain %.2e, norm %.2e, gated %.2e, "
                    "accumulate %.2e, epilogue %.2e\n",
                    d_out, d_in, group, sm, e, en, eg, ea, ee);
      CHECK(e < 1e-4);
      CHECK(en < 1e-3);
      CHECK(eg < 2e-3);
      CHECK(ea < 1e-4);
      CHECK(ee < 2e-3);
    }
  }
  }
  unsigned cnt = 1;
  HCI_CUDA(cudaMemcpy(&cnt, CNT.get(), 4, cudaMemcpyDeviceToHost));
  CHECK(cnt == 0);
  set_sm_count(sms);
  set_qgemv_nb1_kernel(-1);
  std::printf("  worst tensor-core W4 rel err %.2e (plain and accumulating; fp32 sums)\n", worst);
}

TEST(nll_and_argmax_match_cpu) {
  const int n = 5, V = 32000;
  auto lg = randn(size_t(n) * V, 3.0f);
  lg[size_t(2) * V + 17] = 100.f;
  lg[size_t(2) * V + 18] = 100.f;  // tie: lowest index wins
  std::vector<int> tgt = {1, 31999, 17, -1, 5};
  DeviceBuffer L = up(lg), T = up(tgt), N = poisoned(n);
  DeviceBuffer AM(A(), n * 4, "am");
  nll_rows(L.as<float>(), V, T.as<int>(), n, N.as<float>(), nullptr);
  argmax_rows(L.as<float>(), V, n, AM.as<int>(), nullptr);
  auto nll = down<float>(N, n);
  auto am = down<int>(AM, n);
  for (int i = 0; i < n; ++i) {
    const float* row = &lg[size_t(i) * V];
    const double want = tgt[size_t(i)] < 0 ? 0.0 : hci::log_sum_exp(row, V) - row[tgt[size_t(i)]];
    CHECK_NEAR(nll[size_t(i)], want, 1e-4 * std::max(1.0, std::fabs(want)));
    CHECK(am[size_t(i)] == int(std::max_element(row, row + V) - row));
  }
  CHECK(am[2] == 17);
}

TEST(allocator_enforces_cap) {
  DeviceAllocator a(1 << 20);
  void* p = a.alloc(600 << 10, "first");
  CHECK(a.used() == (600 << 10) && a.peak() == (600 << 10));
  CHECK_THROWS(a.alloc(600 << 10, "second"), HCI_ERR_OUT_OF_MEMORY, "budget");
  a.free(p);
  CHECK(a.used() == 0 && a.peak() == (600 << 10));
  hci_gpu_bandwidth bw{};
  measure_bandwidth(0, 64 << 20, 3, &bw);
  std::printf("  64 MiB: device copy %.0f GB/s, read %.0f GB/s, H2D %.1f GB/s, D2H %.1f GB/s\n",
              bw.hbm_gbps, bw.hbm_read_gbps, bw.h2d_pinned_gbps, bw.d2h_pinned_gbps);
  CHECK(bw.hbm_gbps > 0 && bw.h2d_pinned_gbps > 0);
}

namespace {

// Times the decode GEMVs of Llama-2-7B's layer shapes, every variant, against measured bandwidth.
int bench() {
  hci_gpu_bandwidth bw{};
  measure_bandwidth(0, int64_t(2) << 30, 10, &bw);
  std::printf("HBM: device copy %.0f GB/s (read+write), read-only kernel %.0f GB/s; pinned H2D "
              "%.1f GB/s, D2H %.1f GB/s\n",
              bw.hbm_gbps, bw.hbm_read_gbps, bw.h2d_pinned_gbps, bw.d2h_pinned_gbps);
  struct S {
    const char* name;
    int d_out, d_in;
  };
  const S shapes[] = {{"qkv", 12288, 4096},
                      {"o", 4096, 4096},
                      {"gate_up", 22016, 4096},
                      {"down", 4096, 11008},
                      {"lm_head", 32000, 4096}};
  cudaStream_t s;
  HCI_CUDA(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  HCI_CUDA(cudaEventCreate(&e0));
  HCI_CUDA(cudaEventCreate(&e1));
  const int copies = 3, reps = 30;
  auto timeit = [&](auto&& launch) {
    for (int i = 0; i < 3; ++i) launch(i % copies);
    HCI_CUDA(cudaEventRecord(e0, s));
    for (int i = 0; i < reps; ++i) launch(i % copies);
    HCI_CUDA(cudaEventRecord(e1, s));
    HCI_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    HCI_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    return double(ms) / reps;
  };
  std::printf("%-8s %-10s %-4s %-8s %10s %10s %8s\n", "shape", "format", "nb", "variant", "us",
              "GB/s", "% copy");
  for (const S& sh : shapes) {
    // fp16
    std::vector<DeviceBuffer> W;
    for (int c = 0; c < copies; ++c) {
      W.emplace_back(A(), int64_t(sh.d_out) * sh.d_in * 2, "w");
      fill_normal(DType::F16, W.back().get(), int64_t(sh.d_out) * sh.d_in, 1, c, 0.02f, s);
    }
    DeviceBuffer X(A(), int64_t(16) * sh.d_in * 2, "x"), Y(A(), int64_t(16) * sh.d_out * 4, "y");
    fill_normal(DType::F16, X.get(), int64_t(16) * sh.d_in, 2, 0, 1.0f, s);
    const double bytes = double(sh.d_out) * sh.d_in * 2;
    for (int nb : {1, 4, 16})
      for (int v = 0; v <= 4; ++v) {
        if (nb != 1 && v) continue;
        set_gemv_variants(v, 0);
        const double us = 1e3 * timeit([&](int c) {
          gemv(DType::F16, W[size_t(c)].get(), sh.d_out, sh.d_in, X.get(), sh.d_in, nb,
               Y.as<float>(), sh.d_out, false, s);
        });
        std::printf("%-8s %-10s %-4d %-8d %10.1f %10.0f %7.1f%%\n", sh.name, "fp16", nb, v, us,
                    bytes / us / 1e3, 100 * bytes / us / 1e3 / bw.hbm_gbps);
      }
    W.clear();
    // packed
    for (int bits : {4, 3, 2, 8}) {
      PackedShape ps{sh.d_out, sh.d_in, bits, 128};
      std::vector<DeviceBuffer> lo, hi, sz;
      for (int c = 0; c < copies; ++c) {
        lo.emplace_back(A(), ps.lo_bytes(), "lo");
        hi.emplace_back(A(), std::max<int64_t>(16, ps.hi_bytes()), "hi");
        sz.emplace_back(A(), ps.sz_bytes(), "sz");
        fill_words(lo.back().as<uint32_t>(), ps.lo_bytes() / 4, 3, c, s);
        fill_words(hi.back().as<uint32_t>(), std::max<int64_t>(16, ps.hi_bytes()) / 4, 4, c, s);
        fill_scales(sz.back().as<uint32_t>(), int64_t(sh.d_out) * ps.n_groups(), 5, c, 0.002f,
                    8.f, s);
      }
      const double qbytes = double(ps.lo_bytes() + ps.hi_bytes() + ps.sz_bytes());
      for (int nb : {1, 4, 16})
        for (int v = 0; v <= 10; ++v) {
          if (v >= 6) {
            if (nb != 1) continue;
          } else {
            if ((nb != 1 || bits != 4) && v && v != 5) continue;
            if (v == 5 && bits != 4) continue;
          }
          set_gemv_variants(0, v);
          const double us = 1e3 * timeit([&](int c) {
            const PackedView pv = packed_view(ps, lo[size_t(c)].as<uint8_t>(),
                                              hi[size_t(c)].as<uint8_t>(), sz[size_t(c)].as<uint32_t>());
            qgemv(pv, X.get(), sh.d_in, nb, Y.as<float>(), sh.d_out, false, s);
          });
          char fmt[16];
          std::snprintf(fmt, sizeof fmt, "W%d g128", bits);
          std::printf("%-8s %-10s %-4d %-8d %10.1f %10.0f %7.1f%%\n", sh.name, fmt, nb, v, us,
                      qbytes / us / 1e3, 100 * qbytes / us / 1e3 / bw.hbm_gbps);
        }
    }
  }
  set_gemv_variants(0, 0);
  HCI_CUDA(cudaStreamSynchronize(s));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  hci_gpu_device_info info{};
  device_info(0, &info);
  if (!info.available) {
    std::printf("SKIP: GPU kernel tests not run: %s\n", info.reason);
    return 77;
  }
  std::printf("GPU: %s (sm_%d%d, %d SMs), %s\n", info.name, info.cc_major, info.cc_minor,
              info.sm_count, info.build);
  set_pdl(info.cc_major >= 9);
  try {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench();
  } catch (const std::exception& e) {
    std::printf("bench failed: %s\n", e.what());
    return 1;
  }
  return check::run_all();
}
