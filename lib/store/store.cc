#include "store/store.h"

#include "common/fs.h"
#include "common/log.h"
#include "common/time_format.h"
#include "store/model_xml.h"
#include "store/xml_file.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <sys/stat.h>

namespace pcloud::store {

using namespace detail;

namespace {

std::string q(const std::string& s) {
    return "\"" + s + "\"";
}

// Where each deployable's <assembly name=""/> reference sits, for cross-file errors.
using RefLines = std::map<std::pair<std::string, std::string>, int>;

Status parseDeployables(const XmlFile& f, model::Model& m, RefLines& refLines,
                        std::vector<Error>& warnings) {
    pugi::xml_node root = f.root();
    if (std::string(root.name()) != "deployables")
        return f.error(root, "the root element is <" + std::string(root.name()) +
                                 ">, expected <deployables>; is this the right file?");
    Element rootEl(f, root, "<deployables>");
    if (auto v = rootEl.text("pcmkc-version"))
        m.pcmkc_version_deployables = *v;
    rootEl.unknownAttributes(warnings);
    std::map<std::string, int> firstLine;
    for (pugi::xml_node n : root.children()) {
        if (n.type() != pugi::node_element)
            continue;
        if (std::string(n.name()) != "deployable") {
            warnings.push_back(
                f.error(n, "unknown element " + detail::describeNode(n) +
                               " inside <deployables> ignored (it will not be saved back)"));
            continue;
        }
        Element e(f, n, "deployable " + q(n.attribute("name").value()));
        model::Deployable d;
        if (auto st = e.name("name", d.name); !st)
            return st;
        if (auto it = firstLine.find(d.name); it != firstLine.end())
            return e.error("deployable " + q(d.name) + " is defined twice (first at line " +
                           std::to_string(it->second) + "); remove or rename one");
        firstLine[d.name] = f.lineOf(n);
        Status st;
        if (!(st = parseDeployableAttributes(e, d)))
            return st;
        e.unknownAttributes(warnings);

        for (pugi::xml_node c : n.children()) {
            if (c.type() != pugi::node_element)
                continue;
            const std::string cname = c.name();
            if (cname == "assembly") {
                Element a(f, c, "deployable " + q(d.name) + ", <assembly>");
                std::string ref;
                if (!(st = a.name("name", ref)))
                    return st;
                a.unknownAttributes(warnings);
                auto key = std::make_pair(d.name, ref);
                if (refLines.count(key))
                    return a.error("deployable " + q(d.name) + " names assembly " + q(ref) +
                                   " twice (first at line " + std::to_string(refLines[key]) +
                                   "); remove one line");
                refLines[key] = f.lineOf(c);
                d.assemblies.push_back(ref);
            } else if (cname == "backoff") {
                Element b(f, c, "deployable " + q(d.name) + ", <backoff>");
                if (!(st = parseBackoff(b, d.backoff)))
                    return st;
                b.unknownAttributes(warnings);
            } else if (cname == "referee") {
                Element r(f, c, "deployable " + q(d.name) + ", <referee>");
                if (!(st = parseReferee(r, d.referee, warnings)))
                    return st;
                r.unknownAttributes(warnings);
            } else {
                warnings.push_back(f.error(c, "deployable " + q(d.name) + ": unknown element " +
                                                  detail::describeNode(c) +
                                                  " ignored (it will not be saved back)"));
            }
        }
        if (auto vs = validateDeployable(d); !vs)
            return e.error("deployable " + q(d.name) + ": " + vs.error().message);
        m.deployables[d.name] = std::move(d);
    }
    return {};
}

Status parseHosts(const XmlFile& f, model::Model& m, std::vector<Error>& warnings) {
    pugi::xml_node root = f.root();
    if (std::string(root.name()) != "hosts")
        return f.error(root, "the root element is <" + std::string(root.name()) +
                                 ">, expected <hosts>; is this the right file?");
    Element rootEl(f, root, "<hosts>");
    rootEl.unknownAttributes(warnings);
    std::map<std::string, int> firstLine;
    std::map<std::string, std::string> nodeOwner;
    for (pugi::xml_node n : root.children()) {
        if (n.type() != pugi::node_element)
            continue;
        if (std::string(n.name()) != "host") {
            warnings.push_back(
                f.error(n, "unknown element " + detail::describeNode(n) +
                               " inside <hosts> ignored (it will not be saved back)"));
            continue;
        }
        Element e(f, n, "host " + q(n.attribute("name").value()));
        model::Host h;
        if (auto st = e.name("name", h.name); !st)
            return st;
        if (auto it = firstLine.find(h.name); it != firstLine.end())
            return e.error("host " + q(h.name) + " is defined twice (first at line " +
                           std::to_string(it->second) + "); remove or rename one");
        firstLine[h.name] = f.lineOf(n);
        if (auto st = parseHost(f, e, h, warnings); !st)
            return st;
        if (auto [it, inserted] = nodeOwner.emplace(h.node, h.name); !inserted)
            return e.error("host " + q(h.name) + ": node=" + q(h.node) +
                           " is already the node of host " + q(it->second) +
                           "; each host has its own pcloud-node");
        m.hosts[h.name] = std::move(h);
    }
    return {};
}

Status parseAssemblies(const XmlFile& f, model::Model& m, const std::string& hostsPath,
                       std::vector<Error>& warnings) {
    pugi::xml_node root = f.root();
    if (std::string(root.name()) != "assemblies")
        return f.error(root, "the root element is <" + std::string(root.name()) +
                                 ">, expected <assemblies>; is this the right file?");
    Element rootEl(f, root, "<assemblies>");
    if (auto v = rootEl.text("pcmkc-version"))
        m.pcmkc_version_assemblies = *v;
    rootEl.unknownAttributes(warnings);
    std::map<std::string, int> firstLine;
    for (pugi::xml_node n : root.children()) {
        if (n.type() != pugi::node_element)
            continue;
        if (std::string(n.name()) != "assembly") {
            warnings.push_back(
                f.error(n, "unknown element " + detail::describeNode(n) +
                               " inside <assemblies> ignored (it will not be saved back)"));
            continue;
        }
        Element e(f, n, "assembly " + q(n.attribute("name").value()));
        model::Assembly a;
        if (auto st = e.name("name", a.name); !st)
            return st;
        if (auto it = firstLine.find(a.name); it != firstLine.end())
            return e.error("assembly " + q(a.name) + " is defined twice (first at line " +
                           std::to_string(it->second) + "); remove or rename one");
        firstLine[a.name] = f.lineOf(n);
        if (auto st = parseAssembly(f, e, a, warnings); !st)
            return st;
        // Hosts are read first (db_hosts.xml), so a reference can be checked here, with the
        // line of the assembly that makes it.
        for (const auto& h : a.hosts)
            if (!m.hosts.count(h))
                return e.error("assembly " + q(a.name) + ": hosts=" + q(joinHostList(a.hosts)) +
                               " names host " + q(h) + ", which " + hostsPath +
                               " does not define; add it with host_add or remove it here");
        if (!a.host.empty() && !m.hosts.count(a.host))
            return e.error("assembly " + q(a.name) + ": host=" + q(a.host) + " names a host " +
                           hostsPath + " does not define; add it with host_add or remove it here");
        m.assemblies[a.name] = std::move(a);
    }
    return {};
}

Status crossCheck(const XmlFile* depFile, const std::string& assembliesPath, const model::Model& m,
                  const RefLines& refLines) {
    std::map<std::string, std::string> ownerOf;
    for (const auto& [dname, d] : m.deployables) {
        for (const auto& ref : d.assemblies) {
            auto it = refLines.find({dname, ref});
            const int line = it == refLines.end() ? 0 : it->second;
            const std::string path = depFile ? depFile->path() : std::string();
            if (!m.assemblies.count(ref))
                return makeError("deployable " + q(dname) + ": <assembly name=" + q(ref) +
                                     "/> names an assembly that " + assembliesPath +
                                     " does not define; define it there or remove this line",
                                 path, line);
            auto [o, inserted] = ownerOf.emplace(ref, dname);
            if (!inserted)
                return makeError(
                    "deployable " + q(dname) + ": <assembly name=" + q(ref) +
                        "/> already belongs to deployable " + q(o->second) +
                        "; an assembly can be in one deployable only, remove one of them",
                    path, line);
        }
    }
    return {};
}

void report(std::vector<Error>& warnings, std::vector<Error>* out) {
    if (out) {
        out->insert(out->end(), warnings.begin(), warnings.end());
        return;
    }
    for (const auto& w : warnings)
        PCLOUD_LOG(Warning, "Ignored part of a state file",
                   {{"file", w.file}, {"line", std::to_string(w.line)}, {"detail", w.message}});
}

// XML 1.0 cannot carry control characters other than tab, newline and carriage return,
// raw or as character references (pugixml would write "&#7;", which other parsers reject).
bool hasForbiddenControl(const std::string& text) {
    for (size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return true;
        if (c == '&' && i + 2 < text.size() && text[i + 1] == '#') {
            size_t j = i + 2;
            int base = 10;
            if (j < text.size() && (text[j] == 'x' || text[j] == 'X')) {
                base = 16;
                ++j;
            }
            long code = 0;
            size_t digits = 0;
            for (; j < text.size() && std::isxdigit(static_cast<unsigned char>(text[j])) &&
                   digits < 8;
                 ++j, ++digits)
                code = code * base +
                       (std::isdigit(static_cast<unsigned char>(text[j]))
                            ? text[j] - '0'
                            : (std::tolower(static_cast<unsigned char>(text[j])) - 'a' + 10));
            if (digits > 0 && j < text.size() && text[j] == ';' && code < 0x20 && code != 9 &&
                code != 10 && code != 13)
                return true;
        }
    }
    return false;
}

std::string joinPath(const std::string& dir, const char* file) {
    if (dir.empty())
        return file;
    if (dir.back() == '/')
        return dir + file;
    return dir + "/" + file;
}

// Only "no such file" reads as empty: a file we may not read must not look like an empty
// model that the next save would then write over.
Result<std::optional<std::string>> readIfExists(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return std::optional<std::string>();
        return makeError(std::string("cannot read the state file: ") + std::strerror(errno), path);
    }
    auto r = fs::readFile(path);
    if (!r.ok())
        return r.error();
    return std::optional<std::string>(std::move(r).value());
}

} // namespace

