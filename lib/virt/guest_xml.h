#pragma once
// Domain XML helpers: the tiny test guest's XML (from guest/domain.xml.in, compiled in) and
// the channel injection dped applies to operator-supplied domain XML. Pure functions on
// strings; they parse with pugixml and return Result, never throw.

#include "common/result.h"

#include <optional>
#include <string>

namespace pcloud::virt {

// The virtio-serial channel name the agent looks for in the guest.
inline constexpr const char* kAgentChannelName = "org.pcloud.agent.0";

// <name> of a domain XML, if it parses and has one.
std::optional<std::string> domainNameOf(const std::string& xml);
// <uuid> of a domain XML, if it parses and has one.
std::optional<std::string> domainUuidOf(const std::string& xml);

// Makes sure the domain has the pcloud agent channel and a UUID:
//  - no <channel> whose <target name='org.pcloud.agent.0'/>: add
//      <channel type='unix'><source mode='bind' path=SOCKET/>
//        <target type='virtio' name='org.pcloud.agent.0'/></channel>
//    (an existing one is kept as the operator wrote it);
//  - no <uuid> and `uuid` non-empty: add <uuid>uuid</uuid>.
// Errors name `what` (e.g. the assembly) and say what is wrong: not XML, no <domain>, no
// <devices> is added rather than an error.
Result<std::string> injectAgentChannel(const std::string& xml, const std::string& socketPath,
                                       const std::string& uuid, const std::string& what = {});

// The socket path an existing agent channel binds to ("" when there is none).
std::string agentChannelPath(const std::string& xml);

// The tiny test guest (docs/guest.md).
struct TinyGuest {
    std::string name;
    std::string uuid;   // empty = let libvirt pick
    std::string kernel; // e.g. /var/cache/pcloud/guest/none/vmlinuz
    std::string initrd;
    std::string consoleLog;    // serial console goes to this file
    std::string channelSocket; // host side of org.pcloud.agent.0
    int httpPort = 0;          // 127.0.0.1:httpPort -> guest :80
    int memoryMib = 128;
};
Result<std::string> renderTinyGuestXml(const TinyGuest& guest);

// A tiny guest named `name` booting the image in `guestDir` (vmlinuz, initrd.img, as
// scripts/build-guest.sh leaves them), with a fresh random UUID and the layout dped uses
// under `stateDir`: console log NAME.console.log, channel socket channels/NAME.sock.
TinyGuest tinyGuestIn(const std::string& name, const std::string& guestDir,
                      const std::string& stateDir, int httpPort);

// A random RFC 4122 version 4 UUID string.
std::string randomUuid();

} // namespace pcloud::virt
