// The db XML loader (store::parseModel, the pure half of loadModel) and the resource
// template parser. Input: db_deployable.xml, then optionally a NUL byte and
// db_assemblies.xml. A model that loads must format and load back to the same text, the
// check saveModel relies on, and must go into JSON (cped's replies, dped's model): every
// string in it is UTF-8.
#include "model/model_json.h"
#include "store/store.h"
#include "store/templates.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

using namespace pcloud;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    std::optional<std::string> deployables, assemblies;
    if (auto nul = in.find('\0'); nul != std::string::npos) {
        deployables = in.substr(0, nul);
        assemblies = in.substr(nul + 1);
    } else {
        deployables = in;
    }
    std::vector<Error> warnings;
    auto m = store::parseModel(deployables, "db_deployable.xml", assemblies, "db_assemblies.xml",
                               &warnings);
    if (m) {
        (void)model::toJson(*m).dump(); // throws on a string that is not UTF-8
        std::string d = store::formatDeployables(*m), a = store::formatAssemblies(*m);
        std::vector<Error> w2;
        auto again = store::parseModel(d, "d", a, "a", &w2);
        if (!again) {
            std::fprintf(stderr, "formatted model does not load: %s\n",
                         again.error().describe().c_str());
            std::abort();
        }
        if (store::formatDeployables(*again) != d || store::formatAssemblies(*again) != a) {
            std::fprintf(stderr, "formatted model does not load back identically\n");
            std::abort();
        }
    }
    std::vector<Error> tw;
    if (auto t = store::parseTemplate(*deployables, "fuzz.xml", &tw); t) {
        nlohmann::json j = model::toJson(t->resource);
        j["description"] = t->description;
        (void)j.dump();
    }
    return 0;
}
