// pcloud-agent: the in-guest service watcher. All logic lives in lib/agent.
#include "agent/agent_main.h"

#include "common/exit_codes.h"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    try {
        return pcloud::agent::runAgent(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pcloud-agent: internal error: %s\n", e.what());
        return pcloud::toInt(pcloud::ExitCode::Software);
    }
}
