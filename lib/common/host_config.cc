#include "common/host_config.h"

#include "common/fs.h"

#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace pcloud::hostconfig {

namespace {

std::string trim(const std::string& s) {
    auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos)
        return {};
    auto e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}

const char* const kKnown = "apachectl nginx referee_dir qemu_commandline allow_host_devices "
                           "pki_dir operator cped_name fence_agents_dir fence_agent image_dir "
                           "floating_ip floating_dev etcd_ca etcd_cert etcd_key";

// The model's name grammar (model::isValidName), which common cannot include.
bool validName(const std::string& n) {
    if (n.empty() || n.size() > 64 || n[0] == '-' || n[0] == '.')
        return false;
    for (char ch : n)
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    return true;
}

// A Linux interface name (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':'
// (alias labels) or blanks.
bool validInterfaceName(const std::string& n) {
    if (n.empty() || n.size() > 15 || n == "." || n == "..")
        return false;
    for (unsigned char ch : n)
        if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == ':')
            return false;
    return true;
}

// One decimal without sign or leading zeros (so "010" is not read as octal, as inet_aton
// would), at most `max`.
bool parseDecimal(const std::string& s, unsigned max, unsigned& out) {
    if (s.empty() || s.size() > 3 || (s.size() > 1 && s[0] == '0'))
        return false;
    out = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9')
            return false;
        out = out * 10 + static_cast<unsigned>(ch - '0');
    }
    return out <= max;
}

} // namespace

std::string Ipv4Cidr::toString() const {
    return std::to_string(address >> 24) + "." + std::to_string((address >> 16) & 0xff) + "." +
           std::to_string((address >> 8) & 0xff) + "." + std::to_string(address & 0xff) + "/" +
           std::to_string(prefix);
}

Result<Ipv4Cidr> parseIpv4Cidr(const std::string& text) {
    if (text.find(':') != std::string::npos)
        return makeError("'" + text +
                         "' is an IPv6 address; only IPv4 floating addresses are implemented "
                         "(docs/ha.md)");
    auto slash = text.find('/');
    if (slash == std::string::npos)
        return makeError("'" + text + "' has no prefix length; write it as A.B.C.D/N, e.g. " +
                         text + "/24");
    Ipv4Cidr c;
    unsigned prefix = 0;
    if (!parseDecimal(text.substr(slash + 1), 32, prefix) || prefix == 0)
        return makeError("'" + text + "' has a bad prefix length (a decimal from 1 to 32)");
    c.prefix = static_cast<int>(prefix);
    std::istringstream dotted(text.substr(0, slash) + ".");
    std::string part;
    int parts = 0;
    while (std::getline(dotted, part, '.')) {
        unsigned octet = 0;
        if (++parts > 4 || !parseDecimal(part, 255, octet))
            break;
        c.address = (c.address << 8) | octet;
    }
    if (parts != 4 || !dotted.eof())
        return makeError("'" + text +
                         "' is not an IPv4 address (four decimals 0-255 without leading "
                         "zeros, separated by dots)");
    const std::uint32_t first = c.address >> 24;
    if (first == 0 || first == 127 || first >= 224)
        return makeError("'" + text +
                         "' is not a unicast host address (0/8, 127/8 and 224/3 are not)");
    if (c.prefix <= 30) {
        const std::uint32_t host = ~0u >> c.prefix;
        if ((c.address & host) == 0 || (c.address & host) == host)
            return makeError("'" + text + "' is the " +
                             ((c.address & host) == 0 ? "network" : "broadcast") +
                             " address of its prefix; give a host address");
    }
    return c;
}

const char* toString(QemuCommandline q) {
    switch (q) {
    case QemuCommandline::None:
        return "none";
    case QemuCommandline::NetdevUser:
        return "netdev-user";
    }
    return "?";
}

