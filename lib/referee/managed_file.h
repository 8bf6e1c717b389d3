#pragma once
// What the Apache and nginx drivers share: a balancer configured by one include file that
// pcloud owns, checked with the balancer's own config test and picked up by a graceful
// reload. The drivers only render and parse the file's text.

#include "common/clock.h"
#include "common/result.h"

#include <optional>
#include <string>
#include <vector>

namespace pcloud::referee {

// `text` on one line (newlines become blanks, trailing blanks dropped), cut at `max` chars
// with "..." appended: for quoting a command's output or a bad line in an error.
std::string oneLine(std::string text, std::size_t max);

class ManagedFile {
public:
    struct Tool {
        std::string name;    // "apache", "nginx": starts the failed-test message
        std::string product; // "Apache", "nginx": who keeps its running configuration
        std::string setting; // the setting that holds `command`: "apachectl", "nginx"
        std::string command; // prefix split on blanks (no shell): "nginx -c /srv/nginx.conf"
        std::vector<std::string> test_args;   // {"-t"}
        std::string test_what;                // "configtest", "config test"
        std::vector<std::string> reload_args; // {"-k", "graceful"}
        std::string reload_what;              // "graceful reload"
        Millis timeout_ms = 15'000;           // each command
    };
    ManagedFile(std::string path, Tool tool);

    const std::string& path() const { return path_; }
    // The file's text; nullopt when it does not exist.
    Result<std::optional<std::string>> text() const;

    // Makes the balancer run `rendered`: unless the file already holds it (and no reload is
    // owed), writes it atomically, runs the config test and reloads. A failed test restores
    // the previous file byte for byte (or removes a new one), reloads nothing, and returns
    // an Error naming the file and quoting the tool. A failed reload is retried by the next
    // install() even if the text is unchanged. Returns whether it reloaded.
    Result<bool> install(const std::string& rendered);

private:
    // `command` + `args`; an Error quoting the output when it fails or times out.
    Status run(const std::vector<std::string>& args, const std::string& what) const;

    std::string path_;
    Tool tool_;
    bool reload_pending_ = false; // file written and checked, reload not done yet
};

} // namespace pcloud::referee
