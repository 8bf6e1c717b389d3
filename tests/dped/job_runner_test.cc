// ThreadJobRunner with real threads: per-key order, no key held back by another, and a
// shutdown that finishes the running job and drops the queued ones. The waits below are
// bounded only so that a bug fails the test instead of hanging it; nothing is timed.
#include "common/job_runner.h"
#include "dped/inbox.h"

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
using pcloud::ThreadJobRunner;
using namespace std::chrono_literals;

namespace {

// The reactor's inbox (dped/inbox.h); the test thread plays the reactor thread.
class Completions {
public:
    void post(std::function<void()> f) { inbox_.post(std::move(f)); }
    // Runs completions until `n` have run in total; false if they do not come.
    bool runUntil(std::size_t n) {
        auto end = std::chrono::steady_clock::now() + 30s;
        while (ran_ < n) {
            if (backlog_.empty()) {
                bool stop = false;
                backlog_ = inbox_.wait(end, stop);
                if (backlog_.empty()) {
                    if (std::chrono::steady_clock::now() >= end)
                        return false;
                    continue;
                }
            }
            auto f = std::move(backlog_.front());
            backlog_.pop_front();
            f();
            ++ran_;
        }
        return true;
    }
    // Completions posted but not run yet.
    std::size_t queued() {
        bool stop = false;
        for (auto& f : inbox_.wait(std::chrono::steady_clock::now(), stop))
            backlog_.push_back(std::move(f));
        return backlog_.size();
    }

private:
    Inbox inbox_;
    std::deque<std::function<void()>> backlog_;
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

// pending() drops a moment after a completion is posted (a lane posts, then goes idle).
bool pendingBecomes(const ThreadJobRunner& runner, std::size_t n) {
    auto end = std::chrono::steady_clock::now() + 30s;
    while (runner.pending() != n)
        if (std::chrono::steady_clock::now() >= end)
            return false;
        else
            std::this_thread::yield();
    return true;
}

} // namespace

TEST(ThreadJobRunnerTest, JobsOfOneKeyRunInOrderAndEachCompletionFollowsItsJob) {
    Completions inbox;
    Log work;
    std::vector<std::string> done; // only touched by this thread (runUntil)
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
    Completions inbox;
    std::promise<void> release;
    auto released = release.get_future().share();
    Log work;
    ThreadJobRunner runner([&](std::function<void()> f) { inbox.post(std::move(f)); });
    runner.run(
        "node01",
        [&] {
            released.wait();
            work.add("node01");
        },
        [] {});
    runner.run(
        "node02", [&] { work.add("node02"); }, [] {});
    // node02's completion arrives while node01's job still waits (for a release that only
    // comes after it): with one shared thread this would never return true.
    ASSERT_TRUE(inbox.runUntil(1));
    EXPECT_EQ(work.get(), (std::vector<std::string>{"node02"}));
    EXPECT_TRUE(pendingBecomes(runner, 1));
    release.set_value();
    ASSERT_TRUE(inbox.runUntil(2));
    EXPECT_EQ(work.get(), (std::vector<std::string>{"node02", "node01"}));
    EXPECT_TRUE(pendingBecomes(runner, 0));
}

TEST(ThreadJobRunnerTest, ShutdownFinishesTheRunningJobAndDropsTheQueuedOnes) {
    Completions inbox;
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
    ASSERT_TRUE(pendingBecomes(runner, 1));
    release.set_value();
    stopper.join();
    runner.run(
        "node02", [&] { work.add("after shutdown"); }, [] {});
    ASSERT_TRUE(inbox.runUntil(1)); // the running job's completion is still delivered
    EXPECT_EQ(work.get(), (std::vector<std::string>{"running", "running done"}));
    EXPECT_EQ(inbox.queued(), 0u);
    EXPECT_TRUE(pendingBecomes(runner, 0));
}
