// Default parameter structs of hcinfer_gpu.h, shared by the CUDA build (gpu_api.cpp) and the
// build without CUDA (gpu_stub.cpp) so both report the same defaults.
#pragma once

#include "hcinfer_gpu.h"

namespace hci::gpu {

inline hci_gpu_params default_params() {
  hci_gpu_params p{};
  p.device = 0;
  p.weights = HCI_GPU_WEIGHTS_CURRENT;
  p.dtype = HCI_GPU_F16;
  p.kv_dtype = HCI_GPU_F16;
  p.max_batch = 1;
  p.n_ctx = 0;
  p.placement = HCI_GPU_PLACE_NONE;
  p.offload = 1;
  p.use_graphs = 1;
  p.gemm = HCI_GPU_GEMM_AUTO;
  p.memory_budget = 0;
  p.prefill_chunk = 0;
  p.cpu_threads = 0;
  p.cpu_first_core = 2;
  p.factor_dtype = HCI_GPU_FACTOR_BF16;
  p.prefill_comp = HCI_GPU_PREFILL_COMP_CPU;
  p.rank_controller = 0;
  p.controller_slowdown_pct = 0;  // the controller default (3%)
  p.sm_limit = 0;                 // every SM
  return p;
}

inline hci_gpu_synth_params default_synth_params() {
  hci_gpu_synth_params s{};
  s.seed = 0;
  s.bits = 0;
  s.group_size = 128;
  s.rank = 0;
  s.reserved = 0;
  return s;
}

}  // namespace hci::gpu
