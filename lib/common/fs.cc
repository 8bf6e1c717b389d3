#include "common/fs.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace pcloud::fs {
namespace {

std::string errnoText() {
    return std::strerror(errno);
}

std::string dirOf(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos)
        return ".";
    if (slash == 0)
        return "/";
    return path.substr(0, slash);
}

} // namespace

Status writeAtomic(const std::string& path, const std::string& contents,
                   const std::function<bool()>& beforeRename) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return makeError("cannot create temporary file: " + errnoText(), tmp);
    size_t off = 0;
    while (off < contents.size()) {
        ssize_t n = ::write(fd, contents.data() + off, contents.size() - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            auto err = makeError("cannot write: " + errnoText(), tmp);
            ::close(fd);
            ::unlink(tmp.c_str());
            return err;
        }
        off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) {
        auto err = makeError("cannot fsync: " + errnoText(), tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return err;
    }
    ::close(fd);
    if (beforeRename && !beforeRename()) {
        // Simulated crash: leave the temp file behind exactly as a killed writer would.
        return makeError("write interrupted before rename", path);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto err = makeError("cannot rename " + tmp + " into place: " + errnoText(), path);
        ::unlink(tmp.c_str());
        return err;
    }
    int dfd = ::open(dirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return {};
}

Result<std::string> readFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(std::string("cannot open: ") + errnoText(), path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

Status makeDirs(const std::string& path) {
    if (path.empty())
        return {};
    std::string cur;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        cur = path.substr(0, pos);
        if (cur.empty())
            continue;
        if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
            return makeError("cannot create directory: " + errnoText(), cur);
    }
    return {};
}

} // namespace pcloud::fs
