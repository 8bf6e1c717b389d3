#include "referee/managed_file.h"
#include "common/utf8.h"

#include "common/fs.h"
#include "referee/command.h"

#include <cerrno>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

namespace pcloud::referee {

namespace {
// The balancer reads its include file as root; it holds no secrets.
constexpr mode_t kManagedMode = 0644;
} // namespace

std::string oneLine(std::string text, std::size_t max) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    for (auto& c : text)
        if (c == '\n')
            c = ' ';
    return utf8Excerpt(text, max);
}

ManagedFile::ManagedFile(std::string path, Tool tool)
    : path_(std::move(path)), tool_(std::move(tool)) {}

Result<std::optional<std::string>> ManagedFile::text() const {
    struct stat st {};
    if (::lstat(path_.c_str(), &st) != 0) {
        if (errno == ENOENT)
            return std::optional<std::string>{};
        return makeError(std::string("cannot stat the managed file: ") + std::strerror(errno),
                         path_);
    }
    // Checked again here, not only when the settings were accepted: store files can be
    // edited by hand, and a symlink could point pcloud's root writes anywhere.
    if (S_ISLNK(st.st_mode))
        return makeError("referee config_file is a symbolic link; pcloud only replaces a "
                         "regular file it owns (point config_file at the real file)",
                         path_);
    if (!S_ISREG(st.st_mode))
        return makeError("referee config_file is not a regular file", path_);
    auto t = fs::readFile(path_);
    if (!t)
        return t.error();
    return std::optional<std::string>{std::move(*t)};
}

Status ManagedFile::run(const std::vector<std::string>& args, const std::string& what) const {
    auto argv = splitCommandLine(tool_.command);
    if (argv.empty())
        return makeError("referee " + tool_.setting + " command is empty");
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = runCommand(argv, tool_.timeout_ms);
    if (!r)
        return r.error();
    if (r->timed_out)
        return makeError("'" + tool_.command + "' " + what + " did not finish within " +
                         std::to_string(tool_.timeout_ms) + " ms");
    if (r->exit_status != 0)
        return makeError("'" + tool_.command + "' " + what + " failed (exit " +
                         std::to_string(r->exit_status) + "): " + oneLine(r->output, 600));
    return {};
}

Result<bool> ManagedFile::install(const std::string& rendered) {
    auto previous = text();
    if (!previous)
        return previous.error();
    if (*previous && **previous == rendered && !reload_pending_)
        return false;
    if (!*previous || **previous != rendered) {
        if (auto st = fs::writeAtomic(path_, rendered, {}, kManagedMode); !st)
            return st.error();
    }
    if (auto st = run(tool_.test_args, tool_.test_what); !st) {
        Status restored = *previous ? fs::writeAtomic(path_, **previous, {}, kManagedMode)
                                    : (::unlink(path_.c_str()) == 0
                                           ? Status{}
                                           : Status{makeError(std::strerror(errno), path_)});
        std::string text =
            tool_.name + " " + tool_.test_what + " failed after writing the managed file; ";
        text += restored
                    ? (*previous ? "restored the previous file" : "removed it again")
                    : "COULD NOT restore the previous file (" + restored.error().describe() + ")";
        text += ", no reload done, " + tool_.product +
                " keeps its running configuration: " + st.error().message;
        return makeError(text, path_);
    }
    reload_pending_ = true;
    if (auto st = run(tool_.reload_args, tool_.reload_what); !st)
        return makeError(st.error().message + " (the file is written and valid; the reload "
                                              "is retried on the next apply)",
                         path_);
    reload_pending_ = false;
    return true;
}

} // namespace pcloud::referee
