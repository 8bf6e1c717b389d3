#pragma once
// A small etcd v3 client over the gRPC stubs generated from etcd 3.4's protos: range, put,
// delete, Txn, leases (grant, keep-alive stream, revoke, time-to-live), watch streams, the
// Cluster member API (list, add, remove) and Maintenance.Status of one member.
//
// - Every unary call has a deadline (ClientOptions::call_timeout_ms).
// - Several endpoints: a call that finds its endpoint unreachable (UNAVAILABLE) moves on to
//   the next one and tries again, once per endpoint; the endpoint that answered becomes
//   the current one. A call that timed out is not retried (a write may have been applied);
//   the next call starts from the next endpoint, and for 3 s calls start on the other
//   members first (a member that timed out or had no raft leader is tried last).
// - Streams carry the `hasleader: true` metadata, so a member cut off from its cluster's
//   leader ends the stream instead of serving stale events.
// - Errors are Result/Status whose message names the endpoint and the call:
//   "etcd 127.0.0.1:2379: Txn: UNAVAILABLE: failed to connect to all addresses".
// - The member calls are not retried on another endpoint when etcd itself answered with a
//   refusal ("etcdserver: ..."), even one sent as UNAVAILABLE ("unhealthy cluster"): that is
//   the cluster's answer, not an endpoint that is down. MemberAdd and MemberRemove are sent
//   once, to the current endpoint (the one that answered the last call): a connection that
//   closed under them may have carried the change.
//
// Thread-safe: calls may come from several threads; each stream is used by one consumer.

#include "common/clock.h"
#include "common/result.h"
#include "etcd/errors.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::etcd {

struct KeyValue {
    std::string key;
    std::string value;
    std::int64_t create_revision = 0;
    std::int64_t mod_revision = 0;
    std::int64_t version = 0;
    std::int64_t lease = 0;
};

struct RangeResult {
    std::int64_t revision = 0; // the store's revision when the range was read
    std::vector<KeyValue> kvs;
    bool more = false; // a limit cut off further keys
};

// One comparison of a Txn (etcd's Compare).
struct Compare {
    enum class Target { Version, CreateRevision, ModRevision, Value, Lease };
    enum class Result { Equal, Greater, Less, NotEqual };
    std::string key;
    Target target = Target::CreateRevision;
    Result result = Result::Equal;
    std::int64_t number = 0; // for every target but Value
    std::string value;       // for Value

    static Compare createRevision(std::string key, std::int64_t revision) {
        Compare c;
        c.key = std::move(key);
        c.target = Target::CreateRevision;
        c.number = revision;
        return c;
    }
};

// One operation of a Txn branch.
struct Op {
    enum class Kind { Put, Delete, Get };
    Kind kind = Kind::Get;
    std::string key;
    std::string value;      // Put
    std::int64_t lease = 0; // Put
    bool prefix = false;    // Delete, Get: every key starting with `key`
    static Op put(std::string key, std::string value, std::int64_t lease = 0) {
        return Op{Kind::Put, std::move(key), std::move(value), lease, false};
    }
    static Op del(std::string key, bool prefix = false) {
        return Op{Kind::Delete, std::move(key), {}, 0, prefix};
    }
    static Op get(std::string key, bool prefix = false) {
        return Op{Kind::Get, std::move(key), {}, 0, prefix};
    }
};

struct Txn {
    std::vector<Compare> compare;
    std::vector<Op> success;
    std::vector<Op> failure;
};

struct TxnResult {
    bool succeeded = false;
    std::int64_t revision = 0;
    std::vector<RangeResult> gets; // the results of the Get ops of the branch taken, in order
};

struct LeaseGrant {
    std::int64_t id = 0;
    std::int64_t ttl_s = 0;
};

struct KeepAliveReply {
    std::int64_t id = 0;
    std::int64_t ttl_s = 0; // <= 0: the lease is gone
};

struct WatchEvent {
    enum class Type { Put, Delete };
    Type type = Type::Put;
    KeyValue kv;
};

struct WatchBatch {
    std::int64_t revision = 0;
    std::vector<WatchEvent> events;
};

// A member of the etcd cluster (Cluster.MemberList).
struct MemberInfo {
    std::uint64_t id = 0;
    std::string name; // "" until the member has started
    std::vector<std::string> peer_urls;
    std::vector<std::string> client_urls; // empty until the member has started
    bool learner = false;
};

struct MemberListResult {
    std::uint64_t cluster_id = 0;
    std::uint64_t answered_by = 0; // the member that answered
    std::vector<MemberInfo> members;
};

struct MemberAddResult {
    MemberInfo added;
    std::vector<MemberInfo> members; // after the add
};

// Maintenance.Status of one member.
struct MemberStatus {
    std::uint64_t member_id = 0;
    std::string version;
    std::int64_t db_size = 0;
    std::int64_t db_size_in_use = 0;
    std::uint64_t leader = 0; // the member it believes leads, 0 = none
    std::uint64_t raft_index = 0;
    std::uint64_t raft_term = 0;
    std::uint64_t raft_applied_index = 0;
    std::vector<std::string> errors;
    bool learner = false;
};

// Messages of etcd's own refusals start with this (etcdserver/api/v3rpc/rpctypes).
inline constexpr const char* kEtcdServerPrefix = "etcdserver: ";

// A failed member call (`error` as the client put it: "etcd EP: CALL: CODE: MESSAGE", or
// "no etcd endpoint answered: ...") in words for an operator: "etcd refused to WHAT:
// <etcd's own words>: <what they mean>", or "cannot WHAT: <error>" when etcd said nothing.
std::string explainMemberError(const std::string& what, const std::string& error);

