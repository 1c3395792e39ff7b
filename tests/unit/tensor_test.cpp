// core: Tensor handles, views, rows and reshapes (and their errors); DeviceAllocator's budget
// (the error names the request, the budget and what is in use), high-water mark with its
// per-category breakdown, and memory coming back when the last tensor using it dies.
#include <functional>
#include <numeric>

#include "test_util.h"
#include "vacc/core/device_allocator.h"
#include "vacc/core/tensor.h"

namespace vacc::test {
namespace {

std::vector<float> iota(size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.0f);
  return v;
}
std::vector<float> range(float begin, float end) {
  std::vector<float> v;
  for (float x = begin; x < end; x += 1.0f) v.push_back(x);
  return v;
}

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a vacc::Error";
  return "";
}

TEST(Tensor, ShapeDtypeAndDescription) {
  auto be = make_cpu_backend();
  Tensor t = be->empty({4, 6}, DType::BF16, MemoryCategory::Activations, "x");
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.dim(), 2);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(t.size(0), 4);
  EXPECT_EQ(t.size(-1), 6);
  EXPECT_EQ(t.size(-2), 4);
  EXPECT_THROW(t.size(2), Error);
  EXPECT_THROW(t.size(-3), Error);
  EXPECT_EQ(t.str(), "bf16[4, 6] on cpu:0");
  EXPECT_EQ(t.device(), (Device{Device::Kind::CPU, 0}));
  Tensor u;
  EXPECT_FALSE(u.defined());
  EXPECT_EQ(u.data(), nullptr);
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_str({3, 0, 2}), "[3, 0, 2]");
}

TEST(Tensor, NegativeDimensionIsRejectedNamingTheTensor) {
  auto be = make_cpu_backend();
  std::string msg = error_message(
      [&] { be->empty({3, -2}, DType::F32, MemoryCategory::Activations, "the bad one"); });
  EXPECT_NE(msg.find("the bad one"), std::string::npos) << msg;
  EXPECT_EQ(be->allocator().in_use(), 0u);
}

TEST(Tensor, ViewsRowsAndReshapesShareMemory) {
  auto be = make_cpu_backend();
  Tensor t = to_device(*be, iota(24), {4, 6});
  Tensor r = t.rows(1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 6}));
  EXPECT_EQ(to_host(*be, r), range(6, 18));
  EXPECT_EQ(to_host(*be, t.rows(3, 4)), range(18, 24));
  EXPECT_EQ(t.rows(2, 2).numel(), 0);
  // Rows of rows: offsets compose.
  EXPECT_EQ(to_host(*be, t.rows(1, 4).rows(1, 2)), range(12, 18));
  Tensor v = t.view(5, {3, 2});
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  EXPECT_EQ(to_host(*be, v), range(5, 11));
  EXPECT_EQ(to_host(*be, t.view(7, {2, 2}).view(1, {2})), range(8, 10));
  EXPECT_EQ(to_host(*be, t.reshape({6, 4}).rows(5, 6)), range(20, 24));
  EXPECT_EQ(t.flat().shape(), (Shape{24}));
  EXPECT_EQ(v.data(), static_cast<void*>(t.data_as<float>() + 5));

  // Writing through a view changes the parent, and nothing else.
  Tensor w = t.rows(2, 3);
  be->fill(w, -1.0f);
  auto all = to_host(*be, t);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(all[size_t(i)], (i >= 12 && i < 18) ? -1.0f : float(i)) << i;

  // bf16 views step by 2 bytes.
  Tensor b = to_device(*be, iota(10), {10}, DType::BF16);
  EXPECT_EQ(to_host(*be, b.view(3, {4})), range(3, 7));
  EXPECT_EQ(to_host(*be, b.reshape({2, 5}).rows(1, 2)), range(5, 10));
  EXPECT_EQ(b.view(3, {4}).data(), static_cast<void*>(static_cast<char*>(b.data()) + 6));
}

