#pragma once
// Domain XML generated for an assembly that names a disk image and no domain XML
// (`assembly_create NAME --image PATH`, and Pacemaker Cloud files, whose assemblies carry
// image="..." only). Pure: the image is not opened here; imageExists() is the check dped
// makes on the host that is to run the domain.

#include "common/host_config.h"
#include "common/result.h"
#include "model/model.h"

#include <string>

namespace pcloud::store {

// An image path the host allows: absolute, no "..", no control characters, under one of the
// host configuration's image_dir directories. The error names the path and the setting.
Status checkImagePath(const std::string& path, const hostconfig::HostConfig& host);

// <domain type=VIRT_TYPE> named after the assembly, with its uuid when set, memory_mib
// (default 512) and vcpus (default 1), the image as a virtio disk (raw for .raw/.img,
// qcow2 otherwise), one virtio <interface type='network'> per network, and a pty console.
// It passes checkDomainXml with the default host configuration. `virtType` is "kvm" or
// "qemu" (TCG).
Result<std::string> imageDomainXml(const model::Assembly& a, const std::string& virtType = "kvm");

// The image exists as a regular file (or block device) on THIS host; the error names the
// host and the path.
Status imageExists(const std::string& path, const std::string& hostName);

} // namespace pcloud::store