// TLS to etcd (docs/ha.md "TLS to etcd"): PEM files. `ca_file` signed the members'
// server certificates (which must name the address the client dials, as a SAN); the client
// certificate and key are presented for etcd's --client-cert-auth, both or neither.
struct TlsFiles {
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
};

struct ClientOptions {
    // "host:port" each (parseEndpoints strips the scheme).
    std::vector<std::string> endpoints;
    Millis call_timeout_ms = 2000;
    Millis connect_timeout_ms = 1000; // one connection attempt (TCP + HTTP/2 handshake)
    // MemberAdd and MemberRemove: etcd answers once the change is applied (a raft round; more
    // while a raft election runs).
    Millis member_timeout_ms = 5000;
    // Set: every channel is TLS with these files (and memberStatus takes https:// URLs);
    // unset: plain text, and an https:// member URL is an error naming the missing setting.
    std::optional<TlsFiles> tls;
};

struct Endpoints {
    std::vector<std::string> addresses; // "host:port" each
    bool tls = false;                   // etcds:// or https:// elements
};
// "etcd://h1:2379,h2:2379" (or "h1:2379,http://h2:2379") -> {"h1:2379", "h2:2379"}, plain;
// "etcds://h1:2379,h2:2379" (or "https://h1:2379,...") the same over TLS. An error naming the
// bad element otherwise, or saying that the spec mixes TLS and plain endpoints.
Result<Endpoints> parseEndpoints(const std::string& spec);

// A bidirectional stream read by a background thread: next() waits up to a timeout.
class KeepAliveStream {
public:
    virtual ~KeepAliveStream() = default;
    // Asks etcd to renew the lease. False when the stream is broken.
    virtual bool send(std::int64_t lease_id) = 0;
    // The next reply, or nullopt after `timeout_ms` or once the stream is broken.
    virtual std::optional<KeepAliveReply> next(Millis timeout_ms) = 0;
    virtual bool broken() const = 0;
    virtual std::string error() const = 0;
    virtual std::string endpoint() const = 0;
};

class WatchStream {
public:
    virtual ~WatchStream() = default;
    virtual std::optional<WatchBatch> next(Millis timeout_ms) = 0;
    virtual bool broken() const = 0;
    virtual std::string error() const = 0;
    virtual std::string endpoint() const = 0;
};

// Something to wake up when a stream has news (a reply, an event, or it broke).
using StreamNotify = std::function<void()>;

class Client {
public:
    static Result<std::unique_ptr<Client>> create(ClientOptions options);
    virtual ~Client() = default;

    // The key, or every key with that prefix when `prefix`; sorted by key.
    virtual Result<RangeResult> range(const std::string& key, bool prefix = false) = 0;
    // The keys in [key, end), sorted by key, at most `limit` of them (0 = all); `more` says
    // whether the limit cut some off.
    virtual Result<RangeResult> rangeBetween(const std::string& key, const std::string& end,
                                             std::int64_t limit) = 0;
    // Returns the revision of the put.
    virtual Result<std::int64_t> put(const std::string& key, const std::string& value,
                                     std::int64_t lease = 0) = 0;
    // Returns how many keys were deleted.
    virtual Result<std::int64_t> del(const std::string& key, bool prefix = false) = 0;
    virtual Result<TxnResult> txn(const Txn& txn) = 0;
    virtual Result<LeaseGrant> leaseGrant(std::int64_t ttl_s) = 0;
    virtual Status leaseRevoke(std::int64_t id) = 0;
    // The lease's remaining TTL in seconds, -1 when it does not exist (expired or revoked).
    virtual Result<std::int64_t> leaseTimeToLive(std::int64_t id) = 0;

    // Streams open on the current endpoint (see streamBroke); `notify` (optional) is called
    // from the stream's reader thread after each reply and when the stream breaks.
    virtual Result<std::unique_ptr<KeepAliveStream>> keepAlive(StreamNotify notify = {}) = 0;
    // Watches `key` (or the prefix) from `start_revision` (0 = now). Returns once etcd
    // confirmed the watch was created.
    virtual Result<std::unique_ptr<WatchStream>> watch(const std::string& key, bool prefix,
                                                       std::int64_t start_revision,
                                                       StreamNotify notify = {}) = 0;

    // Cluster.MemberList, MemberAdd (a voting member with these peer URLs, or a learner:
    // it replicates the log but does not vote until MemberPromote), MemberRemove.
    virtual Result<MemberListResult> memberList() = 0;
    virtual Result<MemberAddResult> memberAdd(const std::vector<std::string>& peer_urls,
                                              bool learner = false) = 0;
    virtual Result<std::vector<MemberInfo>> memberRemove(std::uint64_t id) = 0;
    virtual Result<std::vector<MemberInfo>> memberPromote(std::uint64_t id) = 0;
    // Maintenance.Status asked of one member at `endpoint` ("host:port" or a client URL
    // "http://host:port"), which need not be one of the client's endpoints; one attempt
    // within the call timeout.
    virtual Result<MemberStatus> memberStatus(const std::string& endpoint) = 0;

    // The caller found a stream broken (its member died, lost its raft leader, or ended
    // it): the next call and stream start on the endpoint after `endpoint`, unless a call
    // has moved on already. Without this a stream reopened at once goes back to the member
    // that just failed, since a stream does not fail over as a unary call does.
    virtual void streamBroke(const std::string& endpoint) = 0;

    virtual std::string currentEndpoint() const = 0;
};

} // namespace pcloud::etcd