TEST(Tensor, BadViewsRowsAndReshapesThrow) {
  auto be = make_cpu_backend();
  Tensor t = be->zeros({4, 6}, DType::F32, MemoryCategory::Buffers, "t");
  EXPECT_THROW(t.reshape({5, 5}), Error);
  EXPECT_THROW(t.reshape({25}), Error);
  EXPECT_THROW(t.reshape({4, 5}), Error);
  EXPECT_NO_THROW(t.reshape({2, 3, 4}));
  EXPECT_THROW(t.view(20, {5}), Error);
  EXPECT_THROW(t.view(-1, {2}), Error);
  EXPECT_THROW(t.view(0, {25}), Error);
  EXPECT_NO_THROW(t.view(19, {5}));
  EXPECT_THROW(t.rows(3, 5), Error);
  EXPECT_THROW(t.rows(2, 1), Error);
  EXPECT_THROW(t.rows(-1, 2), Error);
  EXPECT_NO_THROW(t.rows(0, 4));
  // The message names the tensor and the bad shape.
  std::string msg = error_message([&] { t.reshape({7, 3}); });
  EXPECT_NE(msg.find("f32[4, 6]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[7, 3]"), std::string::npos) << msg;
  // A view of a view is bounded by the inner view, not the storage.
  Tensor v = t.view(4, {10});
  EXPECT_THROW(v.view(5, {6}), Error);
  EXPECT_THROW(v.rows(0, 11), Error);
}

TEST(DeviceAllocator, OverBudgetErrorNamesRequestBudgetAndUsage) {
  const size_t budget = 1024 * 1024;
  auto be = make_cpu_backend(budget);
  DeviceAllocator& a = be->allocator();
  EXPECT_EQ(a.budget(), budget);
  Tensor p = be->empty({76800}, DType::F32, MemoryCategory::Parameters, "weights");   // 300 KiB
  Tensor g = be->empty({51200}, DType::F32, MemoryCategory::Gradients, "grads");      // 200 KiB
  ASSERT_EQ(a.in_use(), size_t(512000));
  const size_t request = 614400;  // 600 KiB: over by 88 KiB
  std::string msg = error_message([&] {
    be->empty({int64_t(request / 2)}, DType::BF16, MemoryCategory::Activations, "activation stash");
  });
  for (const std::string& part :
       {format_bytes(request), format_bytes(budget), format_bytes(512000), std::string("cpu:0"),
        std::string("activation stash"), "parameters " + format_bytes(307200),
        "gradients " + format_bytes(204800)}) {
    EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  }
  // Nothing was taken by the failed request.
  EXPECT_EQ(a.in_use(), size_t(512000));
  EXPECT_EQ(a.in_use(MemoryCategory::Activations), 0u);
  EXPECT_EQ(a.high_water_mark(), size_t(512000));

  // Exactly up to the budget is fine; one more byte is not.
  Tensor rest = be->empty({int64_t(budget - 512000) / 4}, DType::F32, MemoryCategory::Buffers, "rest");
  EXPECT_EQ(a.in_use(), budget);
  EXPECT_THROW(be->empty({1}, DType::BF16, MemoryCategory::Buffers, "one more"), Error);
  // A request larger than the whole budget on its own, with nothing in use.
  p = Tensor();
  g = Tensor();
  rest = Tensor();
  EXPECT_EQ(a.in_use(), 0u);
  std::string big = error_message(
      [&] { be->empty({int64_t(budget)}, DType::F32, MemoryCategory::Parameters, "huge"); });
  EXPECT_NE(big.find(format_bytes(4 * budget)), std::string::npos) << big;
  EXPECT_NE(big.find(format_bytes(budget)), std::string::npos) << big;
  EXPECT_NE(big.find(format_bytes(0)), std::string::npos) << big;
}

TEST(DeviceAllocator, HugeRequestsDoNotWrapAroundTheBudgetCheck) {
  HostAllocator a(1 << 20);
  void* p = a.allocate(1000, MemoryCategory::Parameters, "small");
  // in_use + request wraps around size_t: still over the budget, and said so.
  const size_t huge = ~size_t{0} - 100;
  std::string msg = error_message([&] { a.allocate(huge, MemoryCategory::Buffers, "huge"); });
  EXPECT_NE(msg.find("budget of " + format_bytes(1 << 20)), std::string::npos) << msg;
  EXPECT_NE(msg.find("huge"), std::string::npos) << msg;
  EXPECT_EQ(a.in_use(), 1000u);
  a.deallocate(p, 1000, MemoryCategory::Parameters);
  EXPECT_EQ(a.in_use(), 0u);
}

TEST(DeviceAllocator, FormatBytes) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(size_t(3) << 30), "3.00 GiB");
}

