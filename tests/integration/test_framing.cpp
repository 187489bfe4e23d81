// Request and response framing over real sockets: every corpus case goes
// through tollgate to a raw recording upstream, which must receive exactly
// the requests the client framed cleanly and nothing else.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <regex>
#include <thread>

#include <poll.h>
#include <sys/socket.h>

#include "framing_corpus.hpp"
#include "framing_upstream.hpp"
#include "support.hpp"
#include "test_clients.hpp"
#include "tollgate/proxy/framing.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace tollgate::test::framing;

namespace {

const std::string data_dir = TOLLGATE_TEST_DATA_DIR "/framing/";
constexpr std::string_view sentinel = "GET /sentinel HTTP/1.1\r\nHost: localhost\r\n\r\n";
constexpr auto patience = std::chrono::seconds(5);

config framing_config(std::uint16_t upstream_port) {
    auto cfg = test_config(upstream_port);
    cfg.client.body_timeout = std::chrono::milliseconds(3000);
    // Far beyond `patience`: a verdict on a head that never ends must come
    // from its bytes, not from a 408 or 504 when a wait runs out.
    cfg.client.header_timeout = std::chrono::seconds(60);
    cfg.upstream.response_timeout = std::chrono::seconds(60);
    return cfg;
}

/// A route named `name` with a limit of its own: one request per minute.
route_config one_per_minute(std::string name) {
    route_config route;
    route.name = std::move(name);
    route_rate_limit limit;
    limit.limit = 1;
    limit.window = std::chrono::seconds(60);
    route.rate_limit = limit;
    return route;
}

// A raw client: writes bytes as given, reads responses with Beast and
// reports errors instead of throwing, so truncation can be asserted. Every
// read gives up after `patience`.
class raw_client {
public:
    explicit raw_client(std::uint16_t port) : stream_(ioc_) {
        stream_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        stream_.socket().set_option(tcp::no_delay(true));
    }

    // All at once, or one byte per write (every possible cut of the head).
    // Stops quietly when tollgate has closed: it may answer before the end.
    void send(std::string_view bytes, bool bytewise = false) {
        error_code ec;
        if (!bytewise) {
            asio::write(stream_.socket(), asio::buffer(bytes.data(), bytes.size()), ec);
            return;
        }
        for (std::size_t i = 0; i < bytes.size() && !ec; ++i) {
            asio::write(stream_.socket(), asio::buffer(bytes.data() + i, 1), ec);
        }
    }

    int socket_handle() { return stream_.socket().native_handle(); }

    /// Bytes tollgate has sent that were not read yet (an early answer).
    std::size_t socket_readable() {
        error_code ec;
        return buffer_.size() + stream_.socket().available(ec);
    }

    struct result {
        error_code ec;
        unsigned status = 0;
        bool header_done = false;
        bool keep_alive = false;
        std::string body;
        http::response_header<> header;
    };

    result read(bool head = false) {
        result r;
        http::response_parser<http::string_body> parser;
        parser.body_limit(boost::none);
        parser.skip(head);
        stream_.expires_after(patience);
        http::async_read(stream_, buffer_, parser, [&r](error_code ec, std::size_t) { r.ec = ec; });
        run();
        ended_ = r.ec == asio::error::eof || r.ec == asio::error::connection_reset ||
                 r.ec == http::error::end_of_stream || r.ec == http::error::partial_message;
        timed_out_ = r.ec == beast::error::timeout;
        r.header_done = parser.is_header_done();
        if (r.header_done) {
            r.status = parser.get().result_int();
            r.keep_alive = parser.get().keep_alive();
            r.body = parser.get().body();
            r.header = parser.get().base();
        }
        return r;
    }

    // Reads until the peer closes; returns the bytes that came before it
    // (must be none) or "<open>" when it did not close within `patience`.
    std::string rest_until_close() {
        std::string rest(static_cast<const char*>(buffer_.data().data()), buffer_.size());
        buffer_.clear();
        if (ended_) {
            return rest;  // a read already found the connection closed or reset
        }
        if (timed_out_) {
            return "<open>" + rest;  // and the stream closed the socket itself
        }
        stream_.expires_after(patience);
        std::array<char, 4096> chunk{};
        for (;;) {
            error_code ec;
            std::size_t n = 0;
            stream_.async_read_some(asio::buffer(chunk), [&](error_code e, std::size_t got) {
                ec = e;
                n = got;
            });
            run();
            rest.append(chunk.data(), n);
            if (ec == beast::error::timeout) {
                return "<open>" + rest;
            }
            if (ec) {
                return rest;
            }
        }
    }

private:
    // Runs the pending read to its end: asynchronous, since the stream's
    // deadline (`patience`) only applies to asynchronous operations.
    void run() {
        ioc_.restart();
        ioc_.run();
    }

