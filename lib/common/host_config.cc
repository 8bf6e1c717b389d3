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
                           "pki_dir operator cped_name fence_agents_dir fence_agent image_dir";

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

} // namespace

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
        } else {
            return makeError("unknown key '" + key + "' (known: " + kKnown + ")", path, line);
        }
    }
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
