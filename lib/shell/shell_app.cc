#include "shell/shell_app.h"

#include "bus/client.h"
#include "common/args.h"
#include "common/host_config.h"
#include "common/log.h"
#include "envelope/envelope.h"
#include "events/event.h"
#include "pki/pki.h"
#include "shell/cli.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <iostream>
#include <mutex>
#include <optional>
#include <poll.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <set>
#include <thread>
#include <unistd.h>

namespace pcloud::shell {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int kOk = 0, kCpedError = 1, kUsage = 2;

std::atomic<bool> g_interrupted{false};
int g_sigpipe[2] = {-1, -1};

void onSigint(int) {
    g_interrupted = true;
    if (g_sigpipe[1] >= 0) [[maybe_unused]]
        auto n = ::write(g_sigpipe[1], "x", 1);
}

struct ShellOptions {
    std::string broker = "amqps://127.0.0.1:5671";
    std::string prefix;
    // amqps://: the operator certificate (docs/security.md); "" = from the host configuration
    std::string bus_ca, bus_cert, bus_key, config;
    bool json = false;
    Millis timeout_ms = 30'000;
};

class Shell {
public:
    explicit Shell(ShellOptions o) : o_(std::move(o)) {}
    ~Shell() { close(); }
    // Ends the AMQP connection the normal way, so cped sees a close, not a vanished peer.
    void close() { client_.close(); }

    // One command line (already split). Returns the exit status.
    int execute(const std::vector<std::string>& words);
    int interactive();

    // Sends one command; the reply JSON, or an Error when cped could not be reached.
    Result<json> call(const std::string& command, const json& args, Millis timeoutMs);
    std::vector<std::string> names(cli::ArgKind kind);

private:
    bool ensureConnected();
    Status operatorFiles(bus::ClientOptions& co) const;
    int follow(const cli::Invocation& inv);

