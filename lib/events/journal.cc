#include "events/journal.h"

#include "common/fs.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace pcloud::events {
namespace {

std::string errnoText() {
    return std::strerror(errno);
}

// Reads every line of a journal file. Bad lines are reported through `bad` (1-based line
// number, whether it was the unterminated last line) and skipped.
template <typename OnEvent, typename OnBad>
void scanFile(const std::string& path, OnEvent&& onEvent, OnBad&& onBad) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return;
    std::string line;
    int lineNo = 0;
    while (std::getline(in, line)) {
        ++lineNo;
        bool terminated = !in.eof();
        if (line.empty())
            continue;
        auto e = parseLine(line);
        if (!e) {
            onBad(lineNo, !terminated, e.error().message);
            continue;
        }
        if (!terminated) {
            // A complete JSON object without its newline: the writer died between the
            // bytes and the newline. The event is intact, keep it.
        }
        if (!onEvent(std::move(e.value())))
            return;
    }
}

} // namespace

EventJournal::EventJournal(std::string dir, JournalOptions options, const Clock& clock)
    : dir_(std::move(dir)), options_(options), clock_(clock) {
    if (options_.keep_files < 0)
        options_.keep_files = 0;
}

EventJournal::~EventJournal() {
    if (fd_ >= 0)
        ::close(fd_);
}

std::string EventJournal::currentPath() const {
    return dir_ + "/events.jsonl";
}
std::string EventJournal::rotatedPath(int n) const {
    return dir_ + "/events.jsonl." + std::to_string(n);
}

void EventJournal::warn(std::string w) const {
    warnings_.push_back(std::move(w));
}

std::vector<std::string> EventJournal::takeWarnings() {
    std::lock_guard lock(mutex_);
    return std::exchange(warnings_, {});
}

Result<std::unique_ptr<EventJournal>> EventJournal::open(std::string dir, JournalOptions options,
                                                         const Clock& clock) {
    if (auto st = fs::makePrivateDir(dir); !st)
        return st.error();
    std::unique_ptr<EventJournal> j(new EventJournal(std::move(dir), options, clock));
    if (auto st = j->openCurrent(); !st)
        return st.error();
    return j;
}

Status EventJournal::openCurrent() {
    const std::string path = currentPath();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0)
        return makeError("cannot open the event journal: " + errnoText(), path);
    struct stat st {};
    ::fstat(fd_, &st);
    size_ = static_cast<std::uint64_t>(st.st_size);

    // Recover the last seq: the newest file holding a valid event. Reading whole files is
    // bounded by max_bytes and happens once per start.
    first_time_.reset();
    bool foundInCurrent = false;
    scanFile(
        path,
        [&](Event e) {
            if (!first_time_)
                first_time_ = e.time;
            last_seq_ = std::max(last_seq_, e.seq);
            foundInCurrent = true;
            return true;
        },
        [&](int line, bool last, const std::string& why) {
            warn(path + ":" + std::to_string(line) + ": " +
                 (last ? "torn last line ignored (" : "garbage line ignored (") + why + ")");
        });
    if (!foundInCurrent) {
        for (int n = 1; n <= std::max(options_.keep_files, 1); ++n) {
            std::uint64_t best = 0;
            scanFile(
                rotatedPath(n),
                [&](Event e) {
                    best = std::max(best, e.seq);
                    return true;
                },
                [](int, bool, const std::string&) {});
            if (best > 0) {
                last_seq_ = std::max(last_seq_, best);
                break;
            }
        }
    }
    // A torn last line: end it so the next event starts on a line of its own.
    if (size_ > 0) {
        char c = 0;
        if (::pread(fd_, &c, 1, static_cast<off_t>(size_ - 1)) == 1 && c != '\n') {
            if (::write(fd_, "\n", 1) == 1)
                size_ += 1;
        }
    }
    return {};
}

Status EventJournal::rotate() {
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
    if (options_.keep_files == 0) {
        ::unlink(currentPath().c_str());
    } else {
        ::unlink(rotatedPath(options_.keep_files).c_str());
        for (int n = options_.keep_files - 1; n >= 1; --n) {
            if (fs::exists(rotatedPath(n)))
                ::rename(rotatedPath(n).c_str(), rotatedPath(n + 1).c_str());
        }
        if (::rename(currentPath().c_str(), rotatedPath(1).c_str()) != 0)
            return makeError("cannot rotate the event journal: " + errnoText(), currentPath());
    }
    // Files beyond keep_files left from an earlier, larger setting.
    for (int n = options_.keep_files + 1; fs::exists(rotatedPath(n)); ++n)
        ::unlink(rotatedPath(n).c_str());
    const std::string path = currentPath();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0)
        return makeError("cannot open the event journal: " + errnoText(), path);
    size_ = 0;
    first_time_.reset();
    return {};
}

