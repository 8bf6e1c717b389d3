// HeapTrimmer: when it gives free heap pages back, with a fake heap and injected times.
#include "agent/heap_trim.h"

#include <gtest/gtest.h>

#include <malloc.h>

#include <cstdlib>
#include <vector>

using namespace pcloud;
using namespace pcloud::agent;

namespace {

struct FakeHeap {
    std::size_t free = 200 * 1024;
    int trims = 0;
    HeapTrimmer::Heap heap() {
        return {[this] { return free; }, [this] { ++trims; }};
    }
};

TEST(HeapTrimmer, FirstTrimAfterTheStartThenAtMostOncePerPeriod) {
    FakeHeap h;
    HeapTrimmer t(1'000, h.heap());
    PollSet ps;
    t.prepare(ps, 1'000);
    t.prepare(ps, 5'999);
    EXPECT_EQ(h.trims, 0) << "no trim during the start's burst";
    t.prepare(ps, 6'000);
    EXPECT_EQ(h.trims, 1);
    t.prepare(ps, 6'001);
    t.prepare(ps, 15'999);
    EXPECT_EQ(h.trims, 1) << "at most once per period";
    t.prepare(ps, 16'000);
    EXPECT_EQ(h.trims, 2);
    EXPECT_EQ(t.trims(), 2);
}

TEST(HeapTrimmer, AddsNoDeadlineSoAnIdleLoopDoesNotWakeForIt) {
    FakeHeap h;
    HeapTrimmer t(0, h.heap());
    PollSet ps;
    t.prepare(ps, 0);
    t.prepare(ps, 10'000);
    EXPECT_EQ(ps.wake_at, kNever);
    EXPECT_TRUE(ps.fds.empty());
}

TEST(HeapTrimmer, SkipsATightHeapAndLooksAgainOnlyNextPeriod) {
    FakeHeap h;
    h.free = HeapTrimmer::kMinFreeBytes - 1;
    HeapTrimmer t(0, h.heap());
    PollSet ps;
    t.prepare(ps, HeapTrimmer::kFirstAfterMs);
    EXPECT_EQ(h.trims, 0);
    h.free = HeapTrimmer::kMinFreeBytes;
    t.prepare(ps, HeapTrimmer::kFirstAfterMs + 1);
    EXPECT_EQ(h.trims, 0);
    t.prepare(ps, HeapTrimmer::kFirstAfterMs + HeapTrimmer::kPeriodMs);
    EXPECT_EQ(h.trims, 1);
}

TEST(HeapTrimmer, TheGlibcHeapReportsFreedChunks) {
    auto heap = HeapTrimmer::glibcHeap();
    // Free every other 4 kB block: the holes cannot be trimmed from the top of the heap.
    std::vector<void*> blocks;
    for (int i = 0; i < 128; ++i)
        blocks.push_back(std::malloc(4000));
    std::size_t before = heap.free_bytes();
    for (std::size_t i = 0; i < blocks.size(); i += 2) {
        std::free(blocks[i]);
        blocks[i] = nullptr;
    }
    EXPECT_GE(heap.free_bytes(), before + 64 * 4000);
    heap.trim(); // must not disturb live blocks
    for (void* b : blocks)
        if (b)
            static_cast<char*>(b)[3999] = 1;
    for (void* b : blocks)
        std::free(b);
}

} // namespace
