#include "tollgate/http/date.hpp"

#include <array>
#include <cstdio>

namespace tollgate {

std::string http_date(std::time_t t) {
    static constexpr std::array<const char*, 7> days{"Sun", "Mon", "Tue", "Wed",
                                                     "Thu", "Fri", "Sat"};
    static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&t, &tm);
    // Names of our own, not strftime's: they must not follow the locale.
    std::array<char, 32> text{};
    const int n = std::snprintf(text.data(), text.size(), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                                days[static_cast<std::size_t>(tm.tm_wday)], tm.tm_mday,
                                months[static_cast<std::size_t>(tm.tm_mon)], tm.tm_year + 1900,
                                tm.tm_hour, tm.tm_min, tm.tm_sec);
    return std::string(text.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
}

std::string_view http_date_now() {
    thread_local std::time_t formatted = -1;
    thread_local std::string text;
    const std::time_t now = std::time(nullptr);
    if (now != formatted) {
        text = http_date(now);
        formatted = now;
    }
    return text;
}

}  // namespace tollgate
