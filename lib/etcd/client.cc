#include "etcd/client.h"

#include "common/fs.h"
#include "common/log.h"

#include <etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace pcloud::etcd {
namespace pb = etcdserverpb;

Result<Endpoints> parseEndpoints(const std::string& spec) {
    std::string s = spec;
    std::optional<bool> tls; // what the spec asks for so far
    auto scheme = [&](const std::string& prefix, bool isTls, std::string& text) {
        if (text.rfind(prefix, 0) != 0)
            return true;
        text = text.substr(prefix.size());
        if (tls && *tls != isTls)
            return false;
        tls = isTls;
        return true;
    };
    const std::string mixed = "etcd endpoints '" + spec +
                              "' mix TLS (etcds://, https://) and plain (etcd://, http://): "
                              "use one for every member";
    if (!scheme("etcd://", false, s) || !scheme("etcds://", true, s))
        return makeError(mixed);
    Endpoints out;
    std::size_t start = 0;
    while (start <= s.size()) {
        auto comma = s.find(',', start);
        std::string e =
            s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!scheme("http://", false, e) || !scheme("https://", true, e))
            return makeError(mixed);
        while (!e.empty() && e.back() == '/')
            e.pop_back();
        auto colon = e.rfind(':');
        bool portOk = colon != std::string::npos && colon > 0 && colon + 1 < e.size();
        if (portOk) {
            for (std::size_t i = colon + 1; i < e.size(); ++i)
                portOk = portOk && e[i] >= '0' && e[i] <= '9';
        }
        if (!portOk || e.find("://") != std::string::npos)
            return makeError("bad etcd endpoint '" + e + "' in '" + spec +
                             "': expected HOST:PORT (e.g. etcd://h1:2379,h2:2379)");
        out.addresses.push_back(e);
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
    if (out.addresses.empty())
        return makeError("no etcd endpoint in '" + spec + "'");
    out.tls = tls.value_or(false);
    return out;
}

// etcd's refusal of a member change, in words: what etcd said (its own text, without the
// call's prefix) and what it means. `error` is the client's "etcd EP: CALL: CODE: MESSAGE".
std::string explainMemberError(const std::string& what, const std::string& error) {
    const std::string prefix = kEtcdServerPrefix;
    auto at = error.find(prefix);
    std::string said = at == std::string::npos ? "" : error.substr(at + prefix.size());
    std::string ep;
    if (error.rfind("etcd ", 0) == 0)
        ep = error.substr(5, error.find(':', error.find(':') + 1) - 5);
    const std::string asked = ep.empty() ? "" : " (asked etcd " + ep + ")";
    if (said == "re-configuration failed due to not enough started members")
        return "etcd refused to " + what + ": " + said +
               " (etcd counts the members that have started at least once, and an added member "
               "that never started is not one: with this change, fewer than a quorum would "
               "have started); nothing was changed" +
               asked;
    if (said == "unhealthy cluster")
        return "etcd refused to " + what + ": " + said +
               " (etcd takes a membership change only once the member that received it has "
               "been connected for 5 s to every voting member for an add, to a quorum of "
               "those left for a removal: within 5 s of a member's start, or while members "
               "are down); nothing was changed, retry in a few seconds" +
               asked;
    if (said == "server stopped" || said.rfind("request timed out", 0) == 0 ||
        said == "leader changed")
        return "etcd answered '" + said + "' when asked to " + what +
               ": the change may have been applied: look at cluster_status before trying "
               "again" +
               asked;
    if (said == "member not found")
        return "etcd refused to " + what + ": " + said + " (removed meanwhile?)" + asked;
    if (said == "can only promote a learner member which is in sync with leader")
        return "etcd refused to " + what + ": " + said +
               " (the learner has not caught up with the leader's log yet); nothing was "
               "changed, retry once cluster_status shows its lag near 0" +
               asked;
    if (said == "can only promote a learner member")
        return "etcd refused to " + what + ": it is a voting member already" + asked;
    if (said == "too many learner members in cluster")
        return "etcd refused to " + what + ": " + said +
               " (etcd 3.4 allows one learner: promote or remove it first)" + asked;
    if (said == "Peer URLs already exists")
        return "etcd refused to " + what + ": another member uses that peer URL already" + asked;
    if (!said.empty())
        return "etcd refused to " + what + ": " + said + asked;
    if (error.find("DEADLINE_EXCEEDED") != std::string::npos)
        return "etcd did not answer in time when asked to " + what +
               "; the change may have been applied: look at cluster_status before trying "
               "again (" +
               error + ")";
    return "cannot " + what + ": " + error;
}

