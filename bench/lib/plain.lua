-- bench/compare scenarios (a) and (c): a plain keep-alive GET /, no
-- Authorization header, so every proxy keys the caller by its IP address.
package.path = (os.getenv("BENCH_LIB") or "bench/lib") .. "/?.lua;" .. package.path
require("wrk_report")
done = report_done