    asio::io_context ioc_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    bool ended_ = false;      ///< a read found the connection closed or reset
    bool timed_out_ = false;  ///< a read ran out of patience (the socket is closed now)
};

std::string describe(const std::vector<received_request>& requests) {
    std::string out;
    for (const auto& r : requests) {
        out += "\n  " + r.method + " " + r.target + (r.complete ? " body=" : " ABORTED body=") +
               printable(r.body);
    }
    return out.empty() ? " (none)" : out;
}

// One request case through a fresh tollgate and upstream.
void run_request_case(const corpus_case& c, bool bytewise) {
    INFO("case " << c.name << " (requests.corpus:" << c.line << ")"
                 << (bytewise ? " sent byte by byte" : ""));
    recording_upstream up;
    {
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send(c.bytes, bytewise);
        for (unsigned expected : c.statuses) {
            const auto r = client.read();
            INFO("reading the response expected to be " << expected << ": " << r.ec.message());
            REQUIRE(r.header_done);
            CHECK(r.status == expected);
            if (expected >= 400) {
                CHECK(r.body.find("\"error\"") != std::string::npos);
            }
        }
        if (c.closed) {
            CHECK(printable(client.rest_until_close()).empty());
        } else {
            // Both sides must still agree where requests start.
            client.send(sentinel);
            const auto r = client.read();
            INFO("sentinel: " << r.ec.message());
            CHECK(r.status == 200);
            CHECK(r.body == "ok");
        }
    }
    // tollgate has stopped: whatever reached the upstream has been received.
    REQUIRE(up.wait_all_closed(patience));

    std::vector<expected_request> want = c.upstream;
    if (!c.closed) {
        want.push_back({"GET", "/sentinel", ""});
    }
    std::vector<received_request> complete;
    std::vector<received_request> aborted;
    for (auto& r : up.requests()) {
        (r.complete ? complete : aborted).push_back(r);
    }
    INFO("upstream received:" << describe(up.requests()));
    REQUIRE(complete.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        CHECK(complete[i].method == want[i].method);
        CHECK(complete[i].target == want[i].target);
        CHECK(printable(complete[i].body) == printable(want[i].body));
    }
    // A head may go upstream before its body has arrived, and is then cut
    // off when the body turns out broken; when the body came with the head
    // tollgate finds the fault first and sends nothing. Either is clean.
    REQUIRE(aborted.size() <= c.aborted.size());
    for (std::size_t i = 0; i < aborted.size(); ++i) {
        CHECK(aborted[i].method == c.aborted[i].method);
        CHECK(aborted[i].target == c.aborted[i].target);
    }
    for (const auto& head : up.refused_heads()) {
        FAIL_CHECK("tollgate forwarded a head it would refuse: " << head);
    }
    for (const auto& stray : up.stray_bytes()) {
        FAIL_CHECK("the upstream got bytes that are no request: " << stray);
    }
}

void run_response_case(const corpus_case& c) {
    INFO("case " << c.name << " (responses.corpus:" << c.line << ")");
    scripted_upstream up(c.bytes, c.eof);
    {
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        const auto r = client.read();
        INFO("read: " << r.ec.message());
        REQUIRE(r.header_done);
        REQUIRE(c.statuses.size() == 1);
        CHECK(r.status == c.statuses[0]);
        if (c.truncated) {
            CHECK(r.ec);                           // the head came, the body never completed...
            CHECK(r.ec != beast::error::timeout);  // ...and tollgate said so
        } else {
            CHECK_FALSE(r.ec);
        }
        if (c.body) {
            CHECK(r.body == *c.body);
        }
        if (c.closed) {
            const std::string rest = client.rest_until_close();
            CHECK(rest.rfind("<open>", 0) == std::string::npos);
        } else {
            CHECK(r.keep_alive);
            client.send(sentinel);
            const auto s = client.read();
            CHECK(s.status == 200);
            CHECK(s.body == "ok");
            if (c.validator != 0 || (!c.statuses.empty() && c.statuses.front() == 502)) {
                // The upstream that framed badly was closed, not pooled: the
                // sentinel needed a connection of its own, and the first one
                // was closed by tollgate without waiting for the shutdown.
                CHECK(up.connections() == 2);
                CHECK(up.wait_closed_count(1, patience));
            } else if (!c.eof) {
                CHECK(up.connections() == 1);  // a clean exchange is pooled
            }
        }
    }
    CHECK(up.wait_all_closed(patience));
}

/// What an early_answer_upstream does once it has answered.
enum class after_answer {
    close,    ///< closes with the rest of the body unread (a reset)
    hold,     ///< neither reads on nor closes, until the test ends
    read_on,  ///< reads the rest of the body (by its Content-Length)
};

/// Answers `answer` after the head and `discard` bytes of the body, then
/// does `after`: as a server that refuses an upload before it has read it
/// all, or one that answers while it reads on.
class early_answer_upstream final : public raw_upstream {
public:
    explicit early_answer_upstream(std::size_t discard, after_answer after = after_answer::close,
                                   std::string answer =
                                       "HTTP/1.1 413 Payload Too Large\r\nContent-Length: "
                                       "9\r\n\r\ntoo large")
        : discard_(discard), after_(after), answer_(std::move(answer)) {}
    ~early_answer_upstream() override { stop(); }

