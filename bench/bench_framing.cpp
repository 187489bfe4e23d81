// Cost of the strict head checks (proxy/framing) on the heads a proxied
// request meets: the short request wrk sends, a browser-like request with
// a dozen fields, and a typical backend response. find_head_end runs on
// every head before it is checked, so it is measured on the same heads.

#include <benchmark/benchmark.h>

#include <string>
#include <string_view>
#include <vector>

#include "tollgate/proxy/framing.hpp"

namespace {

using namespace std::string_view_literals;

constexpr auto short_request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n"sv;

constexpr auto browser_request =
    "GET /api/v1/orders?page=2&per_page=50 HTTP/1.1\r\n"
    "Host: api.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: application/json, text/plain, */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijk\r\n"
    "X-Request-Id: 4f6c2a0e-8d1b-4b7e-9a3c-2f5d6e7a8b9c\r\n"
    "Referer: https://app.example.com/orders\r\n"
    "Connection: keep-alive\r\n"
    "Sec-Fetch-Dest: empty\r\n"
    "Sec-Fetch-Mode: cors\r\n"
    "Sec-Fetch-Site: same-site\r\n"
    "\r\n"sv;

constexpr auto backend_response =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Mon, 23 Nov 2026 21:08:45 GMT\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 1234\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: no-store\r\n"
    "\r\n"sv;

void request_head(benchmark::State& state, std::string_view head) {
    tollgate::proxy::head_info info;
    for (auto _ : state) {
        auto error = tollgate::proxy::validate_request_head(head, {}, info);
        benchmark::DoNotOptimize(error);
        benchmark::DoNotOptimize(info);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * head.size()));
}

void response_head(benchmark::State& state, std::string_view head) {
    tollgate::proxy::head_info info;
    for (auto _ : state) {
        auto error = tollgate::proxy::validate_response_head(head, info);
        benchmark::DoNotOptimize(error);
        benchmark::DoNotOptimize(info);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * head.size()));
}

void head_end(benchmark::State& state, std::string_view head) {
    for (auto _ : state) {
        benchmark::DoNotOptimize(head);
        auto end = tollgate::proxy::find_head_end(head);
        benchmark::DoNotOptimize(end);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * head.size()));
}

// A 16 KiB head that arrives a line at a time (a slow or hostile client),
// checked after every line as the session does: resumed at the first line
// not seen whole, against checking each time from the start (the reference:
// what a stateless check costs, quadratic in the lines).
std::string trickled_head() {
    std::string head = "GET /a HTTP/1.1\r\nHost: h\r\n";
    while (head.size() < 16 * 1024) {
        head += "X-Field-" + std::to_string(head.size()) + ": " + std::string(40, 'v') + "\r\n";
    }
    return head;
}

std::vector<std::size_t> line_ends(std::string_view head) {
    std::vector<std::size_t> ends;
    for (std::size_t end = head.find('\n') + 1; end != 0; end = head.find('\n', end) + 1) {
        ends.push_back(end);
    }
    return ends;
}

void trickled_resumed(benchmark::State& state) {
    const std::string head = trickled_head();
    const auto ends = line_ends(head);
    for (auto _ : state) {
        tollgate::proxy::head_start_check check({1000});
        for (const std::size_t end : ends) {
            auto verdict = check.feed(std::string_view(head).substr(0, end));
            benchmark::DoNotOptimize(verdict);
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * head.size()));
}

void trickled_from_start(benchmark::State& state) {
    const std::string head = trickled_head();
    const auto ends = line_ends(head);
    for (auto _ : state) {
        for (const std::size_t end : ends) {
            auto verdict = tollgate::proxy::check_request_head_start(
                std::string_view(head).substr(0, end), {1000});
            benchmark::DoNotOptimize(verdict);
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * head.size()));
}

BENCHMARK_CAPTURE(request_head, short, short_request);
BENCHMARK_CAPTURE(request_head, browser, browser_request);
BENCHMARK_CAPTURE(response_head, backend, backend_response);
BENCHMARK_CAPTURE(head_end, short_request, short_request);
BENCHMARK_CAPTURE(head_end, browser_request, browser_request);
BENCHMARK_CAPTURE(head_end, backend_response, backend_response);
BENCHMARK(trickled_resumed);
BENCHMARK(trickled_from_start);

}  // namespace

BENCHMARK_MAIN();
