#pragma once
// Host configuration: what pcloud may do on THIS host, decided by its administrator, never
// by a bus message or a store file. cped checks commands against it when they arrive and
// dped checks again before acting (store files can be edited by hand).
//
// /etc/pcloud/pcloud.conf (root-owned, not writable by group or others), `key = value`
// lines, '#' starts a comment line. A missing default file means the safe defaults below;
// a file named with --config must exist. See docs/security.md for the reference.

#include "common/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pcloud::hostconfig {

inline constexpr const char* kDefaultPath = "/etc/pcloud/pcloud.conf";

// What a domain's <qemu:commandline> may hold.
enum class QemuCommandline {
    None,       // no <qemu:commandline> at all (default)
    NetdevUser, // only "-netdev user,..." (no guestfwd/smb/tftp) and "-device virtio-net-pci,..."
};

// An IPv4 address with its prefix length ("10.9.0.100/24").
struct Ipv4Cidr {
    std::uint32_t address = 0; // host byte order
    int prefix = 0;            // 1..32
    std::string toString() const;
};

// "A.B.C.D/N" with N from 1 to 32, a unicast host address (not the network or broadcast
// address of its prefix, not 0/8, 127/8 or 224/3). The error says what is wrong with `text`.
Result<Ipv4Cidr> parseIpv4Cidr(const std::string& text);

struct HostConfig {
    std::string source; // the file it came from; "" = built-in defaults (no file)
    // Balancer programs dped runs, split on blanks (no shell): the commands pcloud may
    // exec as root. Never taken from the bus.
    std::string apachectl = "apachectl";
    std::string nginx = "nginx";
    // Directories where the apache and nginx referees may write their managed file.
    std::vector<std::string> referee_dirs = {"/etc/pcloud/referee"};
    QemuCommandline qemu_commandline = QemuCommandline::None;
    // <hostdev>, <filesystem>, <redirdev>, <interface type='hostdev'>, <smartcard
    // mode='host'>: devices that hand host resources to the guest.
    bool allow_host_devices = false;
    // Certificates for the bus (docs/security.md): the PKI directory (pcloud-pki --dir), the
    // operator certificate pcloudsh presents (operator.NAME in it; "" = the only one there)
    // and cped's own (cped.NAME; "" = the short host name).
    std::string pki_dir = "/etc/pcloud/pki";
    std::string operator_name;
    std::string cped_name;
    // Fence agents (docs/hosts.md): a host's agent is a name ("fence_virsh") run as
    // FENCE_AGENTS_DIR/NAME, never a path from the bus or a store file. `fence_agent` lines
    // narrow the names allowed; none = any fence_* in the directory.
    std::string fence_agents_dir = "/usr/sbin";
    std::vector<std::string> fence_agents;
    // Where the disk images of assemblies created from an image (--image PATH) may be.
    std::vector<std::string> image_dirs = {"/var/lib/libvirt/images", "/var/lib/pcloud"};
    // The zone's floating address (docs/ha.md "Floating IP"): while this host's cped leads,
    // it holds `floating_ip` on the Ethernet interface `floating_dev`. Both or neither.
    std::optional<Ipv4Cidr> floating_ip;
    std::string floating_dev;
    // TLS to etcd (docs/ha.md "TLS to etcd"), for cped --cluster etcds://...: the CA that
    // signed the etcd members' certificates, and the client certificate and key cped
    // presents (etcd --client-cert-auth). Absolute paths; the certificate and key both or
    // neither, and not without the CA.
    std::string etcd_ca;
    std::string etcd_cert;
    std::string etcd_key;
};

// Parses the text of a config file; errors name `path`:line and say the fix.
Result<HostConfig> parse(const std::string& text, const std::string& path);
// Reads `path`. When it does not exist: the defaults if `mustExist` is false (the default
// path), else an error. A file writable by group or others, or not owned by root or the
// current user, is refused (anyone who can write it can make pcloud run programs as root).
Result<HostConfig> load(const std::string& path, bool mustExist);

const char* toString(QemuCommandline q);

} // namespace pcloud::hostconfig
