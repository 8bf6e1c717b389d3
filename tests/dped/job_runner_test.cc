// ThreadJobRunner with real threads: per-key order, no key held back by another, and a
// shutdown that finishes the running job and drops the queued ones. The waits below are
// bounded only so that a bug fails the test instead of hanging it; nothing is timed.
#include "dped/job_runner.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace pcloud::dped;
using namespace std::chrono_literals;

namespace {

// Stands in for the reactor's inbox: completions are queued here and run by the test.
class Inbox {
public:
    void post(std::function<void()> f) {
        {
            std::lock_guard lock(mu_);
            q_.push_back(std::move(f));
        }
        cv_.notify_all();
    }
    // Runs completions until `n` have run in total; false if they do not come.
    bool runUntil(std::size_t n) {
        std::unique_lock lock(mu_);
        while (ran_ < n) {
            if (!cv_.wait_for(lock, 30s, [&] { return !q_.empty(); })) return false;
            auto f = std::move(q_.front());
            q_.pop_front();
            lock.unlock();
            f();
            lock.lock();
            ++ran_;
        }
        return true;
    }
    std::size_t queued() {
        std::lock_guard lock(mu_);
        return q_.size();
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> q_;
    std::size_t ran_ = 0;
};

struct Log {
    std::mutex mu;
    std::vector<std::string> lines;
    void add(std::string s) {
        std::lock_guard lock(mu);
        lines.push_back(std::move(s));
    }
    std::vector<std::string> get() {
        std::lock_guard lock(mu);
        return lines;
    }
};

} // namespace

TEST(ThreadJobRunnerTest, JobsOfOneKeyRunInOrderAndEachCompletionFollowsItsJob) {
    Inbox inbox;
    Log work;
    std::vector<std::string> done;  // only touched by this thread (runUntil)
    ThreadJobRunner runner([&](std::function<void()> f) { inbox.post(std::move(f)); });
    for (std::string step : {"destroy", "start", "destroy", "start"})
        runner.run(
            "node01", [&work, step] { work.add(step); },
            [&done, &work, step] {
                done.push_back(step + " after " + std::to_string(work.get().size()));
            });
    ASSERT_TRUE(inbox.runUntil(4));
    EXPECT_EQ(work.get(), (std::vector<std::string>{"destroy", "start", "destroy", "start"}));
    ASSERT_EQ(done.size(), 4u);
    EXPECT_EQ(done[0].substr(0, 7), "destroy");
    EXPECT_EQ(done[3].substr(0, 5), "start");
}

TEST(ThreadJobRunnerTest, ASlowJobHoldsBackNoOtherKey) {
    Inbox inbox;
    std::promise<void> release;
    auto released = release.get_future().share();
    Log work;
    ThreadJobRunner runner([&](std::function<void()> f) { inbox.post(std::move(f)); });
    runner.run(
        "node01", [&] { released.wait(); work.add("node01"); }, [] {});
    runner.run(
        "node02", [&] { work.add("node02"); }, [] {});
    // node02's completion arrives while node01's job still waits (for a release that only
    // comes after it): with one shared thread this would never return true.
    ASSERT_TRUE(inbox.runUntil(1));
    EXPECT_EQ(work.get(), (std::vector<std::string>{"node02"}));
    EXPECT_EQ(runner.pending(), 1u);
    release.set_value();
    ASSERT_TRUE(inbox.runUntil(2));
    EXPECT_EQ(work.get(), (std::vector<std::string>{"node02", "node01"}));
    EXPECT_EQ(runner.pending(), 0u);
}

TEST(ThreadJobRunnerTest, ShutdownFinishesTheRunningJobAndDropsTheQueuedOnes) {
    Inbox inbox;
    std::promise<void> started, release;
    auto released = release.get_future().share();
    Log work;
    ThreadJobRunner runner([&](std::function<void()> f) { inbox.post(std::move(f)); });
    runner.run(
        "node01",
        [&] {
            started.set_value();
            released.wait();
            work.add("running");
        },
        [&] { work.add("running done"); });
    runner.run(
        "node01", [&] { work.add("queued"); }, [&] { work.add("queued done"); });
    started.get_future().wait();
    std::thread stopper([&] { runner.shutdown(); });
    // shutdown() empties the queues before it waits for the running job.
    while (runner.pending() != 1u) std::this_thread::yield();
    release.set_value();
    stopper.join();
    runner.run(
        "node02", [&] { work.add("after shutdown"); }, [] {});
    ASSERT_TRUE(inbox.runUntil(1));  // the running job's completion is still delivered
    EXPECT_EQ(work.get(), (std::vector<std::string>{"running", "running done"}));
    EXPECT_EQ(inbox.queued(), 0u);
    EXPECT_EQ(runner.pending(), 0u);
}
