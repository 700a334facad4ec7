// Running two pieces of work at once, one on a helper std::thread, without letting an
// exception on either side terminate the process.
#pragma once

#include <exception>
#include <system_error>
#include <thread>

namespace mixedfit {

// Runs `theirs` on a new thread and `mine` on the calling thread, waits for both, then
// rethrows the first exception either raised (the helper's first). If the system refuses a
// thread, `theirs` runs on the calling thread after `mine`.
template <typename Theirs, typename Mine>
void run_pair(Theirs&& theirs, Mine&& mine) {
  std::exception_ptr their_error, my_error;
  std::thread helper;
  try {
    helper = std::thread([&]() {
      try {
        theirs();
      } catch (...) {
        their_error = std::current_exception();
      }
    });
  } catch (const std::system_error&) {
    mine();
    theirs();
    return;
  }
  try {
    mine();
  } catch (...) {
    my_error = std::current_exception();
  }
  helper.join();
  if (their_error) std::rethrow_exception(their_error);
  if (my_error) std::rethrow_exception(my_error);
}

}  // namespace mixedfit
