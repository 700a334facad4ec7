#include "mixedfit/row_order.hpp"

#include <tuple>

namespace mixedfit {

LevelRows rows_by_level(const std::int32_t* g, int nlev, Index n) {
  // Counting sort: rows of level c go to positions start[c], start[c] + 1, ... in input order.
  LevelRows out;
  out.start.assign(static_cast<size_t>(nlev) + 1, 0);
  for (Index r = 0; r < n; ++r) ++out.start[g[r] + 1];
  for (int c = 0; c < nlev; ++c) out.start[c + 1] += out.start[c];
  std::vector<Index> fill(out.start.begin(), out.start.end() - 1);
  out.order.resize(n);
  for (Index r = 0; r < n; ++r) out.order[fill[g[r]]++] = r;
  return out;
}

std::vector<Index> order_by_level(const std::int32_t* g, int nlev, Index n) {
  Index i = 1;
  while (i < n && g[i - 1] <= g[i]) ++i;
  if (i >= n) return {};
  return rows_by_level(g, nlev, n).order;
}

namespace {

// out(t, j) = in(order[t], j) for an (n, cols) column-major array.
void gather_columns(const double* in, Index n, Index cols, const std::vector<Index>& order,
                    double* out) {
  for (Index j = 0; j < cols; ++j)
    for (Index t = 0; t < n; ++t) out[t + j * n] = in[order[t] + j * n];
}

}  // namespace

OrderedRows::OrderedRows(Index n, Index p, const double* X, const double* y, const double* pw,
                         const double* offset, const std::vector<TermData>& terms)
    : n_(n), order_(order_by_level(terms[0].g, terms[0].nlev, n)), X_(X), y_(y), pw_(pw),
      offset_(offset), terms_(terms) {
  if (order_.empty()) return;
  X_copy_.resize(n, p);
  gather_columns(X, n, p, order_, X_copy_.data());
  X_ = X_copy_.data();
  for (auto [in, copy, view] : {std::tuple{y, &y_copy_, &y_}, std::tuple{pw, &pw_copy_, &pw_},
                                std::tuple{offset, &offset_copy_, &offset_}}) {
    if (!in) continue;
    copy->resize(n);
    gather_columns(in, n, 1, order_, copy->data());
    *view = copy->data();
  }
  Index zcols = 0;
  for (const TermData& t : terms) zcols += t.p;
  Z_copy_.resize(n, zcols);
  g_copy_.resize(static_cast<size_t>(n) * terms.size());
  Index zpos = 0;
  for (size_t k = 0; k < terms.size(); ++k) {
    std::int32_t* gk = g_copy_.data() + k * static_cast<size_t>(n);
    for (Index t = 0; t < n; ++t) gk[t] = terms[k].g[order_[t]];
    double* zk = Z_copy_.data() + zpos * n;
    gather_columns(terms[k].Z, n, terms[k].p, order_, zk);
    terms_[k].g = gk;
    terms_[k].Z = zk;
    zpos += terms[k].p;
  }
}

void OrderedRows::from_input(const double* v, Vector& out) const {
  out.resize(n_);
  if (order_.empty())
    out = Eigen::Map<const Vector>(v, n_);
  else
    gather_columns(v, n_, 1, order_, out.data());
}

Vector OrderedRows::to_input(const Vector& v) const {
  if (order_.empty()) return v;
  Vector out(n_);
  for (Index t = 0; t < n_; ++t) out[order_[t]] = v[t];
  return out;
}

}  // namespace mixedfit
