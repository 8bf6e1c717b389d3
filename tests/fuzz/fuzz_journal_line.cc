// The journal line parser (events::parseLine, used when EventJournal::open reads the tail
// and by replay). An event that parses must write back as a line that parses to the same
// event.
#include "events/event.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>

using namespace pcloud;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view line(reinterpret_cast<const char*>(data), size);
    auto e = events::parseLine(line);
    if (!e)
        return 0;
    (void)events::formatHuman(*e);
    std::string again = events::toLine(*e);
    auto e2 = events::parseLine(again);
    if (!e2) {
        std::fprintf(stderr, "written line does not parse: %s\nline: %s\n",
                     e2.error().describe().c_str(), again.c_str());
        std::abort();
    }
    if (!(*e2 == *e)) {
        std::fprintf(stderr, "written line parses to another event\nline: %s\n", again.c_str());
        std::abort();
    }
    return 0;
}
