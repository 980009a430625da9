// The exception guard of every C entry point (api.cpp, gpu/gpu_api.cpp): runs a callable and
// turns any exception into an hci_status and a message in the caller's buffer, so that nothing
// is ever thrown across the C boundary.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "error.h"

namespace hci {

inline void write_err(char* err, size_t err_len, const char* msg) {
  if (!err || err_len == 0) return;
  std::snprintf(err, err_len, "%s", msg);
}

template <typename F>
hci_status guard(char* err, size_t err_len, F&& fn) noexcept {
  try {
    if (err && err_len) err[0] = '\0';
    fn();
    return HCI_OK;
  } catch (const hci::Error& e) {
    write_err(err, err_len, e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    write_err(err, err_len, "out of memory");
    return HCI_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    write_err(err, err_len, (std::string("internal error: ") + e.what()).c_str());
    return HCI_ERR_INTERNAL;
  } catch (...) {
    write_err(err, err_len, "internal error: unknown exception");
    return HCI_ERR_INTERNAL;
  }
}

inline void need(bool ok, const char* what) {
  if (!ok) hci::fail(HCI_ERR_INVALID_ARGUMENT, what);
}

}  // namespace hci
