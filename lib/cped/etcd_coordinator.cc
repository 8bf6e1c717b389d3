#include "cped/etcd_coordinator.h"

#include "etcd/client.h"
#include "etcd/election.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

namespace pcloud::cped {
namespace {

LeadershipInfo toInfo(const etcd::LeaderState& s, const std::string& node) {
    LeadershipInfo i;
    i.leader = s.leader;
    i.epoch = s.epoch;
    i.node = node;
    i.leader_name = s.leader_name;
    i.reason = s.reason;
    i.valid_for_ms = s.valid_for_ms;
    return i;
}

policy::ZoneMember toMember(const etcd::MemberInfo& m) {
    policy::ZoneMember z;
    z.id = m.id;
    z.name = m.name;
    z.peer_urls = m.peer_urls;
    z.client_urls = m.client_urls;
    z.learner = m.learner;
    return z;
}

// etcd answered no ("etcdserver: ..."): nothing was applied. Not so when the member stopped
// under the call (the removed member itself) or the call timed out inside etcd.
bool isRefusal(const std::string& error) {
    const std::string p = etcd::kEtcdServerPrefix;
    return error.find(p) != std::string::npos &&
           error.find(p + "server stopped") == std::string::npos &&
           error.find(p + "request timed out") == std::string::npos &&
           error.find(p + "leader changed") == std::string::npos;
}

class EtcdZone final : public ZoneMembership {
public:
    EtcdZone(etcd::Client& client, std::string url) : client_(client), url_(std::move(url)) {
        auto e = etcd::parseEndpoints(url_); // valid: makeEtcdCoordinator parsed it first
        tls_ = e && e->tls;
    }

    Result<policy::ZoneView> observe() override {
        auto list = client_.memberList();
        if (!list)
            return makeError("cannot list the zone's etcd members: " + list.error().message);
        policy::ZoneView v;
        for (const auto& m : list->members)
            v.members.push_back(toMember(m));
        // One Status per started member, at once: a member that is down costs one timeout.
        std::vector<std::future<Result<etcd::MemberStatus>>> asked(v.members.size());
        for (size_t i = 0; i < v.members.size(); ++i)
            if (!v.members[i].client_urls.empty())
                asked[i] =
                    std::async(std::launch::async, [this, url = v.members[i].client_urls[0]] {
                        return client_.memberStatus(url);
                    });
        for (size_t i = 0; i < v.members.size(); ++i) {
            auto& m = v.members[i];
            if (!asked[i].valid()) {
                m.error = "not started: no client URL yet";
                continue;
            }
            auto st = asked[i].get();
            if (!st) {
                m.error = st.error().message;
                continue;
            }
            m.answered = true;
            m.version = st->version;
            m.db_size = st->db_size;
            m.db_size_in_use = st->db_size_in_use;
            m.leader = st->leader;
            m.raft_index = st->raft_index;
            m.raft_term = st->raft_term;
            m.raft_applied_index = st->raft_applied_index;
            m.errors = st->errors;
        }
        return v;
    }

