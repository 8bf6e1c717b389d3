#pragma once
// Network namespaces for tests that need real interfaces without touching the host's: the
// test makes them (`ip netns add`), joins them with veth pairs, and deletes them at the
// end. Needs root. Namespace names start with "pcloud-h-" and carry the test's pid, so
// parallel runs do not collide. Nothing here asserts; callers do.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pcloud::testsupport {

// "pcloud-h-<what><pid>".
std::string netnsName(const std::string& what);

// Runs each command (through /bin/sh); "" or the first that failed with its output.
std::string runAll(const std::vector<std::string>& cmds);

// Enters network namespace `ns` in the calling thread only (setns(CLONE_NEWNET) is per
// thread; a forked child inherits it); "" or why not.
std::string enterNetns(const std::string& ns);
// Runs `fn` on a new thread inside `ns` and waits for it. Sockets it opens stay there.
std::string inNetns(const std::string& ns, const std::function<void()>& fn);

// `ip -br link` fields of `dev` in `ns`: the operational state ("UP") and the MAC.
std::string linkState(const std::string& ns, const std::string& dev);
std::string linkMac(const std::string& ns, const std::string& dev);
// Whether `ip -4 addr show dev DEV` in `ns` lists `cidr` ("10.9.0.100/24").
bool hasIpv4(const std::string& ns, const std::string& dev, const std::string& cidr);

// Forks and execs `argv` inside network namespace `ns`, stdout and stderr appended to
// `log`; the child dies with the test (PR_SET_PDEATHSIG). Returns the pid.
pid_t spawnInNetns(const std::string& ns, const std::vector<std::string>& argv,
                   const std::string& log);

// A raw ARP socket on one interface (opened inside its namespace).
class ArpCapture {
public:
    ArpCapture() = default;
    ArpCapture(const ArpCapture&) = delete;
    ArpCapture& operator=(const ArpCapture&) = delete;
    ~ArpCapture();
    // "" or why not.
    std::string open(const std::string& ns, const std::string& dev);
    // The ARP frames (whole Ethernet frames, any op) whose sender IP is `ip` (host byte
    // order), read until `want` came or `timeout` passed.
    std::vector<std::vector<std::uint8_t>> read(std::uint32_t ip, std::size_t want,
                                                std::chrono::milliseconds timeout);

private:
    int fd_ = -1;
};

// "aa:bb:cc:dd:ee:ff" of an ARP frame's sender hardware address.
std::string arpSenderMac(const std::vector<std::uint8_t>& frame);

} // namespace pcloud::testsupport
