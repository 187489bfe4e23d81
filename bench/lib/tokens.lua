-- bench/compare scenario (b): every request carries one of BENCH_TOKENS
-- (default 100,000) distinct bearer tokens, visited round robin, so each
-- proxy hashes a fresh key and keeps BENCH_TOKENS entries in its table.
-- The requests are formatted once in init(), so wrk spends no time
-- building strings on the hot path.
package.path = (os.getenv("BENCH_LIB") or "bench/lib") .. "/?.lua;" .. package.path
require("wrk_report")

local ntokens = tonumber(os.getenv("BENCH_TOKENS") or "100000")
local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

local requests, position

function init(args)
  requests = {}
  for k = 1, ntokens do
    requests[k] = wrk.format("GET", "/",
      {["Authorization"] = string.format("Bearer bench-token-%07d", k)})
  end
  -- Threads start at different points of the cycle, so they do not walk
  -- the same keys in lock step.
  position = ((thread_index or 0) * 7919) % ntokens
end

function request()
  position = position + 1
  if position > ntokens then position = 1 end
  return requests[position]
end

done = report_done
