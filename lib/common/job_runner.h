#pragma once
// Jobs that must not run on a single-threaded core's own thread: slow hypervisor calls in
// dped (per assembly) and pcloud-node (per domain). Jobs with the same key run one at a time,
// in the order given; jobs with different keys may run at once. `done` runs on the core's
// thread after its job.

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace pcloud {

class JobRunner {
public:
    virtual ~JobRunner() = default;
    virtual void run(const std::string& key, std::function<void()> job,
                     std::function<void()> done) = 0;
};

// Runs the job and then `done` at once, on the caller's thread: unit tests, and any caller
// that has no thread to come back to.
class InlineJobRunner final : public JobRunner {
public:
    void run(const std::string&, std::function<void()> job, std::function<void()> done) override {
        job();
        done();
    }
};

// One lane per key, each with its own thread and queue, created on the key's first job: a
// deployable has a handful of assemblies, and a lane that waits for libvirt must never hold
// up another's. Completions are handed to `post` (the core thread's inbox).

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

} // namespace pcloud