    /// Body bytes received on all connections.
    std::size_t body_bytes() { return body_bytes_.load(); }

private:
    void serve(tcp::socket& socket, std::size_t) override {
        std::string buf;
        std::array<char, 65536> chunk{};
        error_code ec;
        std::size_t end = std::string::npos;
        while ((end = proxy::find_head_end(buf)) == std::string::npos ||
               buf.size() - end < discard_) {
            const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
            if (ec) {
                return;
            }
            buf.append(chunk.data(), n);
        }
        std::size_t body = buf.size() - end;
        body_bytes_ += body;
        asio::write(socket, asio::buffer(answer_.data(), answer_.size()), ec);
        if (after_ == after_answer::hold) {
            // Until tollgate closes (or stop() shuts the socket down), with
            // what it sent left unread.
            pollfd closed{socket.native_handle(), POLLRDHUP, 0};
            while (::poll(&closed, 1, -1) < 0 && errno == EINTR) {
            }
        } else if (after_ == after_answer::read_on) {
            const auto at = buf.find("Content-Length: ");
            const std::size_t length = std::stoul(buf.substr(at + 16));
            while (body < length && !ec) {
                const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
                body += n;
                body_bytes_ += n;
            }
            socket.read_some(asio::buffer(chunk), ec);  // until tollgate closes, or stop()
        }
    }

