#include "store/image_domain.h"

#include <cerrno>
#include <cstring>
#include <pugixml.hpp>
#include <sstream>
#include <sys/stat.h>

namespace pcloud::store {

namespace {

bool underDir(const std::string& path, const std::string& dir) {
    if (dir == "/")
        return true;
    return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
           path[dir.size()] == '/';
}

} // namespace

Status checkImagePath(const std::string& path, const hostconfig::HostConfig& host) {
    if (path.empty() || path[0] != '/')
        return makeError("image '" + path + "' is not an absolute path");
    if (path.find("/../") != std::string::npos || path.ends_with("/..") ||
        path.find("/./") != std::string::npos)
        return makeError("image '" + path + "' must not contain '.' or '..' components");
    for (char c : path)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            return makeError("image path holds a control character");
    for (const auto& d : host.image_dirs)
        if (underDir(path, d))
            return {};
    std::string dirs;
    for (const auto& d : host.image_dirs)
        dirs += (dirs.empty() ? "" : ", ") + d;
    return makeError("image '" + path + "' is not under a directory this host allows (" +
                     (dirs.empty() ? std::string("none") : dirs) + "); add 'image_dir = DIR' to " +
                     (host.source.empty() ? std::string(hostconfig::kDefaultPath) : host.source));
}

Result<std::string> imageDomainXml(const model::Assembly& a, const std::string& virtType) {
    if (a.image.empty())
        return makeError("assembly '" + a.name + "' has no image to generate a domain from");
    if (virtType != "kvm" && virtType != "qemu")
        return makeError("domain type '" + virtType + "' is not kvm or qemu");
    pugi::xml_document doc;
    auto dom = doc.append_child("domain");
    dom.append_attribute("type").set_value(virtType.c_str());
    dom.append_child("name").text().set(a.name.c_str());
    if (!a.uuid.empty())
        dom.append_child("uuid").text().set(a.uuid.c_str());
    auto mem = dom.append_child("memory");
    mem.append_attribute("unit").set_value("MiB");
    mem.text().set(a.memory_mib > 0 ? a.memory_mib : 512);
    dom.append_child("vcpu").text().set(a.vcpus > 0 ? a.vcpus : 1);
    auto os = dom.append_child("os");
    auto type = os.append_child("type");
    type.append_attribute("arch").set_value("x86_64");
    type.text().set("hvm");
    os.append_child("boot").append_attribute("dev").set_value("hd");
    auto features = dom.append_child("features");
    features.append_child("acpi");
    features.append_child("apic");
    dom.append_child("on_poweroff").text().set("destroy");
    dom.append_child("on_reboot").text().set("restart");
    dom.append_child("on_crash").text().set("destroy");
    auto devices = dom.append_child("devices");
    const bool raw = a.image.ends_with(".raw") || a.image.ends_with(".img");
    auto disk = devices.append_child("disk");
    disk.append_attribute("type").set_value("file");
    disk.append_attribute("device").set_value("disk");
    auto driver = disk.append_child("driver");
    driver.append_attribute("name").set_value("qemu");
    driver.append_attribute("type").set_value(raw ? "raw" : "qcow2");
    disk.append_child("source").append_attribute("file").set_value(a.image.c_str());
    auto target = disk.append_child("target");
    target.append_attribute("dev").set_value("vda");
    target.append_attribute("bus").set_value("virtio");
    for (const auto& n : a.networks) {
        auto iface = devices.append_child("interface");
        iface.append_attribute("type").set_value("network");
        iface.append_child("source").append_attribute("network").set_value(n.c_str());
        iface.append_child("model").append_attribute("type").set_value("virtio");
    }
    devices.append_child("serial").append_attribute("type").set_value("pty");
    devices.append_child("console").append_attribute("type").set_value("pty");
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

Status imageExists(const std::string& path, const std::string& hostName) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return makeError("image " + path + " is missing on host " + hostName + ": " +
                         std::strerror(errno) + "; copy it there or change the assembly's image");
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return makeError("image " + path + " on host " + hostName +
                         " is not a regular file or block device");
    return {};
}

} // namespace pcloud::store
