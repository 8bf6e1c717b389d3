// pcloud-simulate: runs the policy engine over a scenario file (or a golden case folder)
// and prints the actions per step, as dped would issue them. See docs/policy.md.

#include "common/exit_codes.h"
#include "policy/simulation.h"

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

using namespace pcloud;

static int usage(const char* msg) {
    if (msg)
        std::fprintf(stderr, "pcloud-simulate: %s\n", msg);
    std::fprintf(stderr, "usage: pcloud-simulate [--json] FILE_OR_CASE_DIR\n");
    return toInt(ExitCode::Usage);
}

int main(int argc, char** argv) {
    bool asJson = false;
    std::string input;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0)
            asJson = true;
        else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
            usage(nullptr);
            return toInt(ExitCode::Ok);
        } else if (argv[i][0] == '-' && argv[i][1] != '\0')
            return usage((std::string("unknown option ") + argv[i]).c_str());
        else if (!input.empty())
            return usage("give exactly one scenario");
        else
            input = argv[i];
    }
    if (input.empty())
        return usage("missing scenario file or case folder");

    auto scenario = policy::loadScenario(input);
    if (!scenario) {
        std::fprintf(stderr, "pcloud-simulate: %s\n", scenario.error().describe().c_str());
        return toInt(ExitCode::Usage);
    }
    auto steps = policy::runScenario(*scenario);
    if (!steps) {
        std::fprintf(stderr, "pcloud-simulate: %s\n", steps.error().describe().c_str());
        return toInt(ExitCode::Usage);
    }
    if (asJson)
        std::cout << policy::formatJson(*scenario, *steps).dump(2) << "\n";
    else
        std::cout << policy::formatText(*scenario, *steps);
    return toInt(ExitCode::Ok);
}
