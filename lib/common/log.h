#pragma once
// Logs are for operators (STYLE.md section 7): a short sentence first, then key=value
// fields. Daemons log to stderr; tools and the shell print instead.
//
//   PCLOUD_LOG(Notice, "Service restarted", {{"deployable", dep}, {"service", svc}});

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace pcloud::log {

enum class Level { Error = 0, Warning = 1, Notice = 2, Info = 3, Debug = 4 };

using Field = std::pair<std::string_view, std::string>;

// Messages above this level are dropped. Default Notice; PCLOUD_LOG_LEVEL=debug|info|...
void setLevel(Level level);
Level level();
// Prefix each line with this program name (e.g. "dped[web]").
void setIdent(std::string ident);
bool parseLevel(std::string_view text, Level& out);
// A daemon's --log-level value: "" keeps the level; an unknown name is reported on stderr
// as "PROGRAM: unknown log level 'NAME'" and returns false (the caller exits 2).
bool setLevelOption(const char* program, const std::string& name);

void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

} // namespace pcloud::log

#define PCLOUD_LOG(lvl, ...)                                                                       \
    do {                                                                                           \
        if (::pcloud::log::Level::lvl <= ::pcloud::log::level())                                   \
            ::pcloud::log::write(::pcloud::log::Level::lvl, __VA_ARGS__);                          \
    } while (0)
