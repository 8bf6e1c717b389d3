// The scenario parser of pcloud-simulate (policy::parseScenario), then what the tool does
// with a scenario that parses: run its steps through the policy engine and format them.
#include "policy/simulation.h"

#include <string>

using namespace pcloud;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    auto s = policy::parseScenario(text, "scenario.json");
    if (!s)
        return 0;
    auto steps = policy::runScenario(*s);
    if (steps) {
        (void)policy::formatText(*s, *steps);
        (void)policy::formatJson(*s, *steps).dump();
    }
    return 0;
}
