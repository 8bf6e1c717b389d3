#include "agent/config.h"

#include "common/fs.h"
#include "common/log.h"
#include "common/time_format.h"

#include <charconv>

namespace pcloud::agent {
namespace {

std::string trim(std::string_view s) {
    auto b = s.find_first_not_of(" \t\r");
    if (b == std::string_view::npos)
        return {};
    auto e = s.find_last_not_of(" \t\r");
    return std::string(s.substr(b, e - b + 1));
}

bool parseInt(std::string_view s, long long& out) {
    if (s.empty())
        return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

Result<Millis> positiveDuration(const std::string& key, const std::string& value) {
    auto d = parseDuration(value);
    if (!d || *d <= 0)
        return makeError(key + " must be a positive duration such as 500ms or 2s, not '" + value +
                         "'");
    return *d;
}

} // namespace

std::vector<std::string> splitWords(std::string_view text) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t'))
            ++i;
        std::size_t j = i;
        while (j < text.size() && text[j] != ' ' && text[j] != '\t')
            ++j;
        if (j > i)
            out.emplace_back(text.substr(i, j - i));
        i = j;
    }
    return out;
}

Result<Endpoint> parseEndpoint(std::string_view text) {
    Endpoint ep;
    if (text.rfind("virtio:", 0) == 0) {
        ep.kind = Endpoint::Kind::Virtio;
        ep.port_name = std::string(text.substr(7));
        if (ep.port_name.empty() || ep.port_name.find('/') != std::string::npos)
            return makeError("virtio endpoint needs a port name, e.g. virtio:org.pcloud.agent.0");
        return ep;
    }
    if (text.rfind("amqps://", 0) == 0) {
        ep.tls = true;
        ep.port = 5671;
    } else if (text.rfind("amqp://", 0) != 0) {
        return makeError("connect must be amqp://HOST:PORT, amqps://HOST:PORT or virtio:NAME, "
                         "not '" +
                         std::string(text) + "'");
    }
    std::string_view rest = text.substr(ep.tls ? 8 : 7);
    if (auto at = rest.rfind('@'); at != std::string_view::npos) {
        std::string_view cred = rest.substr(0, at);
        rest = rest.substr(at + 1);
        auto colon = cred.find(':');
        ep.user = std::string(cred.substr(0, colon));
        if (colon != std::string_view::npos)
            ep.password = std::string(cred.substr(colon + 1));
    }
    if (auto slash = rest.find('/'); slash != std::string_view::npos)
        rest = rest.substr(0, slash);
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) {
        ep.host = std::string(rest);
    } else {
        ep.host = std::string(rest.substr(0, colon));
        long long port = 0;
        if (!parseInt(rest.substr(colon + 1), port) || port <= 0 || port > 65535)
            return makeError("bad port in '" + std::string(text) + "'");
        ep.port = static_cast<int>(port);
    }
    if (ep.host.empty())
        return makeError("no host in '" + std::string(text) + "'");
    return ep;
}

