#pragma once
// dped's process: option parsing and the wiring of the reactor (reactor.h) to the real
// world: the bus client, libvirt, the pidfd watcher, the guest channel relays, a referee
// worker thread, the libvirt job lanes (job_runner.h), signals and the reactor thread's
// inbox. dped/main.cc only calls runDped().

#include "common/clock.h"
#include "common/result.h"

#include <cstdint>
#include <string>

namespace pcloud::dped {

struct Options {
    std::string deployable;
    std::string state_dir = "/var/lib/pcloud";
    std::string broker = "amqps://127.0.0.1:5671";
    std::string address_prefix;
    std::string uri;       // overrides the deployable's libvirt URI when set
    std::string log_level; // error|warning|notice|info|debug
    // How often the referee worker re-reads the balancer and repairs drift (an HAProxy
    // restart loses every runtime change). Tests shorten it; 100..3600000 ms.
    Millis referee_reconcile_ms = 10'000;
    // Host configuration (common/host_config.h); "" = /etc/pcloud/pcloud.conf, which may be
    // absent (safe defaults). A path given with --config must exist.
    std::string config;
    // Signed commands to agents (docs/protocol/agent.md "Signed commands"): the PEM key
    // (0600) and certificate of dped:<deployable>. Both or neither.
    std::string key;
    std::string cert;
    // --pki-dir DIR: the same as --key DIR/dped.<deployable>.key --cert
    // DIR/dped.<deployable>.crt (the PKI layout of docs/security.md), so one option serves
    // every dped cped starts.
    std::string pki_dir;
    // The host whose pcloud-node drives the domains ("" = libvirt here, at `uri`).
    std::string node;
    // The bus certificate for an amqps:// broker (docs/security.md); "" = dped.DEPLOYABLE
    // in the host configuration's pki_dir (cped passes these for the dpeds it starts).
    std::string bus_ca, bus_cert, bus_key;
    // --epoch N: the leadership epoch of the cped that started this dped (docs/ha.md
    // "Epoch fencing"), carried in every agent envelope and node request. cped raises it
    // with the "epoch" request when a newer leader adopts this dped. 0 = unfenced.
    std::uint64_t epoch = 0;
};

// Errors say which option is wrong; --help gives an Error whose message is the usage text
// and whose file is "help".
Result<Options> parseOptions(int argc, char** argv);
std::string usage();

// Runs dped until SIGTERM/SIGINT (exit 0, VMs left running) or a finished planned stop
// (exit 0). Returns an ExitCode value.
int runDped(const Options& options);
int dpedMain(int argc, char** argv);

} // namespace pcloud::dped
