#include "compensation.h"

#include <cmath>
#include <string>
#include <vector>

#include "error.h"
#include "lowrank.h"
#include "parallel.h"
#include "quantize.h"

namespace hci {

void quantize_model(Model& m, const QuantSettings& s, int n_threads, int64_t* progress,
                    const int32_t* cancel) {
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
  try {
    parallel_for(int64_t(selected.size()), n_threads, [&](int64_t item, int) {
      if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED))
        fail(HCI_ERR_CANCELLED, "quantization cancelled");
      const int idx = selected[size_t(item)];
      Linear& lin = m.linear(idx);
      const int g = s.group_size == -1 ? lin.d_in : s.group_size;
      quantize_rtn(lin.w.data(), lin.d_out, lin.d_in, s.bits, g, lin.codes, lin.scales,
                   lin.zeros, lin.w_deq);
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
        try {
          factorize_residual(E, lin.d_out, lin.d_in, s.max_rank, lin.A, lin.B, lin.singular);
        } catch (const Error& e) {
          fail(e.status(), linear_name(idx) + ": " + e.what());
        }
      }
      lin.max_rank = int(lin.singular.size());
      lin.rank = lin.max_rank;
      if (progress) __atomic_add_fetch(progress, 1, __ATOMIC_RELAXED);
    });
  } catch (...) {
    for (int i = 0; i < m.n_linears(); ++i) m.linear(i).clear_quantization();
    throw;
  }
}

}  // namespace hci