namespace {

// The end of the range of every key starting with `prefix` (etcd's "prefix + 1").
std::string prefixEnd(const std::string& prefix) {
    std::string end = prefix;
    while (!end.empty()) {
        auto c = static_cast<unsigned char>(end.back());
        if (c < 0xff) {
            end.back() = static_cast<char>(c + 1);
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0'); // every key
}

KeyValue fromPb(const mvccpb::KeyValue& kv) {
    return KeyValue{kv.key(),          kv.value(),   kv.create_revision(),
                    kv.mod_revision(), kv.version(), kv.lease()};
}

const char* codeName(grpc::StatusCode c) {
    switch (c) {
    case grpc::OK:
        return "OK";
    case grpc::CANCELLED:
        return "CANCELLED";
    case grpc::INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
        return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
        return "NOT_FOUND";
    case grpc::FAILED_PRECONDITION:
        return "FAILED_PRECONDITION";
    case grpc::RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED";
    case grpc::UNAVAILABLE:
        return "UNAVAILABLE";
    case grpc::PERMISSION_DENIED:
        return "PERMISSION_DENIED";
    case grpc::UNAUTHENTICATED:
        return "UNAUTHENTICATED";
    default:
        return "ERROR";
    }
}

std::string describe(const std::string& endpoint, const char* call, const grpc::Status& st) {
    return "etcd " + endpoint + ": " + call + ": " + codeName(st.error_code()) + ": " +
           st.error_message();
}

struct Endpoint {
    std::string address;
    // Steady-clock ms until which this member is tried after the others: it timed out or
    // could not serve a call a moment ago (stopped, or without a raft leader).
    std::atomic<std::int64_t> suspect_until_ms{0};
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::KV::Stub> kv;
    std::unique_ptr<pb::Lease::Stub> lease;
    std::unique_ptr<pb::Watch::Stub> watch;
    std::unique_ptr<pb::Cluster::Stub> cluster;
};

MemberInfo fromPb(const pb::Member& m) {
    MemberInfo i;
    i.id = m.id();
    i.name = m.name();
    i.peer_urls.assign(m.peerurls().begin(), m.peerurls().end());
    i.client_urls.assign(m.clienturls().begin(), m.clienturls().end());
    i.learner = m.islearner();
    return i;
}

std::vector<MemberInfo> fromPb(const google::protobuf::RepeatedPtrField<pb::Member>& ms) {
    std::vector<MemberInfo> out;
    for (const auto& m : ms)
        out.push_back(fromPb(m));
    return out;
}

// etcd answers a member add that would break its quorum with UNAVAILABLE "etcdserver:
// unhealthy cluster" (rpctypes.ErrGRPCUnhealthy): the cluster's answer, the same from
// every endpoint, so it is not taken for an endpoint that is down.
bool isClusterAnswer(const grpc::Status& st) {
    return st.error_message() == std::string(kEtcdServerPrefix) + "unhealthy cluster";
}

// The reader side of a stream: a thread reads replies into a queue that next() drains.
template <typename Req, typename Resp, typename Out> class StreamBase {
public:
    StreamBase(std::string endpoint, StreamNotify notify)
        : endpoint_(std::move(endpoint)), notify_(std::move(notify)) {
        ctx_.AddMetadata("hasleader", "true");
    }
    virtual ~StreamBase() { shutdown(); }

    void start(std::unique_ptr<grpc::ClientReaderWriter<Req, Resp>> stream) {
        stream_ = std::move(stream);
        reader_ = std::thread([this] { readLoop(); });
    }
    void shutdown() {
        if (reader_.joinable()) {
            ctx_.TryCancel();
            reader_.join();
        }
    }
    bool write(const Req& r) {
        std::lock_guard lock(write_mutex_);
        if (closed_ || !stream_)
            return false;
        return stream_->Write(r);
    }
    std::optional<Out> pop(Millis timeout_ms) {
        std::unique_lock lock(mutex_);
        cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                     [&] { return !queue_.empty() || broken_; });
        if (queue_.empty())
            return std::nullopt;
        Out o = std::move(queue_.front());
        queue_.pop_front();
        return o;
    }
    bool isBroken() const {
        std::lock_guard lock(mutex_);
        return broken_;
    }
    std::string lastError() const {
        std::lock_guard lock(mutex_);
        return error_;
    }
    const std::string& address() const { return endpoint_; }

protected:
    // Turns one reply into queued items; may call fail() or mark() instead.
    virtual void onReply(const Resp& r) = 0;
    virtual const char* callName() const = 0;

    void push(Out o) {
        {
            std::lock_guard lock(mutex_);
            queue_.push_back(std::move(o));
        }
        cv_.notify_all();
        if (notify_)
            notify_();
    }
    void fail(std::string why) {
        {
            std::lock_guard lock(mutex_);
            if (!broken_)
                error_ = std::move(why);
            broken_ = true;
        }
        cv_.notify_all();
        if (notify_)
            notify_();
    }
    void signalAll() { cv_.notify_all(); }

    std::string endpoint_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;

private:
    void readLoop() {
        Resp r;
        while (stream_->Read(&r))
            onReply(r);
        grpc::Status st;
        {
            std::lock_guard lock(write_mutex_);
            closed_ = true;
            st = stream_->Finish();
        }
        fail(st.ok() ? "etcd " + endpoint_ + ": " + callName() + ": the stream ended"
                     : describe(endpoint_, callName(), st));
    }

    StreamNotify notify_;
    grpc::ClientContext ctx_;
    std::unique_ptr<grpc::ClientReaderWriter<Req, Resp>> stream_;
    std::mutex write_mutex_;
    bool closed_ = false;
    std::thread reader_;
    std::deque<Out> queue_;
    bool broken_ = false;
    std::string error_;

public:
    grpc::ClientContext& context() { return ctx_; }
};

class KeepAliveImpl final
    : public KeepAliveStream,
      public StreamBase<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse, KeepAliveReply> {
public:
    using StreamBase::StreamBase;
    ~KeepAliveImpl() override { shutdown(); }
    bool send(std::int64_t lease_id) override {
        pb::LeaseKeepAliveRequest r;
        r.set_id(lease_id);
        return write(r);
    }
    std::optional<KeepAliveReply> next(Millis timeout_ms) override { return pop(timeout_ms); }
    bool broken() const override { return isBroken(); }
    std::string error() const override { return lastError(); }
    std::string endpoint() const override { return address(); }

protected:
    void onReply(const pb::LeaseKeepAliveResponse& r) override {
        push(KeepAliveReply{r.id(), r.ttl()});
    }
    const char* callName() const override { return "LeaseKeepAlive"; }
};

class WatchImpl final : public WatchStream,
                        public StreamBase<pb::WatchRequest, pb::WatchResponse, WatchBatch> {
public:
    using StreamBase::StreamBase;
    ~WatchImpl() override { shutdown(); }
    std::optional<WatchBatch> next(Millis timeout_ms) override { return pop(timeout_ms); }
    bool broken() const override { return isBroken(); }
    std::string error() const override { return lastError(); }
    std::string endpoint() const override { return address(); }

    // Waits until etcd confirmed the watch (or refused it, or the stream broke).
    bool waitCreated(Millis timeout_ms) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
            return created_;
        }) && created_;
    }