Result<model::Model> parseModel(const std::optional<std::string>& deployablesXml,
                                const std::string& deployablesPath,
                                const std::optional<std::string>& assembliesXml,
                                const std::string& assembliesPath,
                                std::vector<Error>* warningsOut) {
    return parseModel(deployablesXml, deployablesPath, assembliesXml, assembliesPath, std::nullopt,
                      kHostsFile, warningsOut);
}

Result<model::Model> parseModel(const std::optional<std::string>& deployablesXml,
                                const std::string& deployablesPath,
                                const std::optional<std::string>& assembliesXml,
                                const std::string& assembliesPath,
                                const std::optional<std::string>& hostsXml,
                                const std::string& hostsPath, std::vector<Error>* warningsOut) {
    model::Model m;
    std::vector<Error> warnings;
    std::shared_ptr<XmlFile> depFile;
    RefLines refLines;
    if (hostsXml) {
        auto f = XmlFile::parse(*hostsXml, hostsPath);
        if (!f.ok())
            return f.error();
        if (auto st = parseHosts(**f, m, warnings); !st)
            return st.error();
    }
    if (assembliesXml) {
        auto f = XmlFile::parse(*assembliesXml, assembliesPath);
        if (!f.ok())
            return f.error();
        if (auto st = parseAssemblies(**f, m, hostsPath, warnings); !st)
            return st.error();
    }
    if (deployablesXml) {
        auto f = XmlFile::parse(*deployablesXml, deployablesPath);
        if (!f.ok())
            return f.error();
        depFile = *f;
        if (auto st = parseDeployables(*depFile, m, refLines, warnings); !st)
            return st.error();
    }
    if (auto st = crossCheck(depFile.get(), assembliesPath, m, refLines); !st)
        return st.error();
    report(warnings, warningsOut);
    return m;
}