TEST(DeviceAllocator, HighWaterMarkRecordsThePeakAndItsBreakdown) {
  HostAllocator a;  // unlimited
  using C = MemoryCategory;
  auto count = size_t(C::Count);
  {
    Tensor p(a, {1000}, DType::F32, C::Parameters, "p");       // 4000
    Tensor o(a, {500}, DType::F32, C::OptimizerState, "m");    // 2000
    {
      Tensor act(a, {3000}, DType::BF16, C::Activations, "act");  // 6000: peak 12000
      EXPECT_EQ(a.in_use(), 12000u);
      EXPECT_EQ(a.in_use(C::Activations), 6000u);
    }
    EXPECT_EQ(a.in_use(), 6000u);
    EXPECT_EQ(a.in_use(C::Activations), 0u);
    Tensor buf(a, {1000}, DType::F32, C::Buffers, "buf");  // 10000 now: below the peak
    EXPECT_EQ(a.high_water_mark(), 12000u);
    auto at = a.breakdown_at_high_water();
    ASSERT_EQ(at.size(), count);
    EXPECT_EQ(at[size_t(C::Parameters)], 4000u);
    EXPECT_EQ(at[size_t(C::OptimizerState)], 2000u);
    EXPECT_EQ(at[size_t(C::Activations)], 6000u);
    EXPECT_EQ(at[size_t(C::Buffers)], 0u);
    EXPECT_EQ(at[size_t(C::Gradients)], 0u);

    // A higher peak replaces the breakdown.
    Tensor grads(a, {1500}, DType::F32, C::Gradients, "g");  // 16000
    EXPECT_EQ(a.high_water_mark(), 16000u);
    at = a.breakdown_at_high_water();
    EXPECT_EQ(at[size_t(C::Activations)], 0u);
    EXPECT_EQ(at[size_t(C::Gradients)], 6000u);
    EXPECT_EQ(at[size_t(C::Buffers)], 4000u);
    std::string report = a.usage_report();
    EXPECT_NE(report.find("peak " + format_bytes(16000)), std::string::npos) << report;
    EXPECT_NE(report.find("gradients " + format_bytes(6000)), std::string::npos) << report;
  }
  // Everything came back; the peak stays until it is reset.
  EXPECT_EQ(a.in_use(), 0u);
  for (size_t c = 0; c < count; ++c) EXPECT_EQ(a.in_use(C(c)), 0u) << memory_category_name(C(c));
  EXPECT_EQ(a.high_water_mark(), 16000u);
  Tensor keep(a, {10}, DType::F32, C::Buffers, "keep");
  a.reset_high_water_mark();
  EXPECT_EQ(a.high_water_mark(), 40u);
  EXPECT_EQ(a.breakdown_at_high_water()[size_t(C::Buffers)], 40u);
  EXPECT_EQ(a.breakdown_at_high_water()[size_t(C::Gradients)], 0u);
}

TEST(DeviceAllocator, MemoryReturnsWhenTheLastHandleDies) {
  auto be = make_cpu_backend();
  DeviceAllocator& a = be->allocator();
  ASSERT_EQ(a.in_use(), 0u);
  Tensor view;
  {
    Tensor t = be->empty({100, 7}, DType::F32, MemoryCategory::Activations, "t");
    EXPECT_EQ(a.in_use(), 2800u);
    Tensor copy = t;  // a handle, not new memory
    EXPECT_EQ(a.in_use(), 2800u);
    view = t.rows(10, 20).reshape({70});
  }
  // The view keeps the whole storage alive.
  EXPECT_EQ(a.in_use(), 2800u);
  EXPECT_EQ(a.in_use(MemoryCategory::Activations), 2800u);
  view = Tensor();
  EXPECT_EQ(a.in_use(), 0u);
  EXPECT_EQ(a.in_use(MemoryCategory::Activations), 0u);

  // With a budget, freed memory can be allocated again, over and over.
  auto small = make_cpu_backend(10000);
  for (int i = 0; i < 20; ++i) {
    Tensor t = small->empty({2000}, DType::F32, MemoryCategory::Buffers, "loop");  // 8000 B
    EXPECT_EQ(small->allocator().in_use(), 8000u);
  }
  EXPECT_EQ(small->allocator().in_use(), 0u);
  EXPECT_EQ(small->allocator().high_water_mark(), 8000u);
}

}  // namespace
}  // namespace vacc::test
