#pragma once
// The reactor thread's inbox: every input to the dped reactor (libvirt events, pidfd exits,
// channel events, bus messages, job completions) is a closure posted here from whichever
// thread saw it, and run on the reactor thread in order.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

namespace pcloud::dped {

class Inbox {
public:
    void post(std::function<void()> f) {
        {
            std::lock_guard lock(mu_);
            q_.push_back(std::move(f));
        }
        cv_.notify_one();
    }
    void requestStop() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_one();
    }
    // Waits until there is work, a stop, or `deadline` (steady). Returns the work.
    std::deque<std::function<void()>>
    wait(std::optional<std::chrono::steady_clock::time_point> deadline, bool& stop) {
        std::unique_lock lock(mu_);
        auto ready = [&] { return stop_ || !q_.empty(); };
        if (deadline)
            cv_.wait_until(lock, *deadline, ready);
        else
            cv_.wait(lock, ready);
        stop = stop_;
        std::deque<std::function<void()>> out;
        out.swap(q_);
        return out;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> q_;
    bool stop_ = false;
};

} // namespace pcloud::dped
