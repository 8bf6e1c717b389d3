#pragma once
// Command-line option values, shared by the daemons' and the shell's option parsers.

#include "common/clock.h"
#include "common/exit_codes.h"
#include "common/result.h"

#include <charconv>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

namespace pcloud::args {

// The value of the option at argv[i]: what follows '=' in "--key=value", else the next
// argument, and then `i` moves past it. False when there is no value.
inline bool optionValue(int argc, char** argv, int& i, std::string& out) {
    std::string a = argv[i];
    if (auto eq = a.find('='); eq != std::string::npos) {
        out = a.substr(eq + 1);
        return true;
    }
    if (i + 1 >= argc)
        return false;
    out = argv[++i];
    return true;
}

// A daemon's command line, where every option takes one value: `strings` maps an option
// ("--state-dir") to the string it sets, `millis` to a number of milliseconds within a
// range. "--help"/"-h" gives an Error whose message is `usage` and whose file is "help";
// an unknown option, a missing value or a bad number gives an Error naming the option.
struct MillisOption {
    Millis* target;
    Millis min;
    Millis max;
};
struct Table {
    std::map<std::string, std::string*> strings;
    std::map<std::string, MillisOption> millis;
};

inline Status parseTable(int argc, char** argv, const Table& table, const std::string& usage) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h")
            return makeError(usage, "help");
        std::string key = a.substr(0, a.find('='));
        std::string v;
        if (auto s = table.strings.find(key); s != table.strings.end()) {
            if (!optionValue(argc, argv, i, v))
                return makeError("option " + key + " needs a value");
            *s->second = v;
        } else if (auto m = table.millis.find(key); m != table.millis.end()) {
            if (!optionValue(argc, argv, i, v))
                return makeError("option " + key + " needs a value");
            Millis ms = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
            if (ec != std::errc() || end != v.data() + v.size() || ms < m->second.min ||
                ms > m->second.max)
                return makeError(
                    "option " + key + " '" + v + "' is not a number of milliseconds from " +
                    std::to_string(m->second.min) + " to " + std::to_string(m->second.max));
            *m->second.target = ms;
        } else {
            return makeError("unknown option '" + a + "'\n" + usage);
        }
    }
    return {};
}

// A daemon's main(): the parsed options run; --help prints the usage (exit 0); any other
// error goes to stderr as "PROGRAM: message" (exit 2, ExitCode::Usage).
template <typename Options, typename Run>
int runMain(const char* program, const Result<Options>& parsed, Run run) {
    if (!parsed) {
        if (parsed.error().file == "help") {
            std::cout << parsed.error().message;
            return toInt(ExitCode::Ok);
        }
        std::fprintf(stderr, "%s: %s\n", program, parsed.error().message.c_str());
        return toInt(ExitCode::Usage);
    }
    return run(parsed.value());
}

} // namespace pcloud::args
