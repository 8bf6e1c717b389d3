#include "policy/leadership.h"

#include <algorithm>

namespace pcloud::policy {

const char* roleName(Role r) {
    switch (r) {
    case Role::Campaigning:
        return "campaigning";
    case Role::Leader:
        return "leader";
    case Role::Ended:
        return "ended";
    }
    return "?";
}

void Leadership::beginTerm(Millis sent_at, Millis ttl_ms) {
    in_term_ = true;
    ended_ = false;
    end_reason_.clear();
    have_view_ = false;
    view_ = {};
    t_.ttl_ms = ttl_ms;
    deadline_ = sent_at + ttl_ms - t_.margin_ms;
    if (ttl_ms <= t_.margin_ms) {
        ended_ = true;
        end_reason_ = "the granted TTL is not longer than the safety margin";
    }
}

void Leadership::renewed(Millis sent_at, Millis ttl_ms) {
    if (!in_term_ || ended_)
        return;
    if (ttl_ms <= 0) {
        end("the lease is gone (keep-alive answered TTL 0)");
        return;
    }
    // Never moves back: an old reply arriving late says less than a newer one did.
    deadline_ = std::max(deadline_, sent_at + ttl_ms - t_.margin_ms);
}

void Leadership::observed(const ElectionView& v) {
    if (!in_term_ || ended_)
        return;
    if (!v.own_present) {
        end("the candidate key is gone (lease expired or revoked)");
        return;
    }
    have_view_ = true;
    view_ = v;
}

void Leadership::end(std::string reason) {
    if (!in_term_ || ended_)
        return;
    ended_ = true;
    end_reason_ = std::move(reason);
}

LeadershipDecision Leadership::decide(Millis now) {
    LeadershipDecision d;
    d.deadline = deadline_;
    d.lease_end = deadline_ == 0 ? 0 : deadline_ + t_.margin_ms;
    if (!in_term_) {
        d.role = Role::Ended;
        d.reason = "no term";
        return d;
    }
    if (!ended_ && now >= deadline_)
        end("the local lease deadline passed (" + std::to_string(now - deadline_) +
            " ms ago) without a renewal");
    if (ended_) {
        d.role = Role::Ended;
        d.reason = end_reason_;
        d.next_wakeup = now;
        return d;
    }
    d.next_wakeup = deadline_;
    if (!have_view_) {
        d.role = Role::Campaigning;
        d.reason = "the candidate prefix was not read yet";
        return d;
    }
    d.leader = view_.lowest_name;
    if (view_.own_create_revision == view_.lowest_create_revision) {
        d.role = Role::Leader;
        d.epoch = view_.own_create_revision;
        return d;
    }
    d.role = Role::Campaigning;
    d.reason = "another candidate's key is older";
    return d;
}

} // namespace pcloud::policy