Result<Event> EventJournal::append(Event e) {
    std::lock_guard lock(mutex_);
    if (e.time == 0)
        e.time = clock_.nowMs();
    e.seq = last_seq_ + 1;
    return writeLocked(std::move(e));
}

Result<Event> EventJournal::appendNumbered(Event e) {
    std::lock_guard lock(mutex_);
    if (e.seq <= last_seq_)
        return makeError("event seq " + std::to_string(e.seq) +
                             " is not after the journal's last (" + std::to_string(last_seq_) + ")",
                         currentPath());
    if (e.time == 0)
        return makeError("event seq " + std::to_string(e.seq) + " has no time", currentPath());
    return writeLocked(std::move(e));
}

Result<std::string> EventJournal::setAside(const std::string& tag) {
    std::lock_guard lock(mutex_);
    if (tag.empty() || tag.find('/') != std::string::npos)
        return makeError("bad tag '" + tag + "' for the set-aside journal files");
    const std::string aside = dir_ + "/events-" + tag + ".jsonl";
    if (fs::exists(aside))
        return makeError("cannot set the event journal aside: " + aside + " exists");
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
    auto move = [&](const std::string& from, const std::string& to) -> Status {
        if (fs::exists(from) && ::rename(from.c_str(), to.c_str()) != 0)
            return makeError("cannot set the event journal aside: " + errnoText(), from);
        return {};
    };
    for (int n = 1; fs::exists(rotatedPath(n)); ++n)
        if (auto st = move(rotatedPath(n), aside + "." + std::to_string(n)); !st)
            return st.error();
    if (auto st = move(currentPath(), aside); !st)
        return st.error();
    last_seq_ = 0;
    size_ = 0;
    first_time_.reset();
    if (auto st = openCurrent(); !st)
        return st.error();
    return aside;
}

Result<Event> EventJournal::writeLocked(Event e) {
    if (fd_ < 0) {
        if (auto st = openCurrent(); !st)
            return st.error();
    }
    std::string line = toLine(e) + "\n";
    const Millis now = clock_.nowMs();
    if (size_ > 0 && (size_ + line.size() > options_.max_bytes ||
                      (first_time_ && now - *first_time_ >= options_.max_age))) {
        if (auto st = rotate(); !st)
            return st.error();
    }
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return makeError("cannot append to the event journal: " + errnoText(), currentPath());
        }
        off += static_cast<size_t>(n);
    }
    if (options_.sync_each_append && ::fdatasync(fd_) != 0)
        return makeError("cannot sync the event journal: " + errnoText(), currentPath());
    size_ += line.size();
    if (!first_time_)
        first_time_ = now;
    last_seq_ = e.seq;
    return e;
}

std::uint64_t EventJournal::lastSeq() const {
    std::lock_guard lock(mutex_);
    return last_seq_;
}

Result<ReplayResult> EventJournal::replay(const ReplayQuery& q) const {
    std::lock_guard lock(mutex_);
    ReplayResult r;
    r.last_seq = last_seq_;
    std::vector<std::string> files;
    for (int n = std::max(options_.keep_files, 1); n >= 1; --n)
        if (fs::exists(rotatedPath(n)))
            files.push_back(rotatedPath(n));
    files.push_back(currentPath());
    std::uint64_t seen = q.since_seq; // seq only moves forward; drop anything out of order
    bool stop = false;
    for (const auto& f : files) {
        if (stop)
            break;
        scanFile(
            f,
            [&](Event e) {
                if (e.seq <= seen)
                    return true;
                seen = e.seq;
                if (q.since_time && e.time < *q.since_time)
                    return true;
                if (!q.deployable.empty() && e.deployable != q.deployable)
                    return true;
                if (q.limit > 0 && !q.newest && r.events.size() >= q.limit) {
                    r.more = true;
                    stop = true;
                    return false;
                }
                r.events.push_back(std::move(e));
                if (q.limit > 0 && q.newest && r.events.size() > q.limit) {
                    r.events.erase(r.events.begin());
                    r.more = true;
                }
                return true;
            },
            [&](int line, bool last, const std::string& why) {
                warn(f + ":" + std::to_string(line) + ": " +
                     (last ? "torn last line skipped (" : "garbage line skipped (") + why + ")");
            });
    }
    return r;
}

} // namespace pcloud::events
