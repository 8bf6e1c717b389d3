// The command API decoder (docs/protocol/commands.md): cped::parseRequest, then
// cped::handle, where each command reads and checks its arguments, over a small model
// (deployable "web" with assemblies n1 and n2), as cped's serveCommand does. Input: up to 8
// request bodies, one per line, run in order against the same model so commands can
// build on each other. The model, the desired state and the journal start afresh for
// every input; saves go nowhere (the desired state goes to a tmpfs dir).
//
// Oracles beyond the sanitizers: a reply must serialise (cped sends reply.toJson().dump()),
// and no request may end in an "internal" error: with saves that cannot fail, that code
// only comes from an exception escaping an argument reader.
#include "common/clock.h"
#include "cped/commands.h"
#include "store/templates.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

using namespace pcloud;
using namespace pcloud::cped;
using nlohmann::json;

namespace {

struct FakeRuntime : Runtime {
    void startDeployable(const std::string&) override {}
    Result<json> stopDeployable(const std::string&) override { return json{{"exit", 0}}; }
    Result<json> askDped(const std::string& d, const std::string& c, const json&) override {
        if (c == "status")
            return json{{"deployable", d}, {"state", "running"}, {"assemblies", json::array()}};
        return json::object();
    }
    json dpedProcess(const std::string&) override { return {{"running", true}, {"pid", 1}}; }
    std::vector<PingResult> pingAgents(const std::vector<std::string>& as, Millis) override {
        std::vector<PingResult> out;
        for (const auto& a : as)
            out.push_back({a, true, 1, ""});
        return out;
    }
    void emit(events::Event) override {}
};

struct World {
    std::string dir;
    ManualClock clock{1'764'000'000'000};
    FakeRuntime runtime;
    store::TemplateRegistry templates;
    std::unique_ptr<events::EventJournal> journal;
    model::Model initial;

    World() {
        const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
        std::string tmpl = std::string(base) + "/pcloud-fuzz-cmd-XXXXXX";
        if (!::mkdtemp(tmpl.data()))
            std::abort();
        dir = tmpl;
        store::Template t;
        t.name = "nginx";
        t.resource.type = "nginx";
        t.resource.unit = "nginx.service";
        templates.add(t);
        auto j = events::EventJournal::open(dir, {}, clock);
        if (!j)
            std::abort();
        journal = std::move(*j);
        DesiredState desired;
        Context ctx = context(desired);
        for (
            const char* body : {
                R"({"v":1,"type":"command","command":"deployable_create","args":{"name":"web"}})",
                R"({"v":1,"type":"command","command":"assembly_create","args":{"name":"n1","domain_xml":"<domain type='qemu'><name>n1</name><memory>65536</memory></domain>","address":"127.0.0.1:8080"}})",
                R"({"v":1,"type":"command","command":"assembly_create","args":{"name":"n2","image":"/var/lib/pcloud/n2.qcow2"}})",
                R"({"v":1,"type":"command","command":"deployable_assembly_add","args":{"deployable":"web","assembly":"n1"}})",
                R"({"v":1,"type":"command","command":"assembly_resource_add","args":{"assembly":"n1","resource":"www","template":"nginx"}})",
            }) {
            auto req = parseRequest(body, nullptr);
            if (!req || !handle(*req, initial, ctx).ok) {
                std::fprintf(stderr, "fuzz_command_api: setup request failed: %s\n", body);
                std::abort();
            }
        }
    }
    ~World() { std::filesystem::remove_all(dir); }

    Context context(DesiredState& desired) {
        Context ctx;
        ctx.state_dir = dir;
        ctx.clock = &clock;
        ctx.desired = &desired;
        ctx.journal = journal.get();
        ctx.templates = &templates;
        ctx.runtime = &runtime;
        ctx.save = [](const model::Model&) { return Status{}; };
        return ctx;
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static World world;
    std::string in(reinterpret_cast<const char*>(data), size);
    model::Model m = world.initial;
    DesiredState desired;
    Context ctx = world.context(desired);
    size_t start = 0;
    for (int n = 0; n < 8 && start <= in.size(); ++n) {
        size_t end = in.find('\n', start);
        if (end == std::string::npos)
            end = in.size();
        std::string body = in.substr(start, end - start);
        start = end + 1;
        Response rejection;
        auto req = parseRequest(body, &rejection);
        if (!req) {
            (void)rejection.toJson().dump();
            continue;
        }
        Response r = handle(*req, m, ctx);
        if (!r.ok && r.error_code == code::Internal) {
            std::fprintf(stderr, "request ended in an internal error: %s\nrequest: %s\n",
                         r.error_message.c_str(), body.c_str());
            std::abort();
        }
        (void)r.toJson().dump();
    }
    return 0;
}