protected:
    void onReply(const pb::WatchResponse& r) override {
        if (r.created()) {
            {
                std::lock_guard lock(mutex_);
                created_ = true;
            }
            signalAll();
        }
        if (r.canceled()) {
            std::string why = r.cancel_reason().empty() ? "canceled" : r.cancel_reason();
            if (r.compact_revision() > 0)
                why = "the start revision was compacted (compact_revision=" +
                      std::to_string(r.compact_revision()) + ")";
            fail("etcd " + endpoint_ + ": Watch: " + why);
            return;
        }
        if (r.events_size() == 0)
            return;
        WatchBatch b;
        b.revision = r.header().revision();
        for (const auto& e : r.events()) {
            WatchEvent we;
            we.type = e.type() == mvccpb::Event::DELETE ? WatchEvent::Type::Delete
                                                        : WatchEvent::Type::Put;
            we.kv = fromPb(e.kv());
            b.events.push_back(std::move(we));
        }
        push(std::move(b));
    }
    const char* callName() const override { return "Watch"; }

private:
    bool created_ = false;
};

void fillCompare(pb::Compare* c, const Compare& in) {
    c->set_key(in.key);
    switch (in.result) {
    case Compare::Result::Equal:
        c->set_result(pb::Compare::EQUAL);
        break;
    case Compare::Result::Greater:
        c->set_result(pb::Compare::GREATER);
        break;
    case Compare::Result::Less:
        c->set_result(pb::Compare::LESS);
        break;
    case Compare::Result::NotEqual:
        c->set_result(pb::Compare::NOT_EQUAL);
        break;
    }
    switch (in.target) {
    case Compare::Target::Version:
        c->set_target(pb::Compare::VERSION);
        c->set_version(in.number);
        break;
    case Compare::Target::CreateRevision:
        c->set_target(pb::Compare::CREATE);
        c->set_create_revision(in.number);
        break;
    case Compare::Target::ModRevision:
        c->set_target(pb::Compare::MOD);
        c->set_mod_revision(in.number);
        break;
    case Compare::Target::Value:
        c->set_target(pb::Compare::VALUE);
        c->set_value(in.value);
        break;
    case Compare::Target::Lease:
        c->set_target(pb::Compare::LEASE);
        c->set_lease(in.number);
        break;
    }
}

