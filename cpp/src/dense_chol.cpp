#include "mixedfit/dense_chol.hpp"

#include <Eigen/Cholesky>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

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

// Below this order a single Eigen LLT beats splitting the work (measured on 2 cores).
constexpr Index kMinTiledOrder = 256;
constexpr int kMaxDefaultThreads = 8;

int initial_threads() {
  if (const char* env = std::getenv("MIXEDFIT_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return static_cast<int>(std::min<long>(v, 1 << 16));
  }
  const unsigned hw = std::thread::hardware_concurrency();  // 0 when unknown
  return std::max(1, std::min(static_cast<int>(hw), kMaxDefaultThreads));
}

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

// Blocked left-looking factorization with column blocks handed out in order.
//
// Column block j (width w, rows j0..n-1) is owned by one thread, which (1) subtracts the
// contributions of the already factored blocks 0..j-1 -- as they become ready, in as few and as
// large products as possible -- then (2) factors its diagonal block with Eigen's LLT and
// (3) solves the rows below it against that factor. Block j can only be finished after j-1, so
// `done` (the number of finished blocks) grows in order; a thread that needs more finished
// blocks than there are waits for it (spinning briefly, then sleeping). With two threads this keeps one
// thread on the critical path (update by j-1, factor j) while the other does the bulk of the
// updates for the next block: the same flops as the right-looking algorithm, with no barrier.
struct Tiled {
  Eigen::Ref<Matrix>& A;
  Index n, nb, nblocks;
  std::atomic<Index> next{0};  // next column block to claim
  std::atomic<Index> done{0};  // column blocks 0..done-1 are final
  std::atomic<bool> failed{false};
  std::atomic<int> sleepers{0};  // threads blocked in wait_more
  std::mutex mutex;
  std::condition_variable cv;
  static constexpr int kSpins = 2048;  // about 50 us of pause instructions

  Tiled(Eigen::Ref<Matrix>& a, Index block)
      : A(a), n(a.rows()), nb(block), nblocks((a.rows() + block - 1) / block) {}

  // Waits until more than `have` blocks are finished; returns the count, or -1 on failure.
  // Spins for a few tens of microseconds (most waits are shorter), then sleeps, so that a
  // waiting thread gives its core back when the machine is busier than we assumed.
  Index wait_more(Index have) {
    for (int spins = 0; spins < kSpins; ++spins) {
      const Index d = done.load(std::memory_order_acquire);
      if (d > have) return d;
      if (failed.load(std::memory_order_relaxed)) return -1;
      MIXEDFIT_CPU_RELAX();
    }
    std::unique_lock<std::mutex> lock(mutex);
    sleepers.fetch_add(1);  // seq_cst, ordered against publish()'s store and load
    cv.wait(lock, [&] { return done.load() > have || failed.load(); });
    sleepers.fetch_sub(1);
    return failed.load() ? -1 : done.load();
  }

  // Makes `done` = d (or the failure) visible and wakes sleeping waiters, if any.
  void publish(Index d) {
    if (d < 0)
      failed.store(true);
    else
      done.store(d);
    if (sleepers.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex);  // a waiter between its check and its wait holds it
      cv.notify_all();
    }
  }

  void work() {
    for (;;) {
      const Index j = next.fetch_add(1, std::memory_order_relaxed);
      if (j >= nblocks) return;
      const Index j0 = j * nb;
      const Index w = std::min(nb, n - j0);
      const Index below = n - j0 - w;
      // (1) A(j0:, j-block) -= L(j0:, 0:j0) L(j-block, 0:j0)', in chunks as blocks finish.
      Index have = 0;
      while (have < j) {
        Index d = done.load(std::memory_order_acquire);
        if (d <= have) {
          d = wait_more(have);
          if (d < 0) return;
        }
        const Index k0 = have * nb, kw = d * nb - k0;
        const auto Ljk = A.block(j0, k0, w, kw);
        A.block(j0, j0, w, w).triangularView<Eigen::Lower>() -= Ljk * Ljk.transpose();
        if (below > 0)
          A.block(j0 + w, j0, below, w).noalias() -= A.block(j0 + w, k0, below, kw) * Ljk.transpose();
        have = d;
      }
      if (failed.load(std::memory_order_relaxed)) return;
      // (2) diagonal block, (3) the rows below: X L' = A21.
      Eigen::Ref<Matrix> D = A.block(j0, j0, w, w);
      if (!llt_in_place(D)) {
        publish(-1);
        return;
      }
      if (below > 0)
        D.transpose().triangularView<Eigen::Upper>().solveInPlace<Eigen::OnTheRight>(
            A.block(j0 + w, j0, below, w));
      publish(j + 1);
    }
  }
};

bool cholesky_tiled(Eigen::Ref<Matrix>& A, int threads, Index block) {
  Tiled t(A, block);
  const int extra = static_cast<int>(std::min<Index>(threads, t.nblocks)) - 1;
  std::vector<std::thread> pool;
  pool.reserve(extra > 0 ? extra : 0);
  for (int i = 0; i < extra; ++i) {
    try {
      pool.emplace_back([&t] { t.work(); });
    } catch (const std::system_error&) {
      break;  // no more threads available: the ones we have (at least this one) finish the job
    }
  }
  t.work();
  for (auto& th : pool) th.join();
  return !t.failed.load() && t.done.load() == t.nblocks;
}

}  // namespace

int num_threads() { return thread_setting().load(std::memory_order_relaxed); }

void set_num_threads(int n) { thread_setting().store(std::max(1, n), std::memory_order_relaxed); }

bool cholesky_lower(Eigen::Ref<Eigen::MatrixXd> A, int threads, int block) {
  eigen_assert(A.rows() == A.cols());
  const Index n = A.rows();
  if (n == 0) return true;
  threads = std::max(1, threads);
  if (block <= 0) {
    if (threads == 1 || n < kMinTiledOrder) return llt_in_place(A);
    block = kDenseCholBlock;
  }
  return cholesky_tiled(A, threads, block);
}

}  // namespace mixedfit
