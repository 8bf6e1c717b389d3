#pragma once
// pcloud-agent settings: a config file (key = value lines) with command-line overrides.
// Parsing is pure and returns Result; a bad line names FILE:LINE.

#include "common/clock.h"
#include "common/result.h"
#include "model/model.h"

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pcloud::agent {

enum class BackendKind { Systemd, Process };

struct Endpoint {
    enum class Kind { Tcp, Virtio } kind = Kind::Tcp;
    std::string host = "127.0.0.1"; // tcp
    int port = 5672;                // tcp
    std::string user, password;     // tcp, optional (SASL PLAIN); else SASL ANONYMOUS
    std::string port_name;          // virtio: the channel name, e.g. org.pcloud.agent.0
    // amqps://HOST:PORT: mutual TLS with SASL EXTERNAL (docs/security.md). The files come
    // from the bus_ca, bus_cert and bus_key settings; the certificate is agent:ASSEMBLY.
    bool tls = false;
    std::string ca, cert, key;
};
Result<Endpoint> parseEndpoint(std::string_view text);

struct AgentConfig {
    std::string connect = "amqp://127.0.0.1:5672";
    std::string bus_ca, bus_cert, bus_key; // amqps:// only
    std::string assembly;                  // empty = /sys/class/dmi/id/product_uuid
    std::vector<std::string> watch;
    BackendKind backend = BackendKind::Systemd;
    std::string address_prefix; // e.g. "/queue/" for RabbitMQ
    Millis heartbeat_interval = 2'000;
    std::size_t max_message_size = 64 * 1024;
    std::string log_level = "notice";
    // Process backend: where the processes it started are recorded, so that a restarted
    // agent adopts them (docs/agent.md). Empty ("none" in the file) records nothing.
    std::string run_dir = "/run/pcloud-agent";
    std::map<std::string, std::string> process_commands; // process backend: unit -> command
    std::map<std::string, model::Probe> probes;          // unit -> readiness probe
    // Signed commands (docs/protocol/agent.md "Signed commands"): with a CA certificate,
    // every command must be a signed envelope from an identity that certificate vouches
    // for, and that may command this agent: operator:* or dped:<deployable>.
    std::string ca;         // PEM file of the CA certificate; empty = unauthenticated
    std::string deployable; // the deployable this agent belongs to; empty = operators only
    Millis clock_skew = 30'000;
    std::string config_file; // where the settings came from, for messages
};

// One "key = value" setting applied to cfg. Shared by the file parser and the command line.
Status applySetting(AgentConfig& cfg, const std::string& key, const std::string& value);

// Parses config file text; `file` only names the source in errors ("FILE:LINE: ...").
Status parseConfigText(AgentConfig& cfg, std::string_view text, const std::string& file);

// Parses "kind host port [path expect] [interval=D] [timeout=D] [threshold=N]".
Result<model::Probe> parseProbeSpec(std::string_view text);

struct CommandLine {
    AgentConfig config;
    bool help = false;
    bool version = false;
};

// argv without argv[0]. Reads --config FILE (or /etc/pcloud/agent.conf when it exists and
// defaultConfig is set) first, then applies the other options over it.
Result<CommandLine> parseCommandLine(const std::vector<std::string>& args,
                                     const std::string& defaultConfig = "/etc/pcloud/agent.conf");

std::string usageText();

// Splits on whitespace; no shell quoting beyond that (commands are exec'd directly).
std::vector<std::string> splitWords(std::string_view text);

} // namespace pcloud::agent
