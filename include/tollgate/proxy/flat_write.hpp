#pragma once
/// @file flat_write.hpp
/// Writing a Beast serializer with few, large iovecs. Beast hands a message
/// head to the socket as one buffer per piece of every field (a dozen fields
/// make well over fifty iovecs), which costs more in buffer-sequence walking
/// and in the kernel than copying the head once. `async_write_flat` copies
/// sequences of many small buffers into a scratch string and passes short
/// sequences (a body chunk and its framing) through untouched, so bodies
/// are never copied.
///
/// Same contract as `http::async_write` (and, with `header_only`, as
/// `http::async_write_header`): completes when the serializer is done, or
/// with `http::error::need_buffer` when a `buffer_body` needs more data;
/// the handler gets the bytes written. It never completes inline.

#include <array>
#include <string>

#include "tollgate/net.hpp"

namespace tollgate::proxy {

/// Storage for one write: it must outlive the operation, so the caller owns
/// it (the operation object itself moves between handlers, and buffers
/// pointing into it would dangle).
struct write_scratch {
    std::string flat;
    std::array<asio::const_buffer, 8> gather{};
};

/// A view of a few buffers, as a ConstBufferSequence.
struct buffer_span {
    const asio::const_buffer* first;
    const asio::const_buffer* last;
    const asio::const_buffer* begin() const { return first; }
    const asio::const_buffer* end() const { return last; }
};

template <class Stream, class Serializer>
class write_flat_op {
public:
    write_flat_op(Stream& stream, Serializer& sr, write_scratch& scratch, bool header_only)
        : stream_(stream), sr_(sr), scratch_(scratch), header_only_(header_only) {}

    template <class Self>
    void operator()(Self& self, error_code ec = {}, std::size_t n = 0) {
        switch (state_) {
            case state::writing:
                if (ec) {
                    return self.complete(ec, total_);
                }
                sr_.consume(n);
                total_ += n;
                break;
            case state::finishing:
                return self.complete(result_, total_);
            case state::starting:
                break;
        }
        const bool initiating = state_ == state::starting;
        state_ = state::writing;
        if (header_only_ ? sr_.is_header_done() : sr_.is_done()) {
            return finish(self, {}, initiating);
        }
        error_code next_ec;
        count_ = 0;
        flat_ = false;
        sr_.next(next_ec, [&](error_code& e, const auto& buffers) {
            e = {};
            collect(buffers);
        });
        if (next_ec) {
            return finish(self, next_ec, initiating);
        }
        if (flat_) {
            asio::async_write(stream_, asio::buffer(scratch_.flat), std::move(self));
        } else {
            asio::async_write(stream_,
                              buffer_span{scratch_.gather.data(), scratch_.gather.data() + count_},
                              std::move(self));
        }
    }

private:
    enum class state { starting, writing, finishing };

    template <class Self>
    void finish(Self& self, error_code ec, bool initiating) {
        if (!initiating) {
            return self.complete(ec, total_);
        }
        // Never complete inside the initiating call.
        result_ = ec;
        state_ = state::finishing;
        asio::post(stream_.get_executor(), std::move(self));
    }

    // One pass over the sequence (walking Beast's buffer views is the
    // expensive part): gather up to scratch_.gather.size() pieces, and switch to
    // copying into the scratch string once there are more.
    template <class Buffers>
    void collect(const Buffers& buffers) {
        scratch_.flat.clear();
        for (auto it = asio::buffer_sequence_begin(buffers);
             it != asio::buffer_sequence_end(buffers); ++it) {
            const asio::const_buffer b(*it);
            if (b.size() == 0) {
                continue;
            }
            if (!flat_) {
                if (count_ < scratch_.gather.size()) {
                    scratch_.gather[count_++] = b;
                    continue;
                }
                flat_ = true;
                for (std::size_t i = 0; i < count_; ++i) {
                    scratch_.flat.append(static_cast<const char*>(scratch_.gather[i].data()),
                                         scratch_.gather[i].size());
                }
            }
            scratch_.flat.append(static_cast<const char*>(b.data()), b.size());
        }
    }

    Stream& stream_;
    Serializer& sr_;
    write_scratch& scratch_;
    const bool header_only_;
    state state_ = state::starting;
    std::size_t total_ = 0;
    error_code result_{};
    std::size_t count_ = 0;
    bool flat_ = false;
};

/// Writes `sr` (or only its header) to `stream`; see the file comment.
template <class Stream, class Serializer, class Handler>
auto async_write_flat(Stream& stream, Serializer& sr, write_scratch& scratch, bool header_only,
                      Handler&& handler) {
    if (header_only) {
        sr.split(true);
    }
    return asio::async_compose<Handler, void(error_code, std::size_t)>(
        write_flat_op<Stream, Serializer>(stream, sr, scratch, header_only), handler, stream);
}

}  // namespace tollgate::proxy