Result<model::Model> loadModel(const std::string& stateDir, std::vector<Error>* warnings) {
    const std::string depPath = joinPath(stateDir, kDeployablesFile);
    const std::string asmPath = joinPath(stateDir, kAssembliesFile);
    const std::string hostsPath = joinPath(stateDir, kHostsFile);
    auto dep = readIfExists(depPath);
    if (!dep.ok())
        return dep.error();
    auto as = readIfExists(asmPath);
    if (!as.ok())
        return as.error();
    auto hs = readIfExists(hostsPath);
    if (!hs.ok())
        return hs.error();
    return parseModel(*dep, depPath, *as, asmPath, *hs, hostsPath, warnings);
}

std::string formatDeployables(const model::Model& m) {
    pugi::xml_document doc;
    pugi::xml_node root = doc.append_child("deployables");
    if (!m.pcmkc_version_deployables.empty())
        root.append_attribute("pcmkc-version").set_value(m.pcmkc_version_deployables.c_str());
    for (const auto& [_, d] : m.deployables)
        writeDeployable(root, d);
    return detail::toString(doc);
}

std::string formatAssemblies(const model::Model& m) {
    pugi::xml_document doc;
    pugi::xml_node root = doc.append_child("assemblies");
    if (!m.pcmkc_version_assemblies.empty())
        root.append_attribute("pcmkc-version").set_value(m.pcmkc_version_assemblies.c_str());
    for (const auto& [_, a] : m.assemblies)
        writeAssembly(root, a);
    return detail::toString(doc);
}