Result<HostConfig> parse(const std::string& text, const std::string& path) {
    HostConfig c;
    c.source = path;
    std::set<std::string> seen;
    bool dirsGiven = false;
    bool imageDirsGiven = false;
    int floatingLine = 0; // the line of floating_ip or floating_dev, for "both or neither"
    int etcdLine = 0;     // the last etcd_* line, for the same
    std::istringstream in(text);
    std::string raw;
    int line = 0;
    while (std::getline(in, raw)) {
        ++line;
        std::string l = trim(raw);
        if (l.empty() || l[0] == '#')
            continue;
        auto eq = l.find('=');
        if (eq == std::string::npos)
            return makeError("expected 'key = value', got '" + l + "'", path, line);
        std::string key = trim(l.substr(0, eq));
        std::string value = trim(l.substr(eq + 1));
        if (key.empty())
            return makeError("a line has no key before '='", path, line);
        if (value.empty())
            return makeError("'" + key + "' has no value (remove the line for the default)", path,
                             line);
        if (key != "referee_dir" && key != "fence_agent" && key != "image_dir" &&
            !seen.insert(key).second)
            return makeError("'" + key + "' is set twice; keep one line", path, line);
        if (key == "apachectl" || key == "nginx") {
            // A command line split on blanks: the program must be an absolute path or a
            // plain name found on PATH, and nothing here goes through a shell.
            if (value.find_first_of("\"'`$;|&<>\\") != std::string::npos)
                return makeError("'" + key +
                                     "' is split on blanks and run without a shell; quotes "
                                     "and shell characters (\"'`$;|&<>\\) are not allowed",
                                 path, line);
            (key == "apachectl" ? c.apachectl : c.nginx) = value;
        } else if (key == "referee_dir") {
            if (value[0] != '/' || value.find("/../") != std::string::npos ||
                value.ends_with("/.."))
                return makeError("referee_dir '" + value +
                                     "' must be an absolute directory path without '..'",
                                 path, line);
            while (value.size() > 1 && value.back() == '/')
                value.pop_back();
            if (value == "/")
                return makeError("referee_dir '/' would let pcloud write anywhere; name the "
                                 "directory the balancer includes",
                                 path, line);
            if (!dirsGiven)
                c.referee_dirs.clear();
            dirsGiven = true;
            c.referee_dirs.push_back(value);
        } else if (key == "qemu_commandline") {
            if (value == "none")
                c.qemu_commandline = QemuCommandline::None;
            else if (value == "netdev-user")
                c.qemu_commandline = QemuCommandline::NetdevUser;
            else
                return makeError("qemu_commandline '" + value +
                                     "' is unknown; use none or netdev-user",
                                 path, line);
        } else if (key == "fence_agents_dir") {
            if (value[0] != '/' || value.find("/../") != std::string::npos ||
                value.ends_with("/.."))
                return makeError("fence_agents_dir '" + value +
                                     "' must be an absolute directory path without '..'",
                                 path, line);
            while (value.size() > 1 && value.back() == '/')
                value.pop_back();
            c.fence_agents_dir = value;
        } else if (key == "image_dir") {
            if (value[0] != '/' || value.find("/../") != std::string::npos ||
                value.ends_with("/.."))
                return makeError("image_dir '" + value +
                                     "' must be an absolute directory path without '..'",
                                 path, line);
            while (value.size() > 1 && value.back() == '/')
                value.pop_back();
            if (!imageDirsGiven)
                c.image_dirs.clear();
            imageDirsGiven = true;
            c.image_dirs.push_back(value);
        } else if (key == "fence_agent") {
            bool ok = value.size() > 6 && value.size() <= 64 && value.rfind("fence_", 0) == 0;
            for (char ch : value)
                ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                            (ch >= '0' && ch <= '9') || ch == '_' || ch == '-');
            if (!ok)
                return makeError("fence_agent '" + value +
                                     "' is not a fence agent name (fence_ followed by letters, "
                                     "digits, '_' or '-'; the directory is fence_agents_dir)",
                                 path, line);
            c.fence_agents.push_back(value);
        } else if (key == "allow_host_devices") {
            if (value == "yes" || value == "true")
                c.allow_host_devices = true;
            else if (value == "no" || value == "false")
                c.allow_host_devices = false;
            else
                return makeError("allow_host_devices '" + value + "' is not yes or no", path, line);
        } else if (key == "pki_dir") {
            if (value[0] != '/')
                return makeError("pki_dir '" + value + "' must be an absolute directory path", path,
                                 line);
            c.pki_dir = value;
        } else if (key == "operator" || key == "cped_name") {
            if (!validName(value))
                return makeError("'" + key + "' '" + value +
                                     "' is not a valid name (letters, digits, '-', '_', '.')",
                                 path, line);
            (key == "operator" ? c.operator_name : c.cped_name) = value;
        } else if (key == "floating_ip") {
            auto ip = parseIpv4Cidr(value);
            if (!ip)
                return makeError("floating_ip " + ip.error().message, path, line);
            c.floating_ip = *ip;
            floatingLine = line;
        } else if (key == "floating_dev") {
            if (!validInterfaceName(value))
                return makeError("floating_dev '" + value +
                                     "' is not a network interface name (1 to 15 characters, "
                                     "no blanks, '/' or ':')",
                                 path, line);
            c.floating_dev = value;
            floatingLine = line;
        } else if (key == "etcd_ca" || key == "etcd_cert" || key == "etcd_key") {
            if (value[0] != '/' || value.find("/../") != std::string::npos)
                return makeError(key + " '" + value + "' must be an absolute file path", path,
                                 line);
            (key == "etcd_ca" ? c.etcd_ca : key == "etcd_cert" ? c.etcd_cert : c.etcd_key) = value;
            etcdLine = line;
        } else {
            return makeError("unknown key '" + key + "' (known: " + kKnown + ")", path, line);
        }
    }
    if (c.etcd_cert.empty() != c.etcd_key.empty())
        return makeError(c.etcd_cert.empty() ? "etcd_key is set but etcd_cert is not; a client "
                                               "key needs its certificate"
                                             : "etcd_cert is set but etcd_key is not; a client "
                                               "certificate needs its key",
                         path, etcdLine);
    if (!c.etcd_cert.empty() && c.etcd_ca.empty())
        return makeError("etcd_cert is set but etcd_ca is not; name the CA that signed the etcd "
                         "members' certificates",
                         path, etcdLine);
    if (c.floating_ip.has_value() != !c.floating_dev.empty())
        return makeError(c.floating_ip ? "floating_ip is set but floating_dev is not; name the "
                                         "interface that carries it (floating_dev = eth0)"
                                       : "floating_dev is set but floating_ip is not; give the "
                                         "address (floating_ip = 10.9.0.100/24)",
                         path, floatingLine);
    return c;
}

Result<HostConfig> load(const std::string& path, bool mustExist) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT && !mustExist)
            return HostConfig{};
        return makeError(std::string("cannot read the host configuration: ") + std::strerror(errno),
                         path);
    }
    if (!S_ISREG(st.st_mode))
        return makeError("the host configuration is not a regular file", path);
    if (st.st_uid != 0 && st.st_uid != ::geteuid())
        return makeError("the host configuration is owned by uid " + std::to_string(st.st_uid) +
                             "; it must be owned by root (chown root " + path + ")",
                         path);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return makeError("the host configuration is writable by group or others, who could "
                         "make pcloud run programs as root; chmod 644 " +
                             path,
                         path);
    auto text = fs::readFile(path);
    if (!text)
        return text.error();
    return parse(*text, path);
}

} // namespace pcloud::hostconfig
