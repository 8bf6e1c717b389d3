#pragma once
// EventOutbox: the events dped publishes on pcloud.journal, held while the bus is down.
// Bounded: beyond `capacity` the oldest event is dropped and counted, so a long hub outage
// costs memory for at most `capacity` events and never blocks recovery. When the bus is
// back the owner takes the lot (take()) and publishes one `events-dropped` event with the
// count before the events kept. EventOutbox is not thread-safe; JournalGate (below) locks.

#include "common/clock.h"
#include "common/log.h"
#include "common/result.h"
#include "events/event.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
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

// The journal side of the bus: events for pcloud.journal go to `publish` (the bus client)
// while its connection is up and wait in an EventOutbox while it is down; when it is back
// they are published in order after one `events-dropped` event with the count (if any were
// dropped). Thread-safe: the reactor thread and the referee worker publish, the bus
// client's thread calls setUp().
class JournalGate {
public:
    using Publish = std::function<Status(const std::string& body)>;
    JournalGate(Publish publish, std::string deployable, const Clock& clock,
                std::size_t capacity = 10'000)
        : publish_(std::move(publish)), dep_(std::move(deployable)), clock_(clock), box_(capacity) {
    }

    Status publish(const std::string& body) {
        std::lock_guard lock(mu_);
        if (!up_ || !box_.empty()) {
            box_.push(body);
            return Status::success();
        }
        return publish_(body);
    }

    void setUp(bool up) {
        std::lock_guard lock(mu_);
        up_ = up;
        if (!up)
            return;
        auto taken = box_.take();
        if (taken.dropped > 0) {
            events::Event e;
            e.time = clock_.nowMs();
            e.deployable = dep_;
            e.state = "events-dropped";
            e.reason = std::to_string(taken.dropped) +
                       " events were dropped (oldest first) while the message hub was "
                       "unreachable";
            PCLOUD_LOG(Warning, "Events were dropped while the message hub was unreachable",
                       {{"deployable", dep_}, {"dropped", std::to_string(taken.dropped)}});
            (void)publish_(events::toJson(e).dump());
        }
        if (!taken.events.empty())
            PCLOUD_LOG(Notice, "Publishing the events held while the message hub was unreachable",
                       {{"deployable", dep_}, {"count", std::to_string(taken.events.size())}});
        for (auto& body : taken.events)
            (void)publish_(body);
    }

    std::size_t held() const {
        std::lock_guard lock(mu_);
        return box_.size();
    }

private:
    Publish publish_;
    std::string dep_;
    const Clock& clock_;
    mutable std::mutex mu_;
    bool up_ = true; // dped starts only once connected
    EventOutbox box_;
};

} // namespace pcloud::dped
