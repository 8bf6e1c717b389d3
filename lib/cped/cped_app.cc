#include "cped/cped_app.h"
#include "common/utf8.h"

#include "bus/client.h"
#include "bus/hub.h"
#include "bus/sender.h"
#include "common/exit_codes.h"
#include "common/fs.h"
#include "common/lock_file.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/time_format.h"
#include "cped/commands.h"
#include "cped/floating_ip.h"
#include "cped/submission_ledger.h"
#include "cped/supervisor.h"
#include "cped/zone_journal.h"
#include "cped/zone_model.h"
#include "envelope/envelope.h"
#include "pki/pki.h"
#include "policy/policy_json.h"
#include "policy/zone.h"
#include "store/store.h"
#include "store/templates.h"

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unistd.h>
#include <utility>
#include <variant>

namespace pcloud::cped {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const char* kUsage = R"(Usage: cped [OPTIONS]
The pcloud control daemon: hosts the message hub, serves the command API on pcloud.cped,
keeps the event journal and runs one dped per started deployable.

  --state-dir DIR           model, journal and locks (default /var/lib/pcloud)
  --listen URL              embedded hub address (default amqps://127.0.0.1:5671: mutual
                            TLS with certificates from the PKI directory)
  --insecure-listen         allow a plain amqp:// --listen URL: every local user and guest
                            relay may then use any address (tests, demos)
  --pki-dir DIR             certificates (default pki_dir in pcloud.conf, /etc/pcloud/pki):
                            ca.crt, cped.NAME.crt/.key, revoked; with ca.key there, cped
                            issues the dped.DEPLOYABLE certificates of the dpeds it starts
  --broker URL              use an external AMQP 1.0 broker instead of the embedded hub;
                            with amqps:// the command API runs only requests signed by an
                            operator (pcloudsh signs them), as the broker cannot tell senders
  --address-prefix P        prepended to addresses (e.g. /queue/ for RabbitMQ)
  --dped-path PATH          the dped executable (default: next to cped)
  --log-level LEVEL         error, warning, notice, info or debug
  --journal-max-size N      rotate events.jsonl at N bytes (suffix K, M, G allowed)
  --journal-max-age D       rotate events.jsonl when its first event is older (e.g. 7d)
  --journal-max-files K     rotated journal files kept (default 5)
  --dped-timeout D          how long to wait for a dped's reply (default 3s)
  --config PATH             host configuration (default /etc/pcloud/pcloud.conf, optional;
                            a PATH given here must exist); passed on to every dped
  --cluster etcd://H:P,...  campaign for the zone's leadership in etcd (docs/ha.md); only
                            the leader serves the command API and starts dpeds, the
                            others answer not-leader naming the leader
  --node-name NAME          this node's name in the zone (default: the host name)
  --lease-ttl S             the leader lease's TTL in seconds, 1-60 (default 2; etcd grants
                            at least 1.5 x its election timeout: 1 s needs tuned etcd timers)
Signals: SIGTERM/SIGINT exit (dpeds and VMs keep running; the next cped adopts them;
the floating address of pcloud.conf, held while leading, is deleted first),
SIGHUP re-reads the db files and the deny list (PKI dir/revoked) and tells every dped to
reload.
)";

struct Options {
    std::string state_dir = "/var/lib/pcloud";
    std::string listen = "amqps://127.0.0.1:5671";
    bool insecure_listen = false;
    std::string pki_dir; // "" = pki_dir of the host configuration
    std::string broker;
    std::string prefix;
    std::string dped_path;
    std::string log_level;
    events::JournalOptions journal;
    Millis dped_timeout = 3000;
    std::int64_t lease_ttl_s = 2; // --lease-ttl
    std::string config;    // host configuration; "" = /etc/pcloud/pcloud.conf (may be absent)
    std::string cluster;   // etcd://... ; "" = single node (LocalCoordinator)
    std::string node_name; // "" = the host name
};

bool parseSize(const std::string& s, std::uint64_t& out) {
    if (s.empty())
        return false;
    std::size_t used = 0;
    unsigned long long n = 0;
    try {
        n = std::stoull(s, &used);
    } catch (...) {
        return false;
    }
    std::string unit = s.substr(used);
    std::uint64_t mult = 1;
    if (unit == "K" || unit == "k")
        mult = 1024;
    else if (unit == "M")
        mult = 1024 * 1024;
    else if (unit == "G")
        mult = 1024ULL * 1024 * 1024;
    else if (!unit.empty())
        return false;
    out = n * mult;
    return out > 0;
}

std::string selfDir() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return ".";
    std::string p(buf, static_cast<size_t>(n));
    return p.substr(0, p.rfind('/'));
}

// Returns an exit code >= 0 to stop with, -1 to go on.
int parseOptions(int argc, char** argv, Options& o) {
    auto usage = [](const std::string& msg) {
        std::cerr << "cped: " << msg << "\n" << kUsage;
        return toInt(ExitCode::Usage);
    };
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::cout << kUsage;
            return 0;
        }
        if (a == "--insecure-listen") {
            o.insecure_listen = true;
            continue;
        }
        std::string v;
        auto eq = a.find('=');
        if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
            v = a.substr(eq + 1);
            a = a.substr(0, eq);
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return usage("option " + a + " needs a value");
        }
        if (a == "--state-dir")
            o.state_dir = v;
        else if (a == "--listen")
            o.listen = v;
        else if (a == "--pki-dir")
            o.pki_dir = v;
        else if (a == "--broker")
            o.broker = v;
        else if (a == "--address-prefix")
            o.prefix = v;
        else if (a == "--dped-path")
            o.dped_path = v;
        else if (a == "--config")
            o.config = v;
        else if (a == "--cluster")
            o.cluster = v;
        else if (a == "--node-name")
            o.node_name = v;
        else if (a == "--lease-ttl") {
            std::int64_t n = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec != std::errc() || end != v.data() + v.size() || n < 1 || n > 60)
                return usage("bad --lease-ttl '" + v + "': a whole number of seconds, 1 to 60");
            o.lease_ttl_s = n;
        } else if (a == "--log-level") {
            log::Level l;
            if (!log::parseLevel(v, l))
                return usage("unknown log level '" + v + "'");
            log::setLevel(l);
        } else if (a == "--journal-max-size") {
            if (!parseSize(v, o.journal.max_bytes))
                return usage("bad --journal-max-size '" + v + "'");
        } else if (a == "--journal-max-age") {
            auto d = parseDuration(v);
            if (!d || *d <= 0)
                return usage("bad --journal-max-age '" + v + "'");
            o.journal.max_age = *d;
        } else if (a == "--journal-max-files") {
            try {
                o.journal.keep_files = std::stoi(v);
            } catch (...) {
                return usage("bad --journal-max-files '" + v + "'");
            }
            if (o.journal.keep_files < 0)
                return usage("bad --journal-max-files '" + v + "'");
        } else if (a == "--dped-timeout") {
            auto d = parseDuration(v);
            if (!d || *d <= 0)
                return usage("bad --dped-timeout '" + v + "'");
            o.dped_timeout = *d;
        } else {
            return usage("unknown option " + a);
        }
    }
    if (o.dped_path.empty())
        o.dped_path = selfDir() + "/dped";
    if (o.node_name.empty()) {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        o.node_name = host[0] ? host : "cped";
    }
    return -1;
}

// Set on the thread running a command handler, which holds model_mutex_.
thread_local bool tHoldsModel = false;

json commandBody(const std::string& id, const std::string& command, const json& args) {
    return {{"v", 1}, {"type", "command"}, {"id", id}, {"command", command}, {"args", args}};
}

// The daemon: owns the model and everything that touches it.
class Cped : public Runtime {
public:
    Cped(Options o, ClusterCoordinatorFactory cluster)
        : o_(std::move(o)), cluster_factory_(std::move(cluster)) {}

    int run();

