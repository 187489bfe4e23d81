#include "tollgate/store/redis_shared.hpp"

#include "tollgate/log.hpp"

namespace tollgate::store {

std::string_view to_string(redis_error_kind kind) {
    switch (kind) {
        case redis_error_kind::connect:
            return "connect";
        case redis_error_kind::connection:
            return "connection";
        case redis_error_kind::timeout:
            return "timeout";
        case redis_error_kind::reply:
            return "reply";
        case redis_error_kind::noscript:
            return "noscript";
        case redis_error_kind::count_:
            break;
    }
    return "unknown";
}

void redis_shared::attach(prometheus::Registry& registry) {
    std::call_once(attached_, [&] {
        auto& errors = prometheus::BuildCounter()
                           .Name("tollgate_store_errors_total")
                           .Help("Redis store failures by kind")
                           .Register(registry);
        for (std::size_t k = 0; k < errors_.size(); ++k) {
            errors_[k] =
                &errors.Add({{"kind", std::string(to_string(static_cast<redis_error_kind>(k)))}});
        }
        duration_ = &prometheus::BuildHistogram()
                         .Name("tollgate_store_duration_seconds")
                         .Help("Round trip of one rate decision in Redis")
                         .Register(registry)
                         .Add({}, prometheus::Histogram::BucketBoundaries{
                                      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02,
                                      0.05, 0.1, 0.25, 0.5, 1, 2.5});
    });
}

void redis_shared::error(redis_error_kind kind) {
    if (auto* c = errors_[static_cast<std::size_t>(kind)]) {
        c->Increment();
    }
}

void redis_shared::observe_duration(double seconds) {
    if (duration_) {
        duration_->Observe(seconds);
    }
}

double redis_shared::errors(redis_error_kind kind) const {
    const auto* c = errors_[static_cast<std::size_t>(kind)];
    return c ? c->Value() : 0;
}

void redis_shared::report_fallback(bool fallback) {
    if (fallback_.load() == fallback && !unlogged_.load()) {
        return;  // the common case (a worker failing again, deciding again): no lock
    }
    report_fallback(fallback, std::chrono::steady_clock::now());
}

void redis_shared::report_fallback(bool fallback, std::chrono::steady_clock::time_point now) {
    std::lock_guard lock(fallback_mutex_);
    if (fallback_.load() != fallback) {
        fallback_.store(fallback);
        ++unlogged_changes_;
    }
    if (fallback == logged_) {
        unlogged_.store(false);  // flipped and back: the last line is right again
        return;
    }
    // "Reachable again" always completes its pair; a new "unreachable" line
    // waits for the interval, and the first report after it writes it.
    if (fallback && any_unreachable_line_ && now - last_unreachable_line_ < log_interval) {
        unlogged_.store(true);
        return;
    }
    --unlogged_changes_;  // the line below tells this one
    std::string also;
    if (unlogged_changes_ > 0) {
        also = " (" + std::to_string(unlogged_changes_) +
               " more changes since the previous line, not logged)";
        unlogged_changes_ = 0;
    }
    logged_ = fallback;
    unlogged_.store(false);
    if (fallback) {
        any_unreachable_line_ = true;
        last_unreachable_line_ = now;
        log_line(log_level::warn,
                 "redis unreachable; store.redis.failure_mode decides (open: local buckets, "
                 "closed: 503)" +
                     also);
    } else {
        log_line(log_level::info, "redis reachable again; deciding in redis" + also);
    }
}

}  // namespace tollgate::store
