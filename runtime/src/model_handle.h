// The definition of the opaque hci_model handle, shared by the CPU (api.cpp) and GPU
// (gpu/gpu_api.cpp) entry points.
#pragma once

#include <shared_mutex>

#include "model.h"

struct hci_model {
  hci::Model m;
  mutable std::shared_mutex mu;  // exclusive: quantize / set ranks; shared: everything else
};