Result<model::Probe> parseProbeSpec(std::string_view text) {
    auto words = splitWords(text);
    model::Probe p;
    if (words.size() < 3)
        return makeError("probe needs 'http HOST PORT [PATH [STATUS]]' or 'tcp HOST PORT'");
    if (!model::parseProbeKind(words[0], p.kind))
        return makeError("probe kind must be http or tcp, not '" + words[0] + "'");
    p.host = words[1];
    long long n = 0;
    if (!parseInt(words[2], n) || n <= 0 || n > 65535)
        return makeError("probe port must be 1..65535, not '" + words[2] + "'");
    p.port = static_cast<int>(n);
    std::size_t i = 3;
    if (p.kind == model::ProbeKind::Http) {
        if (i < words.size() && words[i].find('=') == std::string::npos) {
            p.path = words[i++];
            if (p.path.empty() || p.path[0] != '/')
                return makeError("probe path must start with '/', not '" + p.path + "'");
        }
        if (i < words.size() && words[i].find('=') == std::string::npos) {
            if (!parseInt(words[i], n) || n < 100 || n > 599)
                return makeError("probe expected status must be 100..599, not '" + words[i] + "'");
            p.expect_status = static_cast<int>(n);
            ++i;
        }
    }
    for (; i < words.size(); ++i) {
        auto eq = words[i].find('=');
        if (eq == std::string::npos)
            return makeError("unexpected probe word '" + words[i] + "'");
        std::string k = words[i].substr(0, eq), v = words[i].substr(eq + 1);
        if (k == "interval" || k == "timeout") {
            auto d = positiveDuration("probe " + k, v);
            if (!d)
                return d.error();
            (k == "interval" ? p.interval : p.timeout) = *d;
        } else if (k == "threshold") {
            if (!parseInt(v, n) || n < 1)
                return makeError("probe threshold must be >= 1");
            p.threshold = static_cast<int>(n);
        } else {
            return makeError("unknown probe option '" + k + "' (interval, timeout, threshold)");
        }
    }
    return p;
}

Status applySetting(AgentConfig& cfg, const std::string& key, const std::string& value) {
    if (key == "connect") {
        auto ep = parseEndpoint(value);
        if (!ep)
            return ep.error();
        cfg.connect = value;
    } else if (key == "assembly") {
        if (!model::isValidName(value))
            return makeError("assembly '" + value + "' is not a valid name");
        cfg.assembly = value;
    } else if (key == "watch") {
        for (auto& w : splitWords(value)) {
            for (std::size_t b = 0; b <= w.size();) { // also accept commas
                auto e = w.find(',', b);
                if (e == std::string::npos)
                    e = w.size();
                if (e > b)
                    cfg.watch.push_back(w.substr(b, e - b));
                b = e + 1;
            }
        }
    } else if (key == "backend") {
        if (value == "systemd")
            cfg.backend = BackendKind::Systemd;
        else if (value == "process")
            cfg.backend = BackendKind::Process;
        else
            return makeError("backend must be systemd or process, not '" + value + "'");
    } else if (key == "address_prefix") {
        cfg.address_prefix = value;
    } else if (key == "bus_ca" || key == "bus_cert" || key == "bus_key") {
        if (value.empty() || value[0] != '/')
            return makeError(key + " must be an absolute file path, not '" + value + "'");
        (key == "bus_ca" ? cfg.bus_ca : key == "bus_cert" ? cfg.bus_cert : cfg.bus_key) = value;
    } else if (key == "heartbeat_interval") {
        auto d = positiveDuration(key, value);
        if (!d)
            return d.error();
        cfg.heartbeat_interval = *d;
    } else if (key == "max_message_size") {
        long long n = 0;
        if (!parseInt(value, n) || n < 1024 || n > 64ll * 1024 * 1024)
            return makeError("max_message_size must be a byte count from 1024 to 67108864");
        cfg.max_message_size = static_cast<std::size_t>(n);
    } else if (key == "log_level") {
        log::Level l;
        if (!log::parseLevel(value, l))
            return makeError("log_level must be error, warning, notice, info or debug");
        cfg.log_level = value;
    } else if (key == "run_dir") {
        if (value == "none") {
            cfg.run_dir.clear();
        } else {
            if (value.size() < 2 || value[0] != '/' || value.back() == '/' ||
                value.find("/../") != std::string::npos || value.ends_with("/..") ||
                value.find('\0') != std::string::npos)
                return makeError("run_dir must be an absolute directory path without '..' "
                                 "(e.g. /run/pcloud-agent) or none, not '" +
                                 value + "'");
            cfg.run_dir = value;
        }
    } else if (key == "ca") {
        if (value == "none") {
            cfg.ca.clear();
        } else {
            if (value.empty() || value[0] != '/')
                return makeError("ca must be the absolute path of the CA certificate (PEM), "
                                 "e.g. /etc/pcloud/pki/ca.crt, or none, not '" +
                                 value + "'");
            cfg.ca = value;
        }
    } else if (key == "deployable") {
        if (!model::isValidName(value))
            return makeError("deployable '" + value + "' is not a valid name");
        cfg.deployable = value;
    } else if (key == "clock_skew") {
        auto d = parseDuration(value);
        if (!d || *d < 0 || *d > 3'600'000)
            return makeError("clock_skew must be a duration from 0 to 1h such as 30s, not '" +
                             value + "'");
        cfg.clock_skew = *d;
    } else if (key.rfind("process.", 0) == 0 && key.size() > 8) {
        if (value.empty())
            return makeError(key + " needs a command line");
        cfg.process_commands[key.substr(8)] = value;
    } else if (key.rfind("probe.", 0) == 0 && key.size() > 6) {
        auto p = parseProbeSpec(value);
        if (!p)
            return p.error();
        cfg.probes[key.substr(6)] = *p;
    } else {
        return makeError("unknown setting '" + key + "'");
    }
    return {};
}

