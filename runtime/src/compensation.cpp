#include "compensation.h"

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calibration.h"
#include "error.h"
#include "forward.h"
#include "gptq.h"
#include "lowrank.h"
#include "parallel.h"
#include "quantize.h"

namespace hci {

namespace {

void validate(const Model& m, const QuantSettings& s) {
  const int n_layers = m.cfg.n_layers;
  const int end = s.layer_end < 0 ? n_layers : s.layer_end;
  if (s.bits != 0 && s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8)
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: bits must be 0, 2, 3, 4 or 8, got " +
                                       std::to_string(s.bits));
  if (s.bits && s.group_size != -1 && s.group_size != 32 && s.group_size != 64 &&
      s.group_size != 128)
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: group_size must be 32, 64, 128 or -1, got " +
                                       std::to_string(s.group_size));
  if (s.max_rank < 0) fail(HCI_ERR_INVALID_ARGUMENT, "quant params: max_rank must be >= 0");
  if (s.layer_begin < 0 || s.layer_begin > end || end > n_layers)
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: layer range [" + std::to_string(s.layer_begin) +
                                       ", " + std::to_string(end) + ") is outside [0, " +
                                       std::to_string(n_layers) + ")");
  if (s.kind_mask & ~uint32_t(0x7F))
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: kind_mask has bits beyond the 7 linear kinds");
  if (s.method != 0 && s.method != 1)
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: method must be 0 (RTN) or 1 (GPTQ), got " +
                                       std::to_string(s.method));
  if (s.act_order && s.method != 1)
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: act_order applies to GPTQ (method 1) only");
  if (!(s.damp_percent >= 0 && s.damp_percent <= 1))
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: damp_percent must be in [0, 1] (0.01 = 1%)");
  if (s.scaling < 0 || s.scaling > 2)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "quant params: scaling must be 0 (plain), 1 (act-diag) or 2 (act-full), got " +
             std::to_string(s.scaling));
  if (!(s.eig_floor > 0 && s.eig_floor < 1))
    fail(HCI_ERR_INVALID_ARGUMENT, "quant params: eig_floor must be in (0, 1)");
  if (!s.bits) return;
  const bool needs_stats = s.max_rank > 0 && s.scaling != 0;
  if ((s.method == 1 || needs_stats) && !m.calib)
    fail(HCI_ERR_INVALID_ARGUMENT,
         std::string("quant params: ") + (s.method == 1 ? "GPTQ" : "activation-aware scaling") +
             " needs calibration statistics: call hci_model_calibrate first");
  if (s.method == 0 && needs_stats && s.scaling == 2 && !m.calib->full_covariance)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "quant params: act-full scaling needs the activation covariance, but the model was "
         "calibrated without it (full_covariance = 0)");
}

// Quantizes linear `idx` (RTN, or GPTQ with Hessian H) and factors its residual.
void quantize_linear(Model& m, int idx, const QuantSettings& s, const double* H,
                     const Scaling& scaling) {
  Linear& lin = m.linear(idx);
  const int g = s.group_size == -1 ? lin.d_in : s.group_size;
  try {
    if (s.method == 1) {
      GptqSettings gs;
      gs.bits = s.bits;
      gs.group_size = g;
      gs.act_order = s.act_order;
      gs.damp = s.damp_percent;
      gs.groups_from_block_start = s.groups_from_block_start;
      gptq_quantize(lin.w.data(), lin.d_out, lin.d_in, H, gs, lin.codes, lin.scales, lin.zeros,
                    lin.g_idx, lin.w_deq);
    } else {
      quantize_rtn(lin.w.data(), lin.d_out, lin.d_in, s.bits, g, lin.codes, lin.scales,
                   lin.zeros, lin.w_deq);
    }
    lin.bits = s.bits;
    lin.group_size = g;
    std::vector<double> E(lin.w.size());
    double e2 = 0;
    for (size_t j = 0; j < E.size(); ++j) {
      E[j] = double(lin.w[j]) - double(lin.w_deq[j]);
      e2 += E[j] * E[j];
    }
    lin.norm_e = std::sqrt(e2);
    if (s.max_rank > 0) {
      factorize_scaled(E, lin.d_out, lin.d_in, s.max_rank, scaling, lin.A, lin.B, lin.singular);
      lin.scaling = scaling.kind;
      lin.err_prefix = prefix_errors(E, lin.d_out, lin.d_in, lin.A, lin.B, int(lin.singular.size()));
    }
    lin.max_rank = int(lin.singular.size());
    lin.rank = lin.max_rank;
  } catch (const Error& e) {
    fail(e.status(), linear_name(idx) + ": " + e.what());
  }
}

