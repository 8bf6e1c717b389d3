#include "agent/heap_trim.h"

#include <malloc.h>

namespace pcloud::agent {

HeapTrimmer::Heap HeapTrimmer::glibcHeap() {
    return Heap{[] { return static_cast<std::size_t>(::mallinfo2().fordblks); },
                [] { ::malloc_trim(0); }};
}

void HeapTrimmer::prepare(PollSet&, Millis now) {
    if (now < next_at_)
        return;
    next_at_ = now + kPeriodMs;
    if (heap_.free_bytes() < kMinFreeBytes)
        return;
    heap_.trim();
    ++trims_;
}

} // namespace pcloud::agent