std::string formatHosts(const model::Model& m) {
    pugi::xml_document doc;
    pugi::xml_node root = doc.append_child("hosts");
    for (const auto& [_, h] : m.hosts)
        writeHost(root, h);
    return detail::toString(doc);
}

Status validateModel(const model::Model& m) {
    std::map<std::string, std::string> ownerOf;
    for (const auto& [key, d] : m.deployables) {
        if (key != d.name)
            return makeError("deployable " + q(d.name) + " is stored under the key " + q(key) +
                             "; the map key must equal the name");
        if (auto st = validateDeployable(d); !st)
            return st;
        for (const auto& ref : d.assemblies) {
            if (!m.assemblies.count(ref))
                return makeError("deployable " + q(d.name) + " names assembly " + q(ref) +
                                 ", which is not defined; define the assembly first");
            auto [o, inserted] = ownerOf.emplace(ref, d.name);
            if (!inserted)
                return makeError("assembly " + q(ref) + " is in deployables " + q(o->second) +
                                 " and " + q(d.name) +
                                 "; an assembly can be in one deployable only");
        }
    }
    std::map<std::string, std::string> nodeOwner;
    for (const auto& [key, h] : m.hosts) {
        if (key != h.name)
            return makeError("host " + q(h.name) + " is stored under the key " + q(key) +
                             "; the map key must equal the name");
        if (auto st = validateHost(h); !st)
            return st;
        if (auto [it, inserted] = nodeOwner.emplace(h.node, h.name); !inserted)
            return makeError("hosts " + q(it->second) + " and " + q(h.name) +
                             " have the same node " + q(h.node) +
                             "; each host has its own pcloud-node");
    }
    for (const auto& [key, a] : m.assemblies) {
        if (key != a.name)
            return makeError("assembly " + q(a.name) + " is stored under the key " + q(key) +
                             "; the map key must equal the name");
        if (auto st = validateAssembly(a); !st)
            return st;
        if (!a.host.empty() && !m.hosts.count(a.host))
            return makeError("assembly " + q(a.name) + " is pinned to host " + q(a.host) +
                             ", which is not defined; host_add it first");
        for (const auto& h : a.hosts)
            if (!m.hosts.count(h))
                return makeError("assembly " + q(a.name) + " allows host " + q(h) +
                                 ", which is not defined; host_add it first");
    }
    for (const auto& v : {m.pcmkc_version_deployables, m.pcmkc_version_assemblies})
        if (v.find_first_of("\r\n\t") != std::string::npos)
            return makeError("pcmkc-version " + q(v) + " holds a line break or tab");
    return {};
}

