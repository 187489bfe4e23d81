#include "tollgate/admin/metrics.hpp"

#include <prometheus/gauge.h>
#include <prometheus/text_serializer.h>

namespace tollgate::admin {

std::string_view to_string(decision_kind d) {
    static constexpr std::array<std::string_view, 3> names{"allowed", "limited", "rejected"};
    return names[static_cast<std::size_t>(d)];
}

std::string_view to_string(reason_kind r) {
    static constexpr std::array<std::string_view, 11> names{
        "ok",          "exempt",           "dry_run",        "rate",    "concurrency",
        "bad_request", "header_too_large", "body_too_large", "timeout", "store_unavailable",
        "tunnels"};
    return names[static_cast<std::size_t>(r)];
}

std::string_view to_string(key_kind k) {
    static constexpr std::array<std::string_view, 4> names{"org", "tok", "ip", "none"};
    return names[static_cast<std::size_t>(k)];
}

std::string_view to_string(upstream_error_kind e) {
    static constexpr std::array<std::string_view, 7> names{"connect_refused",  "connect_timeout",
                                                           "response_timeout", "reset",
                                                           "invalid_response", "tls",
                                                           "pool_exhausted"};
    return names[static_cast<std::size_t>(e)];
}

void atomic_histogram::observe(double seconds) noexcept {
    std::size_t i = 0;
    while (i < bounds.size() && seconds > bounds[i]) {
        ++i;
    }
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_micros_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void atomic_histogram::add_to(std::array<std::uint64_t, bounds.size() + 1>& buckets,
                              double& sum) const noexcept {
    for (std::size_t i = 0; i < buckets.size(); ++i) {
        buckets[i] += buckets_[i].load(std::memory_order_relaxed);
    }
    sum += static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
}

metrics::metrics(std::size_t shards) : registry_(std::make_shared<prometheus::Registry>()) {
    for (std::size_t i = 0; i < std::max<std::size_t>(1, shards); ++i) {
        shards_.push_back(std::make_unique<metrics_shard>());
    }
    reload_failures_ = &prometheus::BuildCounter()
                            .Name("tollgate_config_reload_failures_total")
                            .Help(
                                "SIGHUP reloads whose configuration failed to load; the old "
                                "configuration kept serving")
                            .Register(*registry_)
                            .Add({});
    prometheus::BuildGauge()
        .Name("tollgate_build_info")
        .Help("Build information (always 1)")
        .Register(*registry_)
        .Add({{"version", TOLLGATE_VERSION}})
        .Set(1);
}

std::uint64_t metrics::requests(decision_kind d) const {
    std::uint64_t total = 0;
    for (std::size_t r = 0; r < static_cast<std::size_t>(reason_kind::count_); ++r) {
        total += requests(d, static_cast<reason_kind>(r));
    }
    return total;
}

std::uint64_t metrics::requests(decision_kind d, reason_kind r) const {
    std::uint64_t total = 0;
    for (const auto& s : shards_) {
        for (std::size_t k = 0; k < static_cast<std::size_t>(key_kind::count_); ++k) {
            total += s->requests[metrics_shard::index(d, r, static_cast<key_kind>(k))].load(
                std::memory_order_relaxed);
        }
    }
    return total;
}

namespace {

prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type) {
    prometheus::MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

prometheus::ClientMetric gauge_metric(double value,
                                      std::vector<prometheus::ClientMetric::Label> labels = {}) {
    prometheus::ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = value;
    return m;
}

prometheus::ClientMetric counter_metric(double value,
                                        std::vector<prometheus::ClientMetric::Label> labels = {}) {
    prometheus::ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = value;
    return m;
}

/// One unlabelled counter: a member of every shard, summed.
prometheus::MetricFamily counter_family(const std::vector<std::unique_ptr<metrics_shard>>& shards,
                                        std::atomic<std::uint64_t> metrics_shard::*member,
                                        std::string name, std::string help) {
    std::uint64_t total = 0;
    for (const auto& s : shards) {
        total += ((*s).*member).load(std::memory_order_relaxed);
    }
    auto f = family(std::move(name), std::move(help), prometheus::MetricType::Counter);
    f.metric.push_back(counter_metric(static_cast<double>(total), {}));
    return f;
}

template <class Member>
prometheus::MetricFamily histogram_family(const std::vector<std::unique_ptr<metrics_shard>>& shards,
                                          Member member, std::string name, std::string help) {
    std::array<std::uint64_t, atomic_histogram::bounds.size() + 1> buckets{};
    double sum = 0;
    for (const auto& s : shards) {
        ((*s).*member).add_to(buckets, sum);
    }
    auto f = family(std::move(name), std::move(help), prometheus::MetricType::Histogram);
    prometheus::ClientMetric m;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < buckets.size(); ++i) {
        cumulative += buckets[i];
        prometheus::ClientMetric::Bucket b;
        b.cumulative_count = cumulative;
        b.upper_bound = i < atomic_histogram::bounds.size()
                            ? atomic_histogram::bounds[i]
                            : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back(b);
    }
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = sum;
    f.metric.push_back(std::move(m));
    return f;
}

}  // namespace

std::string metrics::serialize(const gauge_values& g) const {
    std::vector<prometheus::MetricFamily> families = registry_->Collect();
    using prometheus::MetricType;

    auto requests = family("tollgate_requests_total",
                           "Requests by decision (allowed, limited, rejected), reason and key type",
                           MetricType::Counter);
    for (std::size_t d = 0; d < static_cast<std::size_t>(decision_kind::count_); ++d) {
        for (std::size_t r = 0; r < static_cast<std::size_t>(reason_kind::count_); ++r) {
            for (std::size_t k = 0; k < static_cast<std::size_t>(key_kind::count_); ++k) {
                std::uint64_t total = 0;
                const auto i =
                    metrics_shard::index(static_cast<decision_kind>(d), static_cast<reason_kind>(r),
                                         static_cast<key_kind>(k));
                for (const auto& s : shards_) {
                    total += s->requests[i].load(std::memory_order_relaxed);
                }
                if (total == 0) {
                    continue;  // only combinations that happened; bounded either way
                }
                requests.metric.push_back(counter_metric(
                    static_cast<double>(total),
                    {{"decision", std::string(to_string(static_cast<decision_kind>(d)))},
                     {"reason", std::string(to_string(static_cast<reason_kind>(r)))},
                     {"key_type", std::string(to_string(static_cast<key_kind>(k)))}}));
            }
        }
    }
    families.push_back(std::move(requests));

    auto errors =
        family("tollgate_upstream_errors_total", "Upstream failures by kind", MetricType::Counter);
    for (std::size_t e = 0; e < static_cast<std::size_t>(upstream_error_kind::count_); ++e) {
        std::uint64_t total = 0;
        for (const auto& s : shards_) {
            total += s->upstream_errors[e].load(std::memory_order_relaxed);
        }
        errors.metric.push_back(counter_metric(
            static_cast<double>(total),
            {{"kind", std::string(to_string(static_cast<upstream_error_kind>(e)))}}));
    }
    families.push_back(std::move(errors));

    // Not an upstream_errors kind: those count exchanges that failed, and
    // the exchange after a failover usually succeeds. No server label
    // (bounded labels); the log names the server.
    families.push_back(counter_family(shards_, &metrics_shard::upstream_connect_failovers,
                                      "tollgate_upstream_connect_failovers_total",
                                      "Connects to one server of an upstream group that failed "
                                      "(refused, timed out, TLS handshake failed) and moved on to "
                                      "another server of the group"));
    families.push_back(counter_family(shards_, &metrics_shard::connections_refused,
                                      "tollgate_connections_refused_total",
                                      "Client connections closed as they were accepted: "
                                      "client.max_connections open already"));
    families.push_back(counter_family(shards_, &metrics_shard::tls_handshake_failures,
                                      "tollgate_tls_handshake_failures_total",
                                      "Client TLS handshakes that failed on the TLS listener"));

    auto responses = family("tollgate_responses_total", "Responses sent to clients by status class",
                            MetricType::Counter);
    for (std::size_t c = 1; c <= 5; ++c) {
        std::uint64_t total = 0;
        for (const auto& s : shards_) {
            total += s->responses_by_class[c].load(std::memory_order_relaxed);
        }
        responses.metric.push_back(
            counter_metric(static_cast<double>(total), {{"class", std::to_string(c) + "xx"}}));
    }
    families.push_back(std::move(responses));

    families.push_back(histogram_family(
        shards_, &metrics_shard::upstream_duration, "tollgate_upstream_duration_seconds",
        "Time from forwarding a request to the end of the upstream response"));
    families.push_back(histogram_family(shards_, &metrics_shard::request_duration,
                                        "tollgate_request_duration_seconds",
                                        "Whole exchange, from the request header to the last "
                                        "byte of the response"));

    auto gauge = [&](std::string name, std::string help, double value) {
        auto f = family(std::move(name), std::move(help), MetricType::Gauge);
        f.metric.push_back(gauge_metric(value));
        families.push_back(std::move(f));
    };
    gauge("tollgate_inflight_slots", "Completion slots held (requests in flight upstream)",
          g.inflight_slots);
    gauge("tollgate_slots_queued",
          "Requests waiting for a completion slot (up to concurrency.queue_timeout)",
          g.slots_queued);
    gauge("tollgate_concurrency_capacity",
          "Completion slot capacity, routes' own included (0 = off)", g.concurrency_capacity);
    gauge("tollgate_slots_saturation",
          "In-flight share of the fullest slot limiter (global or a route's own), 0 = off or idle",
          g.slots_saturation);
    gauge("tollgate_active_keys", "Keys with at least one request in flight", g.active_keys);
    gauge("tollgate_ratelimit_keys", "Rate-limit buckets held in memory", g.ratelimit_keys);
    gauge("tollgate_draining", "1 while shutting down", g.draining);
    gauge("tollgate_tunnels_open", "Open tunnels (upgraded connections such as WebSockets)",
          g.tunnels_open);
    gauge("tollgate_store_fallback",
          "1 while Redis cannot decide: local buckets decide (failure_mode open) or requests get "
          "503 (closed)",
          g.store_fallback);

    auto evictions = family("tollgate_ratelimit_evictions_total",
                            "Live rate-limit buckets evicted (LRU) because max_keys was reached",
                            MetricType::Counter);
    evictions.metric.push_back(counter_metric(static_cast<double>(g.ratelimit_evictions)));
    families.push_back(std::move(evictions));

    auto per_route = family("tollgate_route_requests_total",
                            "Requests matched to a configured route, by route name and decision",
                            MetricType::Counter);
    for (const auto& route : g.routes) {
        for (std::size_t d = 0; d < route->decisions.size(); ++d) {
            per_route.metric.push_back(counter_metric(
                static_cast<double>(route->decisions[d].load(std::memory_order_relaxed)),
                {{"route", route->name},
                 {"decision", std::string(to_string(static_cast<decision_kind>(d)))}}));
        }
    }
    families.push_back(std::move(per_route));

    auto route_held = family("tollgate_route_inflight_slots",
                             "Completion slots held in a route's own limiter (routes with a "
                             "concurrency of their own)",
                             MetricType::Gauge);
    auto route_capacity = family("tollgate_route_concurrency_capacity",
                                 "Slot capacity of a route's own limiter", MetricType::Gauge);
    for (const auto& route : g.route_slots) {
        route_held.metric.push_back(gauge_metric(route.in_flight, {{"route", route.route}}));
        route_capacity.metric.push_back(gauge_metric(route.capacity, {{"route", route.route}}));
    }
    families.push_back(std::move(route_held));
    families.push_back(std::move(route_capacity));

    auto connections = family("tollgate_connections", "Open connections", MetricType::Gauge);
    connections.metric.push_back(gauge_metric(g.client_connections, {{"side", "client"}}));
    connections.metric.push_back(gauge_metric(g.upstream_connections, {{"side", "upstream"}}));
    families.push_back(std::move(connections));

    return prometheus::TextSerializer().Serialize(families);
}

}  // namespace tollgate::admin
