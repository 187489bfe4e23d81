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
    if (fallback_.load() == fallback) {
        return;  // the common case (a worker failing again): no lock
    }
    std::lock_guard lock(fallback_mutex_);
    if (fallback_.load() == fallback) {
        return;
    }
    fallback_.store(fallback);
    if (fallback) {
        log_line(log_level::warn,
                 "redis unreachable; store.redis.failure_mode decides (open: local buckets, "
                 "closed: 503)");
    } else {
        log_line(log_level::info, "redis reachable again; deciding in redis");
    }
}

}  // namespace tollgate::store
