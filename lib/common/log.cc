#include "common/log.h"

#include "common/time_format.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace pcloud::log {
namespace {

Level initialLevel() {
    Level l = Level::Notice;
    if (const char* env = std::getenv("PCLOUD_LOG_LEVEL"))
        parseLevel(env, l);
    return l;
}

Level g_level = initialLevel();
std::string g_ident = "pcloud";
std::mutex g_mutex;

const char* levelName(Level l) {
    switch (l) {
    case Level::Error:
        return "error";
    case Level::Warning:
        return "warning";
    case Level::Notice:
        return "notice";
    case Level::Info:
        return "info";
    case Level::Debug:
        return "debug";
    }
    return "?";
}

// Values with spaces or quotes are quoted so lines stay machine-splittable.
void appendValue(std::string& out, const std::string& v) {
    bool quote = v.empty() || v.find_first_of(" \t\"=") != std::string::npos;
    if (!quote) {
        out += v;
        return;
    }
    out += '"';
    for (char c : v) {
        if (c == '"' || c == '\\')
            out += '\\';
        out += c == '\n' ? ' ' : c;
    }
    out += '"';
}

} // namespace

void setLevel(Level level) {
    g_level = level;
}
Level level() {
    return g_level;
}
void setIdent(std::string ident) {
    std::lock_guard lock(g_mutex);
    g_ident = std::move(ident);
}

bool parseLevel(std::string_view text, Level& out) {
    if (text == "error")
        out = Level::Error;
    else if (text == "warning")
        out = Level::Warning;
    else if (text == "notice")
        out = Level::Notice;
    else if (text == "info")
        out = Level::Info;
    else if (text == "debug")
        out = Level::Debug;
    else
        return false;
    return true;
}

void write(Level lvl, std::string_view message, std::initializer_list<Field> fields) {
    std::string line;
    line.reserve(128);
    std::lock_guard lock(g_mutex);
    line += formatRfc3339(SystemClock().nowMs());
    line += ' ';
    line += g_ident;
    line += ' ';
    line += levelName(lvl);
    line += ": ";
    line += message;
    for (const auto& [k, v] : fields) {
        line += ' ';
        line += k;
        line += '=';
        appendValue(line, v);
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stderr);
}

bool setLevelOption(const char* program, const std::string& name) {
    if (name.empty())
        return true;
    Level l;
    if (!parseLevel(name, l)) {
        std::fprintf(stderr, "%s: unknown log level '%s'\n", program, name.c_str());
        return false;
    }
    setLevel(l);
    return true;
}

} // namespace pcloud::log