Status saveModel(const std::string& stateDir, const model::Model& m, const SaveOptions& options) {
    if (auto st = validateModel(m); !st)
        return makeError("not saving an invalid model: " + st.error().message, stateDir);
    const std::string depPath = joinPath(stateDir, kDeployablesFile);
    const std::string asmPath = joinPath(stateDir, kAssembliesFile);
    const std::string hostsPath = joinPath(stateDir, kHostsFile);
    const std::string depText = formatDeployables(m);
    const std::string asmText = formatAssemblies(m);
    const std::string hostsText = formatHosts(m);
    // A state dir without hosts keeps no db_hosts.xml (single-host users see no new file).
    struct stat hostsStat {};
    const bool hostsFileExists = ::stat(hostsPath.c_str(), &hostsStat) == 0;
    const bool writeHosts = !m.hosts.empty() || hostsFileExists;

    // Whatever is written must read back as the same model; refuse rather than write a file
    // that would load differently (e.g. a value with control characters XML cannot carry).
    if (hasForbiddenControl(depText) || hasForbiddenControl(asmText) ||
        hasForbiddenControl(hostsText))
        return makeError("not saving: a value holds a control character XML cannot carry "
                         "(only tab, newline and carriage return are allowed); nothing was written",
                         stateDir);
    std::vector<Error> ignored;
    auto back = parseModel(depText, depPath, asmText, asmPath, hostsText, hostsPath, &ignored);
    if (!back.ok())
        return makeError("not saving: the new file would not load back (" +
                             back.error().describe() + "); nothing was written",
                         stateDir);
    if (!(*back == m))
        return makeError("not saving: a value cannot be stored faithfully in XML (control "
                         "characters or NUL bytes?); nothing was written",
                         stateDir);

    if (auto st = fs::makePrivateDir(stateDir); !st)
        return st;

    // Assemblies the deployables currently on disk still name, but the new model drops:
    // keep them in the first assemblies write so the old deployables stay valid until the
    // new ones are in place (crash consistency, see store.h).
    model::Model bridge = m;
    bool needBridge = false;
    // Likewise hosts the assemblies on disk still name: db_hosts.xml is written first (so
    // new assemblies never name a host missing from disk) and keeps them until the end.
    model::Model hostsBridge = m;
    bool needHostsBridge = false;
    {
        auto dep = readIfExists(depPath);
        auto as = readIfExists(asmPath);
        auto hs = readIfExists(hostsPath);
        if (dep.ok() && as.ok() && hs.ok()) {
            std::vector<Error> w;
            auto old = parseModel(*dep, depPath, *as, asmPath, *hs, hostsPath, &w);
            if (old.ok()) {
                for (const auto& [_, d] : old->deployables)
                    for (const auto& ref : d.assemblies)
                        if (!m.assemblies.count(ref)) {
                            bridge.assemblies[ref] = old->assemblies.at(ref);
                            needBridge = true;
                        }
                for (const auto& [_, a] : bridge.assemblies) {
                    // Old assemblies are on disk until the last assemblies write.
                    const model::Assembly* onDisk = old->findAssembly(a.name);
                    for (const model::Assembly* x : {&a, onDisk}) {
                        if (!x)
                            continue;
                        std::vector<std::string> refs = x->hosts;
                        if (!x->host.empty())
                            refs.push_back(x->host);
                        for (const auto& h : refs)
                            if (!m.hosts.count(h) && old->hosts.count(h)) {
                                hostsBridge.hosts[h] = old->hosts.at(h);
                                needHostsBridge = true;
                            }
                    }
                }
            }
        }
    }

    auto hookFor = [&](const std::string& path) -> std::function<bool()> {
        if (!options.beforeRename)
            return {};
        return [&options, path] { return options.beforeRename(path); };
    };
    if (writeHosts) {
        const std::string first = needHostsBridge ? formatHosts(hostsBridge) : hostsText;
        if (auto st = fs::writeAtomic(hostsPath, first, hookFor(hostsPath)); !st)
            return st;
    }
    if (needBridge) {
        if (auto st = fs::writeAtomic(asmPath, formatAssemblies(bridge), hookFor(asmPath)); !st)
            return st;
    } else if (auto st = fs::writeAtomic(asmPath, asmText, hookFor(asmPath)); !st) {
        return st;
    }
    if (auto st = fs::writeAtomic(depPath, depText, hookFor(depPath)); !st)
        return st;
    if (needBridge) {
        if (auto st = fs::writeAtomic(asmPath, asmText, hookFor(asmPath)); !st)
            return st;
    }
    if (writeHosts && needHostsBridge) {
        if (auto st = fs::writeAtomic(hostsPath, hostsText, hookFor(hostsPath)); !st)
            return st;
    }
    return {};
}

} // namespace pcloud::store