    // Runtime
    void startDeployable(const std::string& d) override {
        refreshOwners();
        supervisor_->want(d);
    }
    Result<json> stopDeployable(const std::string& d) override;
    Result<json> askDped(const std::string& d, const std::string& command,
                         const json& args) override;
    // The body of a request to dped `d`: the command, inside a signed envelope carrying
    // `epoch` when the bus is TLS, valid for `ttl` ms (0: the envelope's default).
    Result<std::string> dpedRequest(const std::string& d, const std::string& id,
                                    const std::string& command, const json& args,
                                    std::uint64_t epoch, Millis ttl = 0) const;
    // The ttl of a command this cped signs now: in a zone, while it leads, the time until no
    // newer leader can have acted (LeadershipInfo::valid_for_ms), so that dped, on this
    // host's clock, refuses it once a newer leader may act (docs/ha.md "Epoch fencing", 7);
    // 0 (the default) for the single node. In a zone a cped that does not lead commands
    // nothing: not-leader.
    Result<Millis> commandTtl();
    json dpedProcess(const std::string& d) override { return supervisor_->info(d); }
    std::vector<PingResult> pingAgents(const std::vector<std::string>& as, Millis timeout) override;
    void emit(events::Event e) override { journalAndPublish(std::move(e)); }
    json busSecurity() override {
        if (!hub_)
            return nullptr;
        json j = json::parse(hub_->securityJson());
        j["tls"] = tls_;
        return j;
    }

private:
    // The event's seq; nullopt when it could not be journaled (then it is not published).
    // An event with a source that the ledger has journaled already is not journaled again:
    // its seq is then 0. In a zone the event goes to the zone's journal first (catching
    // this node's copy up on a new term); a cped that does not lead journals nothing.
    std::optional<std::uint64_t> journalAndPublish(events::Event e);
    // In a zone (docs/ha.md "The shared journal", cped/zone_journal.h), publish_mutex_
    // held: brings this node's journal to the zone's for term `epoch` (copying what it
    // lacks, setting a diverged copy aside, or seeding the zone's), once per term; false
    // with journal_error_ set when etcd could not be read or written.
    bool catchUpJournal(std::int64_t epoch);
    // A stand-in in this node's copy for zone event `seq` that etcd does not hold in a form
    // that reads (deployable "zone", state "unreadable", `why` as the reason).
    Result<events::Event> appendStandIn(std::uint64_t seq, const std::string& why);
    std::optional<std::string> serveCommand(const bus::Message& m);
    void logRefusal(const RefusedCommand& r);
    // The answer to the submitting dped (nullopt: none, it sends the event again).
    std::optional<std::string> onJournalSubmission(const bus::Message& m);
    // Fills ledger_ from the journal's last kLedgerRebuildEvents events.
    void rebuildLedger();
    static constexpr std::size_t kLedgerRebuildEvents = 20'000;
    void reloadFromDisk();
    bool ownsAssembly(const std::string& deployable, const std::string& assembly);
    void refreshOwners();
    std::vector<std::string> dpedTlsArgs(const std::string& deployable);

    // Wants every started deployable (adopting its running dped or starting one);
    // `newTerm`: this node has just become leader (a zone then skips host-local URIs).
    void startWantedDpeds(bool newTerm);
    // In a zone (docs/ha.md "The shared model", cped/zone_model.h). model_mutex_ held by
    // both. publishZoneModel writes the model and desired state to etcd when they differ
    // from what this leader last wrote or took; takeZoneModel, on a new term, reads the
    // zone's snapshot and takes it (rewriting the local files), or seeds etcd with the local
    // model when it holds none. True once this term has the zone's model.
    Status publishZoneModel();
    bool takeZoneModel(std::int64_t epoch);
    // The escalation states (docs/ha.md "Escalation states"), model_mutex_ held: each
    // started deployable's STATE_DIR/escalation-D.json, which its dped saves, is the zone's
    // too. publishEscalations, while this term has the zone's model, writes a changed file
    // to /pcloud/escalation/D; takeEscalations, on a new term before any dped starts,
    // writes the zone's into this host's file for each deployable whose dped does not run
    // here (one that runs keeps what it has). True once this term has them.
    void publishEscalations();
    bool takeEscalations(std::int64_t epoch);
    // Holds the floating address while this node leads and drops it when it does not; returns
    // the ms until it wants to run again (-1 = no floating address).
    Millis reconcileFloatingIp();
    // The epoch dpeds start with: this node's while it leads, else the last one it led with
    // (a dped restarted after a step-down is then refused by receivers that saw a newer one).
    std::uint64_t dpedEpoch();
    // Raises led_epoch_ to `epoch`; in a zone also saves it (ledEpochPath), so that a
    // restarted cped that follows can still fence the dpeds of its last term.
    void noteLedEpoch(std::uint64_t epoch);
    std::string ledEpochPath() const { return o_.state_dir + "/led-epoch"; }
    // Sends the "epoch" request to every running dped below this leader's epoch (adopted
    // ones, or all of them after a new term); called by the supervision loop, never blocks.
    void raiseDpedEpochs();
    void onEpochReply(const std::string& deployable, pid_t pid, std::uint64_t epoch,
                      const Result<bus::Message>& reply);
    // This cped no longer leads (its lease is gone, or it resigns on SIGTERM in a zone):
    // sends "fence" naming its epoch + 1 to every running dped of its term, so they stop
    // acting now rather than at their first command a newer leader's node refuses
    // (docs/ha.md "Epoch fencing"). Called on every supervision pass while this cped does
    // not lead, it asks each dped until that process confirms; logs `why` once per term.
    // The next term's raise lifts the fence.
    void fenceDpeds(const char* why);

