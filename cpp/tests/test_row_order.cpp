// Row order (row_order.cpp): the stable order by level, no reordering of rows already grouped,
// the reordered copies of every per-row array, and the translation of n-vectors both ways.
#include <cstdint>
#include <vector>

#include "check.hpp"
#include "mixedfit/row_order.hpp"

using mixedfit::Index;
using mixedfit::Matrix;
using mixedfit::OrderedRows;
using mixedfit::TermData;
using mixedfit::Vector;
using mixedfit::order_by_level;

namespace {

void order_is_stable_by_level() {
  const std::vector<std::int32_t> g{2, 0, 1, 0, 2, 1, 0};
  const std::vector<Index> want{1, 3, 6, 2, 5, 0, 4};
  CHECK(order_by_level(g.data(), 3, 7) == want);
  // Grouped already (levels need not be contiguous from 0 or all present): no order.
  const std::vector<std::int32_t> grouped{0, 0, 2, 2, 2, 3};
  CHECK(order_by_level(grouped.data(), 4, 6).empty());
  CHECK(order_by_level(g.data(), 3, 1).empty());
  CHECK(order_by_level(g.data(), 3, 0).empty());
}

void rows_follow_the_order() {
  const Index n = 5;
  const std::vector<std::int32_t> g0{1, 0, 1, 0, 0}, g1{0, 1, 2, 0, 1};
  Matrix X(n, 2), Z0(n, 2), Z1(n, 1);
  Vector y(n), pw(n), off(n);
  for (Index i = 0; i < n; ++i) {
    X(i, 0) = 1.0;
    X(i, 1) = 10.0 + i;
    Z0(i, 0) = 1.0;
    Z0(i, 1) = 20.0 + i;
    Z1(i, 0) = 30.0 + i;
    y[i] = 40.0 + i;
    pw[i] = 50.0 + i;
    off[i] = 60.0 + i;
  }
  const std::vector<TermData> terms{TermData{g0.data(), 2, 2, Z0.data()},
                                    TermData{g1.data(), 3, 1, Z1.data()}};
  const OrderedRows rows(n, 2, X.data(), y.data(), pw.data(), off.data(), terms);
  CHECK(rows.reordered());
  const std::vector<Index> order{1, 3, 4, 0, 2};
  for (Index t = 0; t < n; ++t) {
    const Index i = order[t];
    CHECK(rows.X()[t] == 1.0 && rows.X()[t + n] == X(i, 1));
    CHECK(rows.y()[t] == y[i] && rows.pw()[t] == pw[i] && rows.offset()[t] == off[i]);
    CHECK(rows.terms()[0].g[t] == g0[i] && rows.terms()[1].g[t] == g1[i]);
    CHECK(rows.terms()[0].Z[t + n] == Z0(i, 1) && rows.terms()[1].Z[t] == Z1(i, 0));
  }
  CHECK(rows.terms()[0].nlev == 2 && rows.terms()[0].p == 2 && rows.terms()[1].p == 1);
  Vector v;
  rows.from_input(y.data(), v);
  for (Index t = 0; t < n; ++t) CHECK(v[t] == y[order[t]]);
  CHECK(rows.to_input(v) == y);

  // Grouped input: the arrays themselves, no copies; no offset stays none.
  const std::vector<std::int32_t> sorted{0, 0, 1, 2, 2};
  const std::vector<TermData> sorted_terms{TermData{sorted.data(), 3, 1, Z1.data()}};
  const OrderedRows same(n, 2, X.data(), y.data(), pw.data(), nullptr, sorted_terms);
  CHECK(!same.reordered());
  CHECK(same.X() == X.data() && same.y() == y.data() && same.offset() == nullptr);
  CHECK(same.terms()[0].g == sorted.data());
  CHECK(same.to_input(y) == y);
}

}  // namespace

int main() {
  order_is_stable_by_level();
  rows_follow_the_order();
  return mixedfit_test::finish("test_row_order");
}