Scaling scaling_from(const ActStats& st, const QuantSettings& s) {
  if (s.scaling == Scaling::kActDiag) return make_diag_scaling(st.sq.data(), st.d, s.eig_floor);
  return make_full_scaling(st.H.data(), st.d, s.eig_floor);
}

}  // namespace

void quantize_model(Model& m, const QuantSettings& s, int n_threads, int64_t* progress,
                    const int32_t* cancel) {
  validate(m, s);
  const int end = s.layer_end < 0 ? m.cfg.n_layers : s.layer_end;
  std::vector<int> selected;
  for (int i = 0; i < m.n_linears(); ++i) {
    m.linear(i).clear_quantization();
    const int layer = i / 7, kind = i % 7;
    if (s.bits && layer >= s.layer_begin && layer < end && (s.kind_mask >> kind & 1u))
      selected.push_back(i);
  }
  for (int i : selected) {
    const Linear& lin = m.linear(i);
    const int g = s.group_size == -1 ? lin.d_in : s.group_size;
    if (lin.d_in % g != 0)
      fail(HCI_ERR_INVALID_ARGUMENT, linear_name(i) + ": group size " + std::to_string(g) +
                                         " does not divide d_in " + std::to_string(lin.d_in));
  }
  const bool scaled = s.max_rank > 0 && s.scaling != Scaling::kPlain;
  auto cancelled = [&] { return cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED); };
  auto done = [&] {
    if (progress) __atomic_add_fetch(progress, 1, __ATOMIC_RELAXED);
  };
  try {
    if (s.method == 0) {
      // RTN: every selected linear at once; scalings per (layer, input group) first.
      std::map<int, Scaling> scalings;  // key layer * kInputGroups + group
      if (scaled) {
        for (int i : selected) scalings[i / 7 * kInputGroups + input_group(i % 7)];
        std::vector<int> keys;
        for (auto& kv : scalings) keys.push_back(kv.first);
        parallel_for(int64_t(keys.size()), n_threads, [&](int64_t k, int) {
          const int key = keys[size_t(k)];
          const ActStats& st = m.calib->layers[size_t(key / kInputGroups)][size_t(key % kInputGroups)];
          scalings.at(key) = scaling_from(st, s);
        });
      }
      const Scaling plain;
      parallel_for(int64_t(selected.size()), n_threads, [&](int64_t item, int) {
        if (cancelled()) fail(HCI_ERR_CANCELLED, "quantization cancelled");
        const int idx = selected[size_t(item)];
        const Scaling& sc =
            scaled ? scalings.at(idx / 7 * kInputGroups + input_group(idx % 7)) : plain;
        quantize_linear(m, idx, s, nullptr, sc);
        done();
      });
    } else if (!selected.empty()) {
      // GPTQ, sequential: block by block over the calibration windows.
      const int last = selected.back() / 7;
      BlockRunner runner(m, *m.calib, n_threads, cancel);
      for (int l = 0; l <= last; ++l) {
        std::vector<int> here;
        unsigned groups = 0;
        for (int i : selected)
          if (i / 7 == l) {
            here.push_back(i);
            groups |= 1u << input_group(i % 7);
          }
        if (!here.empty()) {
          const std::array<ActStats, kInputGroups> st = runner.collect(l, groups);
          std::array<Scaling, kInputGroups> sc;
          if (scaled) {
            std::vector<int> gs;
            for (int g = 0; g < kInputGroups; ++g)
              if (groups >> g & 1u) gs.push_back(g);
            parallel_for(int64_t(gs.size()), n_threads, [&](int64_t k, int) {
              const int g = gs[size_t(k)];
              sc[size_t(g)] = scaling_from(st[size_t(g)], s);
            });
          }
          parallel_for(int64_t(here.size()), n_threads, [&](int64_t item, int) {
            if (cancelled()) fail(HCI_ERR_CANCELLED, "quantization cancelled");
            const int idx = here[size_t(item)];
            const int g = input_group(idx % 7);
            quantize_linear(m, idx, s, st[size_t(g)].H.data(), sc[size_t(g)]);
            done();
          });
        }
        if (l < last) runner.advance(l);
      }
    }
  } catch (...) {
    for (int i = 0; i < m.n_linears(); ++i) m.linear(i).clear_quantization();
    throw;
  }
}

}  // namespace hci
