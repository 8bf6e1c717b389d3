#pragma once
// Internal to pcloud_store: the XML form of each model object, shared by the state files
// and the resource templates. Parsers check syntax per attribute (with file and line);
// validate* check the rules between fields and are also run on models built in memory.

#include "model/model.h"
#include "store/xml_file.h"

#include <vector>

namespace pcloud::store::detail {

Status parseEscalation(Element& e, model::Escalation& out);
Status parseDeployableAttributes(Element& e, model::Deployable& out);
Status parseBackoff(Element& e, model::Backoff& out);
Status parseReferee(Element& e, model::RefereeConfig& out, std::vector<Error>& warnings);
// Attributes and children (<domain>, <resources>) of an <assembly> in db_assemblies.xml.
Status parseAssembly(const XmlFile& f, Element& e, model::Assembly& out,
                     std::vector<Error>& warnings);
// The attributes shared by <resource> and <template>: type, class, provider, unit,
// monitor_interval, escalation; and the children <param> and <probe>.
Status parseResourceBody(const XmlFile& f, Element& e, model::Resource& out,
                         std::vector<Error>& warnings);
Status parseProbe(Element& e, model::Probe& out);
// Attributes and <fence> of a <host> in db_hosts.xml (the name is read by the caller).
Status parseHost(const XmlFile& f, Element& e, model::Host& out, std::vector<Error>& warnings);
// "h1,h2" <-> names; an invalid or repeated name is an error.
Result<std::vector<std::string>> splitHostList(const std::string& text);
std::string joinHostList(const std::vector<std::string>& hosts);

void writeDeployable(pugi::xml_node parent, const model::Deployable& d);
void writeAssembly(pugi::xml_node parent, const model::Assembly& a);
void writeHost(pugi::xml_node parent, const model::Host& h);
// Writes type/class/provider/unit/monitor_interval/escalation and <param>/<probe> children.
void writeResourceBody(pugi::xml_node node, const model::Resource& r);

Status validateEscalation(const model::Escalation& e);
Status validateDeployable(const model::Deployable& d);
Status validateAssembly(const model::Assembly& a);
Status validateResource(const model::Resource& r);
Status validateProbe(const model::Probe& p);
Status validateHost(const model::Host& h);

std::string formatFailures(int failures);

} // namespace pcloud::store::detail
