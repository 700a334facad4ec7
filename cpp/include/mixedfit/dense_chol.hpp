// Dense lower Cholesky factorization that uses more than one core, and the library-wide
// thread-count setting.
//
// The LMM objective's hot spot on large crossed models is one dense Cholesky of the rest block
// per evaluation. Eigen's LLT is single-threaded, so large blocks are factored here by a blocked
// algorithm whose tile products (Eigen kernels) are shared among a few std::threads started for
// the call and joined before it returns: nothing runs or spins in the background afterwards.
#pragma once

#include <Eigen/Core>

namespace mixedfit {

// Threads the core may use for one factorization. The default is the number of hardware
// threads, capped at 8 and at least 1; the environment variable MIXEDFIT_NUM_THREADS, read once
// at first use, overrides it when set to a positive integer.
int num_threads();

// Sets the thread count for later calls (n >= 1; smaller values are clamped to 1 -- the bindings
// reject them before they get here).
void set_num_threads(int n);

// In-place lower Cholesky A = L L' of a symmetric positive definite matrix.
//
// Only the lower triangle of A is read; on success it holds L. The strict upper triangle is
// never read or written (as with Eigen::LLT<..., Eigen::Lower>).
//
// Returns false when A is not positive definite, that is at the first pivot that is not
// positive or not finite (NaN/Inf anywhere on the way ends there too); A's contents are then
// unspecified.
//
// block == 0 chooses automatically: Eigen's LLT when threads == 1 or A is small (order < 384),
// else the blocked algorithm with a column-block width chosen by order (64 to 128).
// block > 0 forces the blocked algorithm with that width, on any size and thread count (tests
// use it to exercise the blocking).
//
// An exception raised on a helper thread is rethrown here after every thread has joined. On
// the calling thread the blocked algorithm checks interrupt_requested() at each step and, when
// asked to stop, returns false.
bool cholesky_lower(Eigen::Ref<Eigen::MatrixXd> A, int threads, int block = 0);

// Test hook: from now on a helper thread of the blocked algorithm throws std::runtime_error at
// column-block step `step` (-1, the default, turns it off).
void set_cholesky_fault_step(long step);

}  // namespace mixedfit
