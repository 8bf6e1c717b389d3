#pragma once
// Command-line option values, shared by the daemons' and the shell's option parsers.

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

} // namespace pcloud::args
