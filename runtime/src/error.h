// The one exception type used inside the library. It carries an hci_status and a message that
// names what failed and where; api.cpp converts it (and any other exception) to a status code and
// error text at the C boundary, so nothing is ever thrown across it.
#pragma once

#include <stdexcept>
#include <string>

#include "hcinfer.h"

namespace hci {

class Error : public std::runtime_error {
 public:
  Error(hci_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  hci_status status() const { return status_; }

 private:
  hci_status status_;
};

[[noreturn]] inline void fail(hci_status status, const std::string& message) {
  throw Error(status, message);
}

}  // namespace hci
