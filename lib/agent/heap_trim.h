#pragma once
// glibc's malloc keeps freed heap memory resident: after the agent's start (D-Bus replies,
// the AMQP handshake) or a burst of commands, about 250 kB of free chunks stay in its RSS
// inside the heap, where the automatic trim at the top of the heap cannot reach them.
// HeapTrimmer gives whole free pages back with malloc_trim(0), at most once per period and
// only during a wake-up the loop makes anyway: it adds no deadline of its own, so an idle
// agent still wakes only for heartbeats.

#include "agent/event_loop.h"

#include <cstddef>
#include <functional>
#include <utility>

namespace pcloud::agent {

class HeapTrimmer : public Source {
public:
    struct Heap {
        std::function<std::size_t()> free_bytes; // free bytes in the heap (mallinfo2)
        std::function<void()> trim;              // give free pages back (malloc_trim(0))
    };
    static constexpr Millis kFirstAfterMs = 5'000; // after the start's burst of replies
    static constexpr Millis kPeriodMs = 10'000;
    static constexpr std::size_t kMinFreeBytes = 64 * 1024;

    // The real glibc heap.
    static Heap glibcHeap();

    explicit HeapTrimmer(Millis startMs, Heap heap = glibcHeap())
        : heap_(std::move(heap)), next_at_(startMs + kFirstAfterMs) {}
    void prepare(PollSet& ps, Millis now) override;
    void dispatch(const PollSet&, Millis) override {}
    int trims() const { return trims_; }

private:
    Heap heap_;
    Millis next_at_;
    int trims_ = 0;
};

} // namespace pcloud::agent
