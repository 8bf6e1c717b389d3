#include "referee/logging_referee.h"

#include "common/log.h"

namespace pcloud::referee {

Status LoggingReferee::apply(const std::vector<Member>& desired) {
    if (auto st = validateMembers(desired); !st)
        return st;
    auto current = read();
    for (const auto& d : diffMembers(desired, *current))
        PCLOUD_LOG(Notice, "Referee membership change",
                   {{"referee", "log"}, {"member", d.member}, {"change", d.describe()}});
    members_.clear();
    for (const auto& m : desired)
        members_[m.name] = ActualMember{m.name, m.address, m.desired, ""};
    return {};
}

Result<std::vector<ActualMember>> LoggingReferee::read() {
    std::vector<ActualMember> out;
    for (const auto& [_, m] : members_)
        out.push_back(m);
    return out;
}

Result<DriftReport> LoggingReferee::reconcile(const std::vector<Member>& desired) {
    DriftReport report;
    report.drifts = diffMembers(desired, *read());
    if (auto st = apply(desired); !st)
        return st.error();
    return report;
}

} // namespace pcloud::referee