    ShellOptions o_;
    // Over TLS every request to pcloud.cped is signed with the operator key (target
    // cped:api, docs/security.md "Signed commands"): an external broker cannot tell cped who
    // sent it. Null on a plain bus.
    std::optional<envelope::Signer> signer_;
    bus::Client client_;
    bool started_ = false;
    std::uint64_t next_id_ = 0;
};

bool Shell::ensureConnected() {
    if (!started_) {
        bus::ClientOptions co;
        co.url = o_.broker;
        co.addressPrefix = o_.prefix;
        co.reconnectMax = 1000ms;
        co.containerId = "pcloudsh-" + std::to_string(::getpid()); // how cped's log names us
        // Only a cped answers the command API: a reply from anyone else is dropped.
        co.checkReplySenders = o_.broker.rfind("amqps://", 0) == 0;
        if (o_.broker.rfind("amqps://", 0) == 0) {
            if (auto st = operatorFiles(co); !st) {
                std::cerr << "pcloudsh: " << st.error().describe() << "\n";
                return false;
            }
            auto signer = envelope::Signer::load(co.keyFile, co.certFile);
            if (!signer) {
                std::cerr << "pcloudsh: cannot sign commands with " << co.certFile << ": "
                          << signer.error().describe() << "\n";
                return false;
            }
            signer_ = std::move(*signer);
        }
        if (auto st = client_.connect(co); !st) {
            std::cerr << "pcloudsh: " << st.error().describe() << "\n";
            return false;
        }
        started_ = true;
    }
    if (!client_.waitConnected(std::chrono::milliseconds(std::min<Millis>(o_.timeout_ms, 5000)))) {
        std::cerr << "pcloudsh: cannot reach cped: no connection to " << o_.broker
                  << " (is cped running? use --broker URL)\n";
        return false;
    }
    return true;
}

// The operator certificate: --bus-* options first, then `operator = NAME` in the host
// configuration, then the only operator.NAME.crt in its pki_dir.
Status Shell::operatorFiles(bus::ClientOptions& co) const {
    if (o_.bus_ca.empty() || o_.bus_cert.empty() || o_.bus_key.empty()) {
        auto host = hostconfig::load(o_.config.empty() ? hostconfig::kDefaultPath : o_.config,
                                     !o_.config.empty());
        if (!host)
            return host.error();
        pki::Identity op{pki::Kind::Operator, host->operator_name};
        if (op.name.empty() && o_.bus_cert.empty()) {
            auto only = pki::onlyOperator(host->pki_dir);
            if (!only)
                return only.error();
            op = *only;
        }
        auto files = pki::clientFiles(host->pki_dir, op);
        co.caFile = files.ca;
        co.certFile = files.cert;
        co.keyFile = files.key;
    }
    if (!o_.bus_ca.empty())
        co.caFile = o_.bus_ca;
    if (!o_.bus_cert.empty())
        co.certFile = o_.bus_cert;
    if (!o_.bus_key.empty())
        co.keyFile = o_.bus_key;
    return Status::success();
}

Result<json> Shell::call(const std::string& command, const json& args, Millis timeoutMs) {
    if (!ensureConnected())
        return makeError("not connected");
    std::string id = "sh-" + std::to_string(::getpid()) + "-" + std::to_string(++next_id_);
    json body = {{"v", 1}, {"type", "command"}, {"id", id}, {"command", command}, {"args", args}};
    std::string bytes = body.dump();
    if (signer_) {
        envelope::Fields f;
        f.target = envelope::kCommandApi;
        f.action = command;
        f.msgtime = SystemClock().nowMs();
        auto signed_ = signer_->sign(std::move(f), bytes);
        if (!signed_)
            return makeError("cannot sign the request: " + signed_.error().message);
        bytes = std::move(*signed_);
    }
    auto reply =
        client_.request("pcloud.cped", bytes, std::chrono::milliseconds(timeoutMs), {}, id);
    if (!reply)
        return makeError("cped did not answer: " + reply.error().message);
    auto j = json::parse(reply->body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError("cped sent a reply that is not JSON");
    return j;
}

std::vector<std::string> Shell::names(cli::ArgKind kind) {
    std::vector<std::string> out;
    auto fetch = [&](const char* cmd, const char* listKey) -> json {
        auto r = call(cmd, json::object(), 1500);
        if (!r || !r->value("ok", false))
            return json::array();
        return (*r)["result"].value(listKey, json::array());
    };
    switch (kind) {
    case cli::ArgKind::Deployable:
        for (const auto& d : fetch("deployable_list", "deployables"))
            out.push_back(d.value("name", ""));
        break;
    case cli::ArgKind::Assembly:
        for (const auto& a : fetch("assembly_list", "assemblies"))
            out.push_back(a.value("name", ""));
        break;
    case cli::ArgKind::Resource: {
        std::set<std::string> s;
        for (const auto& a : fetch("assembly_list", "assemblies"))
            for (const auto& r : a.value("resources", json::array()))
                s.insert(r.get<std::string>());
        out.assign(s.begin(), s.end());
        break;
    }
    case cli::ArgKind::Template:
        for (const auto& t : fetch("template_list", "templates"))
            out.push_back(t.value("name", ""));
        break;
    default:
        break;
    }
    return out;
}

void printError(const json& reply, bool asJson) {
    if (asJson) {
        std::cout << reply.dump() << std::endl;
        return;
    }
    const json& e = reply.value("error", json::object());
    std::cerr << "pcloudsh: error: " << e.value("message", std::string("unknown error")) << " ("
              << e.value("code", std::string("?")) << ")\n";
}

int Shell::follow(const cli::Invocation& inv) {
    // Live events are buffered from the moment of subscribing; the journal fills in what came
    // before and any gap (seq jumps, reconnects). `last` is the highest seq handled, printed
    // or filtered out, so nothing prints twice and nothing is skipped.
    std::mutex m;
    std::condition_variable cv;
    std::deque<events::Event> live;
    const std::string dep = inv.args.value("deployable", std::string());
    if (!ensureConnected())
        return kCpedError;
    auto sub = client_.subscribe("pcloud.events", [&](const bus::Message& msg) {
        auto e = events::parseLine(msg.body);
        if (!e || e->seq == 0)
            return;
        std::lock_guard lock(m);
        live.push_back(std::move(*e));
        cv.notify_one();
    });
    std::uint64_t last = 0;
    auto print = [&](const events::Event& e) {
        if (!dep.empty() && e.deployable != dep)
            return;
        if (o_.json)
            std::cout << events::toLine(e) << std::endl;
        else
            std::cout << events::formatHuman(e) << std::endl;
    };
    // Replays from the journal after `last` (or per the first query) until caught up. An
    // error is printed once, not at every retry (a new leader that has not read the zone's
    // journal yet answers `unavailable` for a while).
    std::string lastError;
    auto replay = [&](json args) -> bool {
        for (;;) {
            auto r = call("events", args, 10'000);
            if (!r)
                return false;
            if (!r->value("ok", false)) {
                const std::string said = (*r).value("error", json::object()).dump();
                if (said != lastError)
                    printError(*r, o_.json);
                lastError = said;
                return false;
            }
            lastError.clear();
            const json& res = (*r)["result"];
            for (const auto& j : res["events"]) {
                auto e = events::fromJson(j);
                if (!e || e->seq <= last)
                    continue;
                print(*e);
                last = e->seq;
            }
            if (!res.value("more", false)) {
                last = std::max<std::uint64_t>(last, res.value("last_seq", std::uint64_t(0)));
                return true;
            }
            args = {{"since_seq", last}};
            if (!dep.empty())
                args["deployable"] = dep;
        }
    };
    json first = inv.args;
    if (!first.contains("since_seq") && !first.contains("since_time") && !first.contains("limit"))
        first["limit"] = 10;
    bool haveHistory = replay(first);
    if (!haveHistory && !client_.connected()) {
        std::cerr << "pcloudsh: cannot reach cped; will keep trying\n";
    }
    // Reconnects are recognised by the client's connect counter, not by sampling
    // connected(): a cped restart can fall entirely between two samples.
    std::uint64_t seenConnects = client_.stats().connects;
    auto resume = [&]() {
        json a = {{"since_seq", last}};
        if (!dep.empty())
            a["deployable"] = dep;
        return replay(a);
    };
    while (!g_interrupted) {
        std::optional<events::Event> next;
        {
            std::unique_lock lock(m);
            cv.wait_for(lock, 200ms, [&] { return !live.empty() || g_interrupted.load(); });
            if (!live.empty()) {
                next = std::move(live.front());
                live.pop_front();
            }
        }
        const std::uint64_t connects = client_.stats().connects;
        if (client_.connected() && (connects != seenConnects || !haveHistory)) {
            // Reconnected (or cped came back): whatever happened meanwhile is in the journal.
            // Read it only once the live subscription is attached again, so that no event
            // can fall between the end of the replay and the start of the live feed.
            if (connects != seenConnects)
                client_.waitSubscribed(sub, 5s);
            seenConnects = connects;
            haveHistory = resume();
        }
        if (!next)
            continue;
        if (next->seq <= last)
            continue;               // already printed from the journal
        if (next->seq > last + 1) { // a gap: fetch it before this one
            if (!resume()) {
                // Not now (cped unreachable, or not serving yet): keep this one for after
                // the gap, which the loop fetches again before anything else.
                haveHistory = false;
                std::unique_lock lock(m);
                live.push_front(std::move(*next));
                cv.wait_for(lock, 200ms, [&] { return g_interrupted.load(); });
                continue;
            }
            if (next->seq <= last)
                continue;
        }
        print(*next);
        last = next->seq;
    }
    client_.unsubscribe(sub);
    return kOk;
}

int Shell::execute(const std::vector<std::string>& words) {
    if (words.empty())
        return kOk;
    if (words[0] == "help") {
        if (words.size() == 1) {
            std::cout << cli::helpText();
            return kOk;
        }
        std::string h = cli::helpText(words[1]);
        if (h.empty()) {
            std::cerr << "pcloudsh: unknown command '" << words[1] << "'; try `help`\n";
            return kUsage;
        }
        std::cout << h;
        return kOk;
    }
    auto inv = cli::parse(words);
    if (!inv) {
        std::cerr << "pcloudsh: " << inv.error().describe() << "\n";
        return kUsage;
    }
    if (inv->command == "events" && inv->follow)
        return follow(*inv);
    auto r = call(inv->command, inv->args, o_.timeout_ms);
    if (!r) {
        if (r.error().message != "not connected")
            std::cerr << "pcloudsh: " << r.error().message << "\n";
        return kCpedError;
    }
    if (!r->value("ok", false)) {
        printError(*r, o_.json);
        return kCpedError;
    }
    const json& result = (*r)["result"];
    if (o_.json) {
        if (inv->command == "events") {
            for (const auto& e : result["events"])
                std::cout << e.dump() << "\n";
            std::cout.flush();
        } else {
            std::cout << result.dump() << std::endl;
        }
    } else {
        std::cout << cli::format(inv->command, result, ::isatty(1)) << std::flush;
    }
    if (inv->command == "ping") {
        // Like ping(8): success only if someone answered.
        for (const auto& p : result.value("pings", json::array()))
            if (p.value("ok", false))
                return kOk;
        return kCpedError;
    }
    return kOk;
}

// ---- interactive mode ----

Shell* g_shell = nullptr;
std::vector<std::string> g_matches;

char* matchGenerator(const char* text, int state) {
    static size_t index;
    if (state == 0)
        index = 0;
    std::string prefix = text;
    while (index < g_matches.size()) {
        const auto& m = g_matches[index++];
        if (m.rfind(prefix, 0) == 0)
            return ::strdup(m.c_str());
    }
    return nullptr;
}

char** complete(const char* text, int start, int) {
    rl_attempted_completion_over = 1; // no filename completion
    g_matches.clear();
    std::string before(rl_line_buffer, static_cast<size_t>(start));
    auto words = cli::splitLine(before);
    if (!words || words->empty()) {
        for (const auto& c : cli::commands())
            g_matches.push_back(c.name);
        g_matches.push_back("quit");
    } else {
        const auto& cmd = (*words)[0];
        // Count positional words (skip --options) to know which argument is being typed.
        size_t pos = 0;
        for (size_t i = 1; i < words->size(); ++i)
            if ((*words)[i].rfind("--", 0) != 0)
                ++pos;
        if (cmd == "help" && pos == 0) {
            for (const auto& c : cli::commands())
                g_matches.push_back(c.name);
        } else if (const auto* spec = cli::findCommand(cmd)) {
            if (std::string(text).rfind("--", 0) == 0) {
                // Options named in the usage line.
                std::string u = spec->usage;
                for (size_t p = u.find("--"); p != std::string::npos; p = u.find("--", p + 2)) {
                    size_t e = u.find_first_of(" ]|", p);
                    g_matches.push_back(u.substr(p, e - p));
                }
            } else if (pos < spec->args.size() && g_shell) {
                g_matches = g_shell->names(spec->args[pos]);
            }
        }
    }
    std::sort(g_matches.begin(), g_matches.end());
    g_matches.erase(std::unique(g_matches.begin(), g_matches.end()), g_matches.end());
    return rl_completion_matches(text, matchGenerator);
}

std::string historyPath() {
    const char* home = std::getenv("HOME");
    return std::string(home ? home : ".") + "/.pcloudsh_history";
}

std::optional<std::string> g_line;
bool g_eof = false;

void onLine(char* line) {
    // Removed here, not after rl_callback_read_char() returns: otherwise readline has
    // already drawn the next prompt above the command's output.
    rl_callback_handler_remove();
    if (!line) {
        g_eof = true;
        return;
    }
    g_line = line;
    std::free(line);
}

int Shell::interactive() {
    g_shell = this;
    const std::string hist = historyPath();
    using_history();
    // append_history() only appends to an existing file.
    if (read_history(hist.c_str()) != 0)
        write_history(hist.c_str());
    rl_readline_name = "pcloudsh";
    rl_attempted_completion_function = complete;
    rl_catch_signals = 0;
    if (::pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return kCpedError;
    struct sigaction sa {};
    sa.sa_handler = onSigint;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    const char* prompt = "pcloudsh> ";
    std::cout << "pcloudsh: connected to " << o_.broker << " (help lists commands, Ctrl-D exits)\n";
    rl_callback_handler_install(prompt, onLine);
    int lastStatus = kOk;
    while (!g_eof) {
        pollfd fds[2] = {{0, POLLIN, 0}, {g_sigpipe[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents & POLLIN) {
            char buf[64];
            while (::read(g_sigpipe[0], buf, sizeof buf) > 0) {
            }
            g_interrupted = false;
            // Ctrl-C: drop the line being typed and show a fresh prompt.
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_replace_line("", 0);
            std::cout << "^C" << std::endl;
            rl_on_new_line();
            rl_redisplay();
        }
        if (fds[0].revents & (POLLIN | POLLHUP))
            rl_callback_read_char();
        if (g_eof)
            break;
        if (g_line) {
            std::string line = std::move(*g_line);
            g_line.reset();
            auto words = cli::splitLine(line);
            if (!words) {
                std::cerr << "pcloudsh: " << words.error().message << "\n";
            } else if (!words->empty()) {
                add_history(line.c_str());
                append_history(1, hist.c_str());
                history_truncate_file(hist.c_str(), 1000);
                if ((*words)[0] == "quit" || (*words)[0] == "exit")
                    break;
                g_interrupted = false;
                lastStatus = execute(*words);
                g_interrupted = false;
                char buf[64];
                while (::read(g_sigpipe[0], buf, sizeof buf) > 0) {
                }
            }
            rl_callback_handler_install(prompt, onLine);
        }
    }
    rl_callback_handler_remove();
    if (g_eof)
        std::cout << std::endl;
    return lastStatus == kUsage ? kOk : kOk;
}

const char* kUsageText = R"(Usage: pcloudsh [OPTIONS] [COMMAND ARGS...]
Without a command: an interactive shell (history in ~/.pcloudsh_history, Tab completes).
Options:
  --broker URL          the hub or broker cped uses (default amqps://127.0.0.1:5671; or
                        PCLOUD_BROKER)
  --bus-ca FILE         amqps://: the CA (default PKI_DIR/ca.crt)
  --bus-cert FILE       amqps://: the operator certificate (default PKI_DIR/operator.NAME.crt,
  --bus-key FILE        NAME from 'operator = NAME' in pcloud.conf, or the only one there)
  --config PATH         host configuration (default /etc/pcloud/pcloud.conf): pki_dir, operator
  --address-prefix P    address prefix (e.g. /queue/ for RabbitMQ)
  --json                machine-readable output (one JSON document or JSON lines)
  --timeout SECONDS     how long to wait for cped (default 30)
Exit status: 0 success, 1 error reported by cped (or cped unreachable), 2 usage error.
Run `pcloudsh help` for the commands.
)";

} // namespace

int runShell(int argc, char** argv) {
    // The shell prints; bus internals only speak up when something is really wrong.
    if (!std::getenv("PCLOUD_LOG_LEVEL"))
        log::setLevel(log::Level::Error);
    log::setIdent("pcloudsh");
    ShellOptions o;
    if (const char* b = std::getenv("PCLOUD_BROKER"))
        o.broker = b;
    std::vector<std::string> words;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (!words.empty()) { // options after the command belong to the command, except these
            if (a == "--json") {
                o.json = true;
                continue;
            }
            words.push_back(a);
            continue;
        }
        auto value = [&](std::string& out) { return args::optionValue(argc, argv, i, out); };
        if (a == "--help" || a == "-h") {
            std::cout << kUsageText;
            return kOk;
        } else if (a == "--json") {
            o.json = true;
        } else if (a.rfind("--broker", 0) == 0) {
            if (!value(o.broker))
                return (std::cerr << "pcloudsh: --broker needs a URL\n", kUsage);
        } else if (a.rfind("--bus-ca", 0) == 0 || a.rfind("--bus-cert", 0) == 0 ||
                   a.rfind("--bus-key", 0) == 0 || a.rfind("--config", 0) == 0) {
            std::string key = a.substr(0, a.find('='));
            std::string* target = key == "--bus-ca"     ? &o.bus_ca
                                  : key == "--bus-cert" ? &o.bus_cert
                                  : key == "--bus-key"  ? &o.bus_key
                                  : key == "--config"   ? &o.config
                                                        : nullptr;
            if (!target)
                return (std::cerr << "pcloudsh: unknown option " << a << "\n", kUsage);
            if (!value(*target))
                return (std::cerr << "pcloudsh: " << key << " needs a path\n", kUsage);
        } else if (a.rfind("--address-prefix", 0) == 0) {
            if (!value(o.prefix))
                return (std::cerr << "pcloudsh: --address-prefix needs a value\n", kUsage);
        } else if (a.rfind("--timeout", 0) == 0) {
            std::string v;
            if (!value(v))
                return (std::cerr << "pcloudsh: --timeout needs seconds\n", kUsage);
            char* end = nullptr;
            double s = std::strtod(v.c_str(), &end);
            if (end == v.c_str() || *end || s <= 0)
                return (std::cerr << "pcloudsh: bad --timeout '" << v << "'\n", kUsage);
            o.timeout_ms = static_cast<Millis>(s * 1000);
        } else if (a.rfind("--", 0) == 0) {
            std::cerr << "pcloudsh: unknown option " << a << "\n" << kUsageText;
            return kUsage;
        } else {
            words.push_back(a);
        }
    }
    // Every way out closes the bus connection first (an AMQP close: cped logs nothing, where a
    // connection dropped by _exit() showed up in its log as a transport error).
    Shell shell(o);
    auto leave = [&shell](int status) {
        shell.close();
        std::cout.flush();
        return status;
    };
    if (words.empty()) {
        if (!::isatty(0)) {
            // Commands from a pipe, one per line.
            std::string line;
            int status = kOk;
            while (std::getline(std::cin, line)) {
                auto w = cli::splitLine(line);
                if (!w)
                    return (std::cerr << "pcloudsh: " << w.error().message << "\n", kUsage);
                if (w->empty() || (*w)[0][0] == '#')
                    continue;
                status = shell.execute(*w);
                if (status != kOk)
                    return leave(status);
            }
            return leave(status);
        }
        return leave(shell.interactive());
    }
    // One-shot: Ctrl-C ends a follow cleanly.
    if (::pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) == 0) {
        struct sigaction sa {};
        sa.sa_handler = onSigint;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, nullptr);
        ::sigaction(SIGTERM, &sa, nullptr);
    }
    return leave(shell.execute(words));
}

} // namespace pcloud::shell
