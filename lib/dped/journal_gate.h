#pragma once
// JournalGate: how dped submits its events to cped's journal (pcloud.journal).

#include "common/clock.h"
#include "common/log.h"
#include "common/result.h"
#include "events/event.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace pcloud::dped {

// The journal side of the bus: every event for pcloud.journal is kept until cped answers
// that it journaled it, and sent again when no answer came. An event accepted by the hub is
// not yet journaled: with the embedded hub, a cped killed or paused before it read the event
// lost it with the hub's queue (found by pcloud-cts, seed 20261202).
//
// Each event is stamped with this dped instance's `source` and a number (source_seq); cped
// journals a submission only if it has not journaled that number from that source, so a
// resent event is journaled once, whatever order the copies arrive in. While the bus is down
// nothing is sent; when it is back every kept event is sent again, and answers to sends on
// an earlier connection no longer cause a resend. A send that got no answer on the live
// connection (cped paused: the request timed out) is sent again at once.
//
// Bounded: beyond `capacity` kept events the oldest is dropped and counted, and the next
// send starts with one `events-dropped` event saying how many. Thread-safe: the reactor
// thread and the referee worker publish, the bus client's thread calls setUp() and the
// answers.
class JournalGate {
public:
    enum class Answer {
        Journaled, // cped journaled it, or already had it
        Refused,   // cped will never take it (malformed): forget it
        NoAnswer,  // timeout or lost connection: send again
    };
    using Done = std::function<void(Answer, const std::string& why)>;
    // Sends one submission; `done` is called exactly once, possibly before submit returns.
    using Submit = std::function<void(const std::string& body, Done done)>;

    JournalGate(Submit submit, std::string deployable, std::string source, const Clock& clock,
                std::size_t capacity = 10'000)
        : s_(std::make_shared<State>(std::move(submit), std::move(deployable), std::move(source),
                                     clock, capacity ? capacity : 1)) {}

    // Takes the JSON of an event (events::toJson). Never blocks on the bus, never fails.
    Status publish(const std::string& body) {
        std::lock_guard lock(s_->mu);
        Entry e;
        e.n = ++s_->next;
        e.body = stamp(body, e.n);
        s_->kept.push_back(std::move(e));
        while (s_->kept.size() > s_->capacity) {
            const Entry& old = s_->kept.front();
            s_->dropped += old.dropped_count ? old.dropped_count : 1;
            s_->kept.pop_front();
        }
        pump(s_);
        return Status::success();
    }

    void setUp(bool up) {
        std::lock_guard lock(s_->mu);
        s_->up = up;
        ++s_->generation; // answers to earlier sends no longer cause a resend
        for (auto& e : s_->kept)
            e.sent = false;
        if (up && !s_->kept.empty())
            PCLOUD_LOG(Notice, "Submitting the events cped has not journaled yet",
                       {{"deployable", s_->dep}, {"count", std::to_string(s_->kept.size())}});
        pump(s_);
    }

    // Events cped has not answered for yet (sent or not).
    std::size_t held() const {
        std::lock_guard lock(s_->mu);
        return s_->kept.size();
    }

private:
    struct Entry {
        std::uint64_t n = 0;
        std::string body;
        bool sent = false;               // on the current connection
        std::uint64_t dropped_count = 0; // an events-dropped notice: how many it reports
    };
    struct State {
        State(Submit submit, std::string dep, std::string source, const Clock& clock,
              std::size_t capacity)
            : submit(std::move(submit)), dep(std::move(dep)), source(std::move(source)),
              clock(clock), capacity(capacity) {}
        Submit submit;
        std::string dep, source;
        const Clock& clock;
        std::size_t capacity;
        // Recursive: submit may call `done` before it returns, on the publishing thread.
        std::recursive_mutex mu;
        bool up = true; // dped starts only once connected
        std::uint64_t generation = 0;
        std::uint64_t next = 0; // the last number given
        std::deque<Entry> kept;
        std::uint64_t dropped = 0; // dropped since the last notice
        bool pumping = false;
    };

    std::string stamp(const std::string& body, std::uint64_t n) const {
        auto j = nlohmann::json::parse(body, nullptr, false);
        if (!j.is_object())
            return body; // not an event: cped refuses it, nothing to number
        j["source"] = s_->source;
        j["source_seq"] = n;
        return j.dump();
    }

    // Sends what is due; under s->mu.
    static void pump(const std::shared_ptr<State>& s) {
        if (!s->up || s->pumping) // pumping: an answer given inside submit(); the loop goes on
            return;
        if (s->dropped > 0) {
            events::Event e;
            e.time = s->clock.nowMs();
            e.deployable = s->dep;
            e.state = "events-dropped";
            e.reason = std::to_string(s->dropped) +
                       " events were dropped (oldest first) before cped journaled them";
            e.source = s->source;
            e.source_seq = ++s->next;
            PCLOUD_LOG(Warning, "Events were dropped before cped journaled them",
                       {{"deployable", s->dep}, {"dropped", std::to_string(s->dropped)}});
            Entry notice;
            notice.n = e.source_seq;
            notice.body = events::toJson(e).dump();
            notice.dropped_count = s->dropped;
            s->kept.push_front(std::move(notice));
            s->dropped = 0;
        }
        s->pumping = true;
        for (std::size_t i = 0; i < s->kept.size() && s->up; ++i) {
            if (s->kept[i].sent)
                continue;
            s->kept[i].sent = true;
            std::uint64_t n = s->kept[i].n, gen = s->generation;
            std::weak_ptr<State> weak = s;
            std::string body = s->kept[i].body; // submit may answer at once and erase it
            s->submit(body, [weak, n, gen](Answer a, const std::string& why) {
                if (auto st = weak.lock())
                    answered(st, n, gen, a, why);
            });
            // Failed at once (the client's queue is full): try again at the next publish,
            // reconnect or answer rather than spin here.
            if (i < s->kept.size() && s->kept[i].n == n && !s->kept[i].sent)
                break;
            if (i < s->kept.size() && s->kept[i].n != n)
                --i; // the entry was erased (answered at once): the next one moved here
        }
        s->pumping = false;
    }

    static void answered(const std::shared_ptr<State>& s, std::uint64_t n, std::uint64_t gen,
                         Answer a, const std::string& why) {
        std::lock_guard lock(s->mu);
        auto it =
            std::find_if(s->kept.begin(), s->kept.end(), [n](const Entry& e) { return e.n == n; });
        if (it == s->kept.end())
            return; // answered already, or dropped
        if (a == Answer::Refused)
            PCLOUD_LOG(Warning, "cped refused an event; it is not journaled",
                       {{"deployable", s->dep}, {"why", why}, {"event", it->body}});
        if (a != Answer::NoAnswer) {
            s->kept.erase(it);
            return;
        }
        if (gen != s->generation)
            return; // sent again on the newer connection already
        PCLOUD_LOG(Info, "No answer from cped to an event; sending it again",
                   {{"deployable", s->dep}, {"source_seq", std::to_string(n)}, {"why", why}});
        it->sent = false;
        pump(s);
    }

    std::shared_ptr<State> s_;
};

} // namespace pcloud::dped
