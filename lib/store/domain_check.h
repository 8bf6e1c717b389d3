#pragma once
// What operator-supplied libvirt domain XML may ask of the host. The XML arrives over the
// bus (assembly_create) and libvirt acts on it as root, so anything that runs a host
// program or hands host resources to the guest is refused unless the host configuration
// allows it. cped checks when the assembly is created, dped again before defining it.
//
// Refused unless allowed:
//  - <qemu:commandline> (the QEMU namespace, whatever its prefix): only with
//    qemu_commandline = netdev-user, and then only <qemu:arg> pairs "-netdev user,..."
//    (no guestfwd/smb/tftp/bootfile: they run programs or share host dirs) and
//    "-device virtio-net-pci,..." (no romfile); never <qemu:env> or other QEMU elements;
//  - <hostdev>, <filesystem>, <redirdev>, <interface type='hostdev'>, <smartcard
//    mode='passthrough'>: only with allow_host_devices = yes.
// Always refused: <interface> <script>/<downscript> (a host program libvirt runs), an
// <emulator> other than /usr/bin/qemu-system-* or /usr/bin/kvm, elements of any other
// XML namespace.

#include "common/host_config.h"
#include "common/result.h"

#include <string>

namespace pcloud::store {

// The error names the element, the rule and the host setting that would allow it.
Status checkDomainXml(const std::string& xml, const hostconfig::HostConfig& host);

} // namespace pcloud::store
