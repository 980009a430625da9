// Struct layouts of hcinfer_gpu.h that the TypeScript bindings (ffi/gpu.ts) encode by offset.
#pragma once

#include <cstddef>

#include "hcinfer_gpu.h"

static_assert(sizeof(hci_gpu_device_info) == 584 &&
                  offsetof(hci_gpu_device_info, total_memory) == 40 &&
                  offsetof(hci_gpu_device_info, memory_clock_khz) == 64 &&
                  offsetof(hci_gpu_device_info, name) == 72 &&
                  offsetof(hci_gpu_device_info, reason) == 200 &&
                  offsetof(hci_gpu_device_info, build) == 456,
              "hci_gpu_device_info layout");
static_assert(sizeof(hci_gpu_bandwidth) == 48 && offsetof(hci_gpu_bandwidth, bytes) == 32 &&
                  offsetof(hci_gpu_bandwidth, sm_count) == 44,
              "hci_gpu_bandwidth layout");
static_assert(sizeof(hci_gpu_params) == 80 && offsetof(hci_gpu_params, placement) == 24 &&
                  offsetof(hci_gpu_params, memory_budget) == 40 &&
                  offsetof(hci_gpu_params, prefill_chunk) == 48 &&
                  offsetof(hci_gpu_params, cpu_threads) == 52 &&
                  offsetof(hci_gpu_params, rank_controller) == 68 &&
                  offsetof(hci_gpu_params, controller_slowdown_pct) == 72 &&
                  offsetof(hci_gpu_params, sm_limit) == 76,
              "hci_gpu_params layout");
static_assert(sizeof(hci_gpu_synth_params) == 24 && offsetof(hci_gpu_synth_params, rank) == 16,
              "hci_gpu_synth_params layout");
static_assert(sizeof(hci_gpu_comp_stats) == 104 && offsetof(hci_gpu_comp_stats, steps) == 16 &&
                  offsetof(hci_gpu_comp_stats, rank_fraction) == 72 &&
                  offsetof(hci_gpu_comp_stats, prefill_cpu_ms) == 88,
              "hci_gpu_comp_stats layout");
static_assert(sizeof(hci_gpu_model_info) == 136 &&
                  offsetof(hci_gpu_model_info, weight_bytes) == 64 &&
                  offsetof(hci_gpu_model_info, sm_count) == 128,
              "hci_gpu_model_info layout");
static_assert(sizeof(hci_gpu_bench_params) == 32 && offsetof(hci_gpu_bench_params, seed) == 24,
              "hci_gpu_bench_params layout");
static_assert(sizeof(hci_gpu_bench_result) == 96 &&
                  offsetof(hci_gpu_bench_result, weight_bytes_per_step) == 56 &&
                  offsetof(hci_gpu_bench_result, graph_used) == 88,
              "hci_gpu_bench_result layout");
