// Runs one golden case: tests/policy/cases/<name>/scenario.json through the shared
// simulation loop and compares the human-readable result with expected.txt.
// PCLOUD_REGENERATE=1 rewrites expected.txt instead (then review the diff).

#include "common/fs.h"
#include "policy/simulation.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

using namespace pcloud;

static std::vector<std::string> lines(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);)
        out.push_back(l);
    return out;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: policy_golden CASE_DIR\n");
        return 2;
    }
    std::string dir = argv[1];
    auto sc = policy::loadScenario(dir);
    if (!sc) {
        std::fprintf(stderr, "%s\n", sc.error().describe().c_str());
        return 1;
    }
    auto steps = policy::runScenario(*sc);
    if (!steps) {
        std::fprintf(stderr, "%s\n", steps.error().describe().c_str());
        return 1;
    }
    std::string actual = policy::formatText(*sc, *steps);
    std::string expectedFile = dir + "/expected.txt";
    const char* regen = std::getenv("PCLOUD_REGENERATE");
    if (regen && std::string(regen) == "1") {
        auto s = fs::writeAtomic(expectedFile, actual);
        if (!s) {
            std::fprintf(stderr, "%s\n", s.error().describe().c_str());
            return 1;
        }
        std::printf("rewrote %s\n", expectedFile.c_str());
        return 0;
    }
    auto expected = fs::readFile(expectedFile);
    if (!expected) {
        std::fprintf(stderr, "%s (run with PCLOUD_REGENERATE=1 to create it)\n",
                     expected.error().describe().c_str());
        return 1;
    }
    if (*expected == actual)
        return 0;
    auto e = lines(*expected), a = lines(actual);
    size_t i = 0;
    while (i < e.size() && i < a.size() && e[i] == a[i])
        ++i;
    std::fprintf(stderr, "%s: differs from line %zu\n  expected: %s\n  actual:   %s\n",
                 expectedFile.c_str(), i + 1, i < e.size() ? e[i].c_str() : "(end of file)",
                 i < a.size() ? a[i].c_str() : "(end of output)");
    std::fprintf(stderr, "--- full actual output ---\n%s", actual.c_str());
    return 1;
}