void fillOp(pb::RequestOp* r, const Op& op) {
    switch (op.kind) {
    case Op::Kind::Put: {
        auto* p = r->mutable_request_put();
        p->set_key(op.key);
        p->set_value(op.value);
        p->set_lease(op.lease);
        break;
    }
    case Op::Kind::Delete: {
        auto* d = r->mutable_request_delete_range();
        d->set_key(op.key);
        if (op.prefix)
            d->set_range_end(prefixEnd(op.key));
        break;
    }
    case Op::Kind::Get: {
        auto* g = r->mutable_request_range();
        g->set_key(op.key);
        if (op.prefix)
            g->set_range_end(prefixEnd(op.key));
        break;
    }
    }
}

// The channel credentials for `tls`: TLS with its files read now, or plain text. An
// unreadable or empty file is an error naming it.
Result<std::shared_ptr<grpc::ChannelCredentials>>
channelCredentials(const std::optional<TlsFiles>& tls) {
    if (!tls)
        return grpc::InsecureChannelCredentials();
    if (tls->cert_file.empty() != tls->key_file.empty())
        return makeError("etcd TLS: a client certificate needs its key and a key its "
                         "certificate (cert '" +
                         tls->cert_file + "', key '" + tls->key_file + "')");
    if (tls->ca_file.empty())
        return makeError("etcd TLS: no CA certificate given (the CA that signed the "
                         "members' certificates)");
    grpc::SslCredentialsOptions o;
    struct File {
        const std::string& path;
        std::string& into;
        const char* what;
    };
    for (const File& f : {File{tls->ca_file, o.pem_root_certs, "CA certificate"},
                          File{tls->cert_file, o.pem_cert_chain, "client certificate"},
                          File{tls->key_file, o.pem_private_key, "client key"}}) {
        if (f.path.empty())
            continue; // no client certificate: the CA is checked above
        auto text = fs::readFile(f.path);
        if (!text)
            return makeError("etcd TLS: cannot read the " + std::string(f.what) + " " + f.path +
                             ": " + text.error().message);
        if (text->find("-----BEGIN ") == std::string::npos)
            return makeError("etcd TLS: the " + std::string(f.what) + " " + f.path +
                             " is not PEM (no -----BEGIN line)");
        f.into = std::move(*text);
    }
    return grpc::SslCredentials(o);
}