    Options o_;
    bool tls_ = false;
    // On a TLS bus, journal submissions only from dped:<the event's deployable>.
    std::unique_ptr<bus::SenderGate> journal_senders_;
    SubmissionLedger ledger_; // guarded by publish_mutex_
    std::string pki_dir_;
    std::mutex owners_mutex_;                             // guards owners_ only
    std::map<std::string, std::set<std::string>> owners_; // deployable -> assembly names, uuids
    // The zone's floating address (floating_ip in pcloud.conf), held while this cped leads;
    // null when none is configured. Declared before the coordinator, whose callback uses it.
    std::unique_ptr<FloatingIp> floating_;
    ClusterCoordinatorFactory cluster_factory_;
    std::unique_ptr<Coordinator> coordinator_;
    // Set by the coordinator's callback (its own thread, which must never wait on
    // model_mutex_: a slow command would starve its keep-alives); the supervision thread
    // starts the wanted dpeds.
    std::atomic<bool> became_leader_{false};
    // The term (epoch) that has the zone's model (takeZoneModel): commands are served only
    // then. zone_content_/zone_generation_: what this node last wrote or took (model_mutex_),
    // compared with the model after each command, so a read formats nothing;
    // zone_model_error_: why the snapshot could not be taken, for the refusals.
    std::atomic<std::int64_t> model_epoch_{0};
    struct ZoneContent {
        model::Model model;
        DesiredState desired;
    };
    std::optional<ZoneContent> zone_content_;
    std::uint64_t zone_generation_ = 0;
    std::string zone_model_error_;
    std::uint64_t fenced_term_ = 0; // the supervision thread's: the term fenced last
    SystemClock clock_;
    std::unique_ptr<bus::Hub> hub_;
    bus::Client server_; // serves pcloud.cped; its handler may block on `client_`
    bus::Client client_; // journal submissions, events, requests to dpeds and agents
    std::unique_ptr<events::EventJournal> journal_;
    std::unique_ptr<Supervisor> supervisor_;
    std::mutex publish_mutex_;       // journal order == publish order
    std::int64_t journal_epoch_ = 0; // the term this node's journal is the zone's for
    std::string journal_error_;      // why it is not, when catchUpJournal failed
    std::mutex model_mutex_;
    std::map<std::string, std::string> zone_escalations_; // model_mutex_: as written/taken
    std::int64_t escalations_epoch_ = 0;                  // model_mutex_: the term that took them
    model::Model model_;
    DesiredState desired_;
    store::TemplateRegistry templates_;
    hostconfig::HostConfig host_;
    std::atomic<std::uint64_t> next_id_{0};
    std::atomic<std::uint64_t> led_epoch_{0};
    std::mutex led_mutex_; // noteLedEpoch: raise and save together
    // On a TLS bus every request to a dped is signed with cped's own bus key (dped checks
    // it, with the epoch in it: docs/security.md "Signed commands").
    std::shared_ptr<const envelope::Signer> signer_;
    // Command API requests (docs/security.md "Signed commands"): envelopes for cped:api are
    // verified against the bus CA; on an external TLS broker plain ones are refused.
    std::shared_ptr<const envelope::Trust> api_trust_; // null on a plain bus
    bool api_require_signed_ = false;
    std::mutex api_mutex_; // guards the four below
    envelope::ReplayCache api_replay_{65'536};
    std::map<std::string, Millis> refusal_logged_; // claimed sender -> last logged refusal
    std::uint64_t refusals_unlogged_ = 0;
    std::mutex epoch_mutex_;                            // guards the six below
    std::set<std::string> epoch_inflight_;              // deployables with an "epoch" request out
    std::map<std::string, std::uint64_t> epoch_warned_; // failure logged for this epoch
    std::map<std::string, std::pair<pid_t, std::uint64_t>> epoch_refused_; // dped said stale
    // fenceDpeds(): the same for "fence", by (dped pid, fence epoch).
    std::set<std::string> fence_inflight_;
    std::map<std::string, std::pair<pid_t, std::uint64_t>> fence_confirmed_;
    std::map<std::string, std::pair<pid_t, std::uint64_t>> fence_warned_;
};

std::optional<std::uint64_t> Cped::journalAndPublish(events::Event e) {
    std::lock_guard lock(publish_mutex_);
    ZoneJournalStore* zone = coordinator_ ? coordinator_->journal() : nullptr;
    if (zone) {
        const LeadershipInfo li = coordinator_->leadership();
        if (!li.leader) {
            PCLOUD_LOG(Notice, "Not journaled: this cped does not lead the zone",
                       {{"event", events::formatHuman(e)}});
            return std::nullopt;
        }
        if (!catchUpJournal(li.epoch)) {
            PCLOUD_LOG(Error, "Not journaled: this cped's journal is not the zone's",
                       {{"event", events::formatHuman(e)}, {"error", journal_error_}});
            return std::nullopt;
        }
    }
    if (!e.source.empty() && ledger_.journaled(e.source, e.source_seq))
        return 0;
    Result<events::Event> written = makeError("not written");
    if (zone) {
        e.seq = journal_->lastSeq() + 1;
        if (e.time == 0)
            e.time = clock_.nowMs();
        if (auto st = zone->append(e.seq, events::toLine(e)); !st) {
            // Behind (journal-moved) or not answered: the next event catches up first.
            journal_epoch_ = 0;
            journal_error_ = st.error().message;
            PCLOUD_LOG(Error, "Cannot write an event to the zone's journal; not journaled",
                       {{"seq", std::to_string(e.seq)}, {"error", st.error().message}});
            return std::nullopt;
        }
        written = journal_->appendNumbered(std::move(e));
        if (!written) {
            // It is the zone's: another leader has it; this copy reads it back next time.
            journal_epoch_ = 0;
            journal_error_ = "this node's copy: " + written.error().describe();
            PCLOUD_LOG(Error, "An event is in the zone's journal but not in this node's copy",
                       {{"error", written.error().describe()}});
        }
    } else {
        written = journal_->append(std::move(e));
    }
    if (!written) {
        PCLOUD_LOG(Error, "Cannot journal an event; it is not published",
                   {{"error", written.error().describe()}});
        return std::nullopt;
    }
    if (!written->source.empty())
        ledger_.record(written->source, written->source_seq);
    for (auto& w : journal_->takeWarnings())
        PCLOUD_LOG(Warning, "Event journal", {{"problem", w}});
    if (auto st = client_.send("pcloud.events", events::toLine(*written)); !st)
        PCLOUD_LOG(Warning, "Cannot publish an event",
                   {{"seq", std::to_string(written->seq)}, {"error", st.error().message}});
    return written->seq;
}

namespace {

std::string journalReply(bool ok, const json& detail) {
    json j = {{"v", 1}, {"type", "reply"}, {"ok", ok}};
    j[ok ? "result" : "error"] = detail;
    return j.dump();
}

std::string journalRefusal(const std::string& code, const std::string& message) {
    return journalReply(false, {{"code", code}, {"message", message}});
}

} // namespace

std::optional<std::string> Cped::onJournalSubmission(const bus::Message& m) {
    // Any identity that can log in to RabbitMQ can send here; only the dped of the event's
    // deployable may put it in the journal (its user-id, which the broker checks). A sender
    // refused that way gets no answer.
    if (journal_senders_->enforced() && m.userId.rfind("dped:", 0) != 0) {
        journal_senders_->admit(m, false, "dped:<the event's deployable>");
        return std::nullopt;
    }
    auto j = json::parse(m.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("type", "") != "event") {
        PCLOUD_LOG(Warning, "Dropped a journal submission that is not an event",
                   {{"body", utf8Excerpt(m.body, 200)}});
        return journalRefusal("bad-event", "a journal submission must be a JSON event object");
    }
    auto e = events::fromJson(j);
    if (!e) {
        PCLOUD_LOG(Warning, "Dropped a malformed event submission",
                   {{"error", e.error().message}, {"body", utf8Excerpt(m.body, 200)}});
        return journalRefusal("bad-event", e.error().message);
    }
    if (!journal_senders_->admitFrom(m, "dped:" + e->deployable))
        return std::nullopt;
    // The submitting dped sends an event again until it has this answer: journal it once
    // (journalAndPublish checks the ledger, in a zone after it has the zone's journal).
    const std::string source = e->source;
    const std::uint64_t n = e->source_seq;
    e->seq = 0; // cped assigns it
    auto seq = journalAndPublish(std::move(*e));
    if (!seq) // not on disk: no answer, so the dped sends it again
        return std::nullopt;
    if (*seq == 0) {
        PCLOUD_LOG(Info, "A journal submission came again; answered, not journaled again",
                   {{"source", source}, {"source_seq", std::to_string(n)}});
        return journalReply(true, {{"duplicate", true}});
    }
    return journalReply(true, {{"seq", *seq}});
}

void Cped::rebuildLedger() {
    ledger_ = SubmissionLedger{};
    events::ReplayQuery q;
    q.limit = kLedgerRebuildEvents;
    q.newest = true;
    auto tail = journal_->replay(q);
    if (!tail) {
        PCLOUD_LOG(Warning, "Cannot read the journal's tail; a resent event may be journaled twice",
                   {{"error", tail.error().describe()}});
        return;
    }
    for (const auto& e : tail->events)
        if (!e.source.empty())
            ledger_.record(e.source, e.source_seq);
}

Result<std::string> Cped::dpedRequest(const std::string& d, const std::string& id,
                                      const std::string& command, const json& args,
                                      std::uint64_t epoch, Millis ttl) const {
    std::string body = commandBody(id, command, args).dump();
    if (!signer_)
        return body;
    envelope::Fields f;
    f.target = "dped:" + d;
    f.action = command;
    f.request_id = id;
    f.msgtime = clock_.nowMs();
    f.epoch = epoch;
    if (ttl > 0)
        f.ttl = ttl;
    return signer_->sign(std::move(f), body);
}

Result<Millis> Cped::commandTtl() {
    if (!coordinator_->zone())
        return Millis{0};
    auto li = coordinator_->leadership();
    if (!li.leader || li.valid_for_ms <= 0)
        return makeError(std::string(code::NotLeader) + ": cped " + li.node +
                         " no longer leads; it commands no dped");
    return li.valid_for_ms;
}

Result<json> Cped::askDped(const std::string& d, const std::string& command, const json& args) {
    // A command handler may have changed the model: the dped may use the new assemblies'
    // addresses once it reloads.
    if (tHoldsModel)
        refreshOwners();
    std::string id = "cped-" + std::to_string(++next_id_);
    // A ping is answered when the agent replies (or after its own timeout_ms): wait that long.
    Millis timeout = o_.dped_timeout;
    if (command == "ping" && args.contains("timeout_ms") && args["timeout_ms"].is_number_integer())
        timeout = std::max<Millis>(timeout, args["timeout_ms"].get<Millis>() + 1000);
    auto ttl = commandTtl();
    if (!ttl)
        return ttl.error();
    auto body = dpedRequest(d, id, command, args, dpedEpoch(), *ttl);
    if (!body)
        return body.error();
    auto reply =
        client_.request("pcloud.dped." + d, *body, std::chrono::milliseconds(timeout), {}, id);
    if (!reply)
        return reply.error();
    auto j = json::parse(reply->body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError("dped sent a reply that is not JSON");
    if (!j.value("ok", false)) {
        std::string msg = "dped refused";
        if (auto it = j.find("error"); it != j.end() && it->is_object())
            msg += ": " + it->value("message", it->value("code", std::string("?")));
        return makeError(msg);
    }
    return j.contains("result") ? j["result"] : json::object();
}

Result<json> Cped::stopDeployable(const std::string& d) {
    supervisor_->unwant(d);
    if (!supervisor_->pid(d))
        return json{{"dped", "not running"}};
    json out;
    auto r = askDped(d, "stop", json::object());
    out["stop"] = r ? "acknowledged" : "dped not answering: " + r.error().message;
    // dped exits 0 once the deployable is stopped; give it time to drain and stop domains.
    // One that did not even acknowledge gets SIGTERM (its clean-exit signal) right away.
    std::optional<int> st;
    if (r)
        st = supervisor_->waitExit(d, 20'000);
    if (!st) {
        PCLOUD_LOG(Warning, "dped did not exit after stop; sending SIGTERM", {{"deployable", d}});
        supervisor_->signal(d, SIGTERM);
        st = supervisor_->waitExit(d, 5'000);
    }
    if (!st) {
        supervisor_->signal(d, SIGKILL);
        st = supervisor_->waitExit(d, 2'000);
        out["killed"] = true;
    }
    out["exit"] = st ? *st : -1;
    return out;
}

std::vector<Runtime::PingResult> Cped::pingAgents(const std::vector<std::string>& as,
                                                  Millis timeout) {
    // Agents answer on pcloud.reports.ASSY, which their dped consumes, so a started
    // deployable's agents are pinged through their dped; others directly, with reply_to.
    struct Slot {
        PingResult r;
        bool done = false;
    };
    auto slots = std::make_shared<std::vector<Slot>>(as.size());
    auto mutex = std::make_shared<std::mutex>();
    auto cv = std::make_shared<std::condition_variable>();
    std::vector<std::thread> viaDped;
    for (size_t i = 0; i < as.size(); ++i) {
        (*slots)[i].r.assembly = as[i];
        const auto* owner = model_.owner(as[i]);
        const auto start = std::chrono::steady_clock::now();
        auto finish = [slots, mutex, cv, i, start](bool ok, std::string err, Millis rtt) {
            std::lock_guard lock(*mutex);
            auto& s = (*slots)[i];
            s.r.ok = ok;
            s.r.error = std::move(err);
            s.r.rtt_ms = rtt >= 0 ? rtt
                                  : std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - start)
                                        .count();
            s.done = true;
            cv->notify_all();
        };
        if (owner && desired_.started(owner->name)) {
            std::string dep = owner->name, assy = as[i];
            viaDped.emplace_back([this, dep, assy, timeout, finish] {
                auto r = askDped(dep, "ping", {{"assembly", assy}, {"timeout_ms", timeout}});
                if (!r)
                    return finish(false, r.error().message, -1);
                finish(true, "", r->value("rtt_ms", Millis(-1)));
            });
        } else {
            std::string id = "ping-" + std::to_string(++next_id_);
            json body = {{"v", 1}, {"type", "ping"}, {"id", id}, {"deadline", timeout}};
            client_.requestAsync(
                "pcloud.agent." + as[i], body.dump(), std::chrono::milliseconds(timeout),
                [finish](Result<bus::Message> m) {
                    if (!m)
                        return finish(false, m.error().message, -1);
                    auto j = json::parse(m->body, nullptr, false);
                    if (!j.is_object() || !j.value("ok", false))
                        return finish(false, "agent refused: " + utf8Excerpt(m->body, 200), -1);
                    finish(true, "", -1);
                },
                {}, id);
        }
    }
    for (auto& t : viaDped)
        t.join();
    std::unique_lock lock(*mutex);
    cv->wait_for(lock, std::chrono::milliseconds(timeout + 1000), [&] {
        return std::all_of(slots->begin(), slots->end(), [](const Slot& s) { return s.done; });
    });
    std::vector<PingResult> out;
    for (auto& s : *slots) {
        if (!s.done)
            s.r.error = "no reply";
        out.push_back(s.r);
    }
    return out;
}

std::optional<std::string> Cped::serveCommand(const bus::Message& m) {
    std::variant<OpenedCommand, RefusedCommand> opened;
    {
        std::lock_guard lock(api_mutex_);
        opened = openCommand(m.body, api_trust_.get(), clock_.nowMs(), api_replay_,
                             api_require_signed_, m.correlationId);
    }
    if (auto* r = std::get_if<RefusedCommand>(&opened)) {
        logRefusal(*r);
        return r->reply.toJson().dump();
    }
    auto& opened_ok = std::get<OpenedCommand>(opened);
    auto* req = &opened_ok.request;
    if (req->id.empty())
        req->id = m.correlationId;
    // Only the zone's leader serves commands; the check is made now, not from a cached
    // flag, so a leader whose lease deadline passed refuses at once.
    const LeadershipInfo li = coordinator_->leadership();
    if (!li.leader) {
        std::string msg = "cped " + li.node + " is not the leader";
        msg += li.leader_name.empty() ? " (no leader known yet; retry)"
                                      : "; the leader is " + li.leader_name;
        return Response::failure(req->id, code::NotLeader, msg).toJson().dump();
    }
    std::lock_guard lock(model_mutex_);
    // A new term serves once it has the zone's model, or another leader's changes would be
    // answered from this node's older copy.
    if (coordinator_->zone() && model_epoch_.load() != li.epoch) {
        std::string msg = "cped " + li.node + " leads but has not read the zone's model yet";
        msg += zone_model_error_.empty() ? "; retry" : ": " + zone_model_error_;
        return Response::failure(req->id, code::Unavailable, msg).toJson().dump();
    }
    Context ctx;
    ctx.state_dir = o_.state_dir;
    ctx.clock = &clock_;
    ctx.desired = &desired_;
    ctx.journal = journal_.get();
    ctx.templates = &templates_;
    ctx.runtime = this;
    ctx.host = host_;
    ctx.coordinator = coordinator_.get();
    tHoldsModel = true;
    auto resp = handle(*req, model_, ctx);
    tHoldsModel = false;
    refreshOwners();
    if (coordinator_->zone())
        if (auto st = publishZoneModel(); !st && resp.ok)
            resp = Response::failure(req->id, code::Unavailable,
                                     "done on cped " + li.node +
                                         " but not written to the zone's etcd, so another "
                                         "leader would not know it (it goes with this "
                                         "cped's next change while it leads): " +
                                         st.error().message);
    PCLOUD_LOG(Info, "Command handled",
               {{"command", req->command},
                {"id", req->id},
                {"sender", opened_ok.sender.empty() ? "-" : opened_ok.sender},
                {"ok", resp.ok ? "true" : "false"},
                {"error", resp.error_message}});
    return resp.toJson().dump();
}

// Anyone who can log in to an external broker can send here, so a refusal is logged at most
// once a minute per claimed sender (and a bounded number of senders), with how many refusals
// were not logged since.
void Cped::logRefusal(const RefusedCommand& r) {
    const Millis now = clock_.nowMs();
    const std::string who = r.sender.empty() ? "-" : r.sender;
    std::uint64_t unlogged = 0;
    {
        std::lock_guard lock(api_mutex_);
        auto it = refusal_logged_.find(who);
        if (it != refusal_logged_.end() && now - it->second < 60'000) {
            ++refusals_unlogged_;
            return;
        }
        if (it == refusal_logged_.end() && refusal_logged_.size() >= 256) {
            for (auto i = refusal_logged_.begin(); i != refusal_logged_.end();)
                i = now - i->second >= 60'000 ? refusal_logged_.erase(i) : std::next(i);
            if (refusal_logged_.size() >= 256) {
                ++refusals_unlogged_;
                return;
            }
        }
        refusal_logged_[who] = now;
        unlogged = std::exchange(refusals_unlogged_, 0);
    }
    PCLOUD_LOG(Warning, "Refused a command API request",
               {{"id", r.reply.id},
                {"code", r.reply.error_code},
                {"sender", who},
                {"reason", r.reply.error_message},
                {"not_logged_since", std::to_string(unlogged)}});
}

// The hub's authorization asks this for every dped link to an agent address (authz.h), on
// the hub's thread. It reads a copy: the command handler holds model_mutex_ while it waits
// for a dped's reply, which the hub's thread must route.
bool Cped::ownsAssembly(const std::string& deployable, const std::string& assembly) {
    std::lock_guard lock(owners_mutex_);
    auto it = owners_.find(deployable);
    return it != owners_.end() && it->second.count(assembly) > 0;
}

// model_mutex_ held. Called whenever the model may have changed and before any dped is
// asked or started, so a dped never attaches to its assemblies before they are allowed.
void Cped::refreshOwners() {
    std::map<std::string, std::set<std::string>> owners;
    for (const auto& [name, d] : model_.deployables) {
        auto& set = owners[name];
        for (const auto& a : d.assemblies) {
            set.insert(a);
            if (const auto* as = model_.findAssembly(a); as && !as->uuid.empty())
                set.insert(as->uuid);
        }
    }
    std::lock_guard lock(owners_mutex_);
    owners_ = std::move(owners);
}

// The certificate a dped presents: dped.D in the PKI dir, issued here when cped holds the
// CA key and it does not exist yet (the single-host default; docs/security.md).
std::vector<std::string> Cped::dpedTlsArgs(const std::string& deployable) {
    pki::Identity id{pki::Kind::Dped, deployable};
    pki::Paths p{pki_dir_};
    if (::access(p.caKey().c_str(), R_OK) == 0) {
        auto issued = pki::ensureIssued(pki_dir_, id);
        if (!issued)
            PCLOUD_LOG(Error, "Cannot issue the dped's certificate",
                       {{"deployable", deployable}, {"error", issued.error().describe()}});
        else if (*issued)
            PCLOUD_LOG(Notice, "Issued a dped certificate",
                       {{"deployable", deployable}, {"cert", p.cert(id)}});
    }
    auto f = pki::clientFiles(pki_dir_, id);
    return {"--bus-ca", f.ca, "--bus-cert", f.cert, "--bus-key", f.key};
}

std::uint64_t Cped::dpedEpoch() {
    if (auto li = coordinator_->leadership(); li.leader && li.epoch > 0)
        noteLedEpoch(static_cast<std::uint64_t>(li.epoch));
    return led_epoch_;
}

void Cped::noteLedEpoch(std::uint64_t epoch) {
    std::lock_guard lock(led_mutex_); // the supervision thread's, and a command's waitExit
    if (epoch <= led_epoch_)
        return;
    led_epoch_ = epoch;
    if (!coordinator_->zone())
        return; // the single node's epoch file is the coordinator's
    if (auto st = fs::writeAtomic(ledEpochPath(), std::to_string(epoch) + "\n"); !st)
        PCLOUD_LOG(Error,
                   "Cannot save the epoch this cped leads with; after a restart it cannot "
                   "fence the dpeds of this term",
                   {{"epoch", std::to_string(epoch)}, {"error", st.error().describe()}});
}

void Cped::raiseDpedEpochs() {
    auto li = coordinator_->leadership();
    if (!li.leader || li.epoch <= 0)
        return; // only the leader commands; a follower's dpeds keep what they have
    const auto epoch = static_cast<std::uint64_t>(li.epoch);
    noteLedEpoch(epoch);
    for (const auto& d : supervisor_->belowEpoch(epoch)) {
        auto pid = supervisor_->pid(d);
        if (!pid)
            continue;
        {
            std::lock_guard lock(epoch_mutex_);
            auto r = epoch_refused_.find(d);
            if (r != epoch_refused_.end() && r->second == std::pair{*pid, epoch})
                continue; // it runs with a higher epoch: logged, not asked again
            if (!epoch_inflight_.insert(d).second)
                continue;
        }
        std::string id = "cped-" + std::to_string(++next_id_);
        auto ttl = commandTtl();
        auto body = ttl ? dpedRequest(d, id, "epoch", {{"epoch", epoch}}, epoch, *ttl)
                        : Result<std::string>(ttl.error());
        if (!body) {
            PCLOUD_LOG(Error, "Cannot sign the epoch request",
                       {{"deployable", d}, {"error", body.error().describe()}});
            std::lock_guard lock(epoch_mutex_);
            epoch_inflight_.erase(d);
            continue;
        }
        client_.requestAsync(
            "pcloud.dped." + d, *body, std::chrono::milliseconds(o_.dped_timeout),
            [this, d, pid = *pid, epoch](Result<bus::Message> r) {
                onEpochReply(d, pid, epoch, r);
            },
            {}, id);
    }
}

void Cped::fenceDpeds(const char* why) {
    const std::uint64_t term = led_epoch_;
    if (term == 0 || coordinator_->leadership().leader)
        return; // never led, or leading again (then raiseDpedEpochs lifts the fence)
    const std::uint64_t fence = term + 1; // every later leader's epoch is at least this
    const auto dpeds = supervisor_->belowEpoch(fence);
    if (dpeds.empty())
        return;
    if (fenced_term_ != term) {
        fenced_term_ = term;
        PCLOUD_LOG(Warning, why,
                   {{"epoch", std::to_string(term)},
                    {"fence", std::to_string(fence)},
                    {"dpeds", std::to_string(dpeds.size())}});
    }
    for (const auto& d : dpeds) {
        auto pid = supervisor_->pid(d);
        if (!pid)
            continue;
        {
            std::lock_guard lock(epoch_mutex_);
            auto c = fence_confirmed_.find(d);
            if (c != fence_confirmed_.end() && c->second == std::pair{*pid, fence})
                continue; // this process saved the fence
            if (!fence_inflight_.insert(d).second)
                continue;
        }
        std::string id = "cped-" + std::to_string(++next_id_);
        auto body = dpedRequest(d, id, "fence", {{"epoch", fence}}, term);
        if (!body) {
            PCLOUD_LOG(Error, "Cannot sign the fence request",
                       {{"deployable", d}, {"error", body.error().describe()}});
            std::lock_guard lock(epoch_mutex_);
            fence_inflight_.erase(d);
            continue;
        }
        // Asked again on every pass (at most once a second) until this process confirms:
        // a dped that was stopped (SIGSTOP) or busy when the term ended is fenced the
        // moment it answers, not at the first command a newer leader's node refuses.
        client_.requestAsync(
            "pcloud.dped." + d, *body, std::chrono::milliseconds(o_.dped_timeout),
            [this, d, pid = *pid, fence](Result<bus::Message> r) {
                auto j = r ? json::parse(r->body, nullptr, false) : json();
                const bool ok = j.is_object() && j.value("ok", false);
                std::lock_guard lock(epoch_mutex_);
                fence_inflight_.erase(d);
                if (ok) {
                    fence_confirmed_[d] = {pid, fence};
                    PCLOUD_LOG(Notice, "dped fenced off until this cped leads again",
                               {{"deployable", d}, {"fence", std::to_string(fence)}});
                } else if (fence_warned_[d] != std::pair{pid, fence}) {
                    fence_warned_[d] = {pid, fence}; // once per process and fence
                    PCLOUD_LOG(Warning, "dped did not confirm the fence; asking again every second",
                               {{"deployable", d}, {"error", r ? r->body : r.error().describe()}});
                }
            },
            {}, id);
    }
}

// On the bus client's thread: short, never blocking.
void Cped::onEpochReply(const std::string& d, pid_t pid, std::uint64_t epoch,
                        const Result<bus::Message>& reply) {
    std::string error, code;
    std::uint64_t previous = 0;
    if (!reply) {
        error = reply.error().describe();
    } else if (auto j = json::parse(reply->body, nullptr, false); !j.is_object()) {
        error = "dped sent a reply that is not JSON";
    } else if (!j.value("ok", false)) {
        auto e = j.value("error", json::object());
        code = e.is_object() ? e.value("code", std::string("refused")) : std::string("refused");
        error = e.is_object() ? e.value("message", code) : std::string("refused");
    } else {
        auto r = j.value("result", json::object());
        if (r.is_object() && r.contains("previous") && r["previous"].is_number_unsigned())
            previous = r["previous"].get<std::uint64_t>();
        supervisor_->noteEpoch(d, pid, epoch);
    }
    std::lock_guard lock(epoch_mutex_);
    epoch_inflight_.erase(d);
    if (error.empty()) {
        epoch_warned_.erase(d);
        PCLOUD_LOG(Notice, "dped runs with this leader's epoch",
                   {{"deployable", d},
                    {"pid", std::to_string(pid)},
                    {"epoch", std::to_string(epoch)},
                    {"previous", std::to_string(previous)}});
        return;
    }
    if (!code.empty()) {
        // The dped answered no: it took a higher epoch than this leader's (another cped led
        // after this one), or it does not know the request (an older dped). Asking again
        // would get the same answer; this cped does not, for this process and epoch.
        epoch_refused_[d] = {pid, epoch};
        PCLOUD_LOG(Error,
                   code == "stale-epoch"
                       ? "dped runs with a higher epoch than this leader; not lowering it"
                       : "dped refused this leader's epoch; its commands carry its old one "
                         "until it is restarted",
                   {{"deployable", d},
                    {"epoch", std::to_string(epoch)},
                    {"code", code},
                    {"error", error}});
        return;
    }
    // Not answering yet (it may be reconnecting to this new hub): asked again on the next
    // pass of the supervision loop, logged once per epoch.
    auto& warned = epoch_warned_[d];
    if (warned != epoch) {
        warned = epoch;
        PCLOUD_LOG(Warning, "dped did not confirm this leader's epoch yet; asking again",
                   {{"deployable", d}, {"epoch", std::to_string(epoch)}, {"error", error}});
    }
}

Millis Cped::reconcileFloatingIp() {
    if (!floating_)
        return -1;
    // Level-triggered: the callback can be late while etcd is unreachable (docs/ha.md "A late
    // callback"), but isLeader() reads the clock, so this pass drops the address once the
    // local lease deadline passed, before etcd can expire the lease and elect another leader.
    const Millis now = clock_.monotonicMs();
    if (coordinator_->isLeader())
        floating_->acquire(now);
    else
        floating_->release();
    Millis next = floating_->tick(now);
    // In a zone, look at the deadline every 100 ms while holding the address: the margin
    // between the local deadline and the lease's expiry is TTL/4 (500 ms).
    if (!o_.cluster.empty() && floating_->held())
        next = next < 0 ? 100 : std::min<Millis>(next, 100);
    return next;
}

void Cped::startWantedDpeds(bool newTerm) {
    std::lock_guard lock(model_mutex_);
    for (const auto& d : desired_.startedSet()) {
        const auto* dep = model_.findDeployable(d);
        if (!dep)
            continue;
        // A zone's new term starts no dped whose URI means "whichever host leads": its
        // domains may run on the host that led before (policy::zoneDpedRefusal). Adopting
        // this host's own running dpeds at start stays allowed: they must be fenced.
        if (newTerm && coordinator_->zone())
            if (auto why = policy::zoneDpedRefusal(dep->uri); !why.empty()) {
                PCLOUD_LOG(Warning, "Not starting a dped in this zone",
                           {{"deployable", d}, {"reason", why}});
                continue;
            }
        supervisor_->want(d);
    }
}

Status Cped::publishZoneModel() {
    if (zone_content_ && zone_content_->model == model_ && zone_content_->desired == desired_)
        return Status::success();
    const std::int64_t epoch = coordinator_->epoch();
    auto text = formatZoneModel(zoneModelFiles(model_, desired_), zone_generation_ + 1, epoch,
                                o_.node_name);
    if (!text)
        return text.error();
    if (auto st = coordinator_->put(kZoneModelKey, *text); !st)
        return st;
    zone_content_ = ZoneContent{model_, desired_};
    ++zone_generation_;
    PCLOUD_LOG(
        Info, "Wrote the zone's model",
        {{"generation", std::to_string(zone_generation_)}, {"epoch", std::to_string(epoch)}});
    return Status::success();
}

namespace {

// An escalation state as dped reads it back; the error names `where`.
Status checkEscalationText(const std::string& text, const std::string& where) {
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded())
        return makeError(where + ": not JSON");
    if (auto st = policy::escalationStateFromJson(j, where); !st)
        return st.error();
    return Status::success();
}

std::string escalationKey(const std::string& deployable) {
    return "escalation/" + deployable;
}

} // namespace

void Cped::publishEscalations() {
    for (const auto& d : desired_.startedSet()) {
        const std::string path = store::escalationStatePath(o_.state_dir, d);
        if (!fs::exists(path))
            continue;
        auto text = fs::readFile(path);
        if (!text)
            continue; // dped replaces it atomically: read it on the next pass
        auto it = zone_escalations_.find(d);
        if (it != zone_escalations_.end() && it->second == *text)
            continue;
        if (auto st = checkEscalationText(*text, path); !st) {
            PCLOUD_LOG(Warning, "Not sharing an unreadable escalation state",
                       {{"deployable", d}, {"error", st.error().describe()}});
            zone_escalations_[d] = *text; // said once per content
            continue;
        }
        if (auto st = coordinator_->put(escalationKey(d), *text); !st) {
            PCLOUD_LOG(Info, "Cannot write an escalation state to the zone's etcd; next pass",
                       {{"deployable", d}, {"error", st.error().message}});
            continue;
        }
        zone_escalations_[d] = std::move(*text);
    }
}

bool Cped::takeEscalations(std::int64_t epoch) {
    for (const auto& d : desired_.startedSet()) {
        if (supervisor_->info(d).value("running", false))
            continue;
        auto got = coordinator_->get(escalationKey(d));
        if (!got) {
            zone_model_error_ =
                "cannot read the escalation state of '" + d + "' from etcd: " + got.error().message;
            PCLOUD_LOG(Warning, "Cannot read the zone's escalation state; starting no dped yet",
                       {{"deployable", d}, {"error", got.error().message}});
            return false;
        }
        if (!*got)
            continue;
        const std::string where = "etcd /pcloud/" + escalationKey(d);
        if (auto st = checkEscalationText(**got, where); !st) {
            // Never blocks the zone: dped starts from this host's file, as without a zone.
            PCLOUD_LOG(Error, "The zone's escalation state is unreadable; not taken",
                       {{"deployable", d}, {"error", st.error().describe()}});
            continue;
        }
        const std::string path = store::escalationStatePath(o_.state_dir, d);
        auto mine = fs::exists(path) ? fs::readFile(path) : Result<std::string>(std::string());
        if (!mine || *mine != **got) {
            if (auto st = fs::writeAtomic(path, **got, {}, 0600); !st) {
                zone_model_error_ = "cannot save the zone's escalation state of '" + d +
                                    "' here: " + st.error().describe();
                PCLOUD_LOG(Error, "Cannot save the zone's escalation state",
                           {{"deployable", d}, {"error", st.error().describe()}});
                return false;
            }
            PCLOUD_LOG(Notice, "Took the zone's escalation state from etcd",
                       {{"deployable", d}, {"file", path}});
        }
        zone_escalations_[d] = **got;
    }
    escalations_epoch_ = epoch;
    return true;
}

Result<events::Event> Cped::appendStandIn(std::uint64_t seq, const std::string& why) {
    events::Event e;
    e.seq = seq;
    e.time = clock_.nowMs();
    e.deployable = "zone";
    e.state = "unreadable";
    e.reason = why;
    return journal_->appendNumbered(std::move(e));
}

bool Cped::catchUpJournal(std::int64_t epoch) {
    ZoneJournalStore* zone = coordinator_->journal();
    if (!zone || journal_epoch_ == epoch)
        return true;
    auto fail = [&](std::string why) {
        journal_error_ = std::move(why);
        return false;
    };
    auto head = zone->head();
    if (!head)
        return fail("cannot read the zone's journal from etcd: " + head.error().message);
    const std::uint64_t local = journal_->lastSeq();
    // Is this copy's last event the zone's event of that seq?
    std::optional<bool> sameLast;
    if (local > 0 && *head && (*head)->first <= local && local <= (*head)->last) {
        auto theirs = zone->read(local, local, 1);
        if (!theirs)
            return fail("cannot read the zone's journal from etcd: " + theirs.error().message);
        events::ReplayQuery q;
        q.since_seq = local - 1;
        auto mine = journal_->replay(q);
        // An unreadable event in etcd says nothing about this copy (it has a stand-in).
        if (mine && !mine->events.empty() && !theirs->empty() &&
            events::parseLine(theirs->front().second))
            sameLast = events::toLine(mine->events.back()) == theirs->front().second;
    }
    const JournalCatchUp plan = planJournalCatchUp(local, *head, sameLast);
    if (plan.missing > 0 || plan.kind == JournalCatchUp::Kind::SetAsideThenCopy)
        PCLOUD_LOG(Warning, "Taking the zone's journal", {{"plan", cped::describe(plan, local)}});
    else if (plan.kind != JournalCatchUp::Kind::UpToDate)
        PCLOUD_LOG(Notice, "Taking the zone's journal", {{"plan", cped::describe(plan, local)}});
    switch (plan.kind) {
    case JournalCatchUp::Kind::UpToDate:
        break;
    case JournalCatchUp::Kind::Seed:
        if (auto st = zone->seed(local); !st)
            return fail("cannot start the zone's journal in etcd: " + st.error().message);
        break;
    case JournalCatchUp::Kind::SetAsideThenCopy: {
        auto aside = journal_->setAside("diverged-" + std::to_string(clock_.nowMs()));
        if (!aside)
            return fail("cannot set this node's journal aside: " + aside.error().describe());
        PCLOUD_LOG(Warning,
                   "Set this node's journal aside: its seqs are the zone's for other events",
                   {{"file", *aside}});
        [[fallthrough]];
    }
    case JournalCatchUp::Kind::Copy:
        for (std::uint64_t from = plan.from; from <= plan.to;) {
            auto page = zone->read(from, plan.to, 500);
            if (!page)
                return fail("cannot read the zone's journal from etcd: " + page.error().message);
            if (page->empty()) // trimmed meanwhile: what is left is newer
                break;
            for (const auto& [seq, line] : *page) {
                auto e = events::parseLine(line);
                if (!e || e->seq != seq) {
                    const std::string why =
                        "etcd " + zoneJournalEventKey(seq) + " does not read as event " +
                        std::to_string(seq) + ": " +
                        (e ? "its seq is " + std::to_string(e->seq) : e.error().message);
                    PCLOUD_LOG(Error, "Skipped an unreadable event of the zone's journal",
                               {{"error", why}});
                    if (auto w = appendStandIn(seq, why); !w)
                        return fail("cannot copy the zone's journal here: " + w.error().describe());
                    continue;
                }
                if (auto w = journal_->appendNumbered(std::move(*e)); !w)
                    return fail("cannot copy the zone's journal here: " + w.error().describe());
            }
            from = page->back().first + 1;
        }
        // The copy must end at the zone's last seq, or its next event would be refused as
        // behind for ever: seqs etcd does not hold (trimmed, deleted, or before a seed)
        // get one stand-in at the last.
        if (journal_->lastSeq() < plan.to) {
            const std::string why = "etcd holds no event after seq " +
                                    std::to_string(journal_->lastSeq()) + " up to " +
                                    std::to_string(plan.to) + " (the zone's last)";
            PCLOUD_LOG(Warning, "The zone's journal lacks events this copy never had",
                       {{"error", why}});
            if (auto w = appendStandIn(plan.to, why); !w)
                return fail("cannot copy the zone's journal here: " + w.error().describe());
        }
        break;
    }
    rebuildLedger();
    journal_epoch_ = epoch;
    journal_error_.clear();
    return true;
}

bool Cped::takeZoneModel(std::int64_t epoch) {
    {
        std::lock_guard lock(publish_mutex_);
        if (!catchUpJournal(epoch)) {
            zone_model_error_ = journal_error_;
            PCLOUD_LOG(Warning, "Cannot take the zone's journal; serving nothing until it is read",
                       {{"error", journal_error_}});
            return false;
        }
    }
    auto got = coordinator_->get(kZoneModelKey);
    if (!got) {
        zone_model_error_ = "cannot read it from etcd: " + got.error().message;
        PCLOUD_LOG(Warning, "Cannot read the zone's model; serving nothing until it is read",
                   {{"error", got.error().message}});
        return false;
    }
    if (!*got) {
        // A zone whose etcd has no model yet: this leader's own is the zone's.
        zone_content_.reset();
        zone_generation_ = 0;
        if (auto st = publishZoneModel(); !st) {
            zone_model_error_ = "cannot write this cped's model to etcd: " + st.error().message;
            PCLOUD_LOG(Warning, "Cannot seed the zone's model", {{"error", st.error().message}});
            return false;
        }
        PCLOUD_LOG(Notice, "The zone had no model in etcd; wrote this cped's",
                   {{"epoch", std::to_string(epoch)}});
        zone_model_error_.clear();
        model_epoch_ = epoch;
        return true;
    }
    const std::string where = "etcd /pcloud/" + std::string(kZoneModelKey);
    auto zm = parseZoneModel(**got, where);
    if (!zm) {
        // Nothing is overwritten: an operator repairs or deletes the key (docs/ha.md).
        zone_model_error_ = "it is unreadable: " + zm.error().describe();
        PCLOUD_LOG(Error, "The zone's model in etcd is unreadable; serving nothing",
                   {{"error", zm.error().describe()}});
        return false;
    }
    if (!(zm->model == model_ && zm->desired == desired_)) {
        Status saved = store::saveModel(o_.state_dir, zm->model);
        if (saved)
            saved = zm->desired.save(o_.state_dir);
        if (!saved) {
            zone_model_error_ = "cannot save it here: " + saved.error().describe();
            PCLOUD_LOG(Error, "Cannot save the zone's model",
                       {{"error", saved.error().describe()}});
            return false;
        }
        model_ = std::move(zm->model);
        desired_ = std::move(zm->desired);
        refreshOwners();
        PCLOUD_LOG(Notice, "Took the zone's model from etcd",
                   {{"generation", std::to_string(zm->generation)},
                    {"writer", zm->writer},
                    {"written_epoch", std::to_string(zm->epoch)},
                    {"epoch", std::to_string(epoch)}});
        // dpeds this node adopted read the model it had: they reread it, as after a SIGHUP
        // (not from this thread, which holds the model and must not wait on a dped).
        std::vector<std::string> running;
        for (const auto& d : desired_.startedSet())
            if (supervisor_->info(d).value("running", false))
                running.push_back(d);
        if (!running.empty())
            std::thread([this, running] {
                for (const auto& d : running)
                    if (auto r = askDped(d, "reload", json::object()); !r)
                        PCLOUD_LOG(Warning, "dped did not confirm the reload",
                                   {{"deployable", d}, {"error", r.error().message}});
            }).detach();
    }
    zone_content_ = ZoneContent{model_, desired_};
    zone_generation_ = zm->generation;
    zone_model_error_.clear();
    model_epoch_ = epoch;
    return true;
}

void Cped::reloadFromDisk() {
    std::vector<std::string> started;
    {
        std::lock_guard lock(model_mutex_);
        std::vector<Error> warnings;
        auto m = store::loadModel(o_.state_dir, &warnings);
        if (!m) {
            PCLOUD_LOG(Error,
                       "Reload refused: the db files are invalid; keeping the model in memory",
                       {{"error", m.error().describe()}});
            return;
        }
        for (const auto& w : warnings)
            PCLOUD_LOG(Warning, "db file", {{"problem", w.describe()}});
        model_ = std::move(*m);
        refreshOwners();
        templates_ = store::TemplateRegistry::load();
        for (const auto& d : desired_.startedSet())
            started.push_back(d);
        // An operator's edit of the files is the zone's too, while this node leads.
        if (coordinator_->zone() && coordinator_->isLeader())
            if (auto st = publishZoneModel(); !st)
                PCLOUD_LOG(Warning, "The reloaded model is not in the zone's etcd",
                           {{"error", st.error().message}});
    }
    PCLOUD_LOG(Notice, "Reloaded the model from disk", {{"state_dir", o_.state_dir}});
    for (const auto& d : started) {
        auto r = askDped(d, "reload", json::object());
        if (!r)
            PCLOUD_LOG(Warning, "dped did not confirm the reload",
                       {{"deployable", d}, {"error", r.error().message}});
    }
}

int Cped::run() {
    if (auto st = fs::makePrivateDir(o_.state_dir); !st) {
        std::cerr << "cped: cannot start: " << st.error().describe() << "\n";
        return toInt(ExitCode::Config);
    }
    auto host = hostconfig::load(o_.config.empty() ? hostconfig::kDefaultPath : o_.config,
                                 !o_.config.empty());
    if (!host) {
        std::cerr << "cped: cannot start: " << host.error().describe() << "\n";
        return toInt(ExitCode::Config);
    }
    host_ = std::move(*host);
    PCLOUD_LOG(Notice, "Host configuration loaded",
               {{"config", host_.source.empty()
                               ? std::string(hostconfig::kDefaultPath) + " (absent: safe defaults)"
                               : host_.source}});
    pid_t other = 0;
    auto lock = LockFile::acquire(o_.state_dir + "/cped.lock", &other);
    if (!lock) {
        std::cerr << "cped: cannot start: another cped uses this state dir: "
                  << lock.error().describe() << "\n";
        return toInt(ExitCode::Locked);
    }
    std::vector<Error> warnings;
    auto m = store::loadModel(o_.state_dir, &warnings);
    if (!m) {
        std::cerr << "cped: cannot start: " << m.error().describe()
                  << "\ncped: fix the file (it was not changed) and start cped again\n";
        return toInt(ExitCode::Config);
    }
    for (const auto& w : warnings)
        PCLOUD_LOG(Warning, "db file", {{"problem", w.describe()}});
    model_ = std::move(*m);
    refreshOwners();
    auto desired = DesiredState::load(o_.state_dir);
    if (!desired) {
        std::cerr << "cped: cannot start: " << desired.error().describe() << "\n";
        return toInt(ExitCode::Config);
    }
    desired_ = std::move(*desired);
    templates_ = store::TemplateRegistry::load();
    for (const auto& w : templates_.warnings())
        PCLOUD_LOG(Warning, "template", {{"problem", w.describe()}});
    auto journal = events::EventJournal::open(o_.state_dir, o_.journal, clock_);
    if (!journal) {
        std::cerr << "cped: cannot start: " << journal.error().describe() << "\n";
        return toInt(ExitCode::Config);
    }
    journal_ = std::move(*journal);
    for (auto& w : journal_->takeWarnings())
        PCLOUD_LOG(Warning, "Event journal", {{"problem", w}});
    // A floating_dev that does not exist is a configuration error (no respawn would fix it).
    auto floating = makeFloatingIp(host_);
    if (!floating) {
        std::cerr << "cped: cannot start: " << floating.error().describe() << "\n";
        return toInt(ExitCode::Config);
    }
    floating_ = std::move(*floating);
    // Signals are taken synchronously by the main thread; every thread inherits the mask.
    sigset_t sigs = signals::blockShutdownSignals();
    // After the mask: the etcd client's gRPC threads must not take SIGTERM either.
    if (o_.cluster.empty()) {
        auto c = makeLocalCoordinator(o_.state_dir, o_.node_name);
        if (!c) {
            std::cerr << "cped: cannot start: " << c.error().describe() << "\n";
            return toInt(ExitCode::Config);
        }
        coordinator_ = std::move(*c);
    } else {
        if (!cluster_factory_) {
            std::cerr << "cped: --cluster: this cped was built without etcd support "
                         "(PCLOUD_WITH_ETCD=OFF)\n";
            return toInt(ExitCode::Usage);
        }
        auto c = cluster_factory_(ClusterSettings{o_.cluster, o_.node_name, host_.etcd_ca,
                                                  host_.etcd_cert, host_.etcd_key, o_.lease_ttl_s},
                                  clock_);
        if (!c) {
            std::cerr << "cped: --cluster " << o_.cluster << ": " << c.error().describe() << "\n";
            return toInt(ExitCode::Usage);
        }
        coordinator_ = std::move(*c);
        auto led = readEpochFile(ledEpochPath(),
                                 "the last epoch this cped led the zone with; remove the file "
                                 "only when none of its dpeds runs");
        if (!led) {
            std::cerr << "cped: cannot start: " << led.error().describe() << "\n";
            return toInt(ExitCode::Config);
        }
        led_epoch_ = static_cast<std::uint64_t>(*led);
    }

    std::string url = o_.broker;
    const std::string pkiDir = o_.pki_dir.empty() ? host_.pki_dir : o_.pki_dir;
    pki::Identity self{pki::Kind::Cped,
                       host_.cped_name.empty() ? pki::defaultCpedName() : host_.cped_name};
    auto files = pki::clientFiles(pkiDir, self);
    if (url.empty()) {
        bus::HubOptions ho;
        ho.allowInsecure = o_.insecure_listen;
        ho.tls = {files.ca, files.cert, files.key, pki::Paths{pkiDir}.revoked()};
        ho.authz.ownsAssembly = [this](const std::string& d, const std::string& a) {
            return ownsAssembly(d, a);
        };
        hub_ = std::make_unique<bus::Hub>(ho);
        if (auto st = hub_->start(o_.listen); !st) {
            std::cerr << "cped: cannot listen on " << o_.listen << ": " << st.error().describe()
                      << "\n";
            if (o_.listen.rfind("amqps://", 0) == 0)
                std::cerr << "cped: set up certificates with: pcloud-pki init; pcloud-pki issue "
                             "--cped "
                          << self.name
                          << "; pcloud-pki issue --operator NAME (docs/security.md), or run "
                             "with --insecure-listen --listen amqp://127.0.0.1:5672\n";
            // Missing or bad certificates, or plain AMQP refused: fix the setup, no respawn.
            // A port that is taken may free up: respawn with backoff.
            const auto& e = st.error();
            bool setup = !e.file.empty() ||
                         e.message.find("refusing plain AMQP") != std::string::npos ||
                         e.message.find("amqps:// needs") != std::string::npos ||
                         e.message.find("TLS setup failed") != std::string::npos;
            return toInt(setup ? ExitCode::Config : ExitCode::Unavailable);
        }
        // Hub::start() logged it.
        url = std::string(o_.listen.rfind("amqps://", 0) == 0 ? "amqps" : "amqp") +
              "://127.0.0.1:" + std::to_string(hub_->boundPort());
    }
    tls_ = url.rfind("amqps://", 0) == 0;
    pki_dir_ = pkiDir;
    if (tls_) {
        auto signer = envelope::Signer::load(files.key, files.cert);
        if (!signer) {
            std::cerr << "cped: cannot sign requests to dpeds with " << files.cert << ": "
                      << signer.error().describe() << "\n";
            return toInt(ExitCode::Config);
        }
        signer_ = std::make_shared<const envelope::Signer>(std::move(*signer));
        auto ca = envelope::CaStore::loadFile(files.ca);
        if (!ca) {
            std::cerr << "cped: cannot verify signed commands with " << files.ca << ": "
                      << ca.error().describe() << "\n";
            return toInt(ExitCode::Config);
        }
        envelope::Trust t;
        t.ca = std::move(*ca);
        t.self = envelope::kCommandApi;
        api_trust_ = std::make_shared<const envelope::Trust>(std::move(t));
        // RabbitMQ (or any external broker) cannot restrict who sends to pcloud.cped; the
        // embedded hub lets only operator:* attach there, so plain requests stay valid on it.
        api_require_signed_ = !o_.broker.empty();
    }
    for (auto* c : {&client_, &server_}) {
        bus::ClientOptions co;
        co.url = url;
        co.addressPrefix = o_.prefix;
        co.caFile = files.ca;
        co.certFile = files.cert;
        co.keyFile = files.key;
        // Replies only from the dped (or node) asked, by the user-id the broker checks.
        co.checkReplySenders = tls_;
        if (auto st = c->connect(co); !st) {
            std::cerr << "cped: cannot use broker " << url << ": " << st.error().describe() << "\n";
            return toInt(ExitCode::Usage);
        }
    }
    if (!client_.waitConnected(10s) || !server_.waitConnected(10s)) {
        std::cerr << "cped: cannot connect to the broker at " << url << "\n";
        return toInt(ExitCode::Unavailable);
    }

    SupervisorOptions so;
    so.dped_path = o_.dped_path;
    so.state_dir = o_.state_dir;
    so.broker_url = url;
    so.address_prefix = o_.prefix;
    if (tls_)
        so.dped_args = [this](const std::string& d) { return dpedTlsArgs(d); };
    so.epoch = [this] { return dpedEpoch(); };
    // A zone's follower starts no dped: it would act beside the leader's. It still adopts
    // running ones, to fence them (fenceDpeds).
    so.may_start = [this] { return !coordinator_->zone() || coordinator_->leadership().leader; };
    if (log::level() >= log::Level::Info) {
        so.extra_args = {"--log-level", log::level() == log::Level::Debug ? "debug" : "info"};
    }
    // dped re-checks what it acts on against the same host configuration.
    if (!o_.config.empty()) {
        so.extra_args.push_back("--config");
        so.extra_args.push_back(o_.config);
    }
    supervisor_ =
        std::make_unique<Supervisor>(so, clock_, [this](events::Event e) { emit(std::move(e)); });

    journal_senders_ = std::make_unique<bus::SenderGate>(tls_, "journal submission");
    {
        std::lock_guard lock(publish_mutex_);
        rebuildLedger();
    }
    client_.serve("pcloud.journal",
                  [this](const bus::Message& msg) { return onJournalSubmission(msg); });

    // dpeds start once this node leads (at once for the single-node coordinator), with
    // --epoch; running ones (adopted, or from an earlier term) are raised to the new epoch
    // by raiseDpedEpochs(). A leader that steps down leaves its dpeds running: nodes and
    // agents refuse their commands once a newer leader's have reached them (docs/ha.md).
    // The floating address follows: the supervision loop adds it once this node leads, and a
    // step-down deletes it here at once (netlink, no lock a command could hold).
    coordinator_->onLeadershipChange([this](const LeadershipInfo& li) {
        if (li.leader) {
            became_leader_ = true;
            supervisor_->wake();
        } else {
            if (floating_)
                floating_->release();
            supervisor_->wake(); // its next pass fences this term's dpeds
            PCLOUD_LOG(Warning, "This cped no longer leads; it refuses commands",
                       {{"node", li.node},
                        {"leader", li.leader_name.empty() ? "-" : li.leader_name},
                        {"reason", li.reason}});
        }
    });
    if (auto st = coordinator_->campaign(); !st) {
        std::cerr << "cped: cannot campaign: " << st.error().describe() << "\n";
        return toInt(ExitCode::Unavailable);
    }
    // After campaign(): commands queued at the hub while cped started are delivered the
    // moment it serves, and a single cped (which leads once it campaigns) must not refuse
    // them as "not the leader". A zone's campaign is asynchronous; non-leaders refuse.
    server_.serve("pcloud.cped", [this](const bus::Message& msg) { return serveCommand(msg); });
    std::atomic<bool> stopping{false};
    std::thread supervision([&] {
        // A zone's cped adopts the dpeds still running from its last run before it leads,
        // so that it fences them while it follows (it starts none: may_start).
        if (coordinator_->zone())
            startWantedDpeds(false);
        bool startPending = false;
        while (!stopping) {
            Millis fip = reconcileFloatingIp();
            if (became_leader_.exchange(false))
                startPending = true;
            // In a zone, a new term first takes the zone's model (retried each pass).
            bool haveModel = true;
            if (startPending && coordinator_->zone()) {
                const LeadershipInfo li = coordinator_->leadership();
                if (!li.leader) {
                    startPending = false;
                } else {
                    std::lock_guard lock(model_mutex_);
                    if (model_epoch_.load() != li.epoch || escalations_epoch_ != li.epoch)
                        haveModel = (model_epoch_.load() == li.epoch || takeZoneModel(li.epoch)) &&
                                    takeEscalations(li.epoch);
                }
            }
            if (startPending && haveModel) {
                startPending = false;
                startWantedDpeds(true);
            }
            if (coordinator_->zone())
                fenceDpeds("This cped no longer leads; fencing off its dpeds");
            if (coordinator_->zone()) {
                const LeadershipInfo li = coordinator_->leadership();
                std::lock_guard lock(model_mutex_);
                if (li.leader && model_epoch_.load() == li.epoch && escalations_epoch_ == li.epoch)
                    publishEscalations();
            }
            Millis next = supervisor_->tick();
            raiseDpedEpochs();
            if (fip >= 0)
                next = next < 0 ? fip : std::min(next, fip);
            if (startPending) // the zone's model is still to be read: again soon
                next = next < 0 ? 500 : std::min<Millis>(next, 500);
            supervisor_->waitActivity(next < 0 ? 1000 : std::min<Millis>(next, 1000));
        }
    });
    PCLOUD_LOG(Notice, "cped ready",
               {{"state_dir", o_.state_dir},
                {"broker", url},
                {"coordinator", coordinator_->describe()},
                {"node", o_.node_name},
                {"last_seq", std::to_string(journal_->lastSeq())}});

    int exitCode = 0;
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            if (hub_) {
                if (auto st = hub_->reloadDenyList(); !st)
                    PCLOUD_LOG(Error, "Cannot reload the deny list; the old one stays in force",
                               {{"error", st.error().describe()}});
            }
            std::thread([this] { reloadFromDisk(); }).detach();
            continue;
        }
        PCLOUD_LOG(Notice, "cped stopping; dpeds keep running", {{"signal", std::to_string(sig)}});
        break;
    }
    stopping = true;
    supervisor_->wake();
    supervision.join();
    // The address goes before the lease: the next leader adds it once this one resigned.
    if (floating_)
        floating_->release();
    coordinator_->resign(); // in a zone, another node takes over without waiting for a TTL
    // ... and this cped's dpeds must not act beside that leader's (waitIdle below lets the
    // requests go out). The single node fences nothing: no other cped can lead, and its
    // next run raises its dpeds without a pause in what they do.
    if (coordinator_->zone())
        fenceDpeds("This cped resigned; fencing off its dpeds");
    server_.close();
    client_.waitIdle(2s);
    client_.close();
    if (hub_)
        hub_->stop();
    return exitCode;
}

} // namespace

int runCped(int argc, char** argv, ClusterCoordinatorFactory cluster) {
    log::setIdent("cped");
    Options o;
    if (int rc = parseOptions(argc, argv, o); rc >= 0)
        return rc;
    try {
        Cped cped(std::move(o), std::move(cluster));
        return cped.run();
    } catch (const std::exception& e) {
        std::cerr << "cped: internal error: " << e.what() << "\n";
        return toInt(ExitCode::Software);
    }
}

} // namespace pcloud::cped