    std::size_t discard_;
    after_answer after_;
    std::string answer_;
    std::atomic<std::size_t> body_bytes_{0};
};

/// Sends `size` body bytes on `fd` from a thread of its own (plain send()
/// on the descriptor, which the test's reads make non-blocking) while the
/// test reads the answer; stops when tollgate closes, or after `patience`.
std::thread send_body(int fd, std::size_t size) {
    return std::thread([fd, size] {
        const std::string piece(64 * 1024, 'b');
        const auto give_up = std::chrono::steady_clock::now() + patience;
        for (std::size_t sent = 0; sent < size && std::chrono::steady_clock::now() < give_up;) {
            const ssize_t n =
                ::send(fd, piece.data(), std::min(piece.size(), size - sent), MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                pollfd writable{fd, POLLOUT, 0};
                ::poll(&writable, 1, 100);
                continue;
            }
            if (n <= 0) {
                return;  // tollgate closed after its answer
            }
            sent += static_cast<std::size_t>(n);
        }
    });
}

/// Sends the head of a POST with a `size`-byte body, then `sent` bytes of
/// the body from a thread of its own, and reads the answer (the final one,
/// after a relayed 100).
raw_client::result upload(raw_client& client, std::size_t size, std::size_t sent) {
    client.send("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                std::to_string(size) + "\r\n\r\n");
    std::thread sender = send_body(client.socket_handle(), sent);
    auto r = client.read();
    if (r.status == 100) {
        r = client.read();
    }
    sender.join();
    return r;
}

}  // namespace

TEST_CASE("framing: request corpus over sockets, upstream receives only clean requests",
          "[framing]") {
    for (const auto& c : load_corpus(data_dir + "requests.corpus")) {
        DYNAMIC_SECTION(c.name) {
            run_request_case(c, false);
        }
    }
}

TEST_CASE("framing: request corpus sent one byte per write", "[framing]") {
    // Every cut of the head across reads must give the same verdict: the
    // session checks each read's bytes again.
    for (const auto& c : load_corpus(data_dir + "requests.corpus")) {
        DYNAMIC_SECTION(c.name) {
            run_request_case(c, true);
        }
    }
}

TEST_CASE("framing: response corpus, bad upstream framing gives 502 and is not pooled",
          "[framing]") {
    for (const auto& c : load_corpus(data_dir + "responses.corpus")) {
        DYNAMIC_SECTION(c.name) {
            run_response_case(c);
        }
    }
}

TEST_CASE("framing: a long first read with binary in it is refused at once, LF or not",
          "[framing]") {
    // Past the first KiB a head is checked again when a read ends a line,
    // or when it brings a byte no head may hold: a large TLS ClientHello
    // (post-quantum key shares make them ~1.8 KiB) need not contain a LF.
    recording_upstream up;
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    client.send("GET /" + std::string(1100, 'a') + "\x01" + std::string(600, 'b'));
    const auto r = client.read();
    INFO("read: " << r.ec.message());
    CHECK(r.status == 400);
    CHECK(client.rest_until_close().empty());
    CHECK(up.requests().empty());
}

TEST_CASE("framing: bytes an upstream sends beyond its response never reach another request",
          "[framing]") {
    // A response queue poisoning attempt: a second, unrequested response
    // right behind the first. Whatever the pool does with the connection,
    // the next request must get a real answer of its own.
    for (std::string_view extra :
         {"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected",
          "HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nContent-Length: 0\r\n\r\n"}) {
        const std::string answer =
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + std::string(extra);
        scripted_upstream up(answer, false);
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        auto first = client.read();
        REQUIRE(first.status == 200);
        CHECK(first.body == "ok");
        client.send(sentinel);
        auto second = client.read();
        CHECK(second.status == 200);
        CHECK(second.body == "ok");
        // Not reused: what else the server sends would answer a request.
        CHECK(up.connections() == 2);
    }
}

TEST_CASE("framing: bytes an upstream sends while its connection is idle never answer a request",
          "[framing]") {
    // The unasked response arrives after tollgate has read the answer and
    // pooled the connection: it must not become the next request's answer.
    scripted_upstream up("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    REQUIRE(client.read().status == 200);
    REQUIRE(up.send_on_last("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"));
    client.send(sentinel);
    auto second = client.read();
    CHECK(second.status == 200);
    CHECK(second.body == "ok");
    CHECK(up.connections() == 2);  // the poisoned connection was not reused
}

TEST_CASE("framing: a chunked response that breaks after its head went out is cut at once",
          "[framing]") {
    // The head goes out; then a chunk-size line ended by a bare LF (Beast
    // waits for a CRLF), and the upstream waits. The client's connection is
    // cut then, not at upstream.response_timeout (60 s here, far past the
    // read's patience).
    scripted_upstream up("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    REQUIRE(eventually([&] { return client.socket_readable() > 0; }));
    REQUIRE(up.send_on_last("3\nabc"));
    const auto r = client.read();
    CHECK(r.status == 200);
    INFO("read: " << r.ec.message());
    CHECK(r.ec);  // the body was cut
    // For a malformed body; a wait that ran out would be response_timeout.
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"invalid_response\"} 1") !=
          std::string::npos);
    CHECK(up.wait_all_closed(patience));  // never pooled
}

TEST_CASE("framing: only idempotent requests go again after a pooled connection dies",
          "[framing]") {
    // The server reads the second request on a pooled connection and dies:
    // a GET goes again on a fresh connection, a POST (even without a body)
    // is answered 502, as the server may have acted on it.
    for (std::string_view method : {"GET", "DELETE", "POST", "PATCH"}) {
        INFO(method);
        const bool again = method == "GET" || method == "DELETE";
        answer_once_upstream up;
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n");
        REQUIRE(client.read().status == 200);
        client.send(std::string(method) +
                    " /act HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        CHECK(client.read().status == (again ? 200 : 502));
        const auto lines = up.request_lines();
        const auto acts =
            std::count(lines.begin(), lines.end(), std::string(method) + " /act HTTP/1.1");
        CHECK(acts == (again ? 2 : 1));
    }
}

TEST_CASE(
    "framing: an upstream's close in any Connection field keeps its connection out of the pool",
    "[framing]") {
    // Beast's keep_alive() reads the first Connection field only. A POST is
    // never retried: sent on the closing connection, it would get a 502.
    for (std::string_view framing :
         {"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",  // parsed path
          "Content-Length: 2\r\n\r\nok"}) {                          // whole-response path
        INFO(printable(std::string(framing)));
        answer_once_upstream up(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n" +
            std::string(framing));
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n");
        REQUIRE(client.read().status == 200);
        client.send("POST /act HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        CHECK(client.read().status == 200);
        CHECK(up.connections() == 2);
    }
}

TEST_CASE("framing: a client's close in any Connection field ends its connection", "[framing]") {
    scripted_upstream up("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    client.send(
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n" +
        std::string(sentinel));
    const auto r = client.read();
    CHECK(r.status == 200);
    CHECK_FALSE(r.keep_alive);
    CHECK(client.rest_until_close().empty());  // the pipelined sentinel is not answered
}

TEST_CASE("framing: Connection may not name the field a request is keyed on", "[framing]") {
    // Stripped as hop-by-hop after keying, the field would give the request
    // a bucket of its own while the backend sees a request without it.
    recording_upstream up;
    running_proxy gw(framing_config(up.port()));  // 127.0.0.1 may name an org by default
    for (const std::string named : {"Authorization", "authorization, x-other", "X-Org-Id"}) {
        INFO(named);
        raw_client client(gw.port());
        client.send(
            "GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer abc\r\n"
            "X-Org-Id: acme\r\nConnection: " +
            named + "\r\n\r\n");
        const auto r = client.read();
        CHECK(r.status == 400);
        CHECK(r.body.find("Connection names a field the key comes from") != std::string::npos);
    }
    CHECK(up.requests().empty());
    // Naming a field the request does not carry changes nothing.
    raw_client client(gw.port());
    client.send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Authorization\r\n\r\n");
    CHECK(client.read().status == 200);
}

TEST_CASE("framing: every response carries one Date, the upstream's when it sent one",
          "[framing]") {
    // RFC 9110 6.6.1: an origin (tollgate, for its own replies) sends Date;
    // a proxy adds one to a response forwarded without it.
    const std::regex imf_fixdate(
        R"([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)");
    const std::string upstream_date = "Sun, 06 Nov 1994 08:49:37 GMT";
    for (const bool dated : {false, true}) {
        for (std::string_view framing :
             {"Content-Length: 2\r\n\r\nok",                                // whole-response path
              "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"}) {  // parsed path
            INFO("dated " << dated << ", " << printable(std::string(framing)));
            scripted_upstream up("HTTP/1.1 200 OK\r\n" +
                                     (dated ? "Date: " + upstream_date + "\r\n" : std::string()) +
                                     std::string(framing),
                                 false);
            running_proxy gw(framing_config(up.port()));
            raw_client client(gw.port());
            client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            const auto r = client.read();
            REQUIRE(r.status == 200);
            CHECK(r.header.count(http::field::date) == 1);
            const std::string date(r.header[http::field::date]);
            if (dated) {
                CHECK(date == upstream_date);
            } else {
                CHECK(std::regex_match(date, imf_fixdate));
            }
        }
    }
    // tollgate's own: a 502 (nothing listens) and a 429.
    auto cfg = framing_config(free_port());
    cfg.rate_limit.limit = 1;
    cfg.rate_limit.window = std::chrono::hours(1);
    running_proxy gw(cfg);
    for (const unsigned status : {502u, 429u}) {
        raw_client client(gw.port());
        client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        const auto r = client.read();
        CHECK(r.status == status);
        CHECK(std::regex_match(std::string(r.header[http::field::date]), imf_fixdate));
    }
}

TEST_CASE("framing: a HEAD refused before its head is parsed gets no body either", "[framing]") {
    scripted_upstream up("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    running_proxy gw(framing_config(up.port()));
    const std::vector<std::string> requests{
        "HEAD / HTTP/1.1\r\n\r\n",  // 400: no Host
        "HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",   // 400
        "HEAD / HTTP/1.1\r\nHost: a\r\nX: " + std::string(20 * 1024, 'x') + "\r\n\r\n"};  // 431
    for (const auto& request : requests) {
        INFO(printable(request.substr(0, 60)));
        raw_client client(gw.port());
        client.send(request);
        const auto r = client.read(true);
        CHECK((r.status == 400 || r.status == 431));
        CHECK(r.header[http::field::content_length] != "0");  // what a GET would get
        CHECK(client.rest_until_close().empty());
    }
}

TEST_CASE("framing: tollgate's own replies to HEAD have no body", "[framing]") {
    // A refusal (429) and an upstream failure (502) between pipelined
    // requests: a body after either would be read as the next response.
    for (const bool refused : {true, false}) {
        INFO((refused ? "429" : "502"));
        scripted_upstream up(refused ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                     : "HTTP/1.1 2OO OK\r\n\r\n",  // not a status: 502
                             false);
        auto cfg = framing_config(up.port());
        cfg.rate_limit.limit = 1;
        cfg.rate_limit.window = std::chrono::hours(1);
        running_proxy gw(cfg);
        raw_client client(gw.port());
        const std::string head = "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        if (refused) {
            client.send(head);  // takes the only token
            REQUIRE(client.read(true).status == 200);
        }
        client.send(head + "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        auto answer = client.read(true);
        CHECK(answer.status == (refused ? 429 : 502));
        CHECK(answer.header[http::field::content_length] != "0");  // what a GET would get
        auto next = client.read();
        CHECK(next.status == 429);
        CHECK(next.body.rfind("{\"error\"", 0) == 0);
    }
}

TEST_CASE("framing: 103 Early Hints reach an HTTP/1.1 client, not an HTTP/1.0 one", "[framing]") {
    scripted_upstream up(
        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nConnection: X-Hop\r\n"
        "X-Hop: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false);
    running_proxy gw(framing_config(up.port()));
    {
        raw_client client(gw.port());
        client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        auto hints = client.read();
        CHECK(hints.status == 103);
        CHECK(hints.header["Link"] == "</s.css>; rel=preload");
        CHECK(hints.header["X-Hop"].empty());  // hop-by-hop, as in any response
        auto final_answer = client.read();
        CHECK(final_answer.status == 200);
        CHECK(final_answer.body == "ok");
        client.send(sentinel);  // the connection goes on
        CHECK(client.read().status == 200);
    }
    {
        raw_client client(gw.port());
        client.send("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
        auto answer = client.read();
        CHECK(answer.status == 200);
        CHECK(answer.body == "ok");
    }
}

TEST_CASE("framing: a response keeps its fields in order and loses its hop-by-hop ones",
          "[framing]") {
    // 10 fields take the raw path (render_response_head), 40 the parsed one
    // (more than head_info::max_listed): the client must not tell them apart.
    for (int count : {10, 40}) {
        std::string answer = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-F3\r\n";
        for (int i = 0; i < count; ++i) {
            answer += "X-F" + std::to_string(i) + ": v" + std::to_string(i) + "\r\n";
        }
        answer += "Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok";
        scripted_upstream up(answer, false);
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        auto r = client.read();
        INFO(count << " fields");
        REQUIRE(r.status == 200);
        CHECK(r.body == "ok");
        CHECK(r.keep_alive);
        std::vector<std::string> names;
        for (const auto& f : r.header) {
            names.emplace_back(f.name_string());
        }
        std::vector<std::string> expected;
        for (int i = 0; i < count; ++i) {
            if (i != 3) {
                expected.push_back("X-F" + std::to_string(i));
            }
        }
        expected.push_back("Content-Length");
        for (const char* name :
             {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Date"}) {
            expected.emplace_back(name);  // Date: the upstream sent none
        }
        CHECK(names == expected);
        CHECK(r.header["X-F39"] == (count == 40 ? "v39" : ""));
        client.send(sentinel);  // the connection goes on
        CHECK(client.read().status == 200);
    }
}

TEST_CASE("framing: a 204 loses its Content-Length, a HEAD's or 304's is normalised", "[framing]") {
    // Both head paths: few fields (rendered raw) and many (Beast's).
    for (int count : {0, 40}) {
        std::string extra;
        for (int i = 0; i < count; ++i) {
            extra += "X-F" + std::to_string(i) + ": v\r\n";
        }
        INFO(count << " extra fields");
        struct exchange {
            std::string answer;
            std::string method;
            std::string want_length;  ///< the client's Content-Length ("" = none)
        };
        for (const auto& e :
             {exchange{"HTTP/1.1 204 No Content\r\n" + extra + "Content-Length: 0\r\n\r\n", "GET",
                       ""},
              exchange{"HTTP/1.1 200 OK\r\n" + extra + "Content-Length: 7, 7\r\n\r\n", "HEAD", "7"},
              exchange{"HTTP/1.1 304 Not Modified\r\n" + extra + "Content-Length: 7, 7\r\n\r\n",
                       "GET", "7"}}) {
            INFO(e.method << " answered " << e.answer.substr(0, 12));
            scripted_upstream up(e.answer, false);
            running_proxy gw(framing_config(up.port()));
            raw_client client(gw.port());
            client.send(e.method + " / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            const auto r = client.read(e.method == "HEAD");
            REQUIRE(r.header_done);
            CHECK(r.header[http::field::content_length] == e.want_length);
            CHECK(r.body.empty());
            client.send(sentinel);  // still in step
            CHECK(client.read().body == "ok");
        }
    }
}

TEST_CASE("framing: a body sent after a HEAD response never reaches another request", "[framing]") {
    scripted_upstream up("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected", false);
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    client.send("HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    auto head = client.read(true);
    REQUIRE(head.status == 200);
    CHECK(head.body.empty());
    client.send(sentinel);
    auto second = client.read();
    CHECK(second.status == 200);
    CHECK(second.body == "ok");
}

TEST_CASE("framing: request trailers are dropped, never forwarded as header fields", "[framing]") {
    // A body that is only the last chunk and its trailers is parsed before
    // the request's header goes out: its fields must not join the header.
    const std::string trailers =
        "X-Injected: 1\r\nHost: evil.example\r\nAuthorization: Bearer stolen\r\n"
        "X-Forwarded-For: 6.6.6.6\r\n\r\n";
    for (std::string_view body : {"0\r\n", "5\r\nhello\r\n0\r\n"}) {
        INFO(printable(std::string(body)));
        recording_upstream up;
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("POST /t HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" +
                    std::string(body) + trailers);
        const auto r = client.read();
        CHECK(r.status == 200);
        const auto received = up.requests();
        REQUIRE(received.size() == 1);
        const std::string& head = received[0].head;
        INFO(printable(head));
        CHECK(head.find("X-Injected") == std::string::npos);
        CHECK(head.find("evil.example") == std::string::npos);
        CHECK(head.find("Authorization") == std::string::npos);
        CHECK(head.find("6.6.6.6") == std::string::npos);
        CHECK(received[0].body == (body.size() > 3 ? "hello" : ""));
        CHECK(received[0].complete);
        CHECK(up.stray_bytes().empty());
    }
}

TEST_CASE("framing: response trailers are dropped, never sent as header fields", "[framing]") {
    scripted_upstream up(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        "Set-Cookie: session=upstream-trailer\r\nX-Trailer: t\r\n\r\n",
        false);
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // The client's parser would take trailers into its header too: the
    // fields must be gone from both.
    const auto r = client.read();
    REQUIRE(r.status == 200);
    CHECK(r.body.empty());
    CHECK(r.header["Set-Cookie"].empty());
    CHECK(r.header["X-Trailer"].empty());
    client.send(sentinel);  // the connection goes on
    CHECK(client.read().status == 200);
}

TEST_CASE("framing: an endless chunk extension or trailer is cut off", "[framing]") {
    // Beast buffers a chunk header line or trailer section until its end,
    // with no limit of its own: tollgate must cut it off with a 400 (not
    // wait for the line to end, nor time out). Loopback socket buffers can
    // absorb all 4 MiB before the answer arrives, so the bytes sent prove
    // nothing; the 400 does.
    for (std::string_view opening : {"1;a=", "0\r\nX-Trailer: "}) {
        INFO(opening);
        recording_upstream up;
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        client.send("POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
        client.send(opening);
        const std::string filler(64 * 1024, 'x');
        std::size_t sent = 0;
        // tollgate must answer (and close) before all of it went through.
        while (sent < 4 * 1024 * 1024 && client.socket_readable() == 0) {
            client.send(filler);
            sent += filler.size();
        }
        const auto r = client.read();
        CHECK(r.status == 400);
    }
}

TEST_CASE("framing: a route's limit applies however its path is written", "[framing]") {
    // Routes match the raw target: an absolute-form target, or a path a
    // backend normalises (merged slashes, Tomcat/Jetty `;params`), must not
    // dodge a stricter route limit.
    recording_upstream up;
    auto cfg = framing_config(up.port());
    route_config login = one_per_minute("login");
    login.path_prefix = "/login";
    cfg.routes.push_back(login);
    running_proxy gw(cfg);
    auto status_of = [&](std::string_view target) {
        raw_client client(gw.port());
        client.send("GET " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
        return client.read().status;
    };
    REQUIRE(status_of("/login") == 200);
    CHECK(status_of("/login/x") == 429);  // the route itself works
    for (std::string_view target : {"http://localhost/login", "//login", "/login;jsessionid=1",
                                    "/login%2Fsubmit", "/login%2f"}) {
        INFO(target);
        CHECK(status_of(target) == 429);
    }
}

TEST_CASE("framing: a host route holds for an HTTP/1.0 absolute-form request without Host",
          "[framing]") {
    // HTTP/1.0 may omit Host; the target's authority then names the host,
    // for tollgate's routing as for the backend (which is sent it as Host).
    recording_upstream up;
    auto cfg = framing_config(up.port());
    route_config admin = one_per_minute("admin");
    admin.host = "admin.test";
    cfg.routes.push_back(admin);
    running_proxy gw(cfg);
    auto ask = [&](std::string_view request) {
        raw_client client(gw.port());
        client.send(request);
        return client.read();
    };
    REQUIRE(ask("GET /x HTTP/1.1\r\nHost: admin.test\r\n\r\n").status == 200);
    // A fully qualified name is the same host (to DNS and to nginx).
    CHECK(ask("GET /x HTTP/1.1\r\nHost: admin.test.\r\n\r\n").status == 429);
    CHECK(ask("GET /x HTTP/1.1\r\nHost: ADMIN.test.:8080\r\n\r\n").status == 429);
    const auto bare = ask("GET http://admin.test/x HTTP/1.0\r\n\r\n");
    CHECK(bare.status == 429);
    CHECK(bare.header["X-RateLimit-Limit"] == "1");
    // Another host's request passes, and reaches the backend with its Host.
    REQUIRE(ask("GET http://other.test/y HTTP/1.0\r\n\r\n").status == 200);
    const auto received = up.requests();
    REQUIRE_FALSE(received.empty());
    CHECK(received.back().head.find("\r\nHost: other.test\r\n") != std::string::npos);
}

TEST_CASE("framing: an upgrade to a versioned protocol is matched by its name", "[framing]") {
    // RFC 9110 7.8: `foo/2` asked may be answered `foo/2` or `foo`; another
    // protocol is not what the client asked for.
    struct answer_case {
        const char* asked;
        const char* answered;
        unsigned status;
    };
    for (const auto& c : {answer_case{"foo/2", "foo/2", 101}, answer_case{"foo/2", "foo", 101},
                          answer_case{"foo", "foo/1", 101}, answer_case{"bar, foo/2", "foo/2", 101},
                          answer_case{"foo/2", "bar/2", 502}}) {
        INFO(c.asked << " answered " << c.answered);
        scripted_upstream up(std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: ") +
                                 c.answered + "\r\nConnection: Upgrade\r\n\r\n",
                             false);
        auto cfg = framing_config(up.port());
        route_config route;
        route.name = "any";
        route.path_prefix = "/";
        route.upgrade = {"foo", "bar"};
        cfg.routes = {route};
        running_proxy gw(cfg);
        raw_client client(gw.port());
        client.send(std::string("GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                                "Upgrade: ") +
                    c.asked + "\r\n\r\n");
        CHECK(client.read().status == c.status);
    }
}

TEST_CASE("framing: an upstream that answers an upload early and closes is relayed, not a 502",
          "[framing]") {
    // RFC 9112 9.5; servers commonly refuse a large or unauthorised body
    // after its first part, answer, and close on the rest.
    for (const std::size_t discard : {std::size_t{0}, std::size_t{256} * 1024}) {
        INFO("upstream reads " << discard << " body bytes first");
        early_answer_upstream up(discard);
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        constexpr std::size_t size = 8 * 1024 * 1024;
        const auto r = upload(client, size, size);
        CHECK(r.status == 413);
        CHECK(r.body == "too large");
        CHECK_FALSE(r.keep_alive);  // the rest of the body was never read
        // The slot comes back when tollgate's write of the answer completes,
        // which the client may see a moment before that handler runs.
        CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_inflight_slots") == 0; }));
    }
}

TEST_CASE(
    "framing: an upstream that refuses an upload and keeps the connection open is relayed "
    "at once",
    "[framing]") {
    // It neither reads on nor closes: the body write stalls (the response
    // timeout, 60 s here, is far beyond `patience`), or the client has not
    // sent its body yet (client.body_timeout is 3 s, then a close).
    struct variant {
        const char* what;
        std::size_t discard;
        std::size_t sent;  ///< body bytes the client sends of 8 MiB
    };
    for (const auto& v : {variant{"stalled body write", 0, 8u << 20},
                          variant{"stalled after 256 KiB", 256u << 10, 8u << 20},
                          variant{"client sends no body", 0, 0}}) {
        INFO(v.what);
        early_answer_upstream up(v.discard, after_answer::hold,
                                 "HTTP/1.1 100 Continue\r\n\r\n"
                                 "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nwho?");
        running_proxy gw(framing_config(up.port()));
        raw_client client(gw.port());
        const auto r = upload(client, 8u << 20, v.sent);
        CHECK(r.status == 401);
        CHECK(r.body == "who?");
        CHECK_FALSE(r.keep_alive);
        // Not pooled: the rest of its request never went out.
        CHECK(up.wait_all_closed(patience));
        CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_inflight_slots") == 0; }));
    }
}

TEST_CASE("framing: an upstream that answers 200 while reading on gets the whole body",
          "[framing]") {
    // A 2xx before the end may come from a server that answers as it reads:
    // the body goes on, and the answer is relayed after it.
    early_answer_upstream up(0, after_answer::read_on,
                             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    running_proxy gw(framing_config(up.port()));
    raw_client client(gw.port());
    constexpr std::size_t size = 4 * 1024 * 1024;
    const auto r = upload(client, size, size);
    CHECK(r.status == 200);
    CHECK(r.body == "ok");
    CHECK(r.keep_alive);
    // The body was all written before the answer was relayed; the upstream
    // may still be reading it from its socket.
    CHECK(eventually([&] { return up.body_bytes() == size; }));
}

TEST_CASE(
    "framing: an early 200 from an upstream that stops reading is relayed when the body "
    "write gives up",
    "[framing]") {
    // The watch leaves a 2xx for after the body; when the upstream neither
    // reads on nor closes, the write gives up at upstream.response_timeout.
    // Its answer is there by then: relayed, not a 504.
    early_answer_upstream up(0, after_answer::hold,
                             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    auto cfg = framing_config(up.port());
    cfg.upstream.response_timeout = std::chrono::milliseconds(300);
    running_proxy gw(cfg);
    raw_client client(gw.port());
    const auto r = upload(client, 8u << 20, 8u << 20);
    CHECK(r.status == 200);
    CHECK(r.body == "ok");
    CHECK_FALSE(r.keep_alive);  // the rest of the body was never sent
}
