#include "mixedfit/dense_chol.hpp"

#include <Eigen/Cholesky>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "mixedfit/interrupt.hpp"

#if defined(__linux__)
#include <sched.h>
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define MIXEDFIT_CPU_RELAX() _mm_pause()
#else
#define MIXEDFIT_CPU_RELAX() ((void)0)
#endif

namespace mixedfit {

namespace {

using Matrix = Eigen::MatrixXd;
using Index = Eigen::Index;

// Below this order Eigen's LLT is used as is: with two threads on two cores the blocked
// algorithm's best times are lower from about 256 on, but its median times only from about 384
// (the second thread's start and the per-step barriers cost tens of microseconds).
constexpr Index kMinBlockedOrder = 384;

// Column-block width by order, measured on two cores: 48-64 is best up to about 800, 96-128
// above 1000 (fewer steps and larger products; 64 costs 2-5% at 1145 and 2000).
Index default_block(Index n) { return n < 1000 ? 64 : n < 1800 ? 96 : 128; }

constexpr int kMaxDefaultThreads = 8;

int initial_threads() {
  if (const char* env = std::getenv("MIXEDFIT_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return static_cast<int>(std::min<long>(v, 1 << 16));
  }
  int hw = static_cast<int>(std::thread::hardware_concurrency());  // 0 when unknown
#if defined(__linux__)
  // The CPUs this process may run on (taskset, cpusets) can be fewer than the machine's.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
    hw = hw > 0 ? std::min(hw, CPU_COUNT(&set)) : CPU_COUNT(&set);
#endif
  return std::max(1, std::min(hw, kMaxDefaultThreads));
}

// Test hook: a helper thread of the blocked factorization throws at this step (-1: never).
std::atomic<long> g_fault_step{-1};

std::atomic<int>& thread_setting() {
  static std::atomic<int> n{initial_threads()};
  return n;
}

// Diagonal of a freshly factored block: every pivot must be positive and finite. Eigen's LLT
// stops at a pivot <= 0 but lets NaN through; this catches NaN and Inf too.
bool pivots_ok(const Eigen::Ref<const Matrix>& L) {
  for (Index i = 0; i < L.rows(); ++i) {
    const double d = L(i, i);
    if (!(d > 0.0) || !std::isfinite(d)) return false;
  }
  return true;
}

bool llt_in_place(Eigen::Ref<Matrix> A) {
  Eigen::LLT<Eigen::Ref<Matrix>, Eigen::Lower> llt(A);
  return llt.info() == Eigen::Success && pivots_ok(A);
}

// Blocked right-looking factorization with a one-block lookahead.
//
// Step s makes column block s (width nb) final and applies block s-1 to everything right of
// it. Its tasks are handed out in order, through one counter per step, to whichever thread
// asks next:
//   task 0      update column block s by block s-1, then factor its diagonal block (Eigen LLT);
//   then        update each later column block j by block s-1 (a triangular product on the
//               diagonal tile, a product below it), tallest first;
//   then        solve the rows below the diagonal block s in chunks: X L_ss' = A(rows, s).
// The solves wait for task 0's factor, which is usually ready by then because the updates
// came first; so the diagonal factorization, the only serial kernel, overlaps with the
// updates. A barrier ends each step (the next step reads the panel this one solved).
// Waits spin briefly, then sleep, so a thread gives its core back when the machine is busier
// than the thread count assumes.
class Blocked {
 public:
  Blocked(Eigen::Ref<Matrix>& a, Index block)
      : A_(a), n_(a.rows()), nb_(block), nblocks_((a.rows() + block - 1) / block),
        next_(static_cast<size_t>(nblocks_)) {
    for (auto& c : next_) c.store(0, std::memory_order_relaxed);
  }

  Index nblocks() const { return nblocks_; }
  bool ok() const { return !failed_.load() && factored_.load() == nblocks_; }

  // Fixes the number of threads that will call work(), and lets the waiting ones begin.
  void start(int threads) {
    threads_ = threads;
    started_.store(true);
    wake();
  }

  // A helper thread's body: waits for start(), then works. An exception (e.g. bad_alloc in
  // a product's temporary) is kept for the caller instead of terminating the process.
  void join_when_started() {
    guarded([&] {
      if (wait([&] { return started_.load(std::memory_order_acquire); })) work(false);
    });
  }

  // The calling thread's part; it also checks for a stop request (Ctrl-C) at each step.
  void work_on_caller() { guarded([&] { work(true); }); }

  // After every thread has joined: rethrow the first exception a thread raised.
  void rethrow_if_any() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  template <class Body>
  void guarded(Body body) {
    try {
      body();
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      failed_.store(true);
      wake();
    }
  }

  void work(bool caller) {
    for (Index s = 0; s < nblocks_; ++s) {
      if (caller && interrupt_requested()) {
        failed_.store(true);
        wake();
        return;
      }
      if (!caller && g_fault_step.load(std::memory_order_relaxed) == s)
        throw std::runtime_error("injected fault in a helper thread of the blocked Cholesky");
      const Index s0 = s * nb_, w = std::min(nb_, n_ - s0), below = n_ - s0 - w;
      const Index nupdate = s > 0 ? nblocks_ - s : 1;  // task 0, then blocks s+1.. if s > 0
      Index rows = 0, nsolve = 0;
      if (below > 0) {
        rows = std::max<Index>(kSolveRows, (below + 2 * threads_ - 1) / (2 * threads_));
        rows = (rows + 7) / 8 * 8;
        nsolve = (below + rows - 1) / rows;
      }
      for (;;) {
        const Index t = next_[s].fetch_add(1, std::memory_order_relaxed);
        if (t >= nupdate + nsolve) break;
        if (t == 0) {
          if (s > 0) update(s, s - 1);
          if (!llt_in_place(A_.block(s0, s0, w, w))) {
            failed_.store(true);
            wake();
            return;
          }
          factored_.store(s + 1);
          wake();
        } else if (t < nupdate) {
          update(s + t, s - 1);
        } else {
          const Index r0 = (t - nupdate) * rows, r = std::min(rows, below - r0);
          if (!wait([&] { return factored_.load(std::memory_order_acquire) > s; })) return;
          A_.block(s0, s0, w, w).transpose().triangularView<Eigen::Upper>()
              .solveInPlace<Eigen::OnTheRight>(A_.block(s0 + w + r0, s0, r, w));
        }
      }
      const long target = static_cast<long>(s + 1) * threads_;
      if (arrived_.fetch_add(1) + 1 == target)
        wake();
      else if (!wait([&] { return arrived_.load(std::memory_order_acquire) >= target; }))
        return;
    }
  }

 private:
  static constexpr Index kSolveRows = 64;  // smallest chunk of rows per triangular solve
  static constexpr int kSpins = 2048;      // about 50 us of pause instructions

  // Column block j -= (block p of the rows of j and below) (block p of the rows of j)'.
  void update(Index j, Index p) {
    const Index j0 = j * nb_, wj = std::min(nb_, n_ - j0), bj = n_ - j0 - wj, p0 = p * nb_;
    const auto Lj = A_.block(j0, p0, wj, nb_);
    A_.block(j0, j0, wj, wj).triangularView<Eigen::Lower>() -= Lj * Lj.transpose();
    if (bj > 0)
      A_.block(j0 + wj, j0, bj, wj).noalias() -= A_.block(j0 + wj, p0, bj, nb_) * Lj.transpose();
  }

  // Waits until ready() (true) or a failure (false).
  template <class Ready>
  bool wait(Ready ready) {
    for (int i = 0; i < kSpins; ++i) {
      if (ready()) return true;
      if (failed_.load(std::memory_order_relaxed)) return false;
      MIXEDFIT_CPU_RELAX();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleepers_.fetch_add(1);  // seq_cst: wake() either sees it or its change is seen by ready()
    cv_.wait(lock, [&] { return ready() || failed_.load(); });
    sleepers_.fetch_sub(1);
    return !failed_.load();
  }

  // Called after changing factored_, arrived_ or failed_.
  void wake() {
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);  // a waiter between its check and its sleep holds it
      cv_.notify_all();
    }
  }

  Eigen::Ref<Matrix>& A_;
  const Index n_, nb_, nblocks_;
  int threads_ = 1;                       // set by start()
  std::atomic<bool> started_{false};
  std::vector<std::atomic<Index>> next_;  // per step: next task to hand out
  std::atomic<Index> factored_{0};        // diagonal blocks 0..factored_-1 are factored
  std::atomic<long> arrived_{0};          // barrier arrivals, all steps together
  std::atomic<bool> failed_{false};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::exception_ptr error_;  // the first exception a thread raised (under mutex_)
};

bool cholesky_blocked(Eigen::Ref<Matrix>& A, int threads, Index block) {
  Blocked job(A, block);
  threads = static_cast<int>(std::min<Index>(threads, job.nblocks()));
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int i = 1; i < threads; ++i) {
    try {
      pool.emplace_back([&job] { job.join_when_started(); });
    } catch (const std::system_error&) {
      break;  // the system refuses more threads: go on with those we have
    }
  }
  // Every thread takes part in every step's barrier, so the count is fixed before work starts.
  job.start(static_cast<int>(pool.size()) + 1);
  job.work_on_caller();
  for (auto& th : pool) th.join();
  job.rethrow_if_any();
  return job.ok();
}

}  // namespace

void set_cholesky_fault_step(long step) { g_fault_step.store(step); }

int num_threads() { return thread_setting().load(std::memory_order_relaxed); }

void set_num_threads(int n) { thread_setting().store(std::max(1, n), std::memory_order_relaxed); }

bool cholesky_lower(Eigen::Ref<Eigen::MatrixXd> A, int threads, int block) {
  eigen_assert(A.rows() == A.cols());
  const Index n = A.rows();
  if (n == 0) return true;
  threads = std::max(1, threads);
  if (block <= 0) {
    if (threads == 1 || n < kMinBlockedOrder) return llt_in_place(A);
    block = static_cast<int>(default_block(n));
  }
  return cholesky_blocked(A, threads, block);
}

}  // namespace mixedfit
