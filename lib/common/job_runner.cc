#include "common/job_runner.h"

namespace pcloud {

ThreadJobRunner::ThreadJobRunner(Post post) : post_(std::move(post)) {}

ThreadJobRunner::~ThreadJobRunner() {
    shutdown();
}

void ThreadJobRunner::shutdown() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        for (auto& [key, lane] : lanes_)
            lane->queue.clear();
    }
    cv_.notify_all();
    for (auto& [key, lane] : lanes_)
        if (lane->thread.joinable())
            lane->thread.join();
}

void ThreadJobRunner::run(const std::string& key, std::function<void()> job,
                          std::function<void()> done) {
    {
        std::lock_guard lock(mu_);
        if (stopping_)
            return;
        auto& lane = lanes_[key];
        if (!lane) {
            lane = std::make_unique<Lane>();
            lane->thread = std::thread([this, l = lane.get()] { laneLoop(*l); });
        }
        lane->queue.push_back({std::move(job), std::move(done)});
    }
    cv_.notify_all();
}

std::size_t ThreadJobRunner::pending() const {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& [key, lane] : lanes_)
        n += lane->queue.size() + (lane->busy ? 1 : 0);
    return n;
}

void ThreadJobRunner::laneLoop(Lane& lane) {
    std::unique_lock lock(mu_);
    while (true) {
        cv_.wait(lock, [&] { return stopping_ || !lane.queue.empty(); });
        if (stopping_)
            return;
        Job job = std::move(lane.queue.front());
        lane.queue.pop_front();
        lane.busy = true;
        lock.unlock();
        job.work();
        // Post before clearing busy, so pending() never reads 0 while a completion is still
        // on its way to the reactor.
        post_(std::move(job.done));
        lock.lock();
        lane.busy = false;
    }
}

} // namespace pcloud
