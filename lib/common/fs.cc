#include "common/fs.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <random>
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
                   const std::function<bool()>& beforeRename, mode_t mode) {
    // An unpredictable name and O_EXCL|O_NOFOLLOW: whoever can write the directory cannot
    // make us write through a symlink or into a file they opened first.
    std::string tmp;
    int fd = -1;
    std::random_device rd;
    for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
        char suffix[17];
        std::snprintf(suffix, sizeof suffix, "%08x%08x", rd(), rd());
        tmp = path + ".tmp." + suffix;
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        return makeError("cannot create temporary file: " + errnoText(), tmp);
    if (::fchmod(fd, mode) != 0) { // the umask may have narrowed or (0600) not mattered
        auto err = makeError("cannot set the mode of the temporary file: " + errnoText(), tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return err;
    }
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
    const std::string dir = dirOf(path);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return makeError("the new file is in place, but its directory cannot be opened to "
                         "fsync it (the rename may not survive a crash): " +
                             errnoText(),
                         dir);
    int rc = ::fsync(dfd);
    int err = errno;
    ::close(dfd);
    if (rc != 0)
        return makeError("the new file is in place, but fsync of its directory failed (the "
                         "rename may not survive a crash): " +
                             std::string(std::strerror(err)),
                         dir);
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

Status makeDirs(const std::string& path, mode_t mode) {
    if (path.empty())
        return {};
    std::string cur;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        cur = path.substr(0, pos);
        if (cur.empty())
            continue;
        if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST)
            return makeError("cannot create directory: " + errnoText(), cur);
    }
    return {};
}

Status makePrivateDir(const std::string& path) {
    std::string parent = dirOf(path);
    if (parent != "." && parent != "/")
        if (auto st = makeDirs(parent); !st)
            return st;
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
        return makeError("cannot create directory: " + errnoText(), path);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return makeError("cannot stat directory: " + errnoText(), path);
    if (!S_ISDIR(st.st_mode))
        return makeError("is not a directory", path);
    if ((st.st_mode & 07777) != 0700 && ::chmod(path.c_str(), 0700) != 0)
        return makeError("cannot make the directory private (chmod 0700): " + errnoText(), path);
    return {};
}

} // namespace pcloud::fs