class ClientImpl final : public Client {
public:
    ClientImpl(ClientOptions o, std::shared_ptr<grpc::ChannelCredentials> credentials)
        : o_(std::move(o)), credentials_(std::move(credentials)) {
        grpc::ChannelArguments args;
        // etcd's server refuses pings more often than every 5 s (too_many_pings).
        args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
        args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3'000);
        args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
        // A restarted member is used again within a second, not after gRPC's 120 s cap.
        args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
        args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
        // gRPC 1.51 also takes this as the time one connection attempt may take (TCP and
        // the HTTP/2 SETTINGS); its default is 20 s.
        args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(o_.connect_timeout_ms));
        for (const auto& e : o_.endpoints) {
            auto ep = std::make_unique<Endpoint>();
            ep->address = e;
            ep->channel = grpc::CreateCustomChannel(e, credentials_, args);
            ep->kv = pb::KV::NewStub(ep->channel);
            ep->lease = pb::Lease::NewStub(ep->channel);
            ep->watch = pb::Watch::NewStub(ep->channel);
            ep->cluster = pb::Cluster::NewStub(ep->channel);
            endpoints_.push_back(std::move(ep));
        }
        args_ = args;
    }

    Result<RangeResult> range(const std::string& key, bool prefix) override {
        pb::RangeRequest req;
        req.set_key(key);
        if (prefix)
            req.set_range_end(prefixEnd(key));
        return rangeRequest(req);
    }

    Result<RangeResult> rangeBetween(const std::string& key, const std::string& end,
                                     std::int64_t limit) override {
        pb::RangeRequest req;
        req.set_key(key);
        req.set_range_end(end);
        req.set_limit(limit);
        return rangeRequest(req);
    }

    Result<std::int64_t> put(const std::string& key, const std::string& value,
                             std::int64_t lease) override {
        pb::PutRequest req;
        req.set_key(key);
        req.set_value(value);
        req.set_lease(lease);
        pb::PutResponse resp;
        auto st = invoke("Put", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            return ep.kv->Put(&ctx, req, &resp);
        });
        if (!st)
            return st.error();
        return resp.header().revision();
    }

    Result<std::int64_t> del(const std::string& key, bool prefix) override {
        pb::DeleteRangeRequest req;
        req.set_key(key);
        if (prefix)
            req.set_range_end(prefixEnd(key));
        pb::DeleteRangeResponse resp;
        auto st = invoke("DeleteRange", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            return ep.kv->DeleteRange(&ctx, req, &resp);
        });
        if (!st)
            return st.error();
        return resp.deleted();
    }

    Result<TxnResult> txn(const Txn& t) override {
        pb::TxnRequest req;
        for (const auto& c : t.compare)
            fillCompare(req.add_compare(), c);
        for (const auto& op : t.success)
            fillOp(req.add_success(), op);
        for (const auto& op : t.failure)
            fillOp(req.add_failure(), op);
        pb::TxnResponse resp;
        auto st = invoke("Txn", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            return ep.kv->Txn(&ctx, req, &resp);
        });
        if (!st)
            return st.error();
        TxnResult out;
        out.succeeded = resp.succeeded();
        out.revision = resp.header().revision();
        for (const auto& r : resp.responses()) {
            if (!r.has_response_range())
                continue;
            RangeResult rr;
            rr.revision = r.response_range().header().revision();
            for (const auto& kv : r.response_range().kvs())
                rr.kvs.push_back(fromPb(kv));
            out.gets.push_back(std::move(rr));
        }
        return out;
    }

    Result<LeaseGrant> leaseGrant(std::int64_t ttl_s) override {
        pb::LeaseGrantRequest req;
        req.set_ttl(ttl_s);
        pb::LeaseGrantResponse resp;
        auto st = invoke("LeaseGrant", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            return ep.lease->LeaseGrant(&ctx, req, &resp);
        });
        if (!st)
            return st.error();
        if (!resp.error().empty())
            return makeError("etcd " + currentEndpoint() + ": LeaseGrant: " + resp.error());
        return LeaseGrant{resp.id(), resp.ttl()};
    }

    Status leaseRevoke(std::int64_t id) override {
        pb::LeaseRevokeRequest req;
        req.set_id(id);
        pb::LeaseRevokeResponse resp;
        return invoke("LeaseRevoke", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            return ep.lease->LeaseRevoke(&ctx, req, &resp);
        });
    }

    Result<std::int64_t> leaseTimeToLive(std::int64_t id) override {
        pb::LeaseTimeToLiveRequest req;
        req.set_id(id);
        pb::LeaseTimeToLiveResponse resp;
        bool notFound = false;
        auto st = invoke("LeaseTimeToLive", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            auto s = ep.lease->LeaseTimeToLive(&ctx, req, &resp);
            if (s.error_code() == grpc::NOT_FOUND) {
                notFound = true;
                return grpc::Status::OK;
            }
            return s;
        });
        if (!st)
            return st.error();
        if (notFound || resp.ttl() < 0)
            return std::int64_t{-1};
        return resp.ttl();
    }

    Result<std::unique_ptr<KeepAliveStream>> keepAlive(StreamNotify notify) override {
        auto& ep = current();
        auto s = std::make_unique<KeepAliveImpl>(ep.address, std::move(notify));
        s->start(ep.lease->LeaseKeepAlive(&s->context()));
        return std::unique_ptr<KeepAliveStream>(std::move(s));
    }

    Result<std::unique_ptr<WatchStream>> watch(const std::string& key, bool prefix,
                                               std::int64_t start_revision,
                                               StreamNotify notify) override {
        auto& ep = current();
        auto s = std::make_unique<WatchImpl>(ep.address, std::move(notify));
        s->start(ep.watch->Watch(&s->context()));
        pb::WatchRequest req;
        auto* c = req.mutable_create_request();
        c->set_key(key);
        if (prefix)
            c->set_range_end(prefixEnd(key));
        c->set_start_revision(start_revision);
        if (!s->write(req) || !s->waitCreated(o_.call_timeout_ms)) {
            std::string why = s->broken()
                                  ? s->error()
                                  : "etcd " + ep.address + ": Watch: not confirmed within " +
                                        std::to_string(o_.call_timeout_ms) + " ms";
            rotate(ep);
            return makeError(why);
        }
        return std::unique_ptr<WatchStream>(std::move(s));
    }

    Result<MemberListResult> memberList() override {
        pb::MemberListRequest req;
        pb::MemberListResponse resp;
        auto st = invoke(
            "MemberList",
            [&](Endpoint& ep, grpc::ClientContext& ctx) {
                return ep.cluster->MemberList(&ctx, req, &resp);
            },
            true);
        if (!st)
            return st.error();
        MemberListResult out;
        out.cluster_id = resp.header().cluster_id();
        out.answered_by = resp.header().member_id();
        out.members = fromPb(resp.members());
        return out;
    }

    Result<MemberAddResult> memberAdd(const std::vector<std::string>& peer_urls,
                                      bool learner) override {
        pb::MemberAddRequest req;
        for (const auto& u : peer_urls)
            req.add_peerurls(u);
        req.set_islearner(learner);
        pb::MemberAddResponse resp;
        auto st = invoke(
            "MemberAdd",
            [&](Endpoint& ep, grpc::ClientContext& ctx) {
                return ep.cluster->MemberAdd(&ctx, req, &resp);
            },
            true, o_.member_timeout_ms, true);
        if (!st)
            return st.error();
        return MemberAddResult{fromPb(resp.member()), fromPb(resp.members())};
    }

    Result<std::vector<MemberInfo>> memberPromote(std::uint64_t id) override {
        pb::MemberPromoteRequest req;
        req.set_id(id);
        pb::MemberPromoteResponse resp;
        auto st = invoke(
            "MemberPromote",
            [&](Endpoint& ep, grpc::ClientContext& ctx) {
                return ep.cluster->MemberPromote(&ctx, req, &resp);
            },
            true, o_.member_timeout_ms, true);
        if (!st)
            return st.error();
        return fromPb(resp.members());
    }

    Result<std::vector<MemberInfo>> memberRemove(std::uint64_t id) override {
        pb::MemberRemoveRequest req;
        req.set_id(id);
        pb::MemberRemoveResponse resp;
        auto st = invoke(
            "MemberRemove",
            [&](Endpoint& ep, grpc::ClientContext& ctx) {
                return ep.cluster->MemberRemove(&ctx, req, &resp);
            },
            true, o_.member_timeout_ms, true);
        if (!st)
            return st.error();
        return fromPb(resp.members());
    }

    Result<MemberStatus> memberStatus(const std::string& endpoint) override {
        std::string address = endpoint;
        const bool https = address.rfind("https://", 0) == 0;
        const bool http = address.rfind("http://", 0) == 0;
        if ((https && !o_.tls) || (http && o_.tls))
            return makeError("etcd " + address + ": Status: " +
                             (https ? "the member serves TLS; this client is plain text "
                                      "(cped --cluster etcds://, with etcd_ca in pcloud.conf)"
                                    : "the member serves plain text; this client speaks TLS"));
        if (https)
            address = address.substr(8);
        else if (http)
            address = address.substr(7);
        while (!address.empty() && address.back() == '/')
            address.pop_back();
        // A channel of its own each time: a member that just came back is asked at once,
        // not after the reconnect backoff of a channel that saw it down.
        auto channel = grpc::CreateCustomChannel(address, credentials_, args_);
        auto stub = pb::Maintenance::NewStub(channel);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(o_.call_timeout_ms));
        pb::StatusRequest req;
        pb::StatusResponse resp;
        auto st = stub->Status(&ctx, req, &resp);
        if (!st.ok())
            return makeError(describe(address, "Status", st));
        MemberStatus out;
        out.member_id = resp.header().member_id();
        out.version = resp.version();
        out.db_size = resp.dbsize();
        out.db_size_in_use = resp.dbsizeinuse();
        out.leader = resp.leader();
        out.raft_index = resp.raftindex();
        out.raft_term = resp.raftterm();
        out.raft_applied_index = resp.raftappliedindex();
        out.errors.assign(resp.errors().begin(), resp.errors().end());
        out.learner = resp.islearner();
        return out;
    }

    void streamBroke(const std::string& endpoint) override {
        for (const auto& ep : endpoints_)
            if (ep->address == endpoint)
                rotate(*ep);
    }

    std::string currentEndpoint() const override { return endpoints_[current_]->address; }

