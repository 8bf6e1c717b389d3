#pragma once
// ThreadJobRunner: the JobRunner (ports.h) dped uses. One lane per key, each with its own
// thread and queue, created on the key's first job: a deployable has a handful of
// assemblies, and a lane that waits for libvirt must never hold up another assembly's lane.
// Completions are handed to `post` (the reactor thread's inbox).

#include "dped/ports.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace pcloud::dped {

class ThreadJobRunner final : public JobRunner {
public:
    using Post = std::function<void(std::function<void()>)>;
    explicit ThreadJobRunner(Post post);
    // Lets every running job finish (a half-done libvirt call is not abandoned) and drops
    // the queued ones, whose completions are never posted. A running job's completion is
    // still posted, so `post` must stay valid until the destructor returns.
    ~ThreadJobRunner() override;
    // What the destructor does; later run() calls are ignored. Idempotent.
    void shutdown();
    ThreadJobRunner(const ThreadJobRunner&) = delete;
    ThreadJobRunner& operator=(const ThreadJobRunner&) = delete;

    void run(const std::string& key, std::function<void()> job,
             std::function<void()> done) override;

    // Jobs queued or running, over all keys (status and tests).
    std::size_t pending() const;

private:
    struct Job {
        std::function<void()> work;
        std::function<void()> done;
    };
    struct Lane {
        std::deque<Job> queue;
        bool busy = false;
        std::thread thread;
    };
    void laneLoop(Lane& lane);

    Post post_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::map<std::string, std::unique_ptr<Lane>> lanes_;
};

} // namespace pcloud::dped
