#include "mixedfit/nlopt_bobyqa.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>

#include "mixedfit/interrupt.hpp"

#if defined(_WIN32)
#else
#include <dlfcn.h>
#endif

namespace mixedfit {

namespace {

// NLopt's C API, as declared in its nlopt.h: an opaque handle, enums passed as int.
using NloptHandle = void*;
using NloptFunc = double (*)(unsigned n, const double* x, double* gradient, void* data);

struct NloptApi {
  NloptHandle (*create)(int algorithm, unsigned n) = nullptr;
  void (*destroy)(NloptHandle) = nullptr;
  int (*optimize)(NloptHandle, double* x, double* opt_f) = nullptr;
  int (*set_min_objective)(NloptHandle, NloptFunc, void* data) = nullptr;
  int (*set_lower_bounds)(NloptHandle, const double* lb) = nullptr;
  int (*set_ftol_abs)(NloptHandle, double tol) = nullptr;
  int (*set_xtol_abs1)(NloptHandle, double tol) = nullptr;
  int (*set_maxeval)(NloptHandle, int maxeval) = nullptr;
  int (*set_initial_step)(NloptHandle, const double* dx) = nullptr;
  int (*get_numevals)(NloptHandle) = nullptr;
  int (*force_stop)(NloptHandle) = nullptr;
  int bobyqa = 0;
};

constexpr int kRoundoffLimited = -4;  // NLOPT_ROUNDOFF_LIMITED
constexpr int kForcedStop = -5;       // NLOPT_FORCED_STOP

std::mutex g_load_mutex;
std::atomic<const NloptApi*> g_api{nullptr};

#if defined(_WIN32)
bool resolve(NloptApi&, const std::string&, std::string& error) {
  error = "loading NLopt's C API at run time is not implemented on Windows";
  return false;
}
#else
template <class Fn>
bool resolve_one(void* lib, const char* name, Fn& fn, std::string& error) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (!fn) error = std::string("the NLopt library does not export ") + name;
  return fn != nullptr;
}

bool resolve(NloptApi& api, const std::string& path, std::string& error) {
  // The library is already loaded by the Python package; this only takes a reference to it.
  void* lib = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    error = "cannot open " + path + ": " + (why ? why : "unknown error");
    return false;
  }
  return resolve_one(lib, "nlopt_create", api.create, error) &&
         resolve_one(lib, "nlopt_destroy", api.destroy, error) &&
         resolve_one(lib, "nlopt_optimize", api.optimize, error) &&
         resolve_one(lib, "nlopt_set_min_objective", api.set_min_objective, error) &&
         resolve_one(lib, "nlopt_set_lower_bounds", api.set_lower_bounds, error) &&
         resolve_one(lib, "nlopt_set_ftol_abs", api.set_ftol_abs, error) &&
         resolve_one(lib, "nlopt_set_xtol_abs1", api.set_xtol_abs1, error) &&
         resolve_one(lib, "nlopt_set_maxeval", api.set_maxeval, error) &&
         resolve_one(lib, "nlopt_set_initial_step", api.set_initial_step, error) &&
         resolve_one(lib, "nlopt_get_numevals", api.get_numevals, error) &&
         resolve_one(lib, "nlopt_force_stop", api.force_stop, error);
}
#endif

// One run's state, handed to NLopt's callback.
struct Run {
  const BoxObjective* f = nullptr;
  const NloptApi* api = nullptr;
  NloptHandle opt = nullptr;
  Status status = Status::Ok;        // the objective's stopping status
  std::exception_ptr error;          // an exception the objective threw (rethrown afterwards)
  double best_f = std::numeric_limits<double>::infinity();
  std::vector<double> best_x;
};

// NLopt's C code calls this: nothing may propagate out of it.
double evaluate(unsigned n, const double* x, double* /*gradient*/, void* data) {
  Run& run = *static_cast<Run*>(data);
  const double inf = std::numeric_limits<double>::infinity();
  double value = inf;
  try {
    run.status = interrupt_requested() ? Status::Interrupted : (*run.f)(x, value);
  } catch (...) {
    run.error = std::current_exception();
  }
  if (run.status != Status::Ok || run.error) {
    run.api->force_stop(run.opt);
    return inf;
  }
  if (!(value > -inf && value < inf)) value = inf;  // NaN and -inf are no minimum either
  if (value < run.best_f) {
    run.best_f = value;
    run.best_x.assign(x, x + n);
  }
  return value;
}

// Applies the settings; false if NLopt refused one.
bool configure(const NloptApi& api, NloptHandle opt, const std::vector<double>& lower,
               const BobyqaSettings& s) {
  const unsigned n = static_cast<unsigned>(lower.size());
  bool ok = api.set_lower_bounds(opt, lower.data()) > 0 && api.set_ftol_abs(opt, s.ftol_abs) > 0 &&
            api.set_xtol_abs1(opt, s.xtol_abs) > 0 && api.set_maxeval(opt, s.maxeval) > 0;
  if (ok && !s.initial_step.empty())
    ok = s.initial_step.size() == n && api.set_initial_step(opt, s.initial_step.data()) > 0;
  return ok;
}

}  // namespace

bool load_nlopt(const std::string& library_path, int bobyqa_algorithm, std::string& error) {
  std::lock_guard<std::mutex> guard(g_load_mutex);
  if (g_api.load()) return true;
  auto* api = new NloptApi();  // kept for the life of the process once loaded
  if (!resolve(*api, library_path, error)) {
    delete api;
    return false;
  }
  api->bobyqa = bobyqa_algorithm;
  g_api.store(api);
  return true;
}

bool nlopt_loaded() { return g_api.load() != nullptr; }

Status bobyqa_minimize(const BoxObjective& f, const std::vector<double>& x0,
                       const std::vector<double>& lower, const BobyqaSettings& settings,
                       BobyqaResult& out) {
  const NloptApi* api = g_api.load();
  const unsigned n = static_cast<unsigned>(x0.size());
  if (!api || lower.size() != n) return Status::BadDimension;
  NloptHandle opt = api->create(api->bobyqa, n);
  if (!opt) return Status::NotEvaluated;
  Run run;
  run.f = &f;
  run.api = api;
  run.opt = opt;
  out.x = x0;
  for (unsigned j = 0; j < n; ++j) out.x[j] = std::max(out.x[j], lower[j]);  // start inside
  run.best_x = out.x;
  out.nlopt_code = configure(*api, opt, lower, settings) ? 0 : -2;
  if (out.nlopt_code == 0) out.nlopt_code = api->set_min_objective(opt, &evaluate, &run) > 0 ? 0 : -2;
  out.fun = std::numeric_limits<double>::infinity();
  if (out.nlopt_code == 0) out.nlopt_code = api->optimize(opt, out.x.data(), &out.fun);
  out.nevals = api->get_numevals(opt);
  api->destroy(opt);
  if (run.error) std::rethrow_exception(run.error);
  if (run.status != Status::Ok) return run.status;
  if (out.nlopt_code == kRoundoffLimited || run.best_f < out.fun) {
    out.x = run.best_x;  // NLopt gave up on rounding: the best point seen is the answer
    out.fun = run.best_f;
  }
  if (out.nlopt_code < 0 && out.nlopt_code != kRoundoffLimited && out.nlopt_code != kForcedStop)
    return Status::NotEvaluated;
  return Status::Ok;
}

}  // namespace mixedfit
