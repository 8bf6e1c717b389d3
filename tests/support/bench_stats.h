#pragma once
// What the benchmarks under bench/ share to report a series: the monotonic clock dped logs
// as mono_us= (CLOCK_MONOTONIC, the same in every process), and median / p99 / max of a
// series of samples.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pcloud::bench {

inline std::int64_t monoUs() {
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

struct Stats {
    double median = 0, p99 = 0, max = 0;
    std::size_t n = 0;
};

// Median and p99 by rank (rounded to the nearest sample), max; all 0 for no samples.
inline Stats stats(std::vector<double> v) {
    Stats s;
    s.n = v.size();
    if (v.empty())
        return s;
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
        return v[std::min(i, v.size() - 1)];
    };
    s.median = at(0.5);
    s.p99 = at(0.99);
    s.max = v.back();
    return s;
}

} // namespace pcloud::bench
