#pragma once
// A referee that only logs the membership changes it is asked for, and remembers them
// as its "actual" state. Used by deployables without a balancer driver (driver "log")
// and until dped wires the real drivers.

#include "referee/referee.h"

#include <map>

namespace pcloud::referee {

class LoggingReferee final : public Referee {
public:
    std::string describe() const override { return "log"; }
    Status apply(const std::vector<Member>& desired) override;
    Result<std::vector<ActualMember>> read() override;
    Result<DriftReport> reconcile(const std::vector<Member>& desired) override;

private:
    std::map<std::string, ActualMember> members_;
};

} // namespace pcloud::referee