Status parseConfigText(AgentConfig& cfg, std::string_view text, const std::string& file) {
    int lineNo = 0;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        auto nl = text.find('\n', pos);
        if (nl == std::string_view::npos)
            nl = text.size();
        std::string line = trim(text.substr(pos, nl - pos));
        pos = nl + 1;
        ++lineNo;
        if (line.empty() || line[0] == '#')
            continue;
        auto eq = line.find('=');
        if (eq == std::string::npos)
            return makeError("expected 'key = value', got '" + line + "'", file, lineNo);
        std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
        if (key.empty())
            return makeError("missing key before '='", file, lineNo);
        if (auto st = applySetting(cfg, key, value); !st)
            return makeError(st.error().message, file, lineNo);
    }
    cfg.config_file = file;
    return {};
}

std::string usageText() {
    return R"(Usage: pcloud-agent [OPTIONS]

pcloud's in-guest agent: watches services (systemd units over D-Bus, or processes it
starts itself), reports their state and heartbeats over AMQP 1.0, and runs start/stop/
restart commands from its controller. Protocol: docs/protocol/agent.md.

Options (each also a config file key, with '-' written as '_'; the command line wins):
  --connect amqp://[USER:PASS@]HOST:PORT | virtio:NAME
                         Where the hub is: AMQP over TCP, or AMQP over the virtio-serial
                         port named NAME (found under /sys/class/virtio-ports/*/name).
                         Default amqp://127.0.0.1:5672.
  --assembly NAME        This guest's assembly name, used in the AMQP addresses.
                         Default: /sys/class/dmi/id/product_uuid.
  --watch UNIT...        Units (systemd) or resources (process backend) to watch. Takes
                         every following word up to the next option. The controller can
                         replace the list with a 'watch' command.
  --backend systemd|process
                         systemd: follow units over the system D-Bus (default).
                         process: start each resource's command itself (process.NAME in
                         the config file) and watch it with pidfd.
  --config FILE          Read settings from FILE (default /etc/pcloud/agent.conf if present).
  --address-prefix P     Prepended to every AMQP address (e.g. /queue/ for RabbitMQ).
  --heartbeat-interval D Heartbeat period, e.g. 500ms, 2s (default 2s).
  --max-message-size N   Largest accepted incoming message in bytes (default 65536).
  --log-level L          error, warning, notice (default), info or debug.
  --run-dir DIR          Process backend: where the processes it started are recorded
                         (created 0700), so that an agent restarted after a kill adopts
                         them instead of starting second copies; with --ca also the
                         replay cache of signed commands (replay.json). Default
                         /run/pcloud-agent; 'none' records nothing.
  --ca FILE              The CA certificate (PEM). When set, every command must be a
                         signed envelope whose signer that CA vouches for and who may
                         command this agent (operator:*, or dped:DEPLOYABLE); anything
                         else gets an error reply and changes nothing. Without it the
                         agent warns at start that commands are not authenticated.
  --deployable NAME      The deployable this agent belongs to: its dped may command it.
  --clock-skew D         Allowed difference to the sender's clock (default 30s).
  --help                 Show this text.  --version  Show the version.

Config file (one 'key = value' per line, '#' starts a comment):
  connect = virtio:org.pcloud.agent.0
  assembly = node01
  # over TCP with TLS instead: connect = amqps://HOST:5671 and the agent:node01 files
  #   bus_ca = /etc/pcloud/pki/ca.crt
  #   bus_cert = /etc/pcloud/pki/agent.node01.crt
  #   bus_key = /etc/pcloud/pki/agent.node01.key
  backend = process
  heartbeat_interval = 1s
  watch = httpd
  process.httpd = /bin/busybox httpd -f -p 80 -h /www
  probe.httpd = http 127.0.0.1 80 / 200 interval=5s timeout=2s threshold=3
  probe.db = tcp 127.0.0.1 5432
A bad line is reported as FILE:LINE and the agent exits with status 2.

Addresses: reports go to <prefix>pcloud.reports.<assembly>; commands are read from
<prefix>pcloud.agent.<assembly>.
)";
}

Result<CommandLine> parseCommandLine(const std::vector<std::string>& args,
                                     const std::string& defaultConfig) {
    CommandLine cl;
    // Pass 1: --config, --help, --version.
    std::string configFile;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--help" || a == "-h")
            cl.help = true;
        else if (a == "--version")
            cl.version = true;
        else if (a == "--config") {
            if (i + 1 >= args.size())
                return makeError("--config needs a FILE");
            configFile = args[++i];
        } else if (a.rfind("--config=", 0) == 0)
            configFile = a.substr(9);
    }
    if (cl.help || cl.version)
        return cl;
    if (configFile.empty() && !defaultConfig.empty() && fs::exists(defaultConfig))
        configFile = defaultConfig;
    if (!configFile.empty()) {
        auto text = fs::readFile(configFile);
        if (!text)
            return makeError("cannot read config: " + text.error().describe(), configFile);
        if (auto st = parseConfigText(cl.config, *text, configFile); !st)
            return st.error();
    }
    // Pass 2: the other options override the file.
    bool watchFromArgs = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        if (a == "--help" || a == "-h" || a == "--version")
            continue;
        if (a.rfind("--", 0) != 0)
            return makeError("unexpected argument '" + a + "'");
        std::string key = a.substr(2), value;
        bool inlineValue = false;
        if (auto eq = key.find('='); eq != std::string::npos) {
            value = key.substr(eq + 1);
            key = key.substr(0, eq);
            inlineValue = true;
        }
        for (auto& c : key)
            if (c == '-')
                c = '_';
        if (key == "config") {
            if (!inlineValue)
                ++i;
            continue;
        }
        if (key == "watch") {
            if (!watchFromArgs)
                cl.config.watch.clear(); // the command line replaces the file
            watchFromArgs = true;
            if (inlineValue) {
                if (auto st = applySetting(cl.config, key, value); !st)
                    return st.error();
            }
            while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0)
                if (auto st = applySetting(cl.config, key, args[++i]); !st)
                    return st.error();
            continue;
        }
        static const char* known[] = {"connect",
                                      "assembly",
                                      "backend",
                                      "address_prefix",
                                      "heartbeat_interval",
                                      "max_message_size",
                                      "log_level",
                                      "run_dir",
                                      "ca",
                                      "deployable",
                                      "clock_skew"};
        bool ok = false;
        for (const char* k : known)
            ok = ok || key == k;
        if (!ok)
            return makeError("unknown option '" + a + "' (see --help)");
        if (!inlineValue) {
            if (i + 1 >= args.size())
                return makeError("option " + a + " needs a value");
            value = args[++i];
        }
        if (auto st = applySetting(cl.config, key, value); !st)
            return makeError("--" + key + ": " + st.error().message);
    }
    return cl;
}

} // namespace pcloud::agent
