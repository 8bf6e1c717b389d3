#pragma once
// EventOutbox: the events dped publishes on pcloud.journal, held while the bus is down.
// Bounded: beyond `capacity` the oldest event is dropped and counted, so a long hub outage
// costs memory for at most `capacity` events and never blocks recovery. When the bus is
// back the owner takes the lot (take()) and publishes one `events-dropped` event with the
// count before the events kept. Not thread-safe: the owner locks.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace pcloud::dped {

class EventOutbox {
public:
    explicit EventOutbox(std::size_t capacity = 10'000) : capacity_(capacity ? capacity : 1) {}

    void push(std::string body) {
        if (events_.size() >= capacity_) {
            events_.pop_front();
            ++dropped_;
        }
        events_.push_back(std::move(body));
    }

    struct Taken {
        std::uint64_t dropped = 0; // events lost since the last take()
        std::deque<std::string> events;
    };
    Taken take() {
        Taken t{dropped_, std::move(events_)};
        events_.clear();
        dropped_ = 0;
        return t;
    }

    bool empty() const { return events_.empty() && dropped_ == 0; }
    std::size_t size() const { return events_.size(); }
    std::uint64_t dropped() const { return dropped_; }

private:
    std::size_t capacity_;
    std::deque<std::string> events_;
    std::uint64_t dropped_ = 0;
};

} // namespace pcloud::dped
