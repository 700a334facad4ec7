#include "mixedfit/interrupt.hpp"

#include <atomic>
#include <chrono>

namespace mixedfit {

namespace {
std::atomic<InterruptCheck> g_check{nullptr};
thread_local std::chrono::steady_clock::time_point t_last_check{};
thread_local bool t_stopped = false;
}  // namespace

void set_interrupt_check(InterruptCheck check) { g_check.store(check); }

bool interrupt_requested() {
  if (t_stopped) return true;
  const InterruptCheck check = g_check.load(std::memory_order_relaxed);
  if (!check) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now - t_last_check < std::chrono::milliseconds(kInterruptPeriodMs)) return false;
  t_last_check = now;
  t_stopped = check();
  return t_stopped;
}

void clear_interrupt() { t_stopped = false; }

}  // namespace mixedfit