    // A change whose reply was lost (a timeout, or the connection closed under it: the
    // member that took a removal may be the one removed, and it stops at once) may have
    // been applied; the member list says whether it was, so that it is neither reported as
    // failed nor sent again. Members apply a change a moment after it is committed, and the
    // removed one may still answer with its old list, so the list is read a few times.
    template <typename Found> std::optional<etcd::MemberListResult> listUntil(Found found) {
        for (int i = 0; i < 20; ++i) {
            if (auto list = client_.memberList(); list && found(*list))
                return std::move(*list);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return std::nullopt;
    }

    Result<Added> add(const std::string& peer_url, bool learner) override {
        auto r = client_.memberAdd({peer_url}, learner);
        if (!r) {
            auto has = [&](const etcd::MemberInfo& m) {
                return std::find(m.peer_urls.begin(), m.peer_urls.end(), peer_url) !=
                       m.peer_urls.end();
            };
            if (!isRefusal(r.error().message))
                if (auto list = listUntil([&](const etcd::MemberListResult& l) {
                        return std::any_of(l.members.begin(), l.members.end(), has);
                    })) {
                    Added a;
                    for (const auto& m : list->members) {
                        if (has(m))
                            a.member = toMember(m);
                        a.members.members.push_back(toMember(m));
                    }
                    return a;
                }
            return makeError(
                etcd::explainMemberError(std::string(learner ? "add a learner" : "add a member") +
                                             " with peer URL " + peer_url,
                                         r.error().message));
        }
        Added a;
        a.member = toMember(r->added);
        for (const auto& m : r->members)
            a.members.members.push_back(toMember(m));
        return a;
    }

    Status promote(std::uint64_t id, const std::string& label) override {
        auto r = client_.memberPromote(id);
        if (!r) {
            // A lost reply: the member list says whether it votes now.
            if (!isRefusal(r.error().message) && listUntil([&](const etcd::MemberListResult& l) {
                    return std::any_of(
                        l.members.begin(), l.members.end(),
                        [&](const etcd::MemberInfo& m) { return m.id == id && !m.learner; });
                }))
                return Status::success();
            return makeError(etcd::explainMemberError("promote learner '" + label + "' (id " +
                                                          policy::memberIdHex(id) + ")",
                                                      r.error().message));
        }
        return Status::success();
    }

    Status remove(std::uint64_t id, const std::string& label) override {
        auto r = client_.memberRemove(id);
        if (!r) {
            if (!isRefusal(r.error().message) && listUntil([&](const etcd::MemberListResult& l) {
                    return std::none_of(l.members.begin(), l.members.end(),
                                        [&](const etcd::MemberInfo& m) { return m.id == id; });
                }))
                return Status::success();
            return makeError(etcd::explainMemberError("remove member '" + label + "' (id " +
                                                          policy::memberIdHex(id) + ")",
                                                      r.error().message));
        }
        return Status::success();
    }

    std::string endpoints() const override { return url_; }
    bool tls() const override { return tls_; }

private:
    etcd::Client& client_;
    std::string url_;
    bool tls_ = false;
};

// Guarded Txns of one term: a Txn etcd did not answer is sent again within the term that
// first sent it (retryUnansweredWrite), each time with the same guard.
class GuardedWriter {
public:
    GuardedWriter(etcd::Election& election, const Clock& clock)
        : election_(election), clock_(clock) {}
    Result<etcd::TxnResult> txn(const etcd::Txn& t) {
        const etcd::LeaderState term = election_.state();
        if (!term.leader)
            return election_.guardedTxn(t); // refused locally, with the reason
        std::optional<etcd::TxnResult> out;
        auto st = retryUnansweredWrite(
            [&]() -> Status {
                auto r = election_.guardedTxnAs(term.own_key, term.epoch, t);
                if (!r)
                    return r.error();
                out = std::move(*r);
                return Status::success();
            },
            [&] {
                const etcd::LeaderState now = election_.state();
                return now.leader && now.epoch == term.epoch;
            },
            clock_, [](Millis ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
        if (!st)
            return st.error();
        return std::move(*out);
    }
    Status write(const etcd::Txn& t) {
        auto r = txn(t);
        return r ? Status::success() : Status(r.error());
    }

private:
    etcd::Election& election_;
    const Clock& clock_;
};

// The zone's journal in etcd (lib/cped/zone_journal.h).
class EtcdJournal final : public ZoneJournalStore {
public:
    EtcdJournal(etcd::Client& client, GuardedWriter& writer) : client_(client), writer_(writer) {}

    Result<std::optional<ZoneJournalHead>> head() override {
        auto last = client_.range(kZoneJournalLastKey);
        if (!last)
            return last.error();
        if (last->kvs.empty())
            return std::optional<ZoneJournalHead>{};
        auto n = parseSeq(last->kvs[0].value);
        if (!n)
            return n.error();
        ZoneJournalHead h{*n, *n + 1};
        const std::string prefix = kZoneJournalEventPrefix;
        auto oldest = client_.rangeBetween(prefix, prefix + std::string(1, '\xff'), 1);
        if (!oldest)
            return oldest.error();
        if (!oldest->kvs.empty())
            if (auto seq = zoneJournalSeqOf(oldest->kvs[0].key); seq && *seq <= h.last)
                h.first = *seq;
        return std::optional<ZoneJournalHead>{h};
    }

    Result<std::vector<std::pair<std::uint64_t, std::string>>>
    read(std::uint64_t from, std::uint64_t to, std::size_t limit) override {
        std::vector<std::pair<std::uint64_t, std::string>> out;
        if (from > to)
            return out;
        auto r = client_.rangeBetween(zoneJournalEventKey(from), zoneJournalEventKey(to + 1),
                                      static_cast<std::int64_t>(limit));
        if (!r)
            return r.error();
        for (auto& kv : r->kvs)
            if (auto seq = zoneJournalSeqOf(kv.key))
                out.emplace_back(*seq, std::move(kv.value));
        return out;
    }

    Status append(std::uint64_t seq, const std::string& line) override {
        etcd::Txn t;
        etcd::Compare c;
        c.key = kZoneJournalLastKey;
        c.target = etcd::Compare::Target::Value;
        c.value = std::to_string(seq - 1);
        t.compare.push_back(c);
        t.success.push_back(etcd::Op::put(zoneJournalEventKey(seq), line));
        t.success.push_back(etcd::Op::put(kZoneJournalLastKey, std::to_string(seq)));
        if (seq > kZoneJournalKeep)
            t.success.push_back(etcd::Op::del(zoneJournalEventKey(seq - kZoneJournalKeep)));
        t.failure.push_back(etcd::Op::get(kZoneJournalLastKey));
        t.failure.push_back(etcd::Op::get(zoneJournalEventKey(seq)));
        auto r = writer_.txn(t);
        if (!r)
            return r.error();
        if (r->succeeded)
            return Status::success();
        // Sent again after a lost reply: the first one was applied.
        const auto& mine = r->gets.at(1);
        if (!mine.kvs.empty() && mine.kvs[0].value == line)
            return Status::success();
        const auto& last = r->gets.at(0);
        return makeError(std::string(kJournalMoved) + ": the zone's journal is at seq " +
                         (last.kvs.empty() ? std::string("none") : last.kvs[0].value) + ", not " +
                         std::to_string(seq - 1) + " as this copy has it");
    }

    Status seed(std::uint64_t last) override {
        etcd::Txn t;
        etcd::Compare c;
        c.key = kZoneJournalLastKey;
        c.target = etcd::Compare::Target::Version;
        c.number = 0;
        t.compare.push_back(c);
        t.success.push_back(etcd::Op::put(kZoneJournalLastKey, std::to_string(last)));
        t.failure.push_back(etcd::Op::get(kZoneJournalLastKey));
        auto r = writer_.txn(t);
        if (!r)
            return r.error();
        if (!r->succeeded &&
            (r->gets.at(0).kvs.empty() || r->gets.at(0).kvs[0].value != std::to_string(last)))
            return makeError(std::string(kJournalMoved) +
                             ": the zone's journal was started meanwhile");
        return Status::success();
    }

private:
    static Result<std::uint64_t> parseSeq(const std::string& text) {
        std::uint64_t n = 0;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (text.empty() || ec != std::errc() || ptr != text.data() + text.size())
            return makeError(std::string("etcd ") + kZoneJournalLastKey + ": '" +
                             text.substr(0, 40) + "' is not a seq (a decimal number)");
        return n;
    }

    etcd::Client& client_;
    GuardedWriter& writer_;
};

class EtcdCoordinator final : public Coordinator {
public:
    EtcdCoordinator(std::string url, std::string node, std::unique_ptr<etcd::Client> client,
                    const Clock& clock, std::int64_t ttl_s)
        : url_(std::move(url)), node_(std::move(node)), client_(std::move(client)) {
        etcd::ElectionOptions o;
        o.node_name = node_;
        o.ttl_s = ttl_s;
        election_ = std::make_unique<etcd::Election>(*client_, o, clock);
        writer_ = std::make_unique<GuardedWriter>(*election_, clock);
        zone_ = std::make_unique<EtcdZone>(*client_, url_);
        journal_ = std::make_unique<EtcdJournal>(*client_, *writer_);
    }
    ~EtcdCoordinator() override { election_->stop(true); }

    Status campaign() override {
        election_->start();
        return Status::success();
    }
    void resign() override { election_->stop(true); }
    LeadershipInfo leadership() override { return toInfo(election_->state(), node_); }

    Status put(const std::string& key, const std::string& value) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        etcd::Txn t;
        t.success.push_back(etcd::Op::put(*full, value));
        return writer_->write(t);
    }
    Status erase(const std::string& key) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        etcd::Txn t;
        t.success.push_back(etcd::Op::del(*full));
        return writer_->write(t);
    }
    Result<std::optional<std::string>> get(const std::string& key) override {
        auto full = coordinatorKey(key);
        if (!full)
            return full.error();
        auto r = client_->range(*full);
        if (!r)
            return r.error();
        if (r->kvs.empty())
            return std::optional<std::string>{};
        return std::optional<std::string>{r->kvs[0].value};
    }
    void onLeadershipChange(std::function<void(const LeadershipInfo&)> cb) override {
        std::string node = node_;
        election_->onChange([cb = std::move(cb), node](const etcd::LeaderState& s) {
            if (cb)
                cb(toInfo(s, node));
        });
    }
    std::string describe() const override { return url_; }
    ZoneMembership* zone() override { return zone_.get(); }
    ZoneJournalStore* journal() override { return journal_.get(); }

private:
    std::string url_;
    std::string node_;
    std::unique_ptr<etcd::Client> client_;
    std::unique_ptr<etcd::Election> election_;
    std::unique_ptr<GuardedWriter> writer_;
    std::unique_ptr<EtcdZone> zone_;
    std::unique_ptr<EtcdJournal> journal_;
};

} // namespace

Result<std::unique_ptr<Coordinator>> makeEtcdCoordinator(const ClusterSettings& settings,
                                                         const Clock& clock, std::int64_t ttl_s) {
    if (settings.node_name.empty())
        return makeError("--cluster needs --node-name NAME (this node's name in the zone)");
    auto eps = etcd::parseEndpoints(settings.url);
    if (!eps)
        return eps.error();
    const bool files =
        !settings.etcd_ca.empty() || !settings.etcd_cert.empty() || !settings.etcd_key.empty();
    etcd::ClientOptions o{eps->addresses, 1000, 1000};
    if (eps->tls) {
        if (settings.etcd_ca.empty())
            return makeError(settings.url +
                             " is TLS: set etcd_ca in pcloud.conf (the CA that signed the etcd "
                             "members' certificates), and etcd_cert and etcd_key when etcd "
                             "checks client certificates");
        o.tls = etcd::TlsFiles{settings.etcd_ca, settings.etcd_cert, settings.etcd_key};
    } else if (files) {
        return makeError(settings.url +
                         " is plain text but pcloud.conf names etcd TLS files (etcd_ca, "
                         "etcd_cert, etcd_key): use etcds://, or remove them");
    }
    auto client = etcd::Client::create(std::move(o));
    if (!client)
        return client.error();
    return std::unique_ptr<Coordinator>(std::make_unique<EtcdCoordinator>(
        settings.url, settings.node_name, std::move(*client), clock, ttl_s));
}

} // namespace pcloud::cped
