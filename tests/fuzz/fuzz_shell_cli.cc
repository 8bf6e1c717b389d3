// pcloudsh's command-line parser: a typed line split into words (cli::splitLine), then the
// words turned into a command API request (cli::parse), as the interactive shell does.
// Also the words straight from argv: the input split at NUL bytes. Lines naming
// --domain-xml are left out: parse() reads that file, and a fuzzer reads no files.
#include "shell/cli.h"

#include <string>
#include <vector>

using namespace pcloud::shell;

static bool readsAFile(const std::vector<std::string>& words) {
    for (const auto& w : words)
        if (w.rfind("--domain-xml", 0) == 0)
            return true;
    return false;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    if (auto words = cli::splitLine(in); words && !readsAFile(*words)) {
        if (auto inv = cli::parse(*words); inv)
            (void)inv->args.dump();
    }
    std::vector<std::string> argv;
    size_t start = 0;
    for (size_t i = 0; i <= in.size(); ++i)
        if (i == in.size() || in[i] == '\0') {
            argv.push_back(in.substr(start, i - start));
            start = i + 1;
        }
    if (readsAFile(argv))
        return 0;
    if (auto inv = cli::parse(argv); inv)
        (void)inv->args.dump();
    return 0;
}