private:
    Result<RangeResult> rangeRequest(const pb::RangeRequest& req) {
        pb::RangeResponse resp;
        auto st = invoke("Range", [&](Endpoint& ep, grpc::ClientContext& ctx) {
            return ep.kv->Range(&ctx, req, &resp);
        });
        if (!st)
            return st.error();
        RangeResult out;
        out.revision = resp.header().revision();
        out.more = resp.more();
        for (const auto& kv : resp.kvs())
            out.kvs.push_back(fromPb(kv));
        return out;
    }

    Endpoint& current() { return *endpoints_[current_.load()]; }
    // The next call starts on the endpoint after `failed` (unless another call moved on).
    void rotate(const Endpoint& failed) {
        std::size_t i = current_.load();
        if (endpoints_[i].get() == &failed)
            current_.compare_exchange_strong(i, (i + 1) % endpoints_.size());
    }

    // `clusterAnswers`: an UNAVAILABLE that is etcd's own refusal (isClusterAnswer) is final.
    // `timeoutMs` 0 = the call timeout. `once`: not sent to another endpoint after an
    // UNAVAILABLE either (a membership change: the connection may have closed after the
    // change was applied, e.g. by the removed member itself).
    template <typename F>
    Status invoke(const char* call, F&& fn, bool clusterAnswers = false, Millis timeoutMs = 0,
                  bool once = false) {
        std::size_t start = current_.load();
        const std::int64_t now = steadyMs();
        for (std::size_t k = 0; k < endpoints_.size(); ++k) {
            const std::size_t i = (start + k) % endpoints_.size();
            if (endpoints_[i]->suspect_until_ms.load() <= now) {
                start = i;
                break;
            }
        }
        std::string errors;
        for (std::size_t k = 0; k < endpoints_.size(); ++k) {
            std::size_t i = (start + k) % endpoints_.size();
            auto& ep = *endpoints_[i];
            grpc::ClientContext ctx;
            ctx.set_deadline(
                std::chrono::system_clock::now() +
                std::chrono::milliseconds(timeoutMs > 0 ? timeoutMs : o_.call_timeout_ms));
            grpc::Status st = fn(ep, ctx);
            if (st.ok()) {
                ep.suspect_until_ms = 0;
                current_ = i;
                return Status::success();
            }
            std::string msg = describe(ep.address, call, st);
            if (st.error_code() != grpc::UNAVAILABLE || (clusterAnswers && isClusterAnswer(st)) ||
                once) {
                // Not retried: the call may have been applied (a timeout), or the request
                // itself is wrong. The next call starts elsewhere after a timeout, or when
                // the member could not serve it (no leader, stopped).
                if (st.error_code() == grpc::DEADLINE_EXCEEDED ||
                    memberCouldNotServe(st.error_message())) {
                    ep.suspect_until_ms = steadyMs() + kSuspectMs;
                    current_ = (i + 1) % endpoints_.size();
                }
                return makeError(msg);
            }
            PCLOUD_LOG(Info, "etcd endpoint unavailable; trying the next one",
                       {{"endpoint", ep.address}, {"call", call}, {"error", st.error_message()}});
            errors += (errors.empty() ? "" : "; ") + msg;
        }
        current_ = (start + 1) % endpoints_.size();
        if (endpoints_.size() == 1)
            return makeError(errors);
        return makeError("no etcd endpoint answered: " + errors);
    }

    // A member that timed out is tried last for this long (other threads' calls, the
    // election's, would otherwise move the next call back to it), so a write sent again
    // during an etcd election goes to the members that can elect a leader.
    static constexpr std::int64_t kSuspectMs = 3000;
    static std::int64_t steadyMs() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    ClientOptions o_;
    std::shared_ptr<grpc::ChannelCredentials> credentials_; // TLS or plain, for every channel
    std::vector<std::unique_ptr<Endpoint>> endpoints_;
    std::atomic<std::size_t> current_{0};
    grpc::ChannelArguments args_;
};

} // namespace

Result<std::unique_ptr<Client>> Client::create(ClientOptions options) {
    if (options.endpoints.empty())
        return makeError("etcd client: no endpoint given");
    if (options.call_timeout_ms <= 0)
        return makeError("etcd client: the call timeout must be positive");
    auto credentials = channelCredentials(options.tls);
    if (!credentials)
        return credentials.error();
    return std::unique_ptr<Client>(
        std::make_unique<ClientImpl>(std::move(options), std::move(*credentials)));
}

} // namespace pcloud::etcd
