#include "framing_upstream.hpp"

#include <sys/socket.h>

#include <array>
#include <optional>

#include "framing_corpus.hpp"
#include "tollgate/proxy/framing.hpp"

namespace tollgate::test::framing {

namespace {

/// The plain answer of the recording and scripted upstreams.
constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

}  // namespace

raw_upstream::raw_upstream()
    : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
}

raw_upstream::~raw_upstream() {
    // stop() has run in the derived destructor; nothing may run serve() now.
}

void raw_upstream::stop() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) {
            return;
        }
        stopping_ = true;
    }
    error_code ignored;
    {
        // Wake the blocking accept with a connection of our own.
        asio::io_context ioc;
        tcp::socket s(ioc);
        s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ignored);
    }
    accept_thread_.join();
    acceptor_.close(ignored);  // only now: not under a blocking accept
    {
        std::lock_guard lock(mutex_);
        for (auto& s : sockets_) {
            s->shutdown(tcp::socket::shutdown_both, ignored);
        }
    }
    for (auto& t : threads_) {
        t.join();
    }
}

void raw_upstream::accept_loop() {
    for (;;) {
        auto socket = std::make_shared<tcp::socket>(ioc_);
        error_code ec;
        acceptor_.accept(*socket, ec);
        std::lock_guard lock(mutex_);
        if (ec || stopping_) {
            return;
        }
        const std::size_t index = accepted_++;
        open_++;
        sockets_.push_back(socket);
        threads_.emplace_back([this, socket, index] {
            serve(*socket, index);
            std::lock_guard inner(mutex_);  // stop() shuts sockets down under it
            error_code ignored;
            socket->close(ignored);
            open_--;
            closed_++;
            cv_.notify_all();
        });
    }
}

bool raw_upstream::wait_all_closed(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return open_ == 0; });
}

bool raw_upstream::wait_closed_count(std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return closed_ >= n; });
}

std::size_t raw_upstream::connections() {
    std::lock_guard lock(mutex_);
    return accepted_;
}

bool raw_upstream::send_on_last(std::string_view bytes) {
    std::lock_guard lock(mutex_);  // the serving thread closes under it
    if (sockets_.empty() || !sockets_.back()->is_open()) {
        return false;
    }
    // The raw descriptor: the serving thread may be blocked reading the
    // same socket object.
    const ssize_t n =
        ::send(sockets_.back()->native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    return n == static_cast<ssize_t>(bytes.size());
}

std::vector<received_request> recording_upstream::requests() {
    std::lock_guard lock(mutex_);
    return requests_;
}

std::vector<std::string> recording_upstream::refused_heads() {
    std::lock_guard lock(mutex_);
    return refused_;
}

std::vector<std::string> recording_upstream::stray_bytes() {
    std::lock_guard lock(mutex_);
    return stray_;
}

void recording_upstream::serve(tcp::socket& socket, std::size_t index) {
    std::string buf;
    std::optional<http::request_parser<http::string_body>> parser;
    std::size_t current = 0;
    std::array<char, 16384> chunk{};
    error_code ec;
    for (;;) {
        // Cut what has arrived into requests.
        for (bool progress = true; progress;) {
            progress = false;
            if (!parser) {
                const std::size_t end = proxy::find_head_end(buf);
                if (end == std::string::npos) {
                    break;
                }
                const std::string head = buf.substr(0, end);
                parser.emplace();
                parser->body_limit(boost::none);
                parser->eager(true);
                const std::size_t used = parser->put(asio::buffer(head), ec);
                std::lock_guard lock(mutex_);
                if (proxy::validate_request_head(head, {1000})) {
                    refused_.push_back(printable(head));
                }
                if (ec || used != head.size() || !parser->is_header_done()) {
                    stray_.push_back("unparsable head: " + printable(head));
                    return;
                }
                buf.erase(0, end);
                current = requests_.size();
                requests_.push_back({std::string(parser->get().method_string()),
                                     std::string(parser->get().target()), head, "", false, index});
                progress = true;
            }
            if (!parser->is_done() && !buf.empty()) {
                const std::size_t used = parser->put(asio::buffer(buf), ec);
                if (ec == http::error::need_more) {
                    ec = {};
                }
                if (ec) {
                    std::lock_guard lock(mutex_);
                    stray_.push_back("unparsable body (" + ec.message() + "): " + printable(buf));
                    return;
                }
                buf.erase(0, used);
                progress = used > 0;
            }
            if (parser->is_done()) {
                {
                    std::lock_guard lock(mutex_);
                    requests_[current].body = parser->get().body();
                    requests_[current].complete = true;
                }
                parser.reset();
                asio::write(socket, asio::buffer(ok.data(), ok.size()), ec);
                if (ec) {
                    return;
                }
                progress = true;
            }
        }
        const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
        if (ec) {
            break;
        }
        buf.append(chunk.data(), n);
    }
    if (!buf.empty() && !parser) {
        std::lock_guard lock(mutex_);
        stray_.push_back(printable(buf));
    }
}

std::size_t scripted_upstream::requests() {
    std::lock_guard lock(mutex_);
    return requests_;
}

void scripted_upstream::serve(tcp::socket& socket, std::size_t) {
    std::string buf;
    std::array<char, 4096> chunk{};
    error_code ec;
    bool half_closed = false;
    for (;;) {
        // tollgate forwards GETs without body: a head is a request.
        for (std::size_t end = proxy::find_head_end(buf); end != std::string::npos && !half_closed;
             end = proxy::find_head_end(buf)) {
            const bool sentinel = buf.compare(0, 14, "GET /sentinel ") == 0;
            buf.erase(0, end);
            {
                std::lock_guard lock(mutex_);
                requests_++;
            }
            const std::string_view answer = sentinel ? ok : std::string_view(answer_);
            asio::write(socket, asio::buffer(answer.data(), answer.size()), ec);
            if (!sentinel && eof_) {
                socket.shutdown(tcp::socket::shutdown_send, ec);
                half_closed = true;
            }
        }
        const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
        if (ec) {
            return;
        }
        buf.append(chunk.data(), n);
    }
}

std::vector<std::string> answer_once_upstream::request_lines() {
    std::lock_guard lock(mutex_);
    return lines_;
}

void answer_once_upstream::serve(tcp::socket& socket, std::size_t) {
    std::string buf;
    std::array<char, 4096> chunk{};
    error_code ec;
    for (std::size_t answered = 0;;) {
        // The requests here have no body: a head is a request.
        if (const std::size_t end = proxy::find_head_end(buf); end != std::string::npos) {
            {
                std::lock_guard lock(mutex_);
                lines_.push_back(buf.substr(0, buf.find("\r\n")));
            }
            buf.erase(0, end);
            if (answered++ > 0) {
                return;  // closed by the caller
            }
            asio::write(socket, asio::buffer(answer_), ec);
            continue;
        }
        const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
        if (ec) {
            return;
        }
        buf.append(chunk.data(), n);
    }
}

}  // namespace tollgate::test::framing
