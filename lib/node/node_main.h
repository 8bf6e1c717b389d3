#pragma once
// pcloud-node's process: options, the libvirt connection, the pidfd watcher, the bus client
// that serves "pcloud.node.<name>" and publishes on "pcloud.nodes.<name>", and the heartbeat.
// node/main.cc only calls nodeMain().
#include "common/clock.h"
#include "common/result.h"

#include <string>

namespace pcloud::node {

struct Options {
    std::string name; // the host's name (model name grammar)
    std::string uri = "qemu:///system";
    std::string broker = "amqp://127.0.0.1:5672";
    std::string address_prefix;
    std::string state_dir = "/var/lib/pcloud";
    std::string config; // host configuration; "" = /etc/pcloud/pcloud.conf if present
    std::string log_level;
    Millis heartbeat_ms = 1000; // 50..60000
};

// Errors say which option is wrong; --help gives an Error whose file is "help".
Result<Options> parseOptions(int argc, char** argv);
std::string usage();

// Runs until SIGTERM/SIGINT (exit 0; the VMs keep running). Returns an ExitCode value.
int runNode(const Options& options);
int nodeMain(int argc, char** argv);

} // namespace pcloud::node
