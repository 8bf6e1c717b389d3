#include "etcd/election.h"

#include "common/log.h"

#include <algorithm>
#include <chrono>

namespace pcloud::etcd {

Election::Election(Client& client, ElectionOptions options, const Clock& clock)
    : client_(client), o_(std::move(options)), clock_(clock) {}

Election::~Election() {
    stop(true);
}

void Election::start() {
    if (thread_.joinable())
        return;
    stopping_ = false;
    thread_ = std::thread([this] { loop(); });
}

void Election::stop(bool resign) {
    if (!thread_.joinable())
        return;
    stopping_ = true;
    wake();
    thread_.join();
    std::int64_t lease = 0;
    {
        std::lock_guard lock(mutex_);
        leadership_.end("stopped");
        lease = lease_;
        lease_ = 0;
        own_key_.clear();
    }
    keepalive_.reset();
    watch_.reset();
    if (resign && lease != 0) {
        if (auto st = client_.leaseRevoke(lease); !st)
            PCLOUD_LOG(Warning, "Could not revoke the election lease; it expires by itself",
                       {{"lease", std::to_string(lease)}, {"error", st.error().message}});
    }
    publish(LeaderState{false, 0, "", "", "stopped"});
}

void Election::onChange(std::function<void(const LeaderState&)> cb) {
    std::lock_guard lock(mutex_);
    on_change_ = std::move(cb);
}

void Election::wake() {
    {
        std::lock_guard lock(wake_mutex_);
        woken_ = true;
    }
    wake_cv_.notify_all();
}

LeaderState Election::evaluateLocked(Millis now) {
    LeaderState s;
    auto d = leadership_.decide(now);
    s.leader = d.role == policy::Role::Leader;
    s.epoch = s.leader ? d.epoch : 0;
    s.leader_name = d.role == policy::Role::Ended ? "" : d.leader;
    s.own_key = own_key_;
    s.reason = d.reason;
    s.valid_for_ms = s.leader ? std::max<Millis>(0, d.lease_end - now) : 0;
    return s;
}

LeaderState Election::state() {
    std::lock_guard lock(mutex_);
    return evaluateLocked(clock_.monotonicMs());
}

void Election::publish(const LeaderState& s) {
    std::function<void(const LeaderState&)> cb;
    {
        std::lock_guard lock(mutex_);
        bool changed = s.leader != last_.leader || s.epoch != last_.epoch ||
                       s.leader_name != last_.leader_name;
        if (!changed)
            return;
        last_ = s;
        cb = on_change_;
    }
    if (s.leader)
        PCLOUD_LOG(
            Notice, "Leadership acquired",
            {{"node", o_.node_name}, {"epoch", std::to_string(s.epoch)}, {"key", s.own_key}});
    else
        PCLOUD_LOG(Notice, "Not the leader",
                   {{"node", o_.node_name},
                    {"leader", s.leader_name.empty() ? "-" : s.leader_name},
                    {"reason", s.reason}});
    if (cb)
        cb(s);
}

bool Election::campaign() {
    Millis sent = clock_.monotonicMs();
    auto grant = client_.leaseGrant(o_.ttl_s);
    if (!grant) {
        PCLOUD_LOG(Warning, "Cannot campaign: no lease", {{"error", grant.error().message}});
        return false;
    }
    Millis ttl = grant->ttl_s * 1000;
    policy::LeadershipTiming t;
    t.ttl_ms = ttl;
    t.margin_ms = o_.margin_ms > 0 ? o_.margin_ms : ttl / 4;
    t.renew_every_ms = o_.renew_every_ms > 0 ? o_.renew_every_ms : ttl / 4;
    std::string key = o_.prefix + std::to_string(grant->id);
    {
        std::lock_guard lock(mutex_);
        leadership_ = policy::Leadership(t);
        leadership_.beginTerm(sent, ttl);
        lease_ = grant->id;
        own_key_ = key;
    }
    Txn create;
    create.compare.push_back(Compare::createRevision(key, 0));
    create.success.push_back(Op::put(key, o_.node_name, grant->id));
    create.failure.push_back(Op::get(key));
    auto r = client_.txn(create);
    if (!r) {
        endTerm("cannot create the candidate key: " + r.error().message);
        return false;
    }
    if (!r->succeeded) {
        // A retried Txn that was applied the first time: the key is ours if it has our lease.
        bool ours =
            !r->gets.empty() && !r->gets[0].kvs.empty() && r->gets[0].kvs[0].lease == grant->id;
        if (!ours) {
            endTerm("the candidate key exists with another lease");
            return false;
        }
    }
    watch_from_ = r->revision + 1;
    sent_.clear();
    keepalive_.reset();
    watch_.reset();
    next_renew_ = clock_.monotonicMs(); // first renewal now: it also checks the stream
    PCLOUD_LOG(Info, "Campaigning",
               {{"node", o_.node_name}, {"key", key}, {"ttl_s", std::to_string(grant->ttl_s)}});
    return true;
}

void Election::endTerm(const std::string& reason) {
    std::int64_t lease = 0;
    {
        std::lock_guard lock(mutex_);
        leadership_.end(reason);
        lease = lease_;
        lease_ = 0;
        own_key_.clear();
    }
    publish(LeaderState{false, 0, "", "", reason});
    keepalive_.reset();
    watch_.reset();
    sent_.clear();
    PCLOUD_LOG(Notice, "Election term ended; campaigning again with a new lease",
               {{"node", o_.node_name}, {"lease", std::to_string(lease)}, {"reason", reason}});
    if (lease != 0) {
        // Best effort: the lease may be gone already; it expires by itself otherwise.
        (void)client_.leaseRevoke(lease);
    }
}

bool Election::readView() {
    std::string key;
    std::int64_t lease = 0;
    {
        std::lock_guard lock(mutex_);
        key = own_key_;
        lease = lease_;
    }
    auto r = client_.range(o_.prefix, true);
    if (!r) {
        PCLOUD_LOG(Info, "Cannot read the candidates", {{"error", r.error().message}});
        return false;
    }
    policy::ElectionView v;
    for (const auto& kv : r->kvs) {
        if (v.lowest_create_revision == 0 || kv.create_revision < v.lowest_create_revision) {
            v.lowest_create_revision = kv.create_revision;
            v.lowest_name = kv.value;
        }
        if (kv.key == key && kv.lease == lease) {
            v.own_present = true;
            v.own_create_revision = kv.create_revision;
        }
    }
    std::lock_guard lock(mutex_);
    if (own_key_ == key)
        leadership_.observed(v);
    return true;
}

void Election::loop() {
    while (!stopping_) {
        bool inTerm;
        {
            std::lock_guard lock(mutex_);
            inTerm = leadership_.inTerm() && !own_key_.empty();
        }
        if (!inTerm) {
            if (!campaign()) {
                std::unique_lock lock(wake_mutex_);
                wake_cv_.wait_for(lock, std::chrono::milliseconds(o_.retry_ms),
                                  [&] { return stopping_.load(); });
            }
            continue;
        }
        // Streams: (re)open when missing or broken; a broken one reopens on the next
        // endpoint, since its own member may be the one that died.
        if (!keepalive_ || keepalive_->broken()) {
            if (keepalive_) {
                PCLOUD_LOG(Info, "Keep-alive stream broke; reopening on the next endpoint",
                           {{"error", keepalive_->error()}});
                client_.streamBroke(keepalive_->endpoint());
            }
            sent_.clear();
            auto ka = client_.keepAlive([this] { wake(); });
            if (ka)
                keepalive_ = std::move(*ka);
            next_renew_ = clock_.monotonicMs();
        }
        if (!watch_ || watch_->broken()) {
            if (watch_)
                client_.streamBroke(watch_->endpoint());
            auto w = client_.watch(o_.prefix, true, watch_from_, [this] { wake(); });
            if (w)
                watch_ = std::move(*w);
            else
                watch_.reset();
        }
        Millis now = clock_.monotonicMs();
        if (keepalive_ && now >= next_renew_) {
            std::int64_t lease;
            {
                std::lock_guard lock(mutex_);
                lease = lease_;
            }
            if (keepalive_->send(lease))
                sent_.push_back(now);
            next_renew_ = now + std::max<Millis>(leadership_.timing().renew_every_ms, 50);
        }
        while (keepalive_) {
            auto rep = keepalive_->next(0);
            if (!rep)
                break;
            Millis sentAt = sent_.empty() ? 0 : sent_.front();
            if (!sent_.empty())
                sent_.pop_front();
            std::lock_guard lock(mutex_);
            if (sentAt > 0)
                leadership_.renewed(sentAt, rep->ttl_s * 1000);
        }
        while (watch_) {
            auto b = watch_->next(0);
            if (!b)
                break;
            watch_from_ = b->revision + 1;
        }
        readView();
        LeaderState s;
        policy::LeadershipDecision d;
        {
            std::lock_guard lock(mutex_);
            Millis n = clock_.monotonicMs();
            d = leadership_.decide(n);
            s = evaluateLocked(n);
        }
        if (d.role == policy::Role::Ended) {
            endTerm(d.reason);
            continue;
        }
        publish(s);
        // Sleep until the next renewal, the deadline, or news from a stream.
        Millis until = std::min(next_renew_, d.deadline) - clock_.monotonicMs();
        until = std::clamp<Millis>(until, 1, 1000);
        std::unique_lock lock(wake_mutex_);
        wake_cv_.wait_for(lock, std::chrono::milliseconds(until),
                          [&] { return woken_ || stopping_.load(); });
        woken_ = false;
    }
}

Result<TxnResult> Election::guardedTxnAs(const std::string& key, std::int64_t epoch, Txn txn) {
    txn.compare.insert(txn.compare.begin(), Compare::createRevision(key, epoch));
    txn.failure.push_back(Op::get(key));
    auto r = client_.txn(txn);
    if (!r)
        return r.error();
    if (r->succeeded)
        return r;
    // Which compare failed? The failure branch's last get reads the guard key.
    const auto& g = r->gets.back();
    bool guardHeld = !g.kvs.empty() && g.kvs[0].create_revision == epoch;
    if (!guardHeld) {
        wake();
        return makeError(std::string(kStaleEpoch) + ": etcd refused the write of epoch " +
                         std::to_string(epoch) + ": " + key +
                         (g.kvs.empty() ? " is gone" : " has another create_revision") +
                         " (leadership lost)");
    }
    r->gets.pop_back();
    return r;
}

Result<TxnResult> Election::guardedTxn(Txn txn, std::int64_t* epoch_used) {
    LeaderState s = state();
    if (!s.leader)
        return makeError(std::string(kNotLeader) + ": " + o_.node_name + " is not the leader (" +
                         s.reason + ")" +
                         (s.leader_name.empty() ? "" : "; leader: " + s.leader_name));
    if (epoch_used)
        *epoch_used = s.epoch;
    return guardedTxnAs(s.own_key, s.epoch, std::move(txn));
}

} // namespace pcloud::etcd
