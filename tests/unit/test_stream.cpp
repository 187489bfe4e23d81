// proxy::stream::send_now: the write that completes without the event loop,
// and what it leaves for the asynchronous write behind it.

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <thread>

#include "tollgate/proxy/stream.hpp"

namespace {

using tollgate::proxy::socket_type;
using tollgate::proxy::stream;
namespace asio = boost::asio;
using asio::ip::tcp;

/// A connected loopback pair: `ours` wrapped as a stream, `peer` raw.
struct tcp_pair {
    asio::io_context ioc;
    socket_type peer{ioc};
    std::unique_ptr<stream> ours;

    explicit tcp_pair(int buffer_bytes = 0) {
        tcp::acceptor acceptor{ioc, {asio::ip::make_address("127.0.0.1"), 0}};
        if (buffer_bytes > 0) {
            acceptor.set_option(asio::socket_base::receive_buffer_size{buffer_bytes});
        }
        socket_type client{ioc};
        client.open(tcp::v4());
        if (buffer_bytes > 0) {
            client.set_option(asio::socket_base::send_buffer_size{buffer_bytes});
        }
        client.connect(acceptor.local_endpoint());
        acceptor.accept(peer);
        ours = std::make_unique<stream>(std::move(client));
    }

    std::string read_exactly(std::size_t n) {
        std::string got(n, '\0');
        asio::read(peer, asio::buffer(got));
        return got;
    }
};

}  // namespace

TEST_CASE("send_now: a reply that fits goes out whole at once", "[stream]") {
    tcp_pair pair;
    const std::string reply = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}";
    CHECK(pair.ours->send_now(reply) == reply.size());
    CHECK(pair.read_exactly(reply.size()) == reply);
}

TEST_CASE("send_now: a full socket takes part and the asynchronous write sends the rest",
          "[stream]") {
    // Small buffers on both ends and a peer that is not reading yet: the
    // kernel accepts a prefix, then nothing.
    tcp_pair pair{4096};
    std::string data(1 << 20, '\0');
    for (std::size_t i = 0; i < data.size(); ++i) {
        data[i] = static_cast<char>('a' + i % 26);
    }
    const std::size_t first = pair.ours->send_now(data);
    CHECK(first > 0);
    REQUIRE(first < data.size());
    CHECK(pair.ours->send_now(std::string_view(data).substr(first)) == 0);  // still full

    std::size_t written = 0;
    asio::async_write(*pair.ours, asio::buffer(data.data() + first, data.size() - first),
                      [&](boost::system::error_code ec, std::size_t n) {
                          CHECK_FALSE(ec);
                          written = n;
                      });
    std::string got;
    std::thread reader{[&] { got = pair.read_exactly(data.size()); }};
    pair.ioc.run();
    reader.join();
    CHECK(written == data.size() - first);
    CHECK(got == data);
}

TEST_CASE("send_now: a closed socket sends nothing and raises no signal", "[stream]") {
    tcp_pair pair;
    pair.peer.close();
    // The first send may still be taken by the kernel before the reset
    // arrives; after that, EPIPE must come back as "nothing sent", not SIGPIPE.
    const std::string data(64 * 1024, 'x');
    std::size_t later = data.size();
    for (int i = 0; i < 100 && later != 0; ++i) {
        later = pair.ours->send_now(data);
    }
    CHECK(later == 0);
    stream unconnected{pair.ioc};
    CHECK(unconnected.send_now(data) == 0);
}
